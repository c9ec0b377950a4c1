import { describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import * as Myxi from '../dist/myxi.mjs';
import { fakeWebSocket, openConnection } from './fake-websocket.js';
import { assertQuiet as assertQuietAt, useHarness } from './harness.js';

const logged = useHarness();
const assertQuiet = () => assertQuietAt(logged);

describe('connecting', () => {
  test('connects at once, asking for batched frames', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host:5005/', { WebSocket });
    assert.equal(WebSocket.instances.length, 1);
    assert.equal(WebSocket.last.url, 'ws://host:5005/?batch=1');
    assert.equal(connection.serverURL, 'ws://host:5005/');
    assert.equal(connection.state, 'connecting');
    assert.equal(connection.connected, false);
  });

  test('adds batch=1 to an existing query, and not twice', () => {
    const WebSocket = fakeWebSocket();
    new Myxi.Connection('ws://host/ws?token=abc', { WebSocket });
    assert.equal(WebSocket.last.url, 'ws://host/ws?token=abc&batch=1');
    new Myxi.Connection('ws://host/ws?batch=0', { WebSocket });
    assert.equal(WebSocket.last.url, 'ws://host/ws?batch=0');
  });

  test('batch: false connects to the URL as given', () => {
    const WebSocket = fakeWebSocket();
    new Myxi.Connection('ws://host:5005/', { WebSocket, batch: false });
    assert.equal(WebSocket.last.url, 'ws://host:5005/');
  });

  test('uses globalThis.WebSocket when none is given', (t) => {
    const WebSocket = fakeWebSocket();
    const previous = globalThis.WebSocket;
    globalThis.WebSocket = WebSocket;
    t.after(() => {
      if (previous === undefined) delete globalThis.WebSocket;
      else globalThis.WebSocket = previous;
    });
    new Myxi.Connection('ws://host/');
    assert.equal(WebSocket.instances.length, 1);
  });

  test('without any WebSocket it says what to do', (t) => {
    const previous = globalThis.WebSocket;
    delete globalThis.WebSocket;
    t.after(() => {
      if (previous !== undefined) globalThis.WebSocket = previous;
    });
    assert.throws(() => new Myxi.Connection('ws://host/'), /options\.WebSocket/);
  });

  test('opening emits SocketConnected and makes the connection open', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const seen = [];
    connection.on('SocketConnected', function () {
      seen.push(this);
    });
    WebSocket.last.open();
    assert.deepEqual(seen, [connection], 'called once, with this = the connection');
    assert.equal(connection.state, 'open');
    assert.equal(connection.connected, true);
    assert.equal(connection.authenticated, false);
  });

  test('remembers the session id of Welcome', () => {
    const { connection, socket } = openConnection(Myxi);
    assert.equal(connection.sessionId, null);
    socket().receive({ event: 'Welcome', tag: null, payload: { id: '0123456789abcdef' } });
    assert.equal(connection.sessionId, '0123456789abcdef');
  });
});

