// The demo process dies and comes back on the same port: the page notices,
// reconnects on the client's 5 s retry, authenticates again, resubscribes.
import { test, expect, WidgetsPage } from '../support/fixtures.ts';

const RETRY_INTERVAL = 5_000; // the client's default, as in myxi 1.x

test('after the server is killed and restarted, the page reconnects, re-authenticates and resubscribes', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await app.signIn('alice');
  await expect(app.status(1)).toHaveText('Live');
  const firstSession = await page.getByTestId('session-id').textContent();

  await demo.kill();
  await expect(app.state).toHaveAttribute('data-state', 'reconnecting');
  await expect(app.state).toHaveText('Reconnecting…');
  await expect(app.status(1)).toHaveText('Offline, reconnecting…');
  await expect(app.logEntries('Disconnected')).toHaveCount(1);

  await demo.start();
  const restarted = Date.now();
  // A change made while the page is still away: the page catches up once
  // it is back, by a replay where the history outlived the process (a
  // broker that keeps it), else by reloading (RecoveryFailed, or an
  // exchange without history).
  await demo.changeQuantity(1, { quantity: 30 }, 'bob-token');
  expect(await app.state.getAttribute('data-state')).toBe('reconnecting');

  await expect(app.state).toHaveAttribute('data-state', 'authenticated', { timeout: RETRY_INTERVAL + 1_000 });
  const reconnectedIn = Date.now() - restarted;
  test.info().annotations.push({ type: 'reconnected after restart', description: `${reconnectedIn} ms` });
  await expect(page.getByTestId('session-id')).not.toHaveText(firstSession ?? '');
  expect(app.sent('Authenticate')).toHaveLength(2);
  expect(app.received('Welcome')).toHaveLength(2);
  for (const id of [1, 2, 3, 5]) {
    await expect(app.status(id)).toHaveText('Live');
  }
  await expect(app.quantity(1)).toHaveText('30');

  // The next change arrives live on the new connection.
  await demo.changeQuantity(1, { delta: 1 }, 'bob-token');
  await expect(app.quantity(1)).toHaveText('31', { timeout: 1000 });
  expect(app.received('WidgetQtyChanged').at(-1)?.payload).toEqual({ quantity: 31 });
});
