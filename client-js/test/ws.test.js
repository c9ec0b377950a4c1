// The client in Node on the `ws` package, against a small scripted server
// speaking the protocol over real sockets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import * as Myxi from '../dist/myxi.mjs';

/** A server that welcomes, answers Subscribe and Ping, and records what it saw. */
async function scriptedServer(t) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  const seen = { urls: [], actions: [], sockets: [], closed: [] };
  server.on('connection', (socket, request) => {
    seen.urls.push(request.url);
    seen.sockets.push(socket);
    seen.closed.push(once(socket, 'close').then(([code]) => code));
    socket.send(JSON.stringify({ event: 'Welcome', tag: null, payload: { id: `s${seen.urls.length}` } }));
    socket.on('message', (data) => {
      const action = JSON.parse(String(data));
      seen.actions.push(action);
      const reply = (event, payload) => JSON.stringify({ event, tag: action.tag ?? null, payload });
      if (action.action === 'Subscribe') {
        const { exchange, routing_key } = action.payload;
        // A batched frame: the answer and an event right behind it.
        socket.send(
          reply('Subscribed', { exchange, routing_key }) + '\n' +
          JSON.stringify({ event: 'Hello', tag: null, payload: { to: routing_key }, mq: { e: exchange, rk: String(routing_key) } }),
        );
      } else if (action.action === 'Ping') {
        socket.send(reply('Pong', { time: 1 }));
      }
    });
  });
  t.after(() => {
    // ws leaves connections open on close(): end them, or close() waits on them.
    for (const client of server.clients) client.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  return { url: `ws://127.0.0.1:${server.address().port}/`, seen };
}

/** Resolves with the arguments of the next `event` of the connection. */
function next(connection, event) {
  return new Promise((resolve) => {
    connection.on(event, function once(...args) {
      connection.off(event, once);
      resolve(args);
    });
  });
}

test('connects, subscribes, receives, requests, reconnects and disconnects with ws', { timeout: 10000 }, async (t) => {
  const { url, seen } = await scriptedServer(t);
  const connection = new Myxi.Connection(url, { WebSocket, reconnectDelay: 20 });
  t.after(() => connection.disconnect());
  const subscription = connection.subscribe('widgets', 42);
  const hello = new Promise((resolve) => subscription.on('Hello', resolve));

  await next(connection, 'SocketConnected');
  assert.equal(seen.urls[0], '/?batch=1');
  assert.deepEqual(await hello, { to: 42 });
  assert.equal(subscription.subscribed, true);
  assert.equal(connection.sessionId, 's1');

  const pong = await connection.request('Ping');
  assert.equal(pong.event, 'Pong');

  // The server goes away; the client comes back and subscribes again.
  const resubscribed = new Promise((resolve) => {
    subscription.on('Subscribed', function once() {
      subscription.off('Subscribed', once);
      resolve();
    });
  });
  // 4002: the application closed the session and wants the client back.
  seen.sockets[0].close(4002, 'log in again');
  const [info] = await next(connection, 'SocketDisconnected');
  assert.equal(info.code, 4002);
  assert.equal(info.reason, 'log in again');
  assert.ok(info.reconnectIn >= 10 && info.reconnectIn < 30, `jittered around 20 ms: ${info.reconnectIn}`);
  await resubscribed;
  assert.equal(connection.sessionId, 's2');
  assert.equal(seen.actions.filter((a) => a.action === 'Subscribe').length, 2);

  connection.disconnect();
  assert.equal(await seen.closed[1], 1000, 'the server sees a normal close');
});

/** A TCP server that accepts connections and never answers: a dead path, or a stuck upgrade. */
async function silentServer(t) {
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return { url: `ws://127.0.0.1:${server.address().port}/`, sockets };
}

test('with ws: an upgrade that is never answered is given up after connectTimeout, quietly', { timeout: 10000 }, async (t) => {
  const { url, sockets } = await silentServer(t);
  const errors = [];
  const connection = new Myxi.Connection(url, {
    WebSocket,
    connectTimeout: 100,
    reconnectDelay: 60000,
    onCallbackError: (error) => errors.push(error),
  });
  t.after(() => connection.disconnect());
  const started = Date.now();
  const [info] = await next(connection, 'SocketClosed');
  assert.equal(info.code, 1006);
  assert.equal(info.reason, 'connect timeout');
  assert.ok(Date.now() - started >= 90, 'not before the timeout');
  assert.equal(sockets.size, 1);
  assert.equal(connection.state, 'closed');
  // The abandoned socket's own error and close events come and go unheard.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(errors, []);
});

test('with ws: a server that goes silent after the handshake is given up after pingInterval + pingTimeout', { timeout: 10000 }, async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(server, 'listening');
  const raw = [];
  server.on('connection', (socket, request) => {
    raw.push(request.socket);
    // It answers nothing: not the Ping, not the Close.
    request.socket.pause();
  });
  t.after(() => {
    for (const socket of raw) socket.destroy();
    for (const client of server.clients) client.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  const connection = new Myxi.Connection(`ws://127.0.0.1:${server.address().port}/`, {
    WebSocket,
    pingInterval: 100,
    pingTimeout: 100,
    reconnectDelay: 60000,
  });
  t.after(() => connection.disconnect());
  await next(connection, 'SocketConnected');
  const opened = Date.now();
  const [info] = await next(connection, 'SocketDisconnected');
  assert.deepEqual(info, { code: 1006, reason: 'ping timeout', reconnectIn: 60000 });
  assert.ok(Date.now() - opened >= 190, `after ${Date.now() - opened} ms`);
});
