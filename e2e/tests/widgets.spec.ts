// The widgets page against one real demo node, in Chromium.
import { test, expect, WidgetsPage } from '../support/fixtures.ts';

// What the seed data lets alice see (see demo/seed.go).
const aliceSees = [1, 2, 3, 5];
const aliceMayNotSee = [4, 6];

test('the page loads /myxi.js through the meta tag, gets Welcome, authenticates and subscribes', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  const script = page.waitForResponse((r) => new URL(r.url()).pathname === '/myxi.js');
  await app.open(demo);
  expect((await script).status()).toBe(200);
  await expect(page.locator('meta[name="myxi-host"]')).toHaveAttribute('content', `ws://127.0.0.1:${demo.port}/`);
  expect(await page.evaluate(() => typeof (window as any).Myxi?.Connection)).toBe('function');

  // Connected before signing in: Welcome carries the session id.
  await expect(app.state).toHaveAttribute('data-state', 'connected');
  await expect(app.logEntries('Welcome')).toHaveCount(1);
  await expect(page.getByTestId('session-id')).toHaveText(/^[0-9a-f]{16}$/);
  expect(app.received('Welcome')[0].payload?.id).toMatch(/^[0-9a-f]{16}$/);

  await app.signIn('alice');
  await expect(app.state).toHaveText('Authenticated');
  await expect(page.getByTestId('account-name')).toHaveText('Alice Archer');
  expect(app.sent('Authenticate')[0].payload).toEqual({ session_token: 'alice-token' });
  expect(app.received('Authenticated')[0].payload).toEqual({ username: 'alice' });

  for (const id of aliceSees) {
    await expect(app.status(id)).toHaveText('Live');
  }
  const subscribed = app.received('Subscribed').map((f) => f.payload?.routing_key);
  expect(subscribed.sort()).toEqual(aliceSees.map(String));
  // Subscriptions were sent only once the server had authenticated the session.
  const authAt = app.frames.findIndex((f) => f.event === 'Authenticated');
  const firstSubscribe = app.frames.findIndex((f) => f.action === 'Subscribe');
  expect(firstSubscribe).toBeGreaterThan(authAt);
  expect(await page.evaluate(() => (window as any).myxi.subscriptions['widgets::1'].subscribed)).toBe(true);
});

test('a quantity changed in one browser context shows up in a second one within a second', async ({ browser, demo }) => {
  const alice = new WidgetsPage(await (await browser.newContext()).newPage());
  const bob = new WidgetsPage(await (await browser.newContext()).newPage());
  for (const [app, user] of [[alice, 'alice'], [bob, 'bob']] as const) {
    await app.open(demo);
    await app.signIn(user);
    await expect(app.status(1)).toHaveText('Live');
  }
  await expect(bob.quantity(1)).toHaveText('12');

  // A click in alice's window...
  await alice.increment(1);
  // ...reaches bob's within a second, pushed as the README's event.
  await expect(bob.quantity(1)).toHaveText('13', { timeout: 1000 });
  await expect(alice.quantity(1)).toHaveText('13', { timeout: 1000 });
  const pushed = bob.received('WidgetQtyChanged').at(-1);
  expect(pushed).toMatchObject({ payload: { quantity: 13 }, mq: { e: 'widgets', rk: '1' }, tag: null });

  // A script changing it through the HTTP API reaches both windows too.
  await demo.changeQuantity(1, { quantity: 40 }, 'bob-token');
  await expect(alice.quantity(1)).toHaveText('40', { timeout: 1000 });
  await expect(bob.quantity(1)).toHaveText('40', { timeout: 1000 });
  await expect(bob.logEntries('WidgetQtyChanged')).toHaveCount(2);
});

test('a widget the user may not see is refused and the page says so', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await app.signIn('alice');

  for (const id of aliceMayNotSee) {
    await expect(app.status(id)).toHaveText('You may not see this widget');
    await expect(page.getByTestId(`widget-${id}`)).toHaveAttribute('data-status', 'denied');
    await expect(page.getByTestId(`widget-${id}-inc`)).toBeDisabled();
  }
  const denied = app.received('Error').filter((f) => f.payload?.error === 'SubscriptionDenied');
  expect(denied.map((f) => f.payload?.routing_key).sort()).toEqual(aliceMayNotSee.map(String));
  expect(denied[0].payload?.exchange).toBe('widgets');
  // The client dropped the refused subscriptions; the others stay.
  const keys = await page.evaluate(() => Object.keys((window as any).myxi.subscriptions).sort());
  expect(keys).toEqual(aliceSees.map((id) => `widgets::${id}`));

  // Bob changing his private widget 4 tells alice nothing: when her next
  // event (widget 1, pushed after it) arrives, none came for widget 4.
  await demo.changeQuantity(4, { delta: 1 }, 'bob-token');
  await demo.changeQuantity(1, { delta: 1 }, 'bob-token');
  await expect(app.quantity(1)).toHaveText('13');
  expect(app.received('WidgetQtyChanged').map((f) => f.mq?.rk)).toEqual(['1']);
  await expect(app.quantity(4)).toHaveText('—');
});

test('an unknown session token is refused', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await page.getByTestId('token-input').fill('not-a-token');
  await page.getByTestId('token-input').press('Enter');
  await expect(page.getByTestId('signin-error')).toContainText('not valid');
  await expect(app.state).toHaveAttribute('data-state', 'connected');

  // Over the socket, Authenticate answers the README's error, with the tag.
  const answer = await page.evaluate(() =>
    (window as any).myxi.request('Authenticate', { session_token: 'not-a-token' }).then(
      () => 'accepted',
      (error: { error: string }) => error.error,
    ),
  );
  expect(answer).toBe('InvalidSessionToken');
  const error = app.received('Error').at(-1);
  expect(error?.payload).toEqual({ error: 'InvalidSessionToken' });
  expect(error?.tag).toBe(app.sent('Authenticate').at(-1)?.tag);

  // A valid token typed in the form signs in; signing out starts afresh.
  await page.getByTestId('token-input').fill('bob-token');
  await page.getByTestId('token-input').press('Enter');
  await expect(app.state).toHaveAttribute('data-state', 'authenticated');
  await expect(page.getByTestId('account-name')).toHaveText('Bob Baker');
  await page.getByTestId('signout').click();
  await expect(page.getByTestId('signin')).toBeVisible();
  await expect(app.state).toHaveAttribute('data-state', 'connected');
});

test('SayHello round trip', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await app.signIn('carol');
  const before = Date.now();
  await page.getByTestId('say-hello').click();
  await expect(page.getByTestId('hello-reply')).toContainText('HelloThere!');

  const sent = app.sent('SayHello').at(-1);
  const reply = app.received('HelloThere').at(-1);
  expect(reply?.tag).toEqual(sent?.tag);
  expect(reply?.tag).not.toBeNull();
  const serverTime = Date.parse(String(reply?.payload?.time));
  expect(serverTime).toBeGreaterThanOrEqual(before - 5000);
  expect(serverTime).toBeLessThanOrEqual(Date.now() + 5000);
});
