// The script build (dist/myxi.js), as a page's <script src="/myxi.js"> runs
// it: in a fresh global scope with a WebSocket global, defining `Myxi`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { fakeWebSocket } from './fake-websocket.js';

const script = readFileSync(new URL('../dist/myxi.js', import.meta.url), 'utf8');

function browserLike(extra = {}) {
  const WebSocket = fakeWebSocket();
  const context = vm.createContext({ WebSocket, console, setTimeout, clearTimeout, URL, ...extra });
  vm.runInContext(script, context, { filename: 'myxi.js' });
  return { Myxi: context.Myxi, WebSocket, context };
}

test('defines the global Myxi with Connection, Subscription, MyxiError and connectFromMeta', () => {
  const { Myxi } = browserLike();
  assert.equal(typeof Myxi, 'object');
  assert.equal(typeof Myxi.Connection, 'function');
  assert.equal(typeof Myxi.Subscription, 'function');
  assert.equal(typeof Myxi.Subscription.keyFor, 'function');
  assert.equal(typeof Myxi.MyxiError, 'function');
  assert.equal(typeof Myxi.connectFromMeta, 'function');
});

test('adds to a Myxi object another script made, as 1.x did', () => {
  const existing = { mine: true };
  const { Myxi } = browserLike({ Myxi: existing });
  assert.equal(Myxi, existing);
  assert.equal(Myxi.mine, true);
  assert.equal(typeof Myxi.Connection, 'function');
});

test('the minified client works end to end on the page\'s WebSocket', () => {
  const { Myxi, WebSocket } = browserLike();
  const webSocket = new Myxi.Connection('ws://localhost:5300');
  webSocket.authentication(() => {
    webSocket.on('Authenticated', () => webSocket.isAuthenticated());
    webSocket.sendAction('Authenticate', { sessionID: 's' });
  });
  const subscription = webSocket.subscribe('myChannel', 1234);
  const got = [];
  subscription.on('someEvent', (payload) => got.push(payload.n));
  const socket = WebSocket.last;
  assert.equal(socket.url, 'ws://localhost:5300?batch=1');
  socket.open();
  socket.receive({ event: 'Authenticated', tag: null, payload: {} });
  const subscribe = socket.lastAction('Subscribe');
  socket.receive(
    { event: 'Subscribed', tag: subscribe.tag, payload: subscribe.payload },
    { event: 'someEvent', tag: null, payload: { n: 1 }, mq: { e: 'myChannel', rk: '1234' } },
  );
  assert.equal(subscription.subscribed, true);
  assert.deepEqual(got, [1]);
  assert.equal(webSocket.subscriptions['myChannel::1234'], subscription);
  assert.equal(subscription.unsubscribe(), true);
  assert.equal(webSocket.subscriptions['myChannel::1234'], undefined);
  assert.equal(webSocket.state, 'authenticated');
  webSocket.disconnect();
  assert.equal(webSocket.state, 'closed');
});

test('stays under its size budget of 8 KB', () => {
  assert.ok(Buffer.byteLength(script) < 8 * 1024, `${Buffer.byteLength(script)} bytes`);
  assert.match(script, /\n\/\/# sourceMappingURL=myxi\.js\.map\n$/);
});