describe('actions and events', () => {
  test('sendAction sends {action, tag, payload} and returns true', () => {
    const { connection, socket } = openConnection(Myxi);
    assert.equal(connection.sendAction('SayHello', { name: 'Adam' }, 't1'), true);
    assert.deepEqual(socket().sent, [{ action: 'SayHello', tag: 't1', payload: { name: 'Adam' } }]);
    connection.sendAction('Ping');
    assert.deepEqual(socket().sent[1], { action: 'Ping', payload: {} });
  });

  test('sendAction returns false when not connected', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    assert.equal(connection.sendAction('Ping', {}), false, 'while connecting');
    WebSocket.last.open();
    WebSocket.last.drop(1006);
    assert.equal(connection.sendAction('Ping', {}), false, 'after a close');
    assert.deepEqual(WebSocket.instances[0].sent, []);
  });

  test('on(event) gets (payload, tag, mq) with this = the connection', () => {
    const { connection, socket } = openConnection(Myxi);
    const calls = [];
    connection.on('Hello', function (payload, tag, mq) {
      calls.push({ self: this, payload, tag, mq });
    });
    socket().receive({ event: 'Hello', tag: 'x', payload: { a: 1 } });
    socket().receive({ event: 'Hello', tag: null, payload: {}, mq: { e: 'w', rk: '1' } });
    assert.deepEqual(calls, [
      { self: connection, payload: { a: 1 }, tag: 'x', mq: undefined },
      { self: connection, payload: {}, tag: null, mq: { e: 'w', rk: '1' } },
    ]);
  });

  test('on() without a callback (as the 1.x README lists events) is harmless', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.on('SocketMessageReceived');
    connection.on('Hello');
    socket().receive({ event: 'Hello', payload: {} });
    assertQuiet();
  });

  test('SocketMessageReceived gets every event whole', () => {
    const { connection, socket } = openConnection(Myxi);
    const seen = [];
    connection.on('SocketMessageReceived', (event) => seen.push(event));
    socket().receive({ event: 'Pong', tag: 7, payload: { time: 1 } });
    assert.deepEqual(seen, [{ event: 'Pong', tag: 7, payload: { time: 1 } }]);
  });

  test('off removes one listener, an event\'s listeners, or all; on and off chain', () => {
    const { connection, socket } = openConnection(Myxi);
    const calls = [];
    const a = () => calls.push('a');
    const b = () => calls.push('b');
    assert.equal(connection.on('E', a).on('E', b), connection, 'on returns the connection');
    connection.on('F', () => calls.push('f'));
    const send = (event) => socket().receive({ event, payload: {} });

    send('E');
    assert.equal(connection.off('E', a), connection, 'off returns the connection');
    send('E');
    connection.off('E', b);
    send('E');
    send('F');
    connection.off('F');
    send('F');
    connection.on('E', a);
    connection.off();
    send('E');
    assert.deepEqual(calls, ['a', 'b', 'b', 'f']);
  });

  test('splits a batched frame into its events, in order', () => {
    const { connection, socket } = openConnection(Myxi);
    const seen = [];
    connection.on('N', (payload) => seen.push(payload.n));
    socket().receive({ event: 'N', payload: { n: 1 } }, { event: 'N', payload: { n: 2 } }, { event: 'N', payload: { n: 3 } });
    // A trailing newline and blank lines are harmless.
    socket().receive('{"event":"N","payload":{"n":4}}\n\n{"event":"N","payload":{"n":5}}\n');
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    assertQuiet();
  });

  test('a bad line in a batch costs only that line', () => {
    const { connection, socket } = openConnection(Myxi);
    const seen = [];
    connection.on('N', (payload) => seen.push(payload.n));
    socket().receive({ event: 'N', payload: { n: 1 } }, '{not json', { event: 'N', payload: { n: 2 } });
    assert.deepEqual(seen, [1, 2]);
  });
});

describe('bad input from the server', () => {
  const garbage = [
    ['not JSON', 'hello'],
    ['a JSON array', '[1,2]'],
    ['a JSON string', '"Welcome"'],
    ['null', 'null'],
    ['no event name', '{"payload":{}}'],
    ['a non-string event', '{"event":5,"payload":{}}'],
    ['no payload', '{"event":"Hello"}'],
    ['a null payload', '{"event":"Hello","payload":null}'],
    ['a string payload', '{"event":"Hello","payload":"x"}'],
    ['an array payload', '{"event":"Hello","payload":[1]}'],
    ['a malformed mq', '{"event":"Hello","payload":{},"mq":"widgets"}'],
    ['an mq without exchange', '{"event":"Hello","payload":{},"mq":{"rk":"1"}}'],
  ];
  for (const [what, frame] of garbage) {
    test(`${what}: skipped quietly, connection kept, nobody called`, () => {
      const { connection, socket } = openConnection(Myxi);
      const subscription = connection.subscribe('widgets', 1);
      socket().reply('Subscribe', 'Subscribed', { exchange: 'widgets', routing_key: 1 });
      let calls = 0;
      connection.on('Hello', () => calls++);
      connection.on('SocketMessageReceived', () => calls++);
      subscription.on('Hello', () => calls++);
      socket().receive(frame);
      assert.equal(calls, 0);
      assert.equal(connection.state, 'open');
      assert.equal(socket().closedWith, null);
      assertQuiet();
      assert.ok(logged.debug.length > 0, 'says why at debug level');
    });
  }

  test('an unknown event is not an error', () => {
    const { connection, socket } = openConnection(Myxi);
    socket().receive({ event: 'SomethingNew', tag: null, payload: { x: 1 } });
    assert.equal(connection.state, 'open');
    assertQuiet();
    assert.deepEqual(logged.debug, []);
  });

  test('a binary frame is skipped', () => {
    const { connection, socket } = openConnection(Myxi);
    socket().onmessage({ data: new ArrayBuffer(4) });
    assert.equal(connection.state, 'open');
    assertQuiet();
  });
});

