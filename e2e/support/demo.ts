// A demo node: the real `go build ./demo` binary, run as a child process on
// a port of its own, killed and restarted at will by the tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';

export interface DemoOptions {
  /** SQLite file of the widgets; nodes given the same file share the widgets. */
  db: string;
  /** Where the node's output goes (appended across restarts). */
  logFile: string;
  /** RabbitMQ to use; empty for the embedded broker (a single node). */
  rabbitmqURL: string;
  port?: number;
}

/** Every node started by this worker, killed if the worker exits early. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export class DemoNode {
  readonly db: string;
  readonly logFile: string;
  private readonly rabbitmqURL: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  port = 0;

  constructor(options: DemoOptions) {
    this.db = options.db;
    this.logFile = options.logFile;
    this.rabbitmqURL = options.rabbitmqURL;
    this.port = options.port ?? 0;
  }

  /** The page's origin. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Starts the node (on the same port as before, after a kill) and waits until it is ready. */
  async start(): Promise<void> {
    if (this.child) throw new Error('demo node already running');
    if (!this.port) this.port = await freePort();
    const binary = process.env.MYXI_E2E_DEMO_BIN;
    if (!binary) throw new Error('MYXI_E2E_DEMO_BIN is not set: run the tests through playwright test');
    const log = openSync(this.logFile, 'a');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: String(this.port),
      MYXI_BIND_ADDRESS: '127.0.0.1',
      MYXI_DEMO_DB: this.db,
      MYXI_DRAIN_PERIOD: '500ms',
    };
    if (this.rabbitmqURL) env.RABBITMQ_URL = this.rabbitmqURL;
    const child = spawn(binary, [], { env, stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = child;
    live.add(child);
    let exitCode: number | null | undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        exitCode = code ?? (signal ? -1 : null);
        live.delete(child);
        if (this.child === child) this.child = null;
        resolve();
      });
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (exitCode !== undefined) throw new Error(`demo node exited (${exitCode}) while starting:\n${this.logTail()}`);
      if (await this.ready()) return;
      if (Date.now() > deadline) throw new Error(`demo node not ready after 20 s:\n${this.logTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Kills the node at once (SIGKILL): no drain, no close frames. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** Stops the node as an operator would (SIGTERM: drain, then exit). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** POST /api/widgets/:id as the token's user, as a script would. */
  async changeQuantity(id: number, change: { delta: number } | { quantity: number }, token = 'alice-token') {
    const response = await fetch(`${this.url}/api/widgets/${id}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(change),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`POST /api/widgets/${id}: ${response.status} ${JSON.stringify(body)}`);
    return body as { id: number; quantity: number };
  }

  /** The widget as the token's user sees it through the API. */
  async widget(id: number, token = 'alice-token') {
    const response = await fetch(`${this.url}/api/widgets`, { headers: { Authorization: `Bearer ${token}` } });
    const list = (await response.json()) as { id: number; visible: boolean; quantity?: number }[];
    const found = list.find((w) => w.id === id);
    if (!found) throw new Error(`no widget ${id}`);
    return found;
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  private async ready(): Promise<boolean> {
    try {
      const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(1000) });
      return response.ok;
    } catch {
      return false;
    }
  }
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
