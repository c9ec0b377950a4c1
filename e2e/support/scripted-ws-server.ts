// A WebSocket server in a few lines of node:http, scripted per connection:
// each upgrade takes the next step of its script (answer with an HTTP
// status, or accept, send Welcome and close with a code, or stay open). It
// serves a page that loads the built client (client-js/dist/myxi.js), so
// that a test sees what the client does in Chromium after each close code
// of PROTOCOL.md, whatever the Go server does today.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from './paths.ts';

export type Step = { status: number } | { close: number; reason?: string } | 'stay';

export interface Attempt {
  at: number;
  step: Step;
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function frame(opcode: number, payload: Buffer): Buffer {
  // Server frames are not masked; the payloads here are short.
  if (payload.length > 125) throw new Error('frame too long for this server');
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

export class ScriptedServer {
  readonly attempts: Attempt[] = [];
  port = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly script: Step[];

  /** `options` are given to `new Myxi.Connection(url, options)` by the page. */
  constructor(script: Step[], private readonly options: object) {
    this.script = [...script];
    const client = readFileSync(join(repoRoot, 'client-js', 'dist', 'myxi.js'));
    this.server = createServer((req, res) => {
      if (req.url === '/myxi.js') {
        res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' }).end(client);
      } else if (req.url === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(this.page());
      } else {
        res.writeHead(404).end();
      }
    });
    this.server.on('upgrade', (req, socket: Socket) => this.upgrade(req.headers['sec-websocket-key'], socket));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        const address = this.server.address();
        if (typeof address === 'object' && address) this.port = address.port;
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // The page records every close the client reports, with the page's time.
  private page(): string {
    return `<!doctype html><meta charset="utf-8"><script src="/myxi.js"></script>
<script>
  window.closes = [];
  window.disconnects = 0;
  window.myxi = new Myxi.Connection('ws://127.0.0.1:${this.port}/', ${JSON.stringify(this.options)})
    .on('SocketClosed', (info) => window.closes.push(info))
    .on('SocketDisconnected', () => window.disconnects++);
</script>`;
  }

  private upgrade(key: string | undefined, socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    const step = this.script.shift() ?? 'stay';
    this.attempts.push({ at: Date.now(), step });
    if (typeof step === 'object' && 'status' in step) {
      socket.end(`HTTP/1.1 ${step.status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    const accept = createHash('sha1').update(`${key}${GUID}`).digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const id = (this.attempts.length + '').padStart(16, '0');
    socket.write(frame(0x1, Buffer.from(JSON.stringify({ event: 'Welcome', tag: null, payload: { id } }))));
    if (step === 'stay') return;
    const body = Buffer.alloc(2 + Buffer.byteLength(step.reason ?? ''));
    body.writeUInt16BE(step.close, 0);
    body.write(step.reason ?? '', 2);
    socket.write(frame(0x8, body));
    // The browser answers with its Close; then the TCP connection ends.
    socket.once('data', () => socket.end());
    setTimeout(() => socket.destroy(), 2_000).unref();
  }
}
