// The script build (dist/myxi.js), as a page's <script src="/myxi.js"> runs
// it: in a fresh global scope with a WebSocket global, defining `Myxi`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
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

// Issue 11: 10 KiB minified, 4 KiB gzipped, for the liveness work and the
// recovery that follows. A page pays for every byte before anything happens.
test('stays within its size budget: 10,240 bytes minified, 4,096 gzipped', () => {
  const size = Buffer.byteLength(script);
  const gzipped = gzipSync(script, { level: 9 }).length;
  assert.ok(size <= 10240, `myxi.js is ${size} bytes, over 10,240`);
  assert.ok(gzipped <= 4096, `myxi.js is ${gzipped} bytes gzipped, over 4,096`);
  // What the server sends to browsers that accept gzip.
  const served = readFileSync(new URL('../dist/myxi.js.gz', import.meta.url));
  assert.ok(served.length <= 4096, `myxi.js.gz is ${served.length} bytes, over 4,096`);
  assert.match(script, /\n\/\/# sourceMappingURL=myxi\.js\.map\n$/);
});

test('the gzipped copies the server sends are the bundles, with no name or time in their header', () => {
  for (const name of ['myxi.js', 'myxi.mjs']) {
    const gz = readFileSync(new URL(`../dist/${name}.gz`, import.meta.url));
    assert.deepEqual(gunzipSync(gz), readFileSync(new URL(`../dist/${name}`, import.meta.url)), name);
    assert.equal(gz[3] & 0x1e, 0, `${name}.gz: no name, comment or extra field`);
    assert.equal(gz.readUInt32LE(4), 0, `${name}.gz: no time`);
  }
});

test('on() and off() chain in the script build too (issue 15)', () => {
  const { Myxi, WebSocket } = browserLike();
  const connection = new Myxi.Connection('ws://localhost:5300');
  const seen = [];
  const listener = (payload) => seen.push(payload.n);
  const subscription = connection.on('SocketConnected', () => seen.push('up')).subscribe('w', 1).on('E', listener);
  WebSocket.last.open();
  WebSocket.last.receive({ event: 'E', payload: { n: 1 }, mq: { e: 'w', rk: '1' } });
  subscription.off('E', listener).on('E', () => seen.push('other'));
  WebSocket.last.receive({ event: 'E', payload: { n: 2 }, mq: { e: 'w', rk: '1' } });
  assert.deepEqual(seen, ['up', 1, 'other']);
  connection.disconnect();
});
