import { describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import * as Myxi from '../dist/myxi.mjs';
import { fakeWebSocket, openConnection } from './fake-websocket.js';
import { useHarness } from './harness.js';

useHarness();

/** Tracks a promise's outcome synchronously observable after a microtask turn. */
function watch(promise) {
  const state = { settled: false, value: undefined, error: undefined };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

async function rejection(promise, error) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof Myxi.MyxiError);
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'MyxiError');
    assert.equal(e.error, error);
    return true;
  });
}

describe('request()', () => {
  test('resolves with the first event carrying its tag', async () => {
    const { connection, socket } = openConnection(Myxi);
    const answer = connection.request('SayHello', { name: 'Adam' });
    const sent = socket().lastAction('SayHello');
    assert.deepEqual(sent.payload, { name: 'Adam' });
    assert.equal(typeof sent.tag, 'string');
    const seenByListeners = [];
    connection.on('HelloThere', (payload, tag) => seenByListeners.push(tag));

    socket().receive({ event: 'HelloThere', tag: 'someone else', payload: { n: 0 } });
    socket().receive({ event: 'HelloThere', tag: sent.tag, payload: { n: 1 } });
    socket().receive({ event: 'HelloThere', tag: sent.tag, payload: { n: 2 } });
    const event = await answer;
    assert.deepEqual(event, { event: 'HelloThere', tag: sent.tag, payload: { n: 1 } });
    assert.deepEqual(seenByListeners, ['someone else', sent.tag, sent.tag], 'listeners still see it');
  });

  test('each request has its own tag', async () => {
    const { connection, socket } = openConnection(Myxi);
    const first = connection.request('Ping');
    const second = connection.request('Ping');
    const [a, b] = socket().actions('Ping');
    assert.notEqual(a.tag, b.tag);
    socket().receive({ event: 'Pong', tag: b.tag, payload: { time: 2 } }, { event: 'Pong', tag: a.tag, payload: { time: 1 } });
    assert.equal((await first).payload.time, 1);
    assert.equal((await second).payload.time, 2);
  });

  test('rejects on an Error with its tag, carrying the server\'s error name', async () => {
    const { connection, socket } = openConnection(Myxi);
    const answer = connection.request('Authenticate', { token: 'bad' });
    socket().reply('Authenticate', 'Error', { error: 'InvalidSessionToken' });
    await rejection(answer, 'InvalidSessionToken');
    await answer.catch((e) => {
      assert.equal(e.event.event, 'Error');
      assert.match(e.message, /Authenticate.*InvalidSessionToken/);
    });
  });

  test('rejects on an InternalError with its tag', async () => {
    const { connection, socket } = openConnection(Myxi);
    const answer = connection.request('Explode');
    socket().reply('Explode', 'InternalError', { error: 'InternalError' });
    await rejection(answer, 'InternalError');
  });

  test('rejects with Timeout after requestTimeout (10 s by default) and ignores a late answer', async () => {
    const { connection, socket } = openConnection(Myxi);
    const state = watch(connection.request('Slow'));
    mock.timers.tick(9999);
    await flush();
    assert.equal(state.settled, false);
    mock.timers.tick(1);
    await flush();
    assert.equal(state.error?.error, 'Timeout');
    socket().reply('Slow', 'Done');
    assert.equal(connection.state, 'open');
  });

  test('the timeout comes from the options, per connection and per call; 0 waits forever', async () => {
    // pingInterval 0: a silent socket is not given up over the day waited below.
    const { connection } = openConnection(Myxi, { requestTimeout: 100, pingInterval: 0 });
    const byConnection = watch(connection.request('A'));
    const byCall = watch(connection.request('B', {}, { timeout: 50 }));
    const never = watch(connection.request('C', {}, { timeout: 0 }));
    mock.timers.tick(50);
    await flush();
    assert.equal(byCall.error?.error, 'Timeout');
    assert.equal(byConnection.settled, false);
    mock.timers.tick(50);
    await flush();
    assert.equal(byConnection.error?.error, 'Timeout');
    mock.timers.tick(24 * 3600 * 1000);
    await flush();
    assert.equal(never.settled, false);
  });

  test('rejects with SocketClosed when the socket closes first', async () => {
    const { connection, socket } = openConnection(Myxi);
    const answer = connection.request('Ping');
    socket().drop(1006);
    await rejection(answer, 'SocketClosed');
  });

  test('rejects with SocketClosed on disconnect()', async () => {
    const { connection } = openConnection(Myxi);
    const answer = connection.request('Ping');
    connection.disconnect();
    await rejection(answer, 'SocketClosed');
  });

  test('made before the socket opens, it waits and is sent once it opens (issue 15)', async () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const answer = watch(connection.request('SayHello', { name: 'Adam' }));
    const second = watch(connection.request('Ping'));
    mock.timers.tick(5000);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.sent.map((a) => a.action), ['SayHello', 'Ping'], 'in the order of the calls');
    WebSocket.last.reply('SayHello', 'Hello', { message: 'Hello Adam' });
    WebSocket.last.reply('Ping', 'Pong', { time: 1 });
    await flush();
    assert.deepEqual(answer.value?.payload, { message: 'Hello Adam' });
    assert.equal(second.value?.event, 'Pong');
  });

  test('waiting for the connection survives failed attempts and counts against its timeout', async (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket, reconnectDelay: 1000, requestTimeout: 3000 });
    const early = watch(connection.request('A'));
    WebSocket.last.drop(1006); // a failed attempt; retried after 500 ms
    mock.timers.tick(500);
    const late = watch(connection.request('B', {}, { timeout: 10000 }));
    WebSocket.last.drop(1006); // retried after 1000 ms
    await flush();
    assert.equal(early.settled, false, 'a failed attempt does not reject what was never sent');
    mock.timers.tick(2500);
    await flush();
    assert.equal(early.error?.error, 'Timeout');
    assert.match(early.error.message, /^A: timed out after 3000 ms$/);
    WebSocket.last.drop(1006);
    mock.timers.tick(2000);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.sent.map((a) => a.action), ['B'], 'a timed-out request is never sent');
    assert.equal(late.settled, false);
  });

  test('with an authentication hook, a waiting request is sent once authenticated; the hook\'s own at once', async () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    connection.authentication(function () {
      this.request('Authenticate', { token: 't' }).then(() => this.isAuthenticated());
    });
    const hello = watch(connection.request('SayHello'));
    connection.subscribe('w', 1);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.sent.map((a) => a.action), ['Authenticate']);
    WebSocket.last.reply('Authenticate', 'Authenticated', { username: 'adam' });
    await flush();
    assert.deepEqual(WebSocket.last.sent.map((a) => a.action), ['Authenticate', 'SayHello', 'Subscribe']);
    WebSocket.last.reply('SayHello', 'Hello', {});
    await flush();
    assert.equal(hello.value?.event, 'Hello');
  });

  test('a sent request fails with SocketClosed on a close; one still waiting keeps waiting', async () => {
    const { connection, socket, WebSocket } = openConnection(Myxi);
    const sent = watch(connection.request('A'));
    socket().drop(1006);
    const waiting = watch(connection.request('B'));
    await flush();
    assert.equal(sent.error?.error, 'SocketClosed');
    assert.equal(waiting.settled, false);
    mock.timers.tick(5000);
    WebSocket.last.open();
    assert.equal(WebSocket.last.lastAction('B').action, 'B');
  });

  test('rejects with NotConnected, sending nothing, after disconnect() or when it comes while waiting', async () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const waiting = connection.request('A');
    WebSocket.last.drop(1006);
    connection.disconnect(); // while waiting to reconnect
    await rejection(waiting, 'NotConnected');
    await rejection(connection.request('Ping'), 'NotConnected');
    const connecting = new Myxi.Connection('ws://host/', { WebSocket });
    const pending = connecting.request('B');
    connecting.disconnect(); // while connecting
    await rejection(pending, 'NotConnected');
    assert.deepEqual(WebSocket.instances.flatMap((ws) => ws.sent), []);
  });

  test('a payload JSON cannot encode rejects without sending or leaking a timer', async () => {
    const { connection, socket } = openConnection(Myxi);
    const cyclic = {};
    cyclic.self = cyclic;
    await assert.rejects(connection.request('Save', cyclic), TypeError);
    assert.deepEqual(socket().sent, []);
    mock.timers.tick(60000);
    await flush();
  });

  test('works before authentication, so the hook can use it', async () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    connection.subscribe('w', 1);
    connection.authentication(async function () {
      const { payload } = await this.request('Authenticate', { token: 't' });
      if (payload.username) this.isAuthenticated();
    });
    WebSocket.last.open();
    WebSocket.last.reply('Authenticate', 'Authenticated', { username: 'adam' });
    await flush();
    assert.equal(connection.state, 'authenticated');
    assert.deepEqual(WebSocket.last.sent.map((a) => a.action), ['Authenticate', 'Subscribe']);
  });
});
