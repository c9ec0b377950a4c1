// A TCP proxy in front of a demo node that can make the path of its
// WebSocket connections die silently: it stops passing their bytes, both
// ways, and closes nothing. That is what a laptop that slept, a network
// change or a proxy that drops without closing look like to a browser:
// the socket stays open, and nothing arrives (issue 11, item 7).
// `context.setOffline` is no substitute: it may not cut an open WebSocket.
import { connect, createServer, type Server, type Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket;
  /** An HTTP upgrade to WebSocket (seen in the request's first bytes). */
  websocket: boolean;
  /** The path is dead: bytes are dropped, closes are not passed on. */
  dead: boolean;
}

// The header block of the first chunk; a browser sends the upgrade's
// headers in one write.
const UPGRADE = /\r\nupgrade:[ \t]*websocket[ \t]*\r\n/i;

export class TcpProxy {
  port = 0;
  private readonly pairs = new Set<Pair>();
  private readonly server: Server;
  private deadOnArrival = 0;

  constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.accept(client));
  }

  /** The origin of a page loaded through the proxy (its socket URL follows the Host header). */
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

  /** Kills the path of every open WebSocket connection; returns how many. */
  cutWebSockets(): number {
    let n = 0;
    for (const pair of this.pairs) {
      if (pair.websocket && !pair.dead) {
        pair.dead = true;
        n++;
      }
    }
    return n;
  }

  /**
   * The next `n` WebSocket connections' paths die as soon as their upgrade
   * request arrives (the upgrade is never answered); later ones pass.
   */
  cutNextWebSockets(n: number): void {
    this.deadOnArrival = n;
  }

  /**
   * Closes every WebSocket connection at once, both ways: the browser sees
   * its socket close (1006, no close frame), the server its session end,
   * as when a network drops with a reset. Returns how many.
   */
  dropWebSockets(): number {
    let n = 0;
    for (const pair of this.pairs) {
      if (!pair.websocket) continue;
      pair.dead = true; // no close is passed on: both ends are closed here
      pair.client.destroy();
      pair.upstream.destroy();
      this.pairs.delete(pair);
      n++;
    }
    return n;
  }

  /** WebSocket connections whose bytes still pass. */
  get liveWebSockets(): number {
    return [...this.pairs].filter((p) => p.websocket && !p.dead).length;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    const upstream = connect({ host: '127.0.0.1', port: this.targetPort });
    const pair: Pair = { client, upstream, websocket: false, dead: false };
    this.pairs.add(pair);
    let first = true;
    client.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        pair.websocket = UPGRADE.test(chunk.toString('latin1'));
        if (pair.websocket && this.deadOnArrival > 0) {
          this.deadOnArrival--;
          pair.dead = true;
        }
      }
      if (!pair.dead) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!pair.dead) client.write(chunk);
    });
    // A live path passes closes on; a dead one does not (the other end
    // never learns), and keeps the browser's side open until the end.
    const end = (from: Socket, to: Socket) => () => {
      if (pair.dead) return;
      to.destroy();
      from.destroy();
      this.pairs.delete(pair);
    };
    client.on('close', end(client, upstream));
    upstream.on('close', end(upstream, client));
    client.on('error', () => {});
    upstream.on('error', () => {});
  }
}
