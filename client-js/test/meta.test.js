import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as Myxi from '../dist/myxi.mjs';
import { fakeWebSocket } from './fake-websocket.js';
import { useHarness } from './harness.js';

useHarness();

/** A document with the given meta tags (name → content) at the given address. */
function fakeDocument(metas, href = 'http://app.test/page') {
  return {
    location: { href },
    querySelector(selector) {
      const match = /^meta\[name="([^"]+)"\]$/.exec(selector);
      if (!match || !(match[1] in metas)) return null;
      return { getAttribute: (name) => (name === 'content' ? metas[match[1]] : null) };
    },
  };
}

test('connectFromMeta connects to the myxi-host meta tag', () => {
  const WebSocket = fakeWebSocket();
  const connection = Myxi.connectFromMeta({ WebSocket }, fakeDocument({ 'myxi-host': 'ws://localhost:5300' }));
  assert.ok(connection instanceof Myxi.Connection);
  assert.equal(connection.serverURL, 'ws://localhost:5300');
  assert.equal(WebSocket.last.url, 'ws://localhost:5300?batch=1');
});

test('connectFromMeta reads globalThis.document by default and passes the options on', (t) => {
  const WebSocket = fakeWebSocket();
  globalThis.document = fakeDocument({ 'myxi-host': 'wss://push.example/ws' });
  t.after(() => delete globalThis.document);
  const connection = Myxi.connectFromMeta({ WebSocket, batch: false });
  assert.equal(WebSocket.last.url, 'wss://push.example/ws');
  assert.equal(connection.state, 'connecting');
});

test('a relative myxi-host is taken on the page\'s host, wss: on https pages', () => {
  const WebSocket = fakeWebSocket();
  Myxi.connectFromMeta({ WebSocket, batch: false }, fakeDocument({ 'myxi-host': '/ws' }, 'https://app.test:8443/a/b'));
  assert.equal(WebSocket.last.url, 'wss://app.test:8443/ws');
  Myxi.connectFromMeta({ WebSocket, batch: false }, fakeDocument({ 'myxi-host': '/ws' }, 'http://app.test/'));
  assert.equal(WebSocket.last.url, 'ws://app.test/ws');
});

test('connectFromMeta without the tag (or without a document) says which tag is missing', (t) => {
  const WebSocket = fakeWebSocket();
  assert.throws(() => Myxi.connectFromMeta({ WebSocket }, fakeDocument({})), /myxi-host/);
  assert.throws(() => Myxi.connectFromMeta({ WebSocket }, fakeDocument({ 'myxi-host': '' })), /myxi-host/);
  const previous = globalThis.document;
  delete globalThis.document;
  t.after(() => {
    if (previous !== undefined) globalThis.document = previous;
  });
  assert.throws(() => Myxi.connectFromMeta({ WebSocket }), /myxi-host/);
  assert.equal(WebSocket.instances.length, 0);
});
