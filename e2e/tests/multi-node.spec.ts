// Two demo nodes on one RabbitMQ, sharing the widgets database file: a
// change made through node B reaches a page connected to node A.
import { test, expect, WidgetsPage } from '../support/fixtures.ts';

test('a change through node B reaches a page on node A', async ({ browser, nodes }) => {
  test.skip(!nodes.rabbitmq, 'needs RabbitMQ (set RABBITMQ_URL); CI fails instead of skipping');
  const nodeA = await nodes.start();
  const nodeB = await nodes.start();
  const onA = new WidgetsPage(await (await browser.newContext()).newPage());
  const onB = new WidgetsPage(await (await browser.newContext()).newPage());
  await onA.open(nodeA);
  await onB.open(nodeB);
  await onA.signIn('alice');
  await onB.signIn('carol');
  const nodeIdA = await onA.page.getByTestId('node-id').textContent();
  await expect(onB.page.getByTestId('node-id')).not.toHaveText(nodeIdA ?? '');
  await expect(onA.page.getByTestId('broker')).toContainText('RabbitMQ');
  await expect(onA.status(5)).toHaveText('Live');
  await expect(onB.status(5)).toHaveText('Live');

  // Through node B's HTTP API (a script)...
  await nodeB.changeQuantity(5, { quantity: 21 }, 'carol-token');
  await expect(onA.quantity(5)).toHaveText('21', { timeout: 1000 });

  // ...and through a click on a page of node B.
  await onB.increment(5);
  await expect(onA.quantity(5)).toHaveText('22', { timeout: 1000 });
  await expect(onB.quantity(5)).toHaveText('22', { timeout: 1000 });

  // Both nodes read the same database file.
  expect((await nodeA.widget(5)).quantity).toBe(22);
});
