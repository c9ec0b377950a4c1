// The client in Node on the `ws` package, against a small scripted server
// speaking the protocol over real sockets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
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
