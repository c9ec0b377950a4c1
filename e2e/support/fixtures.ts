// Test fixtures: demo nodes started (and always stopped) per test, and a
// page object for the widgets page.
import { test as base, expect, type Page } from '@playwright/test';
import { DemoNode } from './demo.ts';

export { expect };

export interface NodeOptions {
  /**
   * The embedded broker even when RabbitMQ is there: its history lives in
   * the node's memory, so a restarted node has a new epoch.
   */
  embedded?: boolean;
}

export interface Nodes {
  /** Starts a node; every node of a test shares that test's database file. */
  start(options?: NodeOptions): Promise<DemoNode>;
  /** Whether nodes can share a RabbitMQ (else each has the embedded broker). */
  readonly rabbitmq: boolean;
}

export const test = base.extend<{ nodes: Nodes; demo: DemoNode }>({
  nodes: async ({}, use, testInfo) => {
    const started: DemoNode[] = [];
    const rabbitmqURL = process.env.MYXI_E2E_RABBITMQ_URL ?? '';
    await use({
      rabbitmq: rabbitmqURL !== '',
      async start(options: NodeOptions = {}) {
        const node = new DemoNode({
          db: testInfo.outputPath('widgets.db'),
          logFile: testInfo.outputPath(`node-${started.length + 1}.log`),
          rabbitmqURL: options.embedded ? '' : rabbitmqURL,
        });
        started.push(node);
        await node.start();
        return node;
      },
    });
    await Promise.all(started.map((node) => node.stop()));
    if (testInfo.status !== testInfo.expectedStatus) {
      for (const [i, node] of started.entries()) {
        await testInfo.attach(`node-${i + 1}.log`, { path: node.logFile, contentType: 'text/plain' });
      }
    }
  },
  demo: async ({ nodes }, use) => {
    await use(await nodes.start());
  },
});

/** One decoded event or action that crossed the page's WebSocket. */
export interface Frame {
  dir: 'in' | 'out';
  event?: string;
  action?: string;
  tag?: unknown;
  payload?: Record<string, unknown>;
  mq?: { e: string; rk: string; o?: number; ep?: string };
}

/** The widgets page, as a person (and a protocol analyser) sees it. */
export class WidgetsPage {
  /** Every frame of every socket the page opened, in order. */
  readonly frames: Frame[] = [];

  constructor(readonly page: Page) {
    page.on('websocket', (ws) => {
      const record = (dir: Frame['dir']) => (data: { payload: string | Buffer }) => {
        // The client asks for batched frames: one JSON object per line.
        for (const line of String(data.payload).split('\n')) {
          if (!line.trim()) continue;
          try {
            this.frames.push({ dir, ...JSON.parse(line) });
          } catch {
            this.frames.push({ dir, event: '(not JSON)', payload: { line } });
          }
        }
      };
      ws.on('framereceived', record('in'));
      ws.on('framesent', record('out'));
    });
  }

  async open(node: DemoNode): Promise<void> {
    await this.page.goto(node.url + '/');
  }

  async signIn(user: string): Promise<void> {
    await this.page.getByTestId(`signin-${user}`).click();
    await expect(this.state).toHaveAttribute('data-state', 'authenticated');
  }

  get state() {
    return this.page.getByTestId('connection-state');
  }

  quantity(id: number) {
    return this.page.getByTestId(`widget-${id}-qty`);
  }

  status(id: number) {
    return this.page.getByTestId(`widget-${id}-status`);
  }

  increment(id: number) {
    return this.page.getByTestId(`widget-${id}-inc`).click();
  }

  logEntries(event: string) {
    return this.page.getByTestId('event-log').locator(`li[data-event="${event}"]`);
  }

  received(event: string): Frame[] {
    return this.frames.filter((f) => f.dir === 'in' && f.event === event);
  }

  sent(action: string): Frame[] {
    return this.frames.filter((f) => f.dir === 'out' && f.action === action);
  }
}