describe('callbacks that throw', () => {
  test('do not stop the other callbacks; console.error reports them by default', () => {
    const { connection, socket } = openConnection(Myxi);
    const calls = [];
    connection.on('Hello', () => {
      throw new Error('boom');
    });
    connection.on('Hello', () => calls.push('second'));
    connection.on('SocketMessageReceived', () => calls.push('message'));
    socket().receive({ event: 'Hello', payload: {} });
    assert.deepEqual(calls, ['second', 'message']);
    assert.equal(logged.error.length, 1);
    assert.match(String(logged.error[0][0]), /Hello/);
    assert.equal(logged.error[0][1].message, 'boom');
  });

  test('onCallbackError receives them instead', () => {
    const reported = [];
    const { connection, socket } = openConnection(Myxi, {
      onCallbackError: (error, event) => reported.push([error.message, event]),
    });
    const subscription = connection.subscribe('w', 'k');
    socket().reply('Subscribe', 'Subscribed', { exchange: 'w', routing_key: 'k' });
    const calls = [];
    subscription.on('Changed', () => {
      throw new Error('in listener');
    });
    subscription.addMessageHandler('view', () => {
      throw new Error('in handler');
    });
    subscription.on('Changed', () => calls.push('subscription'));
    connection.on('Changed', () => calls.push('connection'));
    socket().receive({ event: 'Changed', tag: null, payload: {}, mq: { e: 'w', rk: 'k' } });
    assert.deepEqual(calls, ['subscription', 'connection']);
    assert.deepEqual(reported.map((r) => r[0]), ['in listener', 'in handler']);
    assert.equal(reported[0][1], 'Changed');
    assert.deepEqual(logged.error, []);
  });

  test('a throwing onCallbackError is contained too', () => {
    const { connection, socket } = openConnection(Myxi, {
      onCallbackError: () => {
        throw new Error('reporter');
      },
    });
    let after = 0;
    connection.on('E', () => {
      throw new Error('listener');
    });
    connection.on('E', () => after++);
    socket().receive({ event: 'E', payload: {} });
    assert.equal(after, 1);
  });

  test('a listener added during dispatch runs from the next event on', () => {
    const { connection, socket } = openConnection(Myxi);
    const calls = [];
    connection.on('E', () => {
      calls.push('first');
      connection.on('E', () => calls.push('added'));
    });
    socket().receive({ event: 'E', payload: {} });
    assert.deepEqual(calls, ['first']);
  });
});

