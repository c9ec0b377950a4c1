// A WebSocket whose path dies silently (issue 11, item 7): the browser sees
// no close, and Chromium's own ws.close() would then wait about a minute
// for a closing handshake that never comes. The client's liveness check
// notices (Ping after 20 s of silence, nothing within 10 s), settles the
// close itself, reconnects, and the page works again. Its connect timeout
// gives up an attempt whose upgrade is never answered.
//
// It relies only on what the demo does today: the page loaded through a TCP
// proxy connects its socket through it (the meta tag follows the Host).
import { test, expect, WidgetsPage } from '../support/fixtures.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';

// The client's defaults (client-js/README.md, Liveness).
const PING_INTERVAL = 20_000;
const PING_TIMEOUT = 10_000;
const CONNECT_TIMEOUT = 10_000;
const RECONNECT_DELAY = 5_000;

interface Close {
  code: number;
  reason: string;
  reconnectIn: number | null;
  at: number;
}

test('a socket whose path dies silently is given up, and the page reconnects and works again', async ({ page, demo }) => {
  test.setTimeout(150_000);
  const proxy = new TcpProxy(demo.port);
  await proxy.start();
  try {
    const app = new WidgetsPage(page);
    const socketClosedByBrowser: string[] = [];
    page.on('websocket', (ws) => ws.on('close', () => socketClosedByBrowser.push(ws.url())));

    await page.goto(proxy.url + '/');
    await expect(page.locator('meta[name="myxi-host"]')).toHaveAttribute('content', `ws://127.0.0.1:${proxy.port}/`);
    await app.signIn('alice');
    await expect(app.status(1)).toHaveText('Live');
    const firstSession = await page.getByTestId('session-id').textContent();
    await page.evaluate(() => {
      const w = window as any;
      w.closes = [];
      w.myxi.on('SocketClosed', (info: object) => w.closes.push({ ...info, at: Date.now() }));
    });
    const closes = () => page.evaluate(() => (window as any).closes as Close[]);

    // The path dies: nothing passes either way, nobody is told.
    expect(proxy.cutWebSockets()).toBe(1);
    proxy.cutNextWebSockets(1);
    const cutAt = await page.evaluate(() => Date.now());
    // A change made now cannot reach the page over that socket.
    await demo.changeQuantity(1, { quantity: 40 }, 'bob-token');

    // Noticed by the liveness check: at most pingInterval + pingTimeout
    // after the last frame, which came before the cut.
    await expect(app.state).toHaveAttribute('data-state', 'reconnecting', { timeout: PING_INTERVAL + PING_TIMEOUT + 5_000 });
    const [dead] = await closes();
    expect(dead).toMatchObject({ code: 1006, reason: 'ping timeout', reconnectIn: RECONNECT_DELAY });
    expect(dead.at - cutAt).toBeLessThanOrEqual(PING_INTERVAL + PING_TIMEOUT + 1_000);
    test.info().annotations.push({ type: 'dead path noticed after', description: `${dead.at - cutAt} ms` });
    // The client asked for a Pong over the dead socket, and got nothing.
    expect(app.sent('Ping').length).toBeGreaterThanOrEqual(1);
    // The client did not wait for Chromium to close that socket.
    expect(socketClosedByBrowser).toEqual([]);
    await expect(app.status(1)).toHaveText('Offline, reconnecting…');

    // The next attempt's upgrade is swallowed too: the connect timeout gives it up.
    await expect.poll(async () => (await closes()).length, { timeout: RECONNECT_DELAY + CONNECT_TIMEOUT + 5_000 }).toBe(2);
    const [, attempt] = await closes();
    expect(attempt).toMatchObject({ code: 1006, reason: 'connect timeout' });
    expect(attempt.at - dead.at).toBeGreaterThanOrEqual(RECONNECT_DELAY + CONNECT_TIMEOUT - 500);
    // A failed attempt backs off: from reconnectDelay, with full jitter.
    expect(attempt.reconnectIn).toBeGreaterThanOrEqual(0);
    expect(attempt.reconnectIn).toBeLessThan(RECONNECT_DELAY);

    // The network is back for the attempt after (the proxy swallowed one
    // upgrade only): the page reconnects, authenticates, resubscribes,
    // catches up and gets changes live again.
    await expect(app.state).toHaveAttribute('data-state', 'authenticated', { timeout: RECONNECT_DELAY + 5_000 });
    expect(proxy.liveWebSockets).toBe(1);
    await expect(page.getByTestId('session-id')).not.toHaveText(firstSession ?? '');
    for (const id of [1, 2, 3, 5]) {
      await expect(app.status(id)).toHaveText('Live');
    }
    await expect(app.quantity(1)).toHaveText('40');
    await demo.changeQuantity(1, { delta: 1 }, 'bob-token');
    await expect(app.quantity(1)).toHaveText('41', { timeout: 2_000 });
    expect(await closes()).toHaveLength(2);
  } finally {
    await proxy.close();
  }
});
