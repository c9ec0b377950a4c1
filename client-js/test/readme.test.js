// The README's safe pattern for missed events ("Missed events (history)"),
// run as written against a scripted server: first load, a recovered
// reconnect, a failed recovery, and a page reload from sessionStorage.

import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as Myxi from '../dist/myxi.mjs';
import { fakeWebSocket } from './fake-websocket.js';
import { assertQuiet, useHarness } from './harness.js';

const logged = useHarness();

/** The first js block after `heading` in client-js/README.md. */
function block(heading) {
  const text = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const at = text.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has ${heading}`);
  const start = text.indexOf('```js\n', at) + '```js\n'.length;
  return text.slice(start, text.indexOf('```', start));
}

const code = block('## Missed events (history)');

/** A page: runs the README's block on a new connection, with the given storage. */
function page(sessionStorage) {
  const WebSocket = fakeWebSocket();
  const webSocket = new Myxi.Connection('ws://myxi.test/', { WebSocket, reconnectDelay: 100 });
  const loads = [];
  const rendered = [];
  const loadWidget = (id) => new Promise((resolve) => loads.push({ id, resolve }));
  const render = (widget) => rendered.push(widget.quantity);
  new Function('webSocket', 'loadWidget', 'render', 'sessionStorage', code)(webSocket, loadWidget, render, sessionStorage);
  WebSocket.last.open();
  return { WebSocket, socket: () => WebSocket.last, loads, rendered };
}

function storage() {
  const items = new Map();
  return { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)) };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

function subscribed(socket, extra) {
  const { tag, payload } = socket.lastAction('Subscribe');
  const { since, ...echo } = payload;
  socket.receive({ event: 'Subscribed', tag, payload: { ...echo, ...extra } });
  return since;
}

const qty = (o, quantity, ep = 'A') => ({
  event: 'WidgetQtyChanged',
  tag: null,
  payload: { quantity },
  mq: { e: 'widgets', rk: '42', o, ep },
});

test('the README\'s safe pattern keeps the state right through reconnects and reloads', async () => {
  const store = storage();
  const { socket, loads, rendered } = page(store);
  assert.equal(subscribed(socket(), { epoch: 'A', offset: 7 }), undefined);
  assert.equal(loads.length, 1, 'loads the state once subscribed');
  socket().receive(qty(8, 2)); // arrives while loading: queued
  loads[0].resolve({ quantity: 1 });
  await settle();
  assert.deepEqual(rendered, [2, 2]);
  assert.deepEqual(JSON.parse(store.getItem('widget-42')), { widget: { quantity: 2 }, position: { epoch: 'A', offset: 8 } });

  // Reconnect: resumes from 8, the server replays 9 and 10, then 11 is live. No load.
  socket().drop(1006);
  mock.timers.tick(100);
  socket().open();
  assert.deepEqual(subscribed(socket(), { recovered: true, epoch: 'A', offset: 10 }), { epoch: 'A', offset: 8 });
  socket().receive(qty(9, 3), qty(10, 4), qty(10, 4), qty(11, 5));
  assert.equal(loads.length, 1);
  assert.deepEqual(rendered.slice(2), [3, 4, 5]);

  // Reconnect, and the server cannot recover: loads again, events meanwhile are queued.
  socket().drop(1006);
  mock.timers.tick(100);
  socket().open();
  assert.deepEqual(subscribed(socket(), { recovered: false, epoch: 'B', offset: 3 }), { epoch: 'A', offset: 11 });
  assert.equal(loads.length, 2);
  socket().receive(qty(4, 7, 'B'));
  loads[1].resolve({ quantity: 6 });
  await settle();
  assert.deepEqual(rendered.slice(5), [7, 7]);
  assert.deepEqual(JSON.parse(store.getItem('widget-42')), { widget: { quantity: 7 }, position: { epoch: 'B', offset: 4 } });

  // A page reload resumes from the stored state and position.
  const reloaded = page(store);
  assert.deepEqual(subscribed(reloaded.socket(), { recovered: true, epoch: 'B', offset: 5 }), { epoch: 'B', offset: 4 });
  reloaded.socket().receive(qty(5, 8, 'B'));
  assert.equal(reloaded.loads.length, 0, 'nothing to load');
  assert.deepEqual(reloaded.rendered, [8]);
  assertQuiet(logged);
});

test('a load overtaken by a newer one is dropped', async () => {
  const { socket, loads, rendered } = page(storage());
  subscribed(socket(), { epoch: 'A', offset: 7 });
  socket().drop(1006);
  mock.timers.tick(100);
  socket().open();
  subscribed(socket(), { recovered: false, epoch: 'A', offset: 9 });
  assert.equal(loads.length, 2);
  loads[1].resolve({ quantity: 9 });
  await settle();
  loads[0].resolve({ quantity: 7 }); // the older answer comes last
  await settle();
  assert.deepEqual(rendered, [9]);
});