describe('closing and reconnecting', () => {
  test('a close it did not ask for: SocketDisconnected, SocketClosed, reconnect after 5 s', (t) => {
    const { connection, WebSocket } = openConnection(Myxi);
    const events = [];
    connection.on('SocketDisconnected', (info) => events.push(['disconnected', info]));
    connection.on('SocketClosed', (info) => events.push(['closed', info]));
    WebSocket.last.drop(1006, 'gone');
    const info = { code: 1006, reason: 'gone', reconnectIn: 5000 };
    assert.deepEqual(events, [['disconnected', info], ['closed', info]]);
    assert.equal(connection.state, 'closed');
    assert.equal(connection.connected, false);

    mock.timers.tick(4999);
    assert.equal(WebSocket.instances.length, 1);
    mock.timers.tick(1);
    assert.equal(WebSocket.instances.length, 2);
    assert.equal(connection.state, 'connecting');
    assert.equal(WebSocket.last.url, 'ws://myxi.test/?batch=1');
  });

  test('reconnects after every close code the client did not ask for except 4001, 1000 included', (t) => {
    for (const code of [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 1013, 4000, 4002, 4999]) {
      const { WebSocket } = openConnection(Myxi);
      WebSocket.last.drop(code);
      mock.timers.tick(7500);
      assert.equal(WebSocket.instances.length, 2, `after ${code}`);
    }
  });

  // PROTOCOL.md's table, with Math.random at its top: a fixed delay stays
  // 5000, a jittered one is 5000 x 1.5, a backoff is its whole ceiling
  // (5000, then 10000: the first two closes of a connection that did not last).
  const table = [
    [1000, 'fixed (the server closed; the client did not ask)', 5000, 5000],
    [1006, 'fixed (dropped)', 5000, 5000],
    [4999, 'fixed (a code the table does not know)', 5000, 5000],
    [1001, 'jittered (draining)', 7499, 7499],
    [4000, 'jittered (idle)', 7499, 7499],
    [4002, 'jittered (closed by the application)', 7499, 7499],
    [1002, 'backoff (protocol error)', 4999, 9999],
    [1007, 'backoff (invalid UTF-8)', 4999, 9999],
    [1008, 'backoff (policy)', 4999, 9999],
    [1009, 'backoff (too big)', 4999, 9999],
    [1011, 'backoff (internal error)', 4999, 9999],
    [1013, 'backoff (overloaded)', 4999, 9999],
  ];
  for (const [code, what, first, second] of table) {
    test(`after ${code}: ${what}`, (t) => {
      t.mock.method(Math, 'random', () => 0.99999);
      const { connection, WebSocket } = openConnection(Myxi);
      const delays = [];
      connection.on('SocketDisconnected', (info) => delays.push(info.reconnectIn));
      for (let i = 0; i < 2; i++) {
        WebSocket.last.drop(code, 'why');
        mock.timers.tick(delays.at(-1) - 1);
        assert.equal(WebSocket.instances.length, i + 1, 'not yet');
        mock.timers.tick(1);
        assert.equal(WebSocket.instances.length, i + 2, 'reconnected');
        WebSocket.last.open();
      }
      assert.deepEqual(delays, [first, second]);
    });
  }

  test('after 4001 (terminated by the application): no reconnect until connect()', async () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const subscription = connection.subscribe('w', 1);
    const events = [];
    connection.on('SocketDisconnected', (info) => events.push(['disconnected', info]));
    connection.on('SocketClosed', (info) => events.push(['closed', info]));
    WebSocket.last.drop(4001, 'banned');
    const info = { code: 4001, reason: 'banned', reconnectIn: null };
    assert.deepEqual(events, [['disconnected', info], ['closed', info]]);
    assert.equal(connection.state, 'closed');
    // request() does not wait for a connection that will not come.
    await assert.rejects(connection.request('Ping'), { name: 'MyxiError', error: 'NotConnected' });
    mock.timers.tick(24 * 3600 * 1000);
    assert.equal(WebSocket.instances.length, 1);
    // The application may still decide to come back: subscriptions were kept.
    connection.connect();
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.actions('Subscribe').map((a) => a.payload), [{ exchange: 'w', routing_key: 1 }]);
    assert.equal(subscription.state, 'subscribing');
  });

  test('a failed attempt (an HTTP 503 at the upgrade looks the same) emits only SocketClosed and backs off', (t) => {
    t.mock.method(Math, 'random', () => 0.99999);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket, reconnectDelay: 1000 });
    const events = [];
    const delays = [];
    connection.on('SocketDisconnected', () => events.push('disconnected'));
    connection.on('SocketClosed', (info) => {
      events.push('closed');
      delays.push(info.reconnectIn);
    });
    for (let attempt = 1; attempt <= 8; attempt++) {
      WebSocket.last.drop(1006);
      mock.timers.tick(delays.at(-1) - 1);
      assert.equal(WebSocket.instances.length, attempt);
      mock.timers.tick(1);
      assert.equal(WebSocket.instances.length, attempt + 1);
    }
    assert.equal(events.filter((e) => e === 'disconnected').length, 0);
    // From reconnectDelay, doubling, capped at 60 s.
    assert.deepEqual(delays, [999, 1999, 3999, 7999, 15999, 31999, 59999, 59999]);
  });

  test('a close of a draining server (1001) is followed by a jittered delay', (t) => {
    const delays = [];
    for (const random of [0, 0.5, 0.999]) {
      t.mock.method(Math, 'random', () => random);
      const { connection, WebSocket } = openConnection(Myxi);
      connection.on('SocketClosed', (info) => delays.push(info.reconnectIn));
      WebSocket.last.drop(1001);
    }
    assert.deepEqual(delays, [2500, 5000, 7495]);
  });

  test('backoff: capped exponential delays with full jitter, reset once a connection lasts a minute', (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', {
      WebSocket,
      backoff: { initial: 1000, max: 8000, factor: 2 },
    });
    const delays = [];
    connection.on('SocketClosed', (info) => delays.push(info.reconnectIn));
    for (let i = 0; i < 6; i++) {
      WebSocket.last.drop(1006);
      mock.timers.tick(delays[delays.length - 1]);
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 4000, 4000]);
    assert.equal(WebSocket.instances.length, 7);

    // Opening, even serving, is not enough (a server over its limit accepts,
    // then closes; a client too slow to read is served, then closed).
    WebSocket.last.open();
    WebSocket.last.receive({ event: 'Welcome', payload: { id: 'x' } });
    mock.timers.tick(59999);
    WebSocket.last.drop(1008);
    assert.equal(delays.at(-1), 4000);
    mock.timers.tick(4000);
    WebSocket.last.open();
    mock.timers.tick(60000);
    WebSocket.last.drop(1008);
    assert.equal(delays.at(-1), 500);
  });

  test('backoff: true uses the defaults (1 s doubling up to 30 s)', (t) => {
    t.mock.method(Math, 'random', () => 0.999999);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket, backoff: true });
    const delays = [];
    connection.on('SocketClosed', (info) => delays.push(info.reconnectIn));
    for (let i = 0; i < 7; i++) {
      WebSocket.last.drop(1006);
      mock.timers.tick(delays.at(-1));
    }
    assert.deepEqual(delays, [999, 1999, 3999, 7999, 15999, 29999, 29999]);
  });

  test('full jitter: a random 0 reconnects at once', (t) => {
    t.mock.method(Math, 'random', () => 0);
    const { WebSocket } = openConnection(Myxi, { backoff: true });
    WebSocket.last.drop(1006);
    mock.timers.tick(0);
    assert.equal(WebSocket.instances.length, 2);
  });

  test('1013 (server overloaded) backs off even without the backoff option', (t) => {
    t.mock.method(Math, 'random', () => 0.999999);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const delays = [];
    connection.on('SocketClosed', (info) => delays.push(info.reconnectIn));
    for (let i = 0; i < 5; i++) {
      WebSocket.last.open();
      WebSocket.last.drop(1013);
      mock.timers.tick(delays.at(-1));
    }
    // From the fixed delay (5 s), doubling, capped at 60 s.
    assert.deepEqual(delays, [4999, 9999, 19999, 39999, 59999]);
    // Other codes of an open socket keep the fixed delay.
    WebSocket.last.open();
    WebSocket.last.drop(1006);
    assert.equal(delays.at(-1), 5000);
  });

  test('disconnect() closes with 1000 and stops reconnecting', (t) => {
    const { connection, WebSocket } = openConnection(Myxi);
    const events = [];
    connection.on('SocketDisconnected', (info) => events.push(['disconnected', info]));
    connection.on('SocketClosed', (info) => events.push(['closed', info]));
    connection.disconnect();
    assert.deepEqual(WebSocket.last.closedWith, { code: 1000, reason: undefined });
    assert.equal(connection.state, 'closed');
    const info = { code: 1000, reason: '', reconnectIn: null };
    assert.deepEqual(events, [['disconnected', info], ['closed', info]]);
    // The close event the socket sends later changes nothing.
    WebSocket.last.drop(1000);
    assert.equal(events.length, 2);
    mock.timers.tick(60 * 60 * 1000);
    assert.equal(WebSocket.instances.length, 1);
  });

  test('disconnect() while waiting to reconnect cancels the reconnect', (t) => {
    const { connection, WebSocket } = openConnection(Myxi);
    WebSocket.last.drop(1006);
    connection.disconnect();
    mock.timers.tick(60 * 1000);
    assert.equal(WebSocket.instances.length, 1);
    assert.equal(connection.state, 'closed');
  });

  test('disconnect() from a listener stops the rest of a batched frame', () => {
    const { connection, socket } = openConnection(Myxi);
    const seen = [];
    connection.on('N', (payload) => {
      seen.push(payload.n);
      if (payload.n === 1) connection.disconnect();
    });
    socket().receive({ event: 'N', payload: { n: 1 } }, { event: 'N', payload: { n: 2 } });
    assert.deepEqual(seen, [1]);
  });

  test('connect() after disconnect() connects again', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    connection.disconnect();
    connection.connect();
    assert.equal(WebSocket.instances.length, 2);
    assert.equal(connection.state, 'connecting');
    connection.connect();
    assert.equal(WebSocket.instances.length, 2, 'no second socket while connecting');
  });

  test('connect() while waiting to reconnect connects at once', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    WebSocket.last.drop(1006);
    connection.connect();
    assert.equal(WebSocket.instances.length, 2);
    mock.timers.tick(5000);
    assert.equal(WebSocket.instances.length, 2, 'the scheduled reconnect was cancelled');
  });

  test('events of a socket the client has left are ignored', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const old = WebSocket.last;
    connection.disconnect();
    connection.connect();
    let calls = 0;
    connection.on('Hello', () => calls++);
    connection.on('SocketConnected', () => calls++);
    old.receive({ event: 'Hello', payload: {} });
    old.onopen({});
    assert.equal(calls, 0);
    assert.equal(connection.state, 'connecting');
  });

  test('an error event alone changes nothing (the close event follows)', () => {
    const { connection, socket } = openConnection(Myxi);
    socket().onerror({ type: 'error' });
    assert.equal(connection.state, 'open');
    assertQuiet();
  });
});

