// What the client does in Chromium after each close code of PROTOCOL.md
// (issue 11, items 4 and 6), against a scripted server: it reconnects at
// once-ish after 1000 from the server, spreads its return after 1001,
// 4000 and 4002, backs off after 1002, 1007, 1008, 1009, 1011, 1013 and an
// HTTP 503 at the upgrade (which the page sees as 1006), and does not come
// back after 4001. The page's Math.random is fixed at 0.9, so that the
// delays are known: with reconnectDelay 200, a fixed delay is 200, a
// jittered one 200 x 1.4 = 280, a backoff 0.9 x 200 x 2^n.
import { test, expect } from '../support/fixtures.ts';
import { ScriptedServer, type Step } from '../support/scripted-ws-server.ts';

interface Close {
  code: number;
  reason: string;
  reconnectIn: number | null;
}

async function run(page: import('@playwright/test').Page, script: Step[]) {
  const server = new ScriptedServer(script, { reconnectDelay: 200, pingInterval: 0 });
  await server.start();
  await page.addInitScript(() => {
    Math.random = () => 0.9;
  });
  await page.goto(server.url + '/');
  const closes = () => page.evaluate(() => (window as any).closes as Close[]);
  return { server, closes };
}

test('1000 from the server, 1001, 4000 and 4002: reconnect; 4001: never again', async ({ page }) => {
  const script: Step[] = [
    { close: 1000 },
    { close: 1001, reason: 'draining' },
    { close: 4000, reason: 'idle' },
    { close: 4002, reason: 'log in again' },
    { close: 4001, reason: 'terminated' },
  ];
  const { server, closes } = await run(page, script);
  try {
    await expect.poll(async () => (await closes()).length, { timeout: 10_000 }).toBe(5);
    expect(await closes()).toEqual([
      { code: 1000, reason: '', reconnectIn: 200 },
      { code: 1001, reason: 'draining', reconnectIn: 280 },
      { code: 4000, reason: 'idle', reconnectIn: 280 },
      { code: 4002, reason: 'log in again', reconnectIn: 280 },
      { code: 4001, reason: 'terminated', reconnectIn: null },
    ]);
    expect(await page.evaluate(() => (window as any).disconnects)).toBe(5);
    // Each return waited for its delay.
    for (let i = 1; i < server.attempts.length; i++) {
      const gap = server.attempts[i].at - server.attempts[i - 1].at;
      expect(gap, `attempt ${i + 1}`).toBeGreaterThanOrEqual(i === 1 ? 200 : 280);
    }
    // After 4001 nothing comes back, long past the delays above.
    await page.waitForTimeout(2_000);
    expect(server.attempts).toHaveLength(5);
    expect(await page.evaluate(() => (window as any).myxi.state)).toBe('closed');
    // Until the application decides otherwise.
    await page.evaluate(() => (window as any).myxi.connect());
    await expect.poll(() => page.evaluate(() => (window as any).myxi.state)).toBe('open');
  } finally {
    await server.close();
  }
});

test('1002, 1007, 1008, 1009, 1011, 1013 and an HTTP 503: back off, growing, then connect', async ({ page }) => {
  const script: Step[] = [
    { close: 1002 },
    { close: 1007 },
    { close: 1008, reason: 'too slow' },
    { status: 503 },
    { close: 1009 },
    { close: 1011 },
    { close: 1013, reason: 'overloaded' },
    'stay',
  ];
  const { server, closes } = await run(page, script);
  try {
    await expect.poll(async () => (await closes()).length, { timeout: 30_000 }).toBe(7);
    const seen = await closes();
    expect(seen.map((c) => c.code)).toEqual([1002, 1007, 1008, 1006, 1009, 1011, 1013]);
    // 0.9 x 200, doubling: the backoff grows across codes and the 503.
    expect(seen.map((c) => c.reconnectIn)).toEqual([180, 360, 720, 1440, 2880, 5760, 11520]);
    // The 503 was a failed attempt: no SocketDisconnected for it.
    expect(await page.evaluate(() => (window as any).disconnects)).toBe(6);
    await expect.poll(() => page.evaluate(() => (window as any).myxi.state), { timeout: 15_000 }).toBe('open');
    expect(server.attempts).toHaveLength(8);
    const gaps = server.attempts.slice(1).map((a, i) => a.at - server.attempts[i].at);
    seen.forEach((c, i) => expect(gaps[i], `after ${c.code}`).toBeGreaterThanOrEqual(c.reconnectIn! - 20));
  } finally {
    await server.close();
  }
});
