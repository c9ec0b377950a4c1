// Small things a newcomer noticed in the demo (issue 15): the quantity
// buttons wait for the socket, and the sign-in card leaves no empty gap.
import { test, expect, WidgetsPage } from '../support/fixtures.ts';

test('the +/- buttons are disabled while offline, and come back with the connection', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await app.signIn('alice');
  await expect(app.status(1)).toHaveText('Live');
  const inc = page.getByTestId('widget-1-inc');
  await expect(inc).toBeEnabled();

  await demo.kill();
  await expect(app.status(1)).toHaveText('Offline, reconnecting…');
  await expect(inc).toBeDisabled();
  await expect(page.getByTestId('widget-1-dec')).toBeDisabled();

  await demo.start();
  await expect(app.status(1)).toHaveText('Live', { timeout: 7_000 });
  await expect(inc).toBeEnabled();
});

test('at 1280 px the sign-in card fills its column', async ({ page, demo }) => {
  await page.setViewportSize({ width: 1280, height: 900 });
  const app = new WidgetsPage(page);
  await app.open(demo);
  const card = await page.getByTestId('signin').boundingBox();
  const column = await page.locator('.primary').boundingBox();
  const side = await page.locator('.side').boundingBox();
  expect(card && column && side).toBeTruthy();
  expect(Math.abs(card!.width - column!.width)).toBeLessThanOrEqual(1);
  // Only the layout's gap separates it from the side column.
  expect(side!.x - (card!.x + card!.width)).toBeLessThanOrEqual(32);
});

test('SayHello answers only signed-in users', async ({ page, demo }) => {
  const app = new WidgetsPage(page);
  await app.open(demo);
  await expect(app.state).toHaveAttribute('data-state', 'connected');
  await page.getByTestId('say-hello').click();
  await expect(page.getByTestId('hello-reply')).toContainText('AuthRequired');
});