describe('liveness', () => {
  test('an attempt that has not opened after connectTimeout (10 s) is given up and retried with backoff', (t) => {
    t.mock.method(Math, 'random', () => 0.99999);
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const events = [];
    connection.on('SocketDisconnected', (info) => events.push(['disconnected', info]));
    connection.on('SocketClosed', (info) => events.push(['closed', info]));
    mock.timers.tick(9999);
    assert.equal(WebSocket.last.closedWith, null);
    assert.deepEqual(events, []);
    mock.timers.tick(1);
    assert.deepEqual(WebSocket.last.closedWith, { code: 1000, reason: undefined });
    assert.deepEqual(events, [['closed', { code: 1006, reason: 'connect timeout', reconnectIn: 4999 }]]);
    assert.equal(connection.state, 'closed');
    // The socket opening late changes nothing: it was left behind.
    WebSocket.last.open();
    assert.equal(connection.state, 'closed');
    mock.timers.tick(4999);
    assert.equal(WebSocket.instances.length, 2);
    WebSocket.last.open();
    assert.equal(connection.state, 'open');
  });

  test('connectTimeout 0 waits for the browser, however long', () => {
    const WebSocket = fakeWebSocket();
    new Myxi.Connection('ws://host/', { WebSocket, connectTimeout: 0 });
    mock.timers.tick(3600 * 1000);
    assert.equal(WebSocket.last.closedWith, null);
    assert.equal(WebSocket.instances.length, 1);
  });

  test('after 20 s of silence it sends a Ping; its Pong reaches no listener', () => {
    const { connection, socket } = openConnection(Myxi);
    const seen = [];
    connection.on('Pong', (payload, tag) => seen.push(['Pong', tag]));
    connection.on('SocketMessageReceived', (event) => seen.push([event.event]));
    mock.timers.tick(19999);
    assert.deepEqual(socket().actions('Ping'), []);
    mock.timers.tick(1);
    const ping = socket().lastAction('Ping');
    assert.deepEqual(ping.payload, {});
    assert.match(ping.tag, /^myxi:/);
    socket().reply('Ping', 'Pong', { time: 1 });
    assert.deepEqual(seen, []);
    // The Pong was heard: the next Ping comes 20 s later, and the socket lives on.
    mock.timers.tick(19999);
    assert.equal(socket().actions('Ping').length, 1);
    mock.timers.tick(1);
    assert.equal(socket().actions('Ping').length, 2);
    socket().reply('Ping', 'Pong', { time: 2 });
    assert.equal(connection.state, 'open');
    assert.equal(socket().closedWith, null);
    // An application's own Ping is answered to it as before.
    socket().receive({ event: 'Pong', tag: 'mine', payload: { time: 3 } });
    assert.deepEqual(seen, [['Pong', 'mine'], ['Pong']]);
    assertQuiet();
  });

  test('any frame counts as a sign of life', () => {
    const { socket } = openConnection(Myxi);
    mock.timers.tick(15000);
    socket().receive({ event: 'Anything', payload: {} });
    mock.timers.tick(19999);
    assert.deepEqual(socket().actions('Ping'), []);
    mock.timers.tick(1);
    assert.equal(socket().actions('Ping').length, 1);
    mock.timers.tick(9999);
    socket().receive({ event: 'Late', payload: {} }); // not the Pong, but the path works
    mock.timers.tick(10000);
    assert.equal(socket().closedWith, null);
  });

  test('no answer to the Ping within 10 s: the client settles the close itself and reconnects', async () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const subscription = connection.subscribe('w', 1);
    const dead = WebSocket.last;
    dead.reply('Subscribe', 'Subscribed', { exchange: 'w', routing_key: 1 });
    const answer = connection.request('Slow', {}, { timeout: 0 });
    const events = [];
    connection.on('SocketDisconnected', (info) => events.push(['disconnected', info]));
    connection.on('SocketClosed', (info) => events.push(['closed', info]));
    connection.on('Hello', () => events.push(['Hello']));
    // (Ticks end where timers are due: a timer set by one that fires in the
    // middle of a tick counts from the tick's end with node's mock timers.)
    mock.timers.tick(20000);
    mock.timers.tick(9999);
    assert.equal(connection.state, 'open');
    mock.timers.tick(1);
    // As a browser on a dead path does: close() was called, the socket stays
    // CLOSING and no close event comes. The client does not wait for it.
    assert.deepEqual(dead.closedWith, { code: 1000, reason: undefined });
    assert.equal(dead.readyState, WebSocket.CLOSING);
    const info = { code: 1006, reason: 'ping timeout', reconnectIn: 5000 };
    assert.deepEqual(events, [['disconnected', info], ['closed', info]]);
    assert.equal(connection.state, 'closed');
    assert.equal(subscription.state, 'pending');
    await assert.rejects(answer, { name: 'MyxiError', error: 'SocketClosed' });

    // Whatever the old socket does later is ignored.
    dead.receive({ event: 'Hello', payload: {} });
    dead.drop(1006);
    assert.equal(events.length, 2);

    mock.timers.tick(5000);
    assert.equal(WebSocket.instances.length, 2);
    WebSocket.last.open();
    assert.equal(WebSocket.last.lastAction('Subscribe').payload.routing_key, 1);
    WebSocket.last.reply('Subscribe', 'Subscribed', { exchange: 'w', routing_key: 1 });
    assert.equal(subscription.subscribed, true);
    assert.deepEqual(dead.actions('Ping').length, 1);
  });

  test('pingInterval and pingTimeout are options; pingInterval 0 turns the check off', () => {
    const quick = openConnection(Myxi, { pingInterval: 1000, pingTimeout: 500 });
    mock.timers.tick(1000);
    assert.equal(quick.socket().actions('Ping').length, 1);
    mock.timers.tick(500);
    assert.equal(quick.connection.state, 'closed');

    const off = openConnection(Myxi, { pingInterval: 0 });
    mock.timers.tick(24 * 3600 * 1000);
    assert.deepEqual(off.socket().actions('Ping'), []);
    assert.equal(off.connection.state, 'open');
  });

  test('no Ping is sent after the socket closed, nor from a socket left behind', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const first = WebSocket.last;
    connection.disconnect();
    mock.timers.tick(3600 * 1000);
    assert.deepEqual(first.actions('Ping'), []);
    assert.equal(WebSocket.instances.length, 1);
  });
});
