import { describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import * as Myxi from '../dist/myxi.mjs';
import { fakeWebSocket, openConnection } from './fake-websocket.js';
import { assertQuiet, useHarness } from './harness.js';

const logged = useHarness();

/** The server confirms the last Subscribe. */
function confirm(socket) {
  const { payload } = socket.lastAction('Subscribe');
  return socket.reply('Subscribe', 'Subscribed', payload);
}

/** The server confirms every Subscribe sent on this socket. */
function confirmAll(socket) {
  for (const { tag, payload } of socket.actions('Subscribe')) {
    socket.receive({ event: 'Subscribed', tag, payload });
  }
}

const DROPPING = ['SubscriptionDenied', 'InvalidExchange', 'InvalidRoutingKey', 'InvalidPayload', 'TooManySubscriptions'];

describe('keys', () => {
  test('keyFor: "exchange::key", or "exchange" without a key', () => {
    const { keyFor } = Myxi.Subscription;
    assert.equal(keyFor('myChannel', 1234), 'myChannel::1234');
    assert.equal(keyFor('myChannel', '1234'), 'myChannel::1234');
    assert.equal(keyFor('widgets', 'a.b'), 'widgets::a.b');
    assert.equal(keyFor('widgets', 0), 'widgets::0');
    for (const none of [undefined, null, '']) assert.equal(keyFor('widgets', none), 'widgets');
  });

  test('subscribe returns the existing subscription; 42 and "42" are one', () => {
    const { connection } = openConnection(Myxi);
    const a = connection.subscribe('widgets', 42);
    assert.equal(connection.subscribe('widgets', '42'), a);
    assert.equal(connection.subscribe('widgets', 42), a);
    assert.notEqual(connection.subscribe('widgets', 43), a);
    assert.equal(connection.subscribe('widgets'), connection.subscribe('widgets', null));
    assert.deepEqual(Object.keys(connection.subscriptions).sort(), ['widgets', 'widgets::42', 'widgets::43']);
    assert.equal(connection.subscriptions['widgets::42'], a);
    assert.equal(a.key(), 'widgets::42');
    assert.equal(a.exchange, 'widgets');
    assert.equal(a.routingKey, 42);
    assert.equal(a.connection, connection);
  });
});

describe('subscribing without an authentication hook', () => {
  test('a subscription made before the socket opens is sent when it opens', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const subscription = connection.subscribe('myChannel', 1234);
    assert.equal(subscription.state, 'pending');
    WebSocket.last.open();
    const [sent] = WebSocket.last.actions('Subscribe');
    assert.deepEqual(sent.payload, { exchange: 'myChannel', routing_key: 1234 });
    assert.equal(typeof sent.tag, 'string', 'every Subscribe carries a tag');
    assert.equal(subscription.state, 'subscribing');
    assert.equal(subscription.subscribed, false);
  });

  test('a subscription made on an open socket is sent at once; each Subscribe has its own tag', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.subscribe('a', 1);
    connection.subscribe('a');
    const sent = socket().actions('Subscribe');
    assert.deepEqual(sent.map((a) => a.payload), [{ exchange: 'a', routing_key: 1 }, { exchange: 'a' }]);
    assert.notEqual(sent[0].tag, sent[1].tag);
  });

  test('Subscribed (matched by tag) makes it subscribed and is emitted on it', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 42);
    const seen = [];
    subscription.on('Subscribed', function (payload, tag) {
      seen.push({ self: this, payload, tag });
    });
    const sent = confirm(socket());
    assert.equal(subscription.subscribed, true);
    assert.equal(subscription.state, 'subscribed');
    assert.deepEqual(seen, [{ self: subscription, payload: { exchange: 'widgets', routing_key: 42 }, tag: sent.tag }]);
  });

  test('AlreadySubscribed counts as subscribed', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 1);
    socket().reply('Subscribe', 'Error', { error: 'AlreadySubscribed', exchange: 'widgets', routing_key: 1 });
    assert.equal(subscription.subscribed, true);
    assert.equal(connection.subscriptions['widgets::1'], subscription);
  });
});

describe('application events', () => {
  test('go to the subscription of mq.e and mq.rk, then to the connection', () => {
    const { connection, socket } = openConnection(Myxi);
    const w42 = connection.subscribe('widgets', 42);
    const w43 = connection.subscribe('widgets', 43);
    const all = connection.subscribe('widgets');
    const calls = [];
    w42.on('WidgetQtyChanged', function (payload, tag) {
      calls.push(['42', this === w42, payload, tag]);
    });
    w43.on('WidgetQtyChanged', () => calls.push(['43']));
    all.on('WidgetQtyChanged', (payload) => calls.push(['all', payload]));
    connection.on('WidgetQtyChanged', (payload, tag, mq) => calls.push(['connection', mq]));

    socket().receive({ event: 'WidgetQtyChanged', tag: null, payload: { quantity: 5 }, mq: { e: 'widgets', rk: '42' } });
    socket().receive({ event: 'WidgetQtyChanged', tag: null, payload: { quantity: 1 }, mq: { e: 'widgets', rk: '' } });
    assert.deepEqual(calls, [
      ['42', true, { quantity: 5 }, null],
      ['connection', { e: 'widgets', rk: '42' }],
      ['all', { quantity: 1 }],
      ['connection', { e: 'widgets', rk: '' }],
    ]);
  });

  test('an event for nobody\'s key reaches only the connection', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 1);
    let calls = 0;
    subscription.on('X', () => calls++);
    socket().receive({ event: 'X', payload: {}, mq: { e: 'widgets', rk: '2' } });
    socket().receive({ event: 'X', payload: {}, mq: { e: '__proto__', rk: '' } });
    socket().receive({ event: 'X', payload: {}, mq: { e: 'constructor', rk: '' } });
    assert.equal(calls, 0);
    assertQuiet(logged);
  });

  test('message handlers: named, see every event with their param, replaced by name, removable', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 7);
    const calls = [];
    const view = { id: 'view' };
    subscription.addMessageHandler('a', function (event, payload, tag, param) {
      calls.push(['a', this === subscription, event, payload, tag, param]);
    }, view);
    subscription.addMessageHandler('b', (event) => calls.push(['b', event]));
    const send = (event) => socket().receive({ event, tag: 't', payload: { n: 1 }, mq: { e: 'widgets', rk: '7' } });

    send('Changed');
    subscription.addMessageHandler('b', (event) => calls.push(['b2', event]));
    send('Deleted');
    assert.equal(subscription.removeMessageHandler('a'), true);
    assert.equal(subscription.removeMessageHandler('a'), false);
    send('Changed');
    assert.deepEqual(calls, [
      ['a', true, 'Changed', { n: 1 }, 't', view],
      ['b', 'Changed'],
      ['a', true, 'Deleted', { n: 1 }, 't', view],
      ['b2', 'Deleted'],
      ['b2', 'Changed'],
    ]);
  });

  test('subscription.on and off chain (issue 15); off removes one listener at a time', () => {
    const { connection, socket } = openConnection(Myxi);
    const calls = [];
    const listener = () => calls.push('E');
    const subscription = connection
      .subscribe('w', 1)
      .on('E', listener)
      .on('E', listener)
      .on('F', () => calls.push('F'));
    assert.equal(subscription, connection.subscriptions['w::1'], 'on returns the subscription');
    assert.equal(subscription.off('E', listener), subscription, 'off returns the subscription');
    socket().receive({ event: 'E', payload: {}, mq: { e: 'w', rk: '1' } });
    subscription.off('E', listener).off('F');
    socket().receive({ event: 'E', payload: {}, mq: { e: 'w', rk: '1' } });
    socket().receive({ event: 'F', payload: {}, mq: { e: 'w', rk: '1' } });
    assert.deepEqual(calls, ['E']);
  });
});

describe('authentication', () => {
  test('the myxi 1.x README example works as written', () => {
    const WebSocket = fakeWebSocket();
    const webSocket = new Myxi.Connection('ws://localhost:5300', { WebSocket });
    webSocket.authentication(function () {
      webSocket.on('Authenticated', () => webSocket.isAuthenticated());
      webSocket.sendAction('Authenticate', { sessionID: 'abc' });
    });
    const subscription = webSocket.subscribe('myChannel', 1234);
    const got = [];
    subscription.on('someEvent', (payload, tag) => got.push([payload, tag]));
    const authenticated = [];
    webSocket.on('SocketAuthenticated', () => authenticated.push(webSocket.state));

    const socket = WebSocket.last;
    socket.open();
    assert.deepEqual(socket.sent.map((a) => a.action), ['Authenticate'], 'subscriptions wait for authentication');
    assert.equal(webSocket.state, 'open');
    socket.receive({ event: 'Authenticated', tag: null, payload: { username: 'adam' } });
    assert.deepEqual(authenticated, ['authenticated']);
    assert.equal(webSocket.authenticated, true);
    assert.deepEqual(socket.sent.map((a) => a.action), ['Authenticate', 'Subscribe']);
    confirm(socket);
    socket.receive({ event: 'someEvent', tag: null, payload: { x: 1 }, mq: { e: 'myChannel', rk: '1234' } });
    assert.deepEqual(got, [[{ x: 1 }, null]]);
    assert.equal(webSocket.subscriptions['myChannel::1234'], subscription);
    assert.equal(webSocket.sendAction('SayHello', { name: 'Adam' }), true);
  });

  test('the hook runs with this = the connection, after SocketConnected', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    const order = [];
    connection.on('SocketConnected', () => order.push('connected'));
    connection.authentication(function (argument) {
      order.push(['hook', this === connection, argument === connection]);
    });
    WebSocket.last.open();
    assert.deepEqual(order, ['connected', ['hook', true, true]]);
  });

  test('a hook set on an open socket runs at once', () => {
    const { connection } = openConnection(Myxi);
    let runs = 0;
    connection.authentication(() => runs++);
    assert.equal(runs, 1);
  });

  test('authentication(null) removes the hook: pending subscriptions go out', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.authentication(() => {});
    connection.subscribe('a', 1);
    assert.deepEqual(socket().actions('Subscribe'), []);
    connection.authentication(null);
    assert.equal(socket().actions('Subscribe').length, 1);
  });

  test('subscriptions made before authentication wait for it', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.authentication(() => {});
    connection.subscribe('a', 1);
    assert.deepEqual(socket().actions('Subscribe'), []);
    connection.isAuthenticated();
    assert.equal(socket().actions('Subscribe').length, 1);
    connection.subscribe('a', 2);
    assert.equal(socket().actions('Subscribe').length, 2, 'sent at once once authenticated');
  });

  test('isAuthenticated() without an open socket does nothing', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    let calls = 0;
    connection.on('SocketAuthenticated', () => calls++);
    connection.isAuthenticated();
    assert.equal(calls, 0);
    assert.equal(connection.state, 'connecting');
  });

  test('a hook that throws is reported and leaves the connection open', () => {
    const { connection } = openConnection(Myxi);
    connection.authentication(() => {
      throw new Error('no token');
    });
    assert.equal(connection.state, 'open');
    assert.equal(logged.error.length, 1);
  });
});

describe('reconnecting', () => {
  test('re-runs the hook, and resubscribes only after isAuthenticated()', () => {
    const WebSocket = fakeWebSocket();
    const connection = new Myxi.Connection('ws://host/', { WebSocket });
    connection.authentication(() => connection.sendAction('Authenticate', { token: 't' }));
    const a = connection.subscribe('widgets', 1);
    const b = connection.subscribe('widgets', 2);
    WebSocket.last.open();
    connection.isAuthenticated();
    confirmAll(WebSocket.last);
    assert.equal(a.subscribed, true);
    assert.equal(b.subscribed, true);

    WebSocket.last.drop(1006);
    assert.equal(a.subscribed, false);
    assert.equal(a.state, 'pending');
    assert.equal(b.state, 'pending');
    assert.equal(connection.authenticated, false);

    mock.timers.tick(5000);
    const second = WebSocket.last;
    assert.notEqual(second, WebSocket.instances[0]);
    second.open();
    assert.deepEqual(second.sent.map((x) => x.action), ['Authenticate'], 're-authenticates before anything else');
    connection.isAuthenticated();
    assert.deepEqual(second.sent.map((x) => x.action), ['Authenticate', 'Subscribe', 'Subscribe']);
    assert.deepEqual(
      second.actions('Subscribe').map((x) => x.payload.routing_key).sort(),
      [1, 2],
    );
    confirmAll(second);
    assert.equal(a.subscribed, true);
    assert.equal(b.subscribed, true);
  });

  test('without a hook, resubscribes as soon as the socket opens', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    connection.subscribe('widgets', 1);
    confirm(WebSocket.last);
    WebSocket.last.drop(1001);
    mock.timers.tick(7500);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.actions('Subscribe').map((x) => x.payload), [{ exchange: 'widgets', routing_key: 1 }]);
  });

  test('does not resubscribe what was unsubscribed, denied or ended by the server', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    for (const exchange of ['kept', 'gone', 'denied', 'revoked']) connection.subscribe(exchange, 1);
    const first = WebSocket.last;
    for (const { tag, payload } of first.actions('Subscribe')) {
      if (payload.exchange === 'denied') {
        first.receive({ event: 'Error', tag, payload: { error: 'SubscriptionDenied', exchange: 'denied', routing_key: 1 } });
      } else {
        first.receive({ event: 'Subscribed', tag, payload });
      }
    }
    connection.subscriptions['gone::1'].unsubscribe();
    first.receive({ event: 'Unsubscribed', tag: null, payload: { exchange: 'revoked', exchange_name: 'revoked', routing_key: 1, auto: true } });
    assert.deepEqual(Object.keys(connection.subscriptions), ['kept::1']);

    first.drop(1006);
    mock.timers.tick(5000);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.actions('Subscribe').map((x) => x.payload.exchange), ['kept']);
  });

  test('answers lost with the old socket do not confuse the new one', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const subscription = connection.subscribe('w', 1);
    const oldTag = WebSocket.last.lastAction('Subscribe').tag;
    WebSocket.last.drop(1006);
    mock.timers.tick(5000);
    WebSocket.last.open();
    WebSocket.last.receive({ event: 'Error', tag: oldTag, payload: { error: 'SubscriptionDenied', exchange: 'w', routing_key: 1 } });
    assert.equal(subscription.state, 'subscribing', 'an answer to the old Subscribe is not this one');
    assert.equal(connection.subscriptions['w::1'], subscription);
  });
});

describe('refused subscriptions', () => {
  for (const error of DROPPING) {
    test(`${error} drops it and tells the application`, () => {
      const { connection, socket } = openConnection(Myxi);
      const subscription = connection.subscribe('widgets', 9);
      const seen = [];
      subscription.on('Error', (payload, tag) => seen.push(['Error', payload.error, tag]));
      subscription.on(error, (payload) => seen.push([error, payload.routing_key]));
      connection.on('Error', (payload) => seen.push(['connection', payload.error]));
      const sent = socket().reply('Subscribe', 'Error', { error, exchange: 'widgets', routing_key: 9 });
      assert.deepEqual(seen, [['Error', error, sent.tag], [error, 9], ['connection', error]]);
      assert.equal(subscription.state, 'unsubscribed');
      assert.equal(subscription.subscribed, false);
      assert.equal(connection.subscriptions['widgets::9'], undefined);
      assert.notEqual(connection.subscribe('widgets', 9), subscription, 'subscribing again makes a new one');
      assertQuiet(logged);
    });
  }

  test('InvalidExchange without a routing key is matched by tag', () => {
    const { connection, socket } = openConnection(Myxi);
    const a = connection.subscribe('nope', 1);
    const b = connection.subscribe('nope', 2);
    const [first] = socket().actions('Subscribe');
    socket().receive({ event: 'Error', tag: first.tag, payload: { error: 'InvalidExchange', exchange: 'nope' } });
    assert.equal(a.state, 'unsubscribed');
    assert.equal(b.state, 'subscribing');
  });

  test('TooManySubscriptions {exchange, routing_keys, limit} drops exactly the refused ones', () => {
    const { connection, socket } = openConnection(Myxi);
    const [a, b, c] = [1, 2, 3].map((key) => connection.subscribe('widgets', key));
    const other = connection.subscribe('gadgets', 2);
    const seen = [];
    for (const s of [a, b, c, other]) s.on('TooManySubscriptions', (payload) => seen.push([s.key(), payload.limit]));
    const [, second] = socket().actions('Subscribe');
    const message = 'routing_keys: 1 over the limit of 1 subscriptions';
    // Tagged: the answer to one Subscribe (of one key) refuses that key.
    socket().receive({
      event: 'Error',
      tag: second.tag,
      payload: { error: 'TooManySubscriptions', exchange: 'widgets', routing_keys: [2], limit: 1, message },
    });
    assert.deepEqual([a.state, b.state, c.state, other.state], ['subscribing', 'unsubscribed', 'subscribing', 'subscribing']);
    // Untagged (a Subscribe the application sent itself with routing_keys,
    // or a server that forgot the tag): every listed key of that exchange
    // that waits for an answer, strings and numbers alike, each once.
    socket().receive({
      event: 'Error',
      tag: null,
      payload: { error: 'TooManySubscriptions', exchange: 'widgets', routing_keys: ['3', 3, 2, 'nope'], limit: 1 },
    });
    assert.deepEqual([a.state, c.state, other.state], ['subscribing', 'unsubscribed', 'subscribing']);
    assert.deepEqual(Object.keys(connection.subscriptions).sort(), ['gadgets::2', 'widgets::1']);
    assert.deepEqual(seen, [['widgets::2', 1], ['widgets::3', 1]]);
    // The others are answered as usual.
    confirmAll(socket());
    assert.equal(a.subscribed && other.subscribed, true);
    assertQuiet(logged);
  });

  test('a callback for one refused key that ends another is not undone by the rest of the answer', () => {
    const { connection, socket } = openConnection(Myxi);
    const [a, b] = [1, 2].map((key) => connection.subscribe('widgets', key));
    a.on('RateLimited', () => b.unsubscribe());
    socket().receive({ event: 'Error', tag: null, payload: { error: 'RateLimited', exchange: 'widgets', routing_keys: [1, 2] } });
    assert.equal(a.state, 'pending');
    assert.equal(b.state, 'unsubscribed');
    assert.equal(connection.subscriptions['widgets::2'], undefined);
  });

  test('RateLimited {exchange, routing_keys} on a Subscribe keeps those keys and retries them later', (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const { connection, socket } = openConnection(Myxi);
    const [a, b] = [1, 2].map((key) => connection.subscribe('widgets', key));
    socket().receive({ event: 'Error', tag: null, payload: { error: 'RateLimited', exchange: 'widgets', routing_keys: [1, 2] } });
    assert.deepEqual([a.state, b.state], ['pending', 'pending']);
    assert.equal(socket().actions('Subscribe').length, 2);
    mock.timers.tick(500); // half of the first backoff ceiling (1 s)
    assert.deepEqual(socket().actions('Subscribe').slice(2).map((s) => s.payload.routing_key), [1, 2]);
    confirmAll(socket());
    assert.deepEqual([a.subscribed, b.subscribed], [true, true]);
  });

  for (const error of ['BrokerUnavailable', 'RateLimited']) {
    test(`${error} keeps it and retries with backoff`, (t) => {
      t.mock.method(Math, 'random', () => 0.5);
      const { connection, socket } = openConnection(Myxi, { backoff: { initial: 1000, max: 4000 } });
      const subscription = connection.subscribe('widgets', 3);
      const errors = [];
      subscription.on(error, () => errors.push(error));
      const refuse = () => socket().reply('Subscribe', 'Error', { error, exchange: 'widgets', routing_key: 3 });
      let sent = refuse();
      assert.equal(subscription.state, 'pending');
      assert.equal(connection.subscriptions['widgets::3'], subscription);
      // Retries after 500, 1000, 2000, 2000 ms (half of the capped ceiling: random is 0.5).
      for (const delay of [500, 1000, 2000, 2000]) {
        mock.timers.tick(delay - 1);
        assert.equal(socket().lastAction('Subscribe'), sent, `not before ${delay} ms`);
        mock.timers.tick(1);
        const retry = socket().lastAction('Subscribe');
        assert.notEqual(retry, sent, `retried after ${delay} ms`);
        assert.notEqual(retry.tag, sent.tag);
        sent = refuse();
      }
      assert.equal(errors.length, 5);
      mock.timers.tick(2000);
      confirm(socket());
      assert.equal(subscription.subscribed, true);
      // Confirmed: the next refusal starts from the first delay again.
      socket().drop(1006);
      mock.timers.tick(4000);
      socket().open();
      refuse();
      const count = socket().actions('Subscribe').length;
      mock.timers.tick(500);
      assert.equal(socket().actions('Subscribe').length, count + 1);
    });
  }

  test('a retry waiting when the socket closes is replaced by the resubscription', (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const { connection, WebSocket } = openConnection(Myxi, { reconnectDelay: 100 });
    connection.subscribe('w', 1);
    WebSocket.last.reply('Subscribe', 'Error', { error: 'BrokerUnavailable', exchange: 'w', routing_key: 1 });
    WebSocket.last.drop(1006);
    mock.timers.tick(100);
    WebSocket.last.open();
    assert.equal(WebSocket.last.actions('Subscribe').length, 1);
    mock.timers.tick(9999); // the old retry would have come by now; the answer may still
    assert.equal(WebSocket.last.actions('Subscribe').length, 1, 'the old retry timer is gone');
  });

  test('a Subscribe left unanswered (a server over its rate limit drops frames) is sent again', (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const { connection, socket } = openConnection(Myxi, { pingInterval: 0 });
    const subscription = connection.subscribe('w', 1);
    const other = connection.subscribe('w', 2);
    const [first] = socket().actions('Subscribe');
    confirm(socket()); // w::2 is answered, w::1 never
    mock.timers.tick(9999);
    assert.equal(subscription.state, 'subscribing');
    mock.timers.tick(1); // requestTimeout: given up, retried after a backoff
    assert.equal(subscription.state, 'pending');
    assert.equal(connection.subscriptions['w::1'], subscription);
    mock.timers.tick(500);
    const retry = socket().lastAction('Subscribe');
    assert.deepEqual(retry.payload, { exchange: 'w', routing_key: 1 });
    assert.notEqual(retry.tag, first.tag);
    assert.equal(subscription.state, 'subscribing');
    // A late answer to the first one changes nothing; the retry's counts.
    socket().receive({ event: 'Subscribed', tag: first.tag, payload: first.payload });
    assert.equal(subscription.state, 'subscribing');
    socket().reply('Subscribe', 'Subscribed', retry.payload);
    assert.equal(subscription.subscribed, true);
    // Answered subscriptions are left alone.
    mock.timers.tick(60000);
    assert.equal(socket().actions('Subscribe').length, 3);
    assert.equal(other.subscribed, true);
  });

  test('requestTimeout 0: a Subscribe waits for its answer however long', () => {
    const { connection, socket } = openConnection(Myxi, { pingInterval: 0, requestTimeout: 0 });
    const subscription = connection.subscribe('w', 1);
    mock.timers.tick(3600 * 1000);
    assert.equal(subscription.state, 'subscribing');
    assert.equal(socket().actions('Subscribe').length, 1);
  });

  test('another error (e.g. AuthRequired) keeps it until the next authentication', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.authentication(() => {});
    connection.isAuthenticated();
    const subscription = connection.subscribe('private', 1);
    socket().reply('Subscribe', 'Error', { error: 'AuthRequired' });
    assert.equal(subscription.state, 'pending');
    mock.timers.tick(60000);
    assert.equal(socket().actions('Subscribe').length, 1, 'no timed retry');
    connection.isAuthenticated();
    assert.equal(socket().actions('Subscribe').length, 2);
    assert.equal(subscription.state, 'subscribing');
  });
});

describe('answers without our tag (servers that forget it)', () => {
  test('Subscribed and errors are matched by exchange and routing key as echoed', () => {
    const { connection, socket } = openConnection(Myxi);
    const a = connection.subscribe('widgets', 42);
    const b = connection.subscribe('widgets', 'x');
    socket().receive({ event: 'Subscribed', tag: null, payload: { exchange: 'widgets', routing_key: 42 } });
    socket().receive({ event: 'Error', payload: { error: 'SubscriptionDenied', exchange: 'widgets', routing_key: 'x' } });
    assert.equal(a.subscribed, true);
    assert.equal(b.state, 'unsubscribed');
  });

  test('an answer to another action of the client is not taken for a subscription\'s', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 1);
    connection.request('Subscribe', { exchange: 'widgets', routing_key: 1 }).catch(() => {});
    socket().reply('Subscribe', 'Error', { error: 'SubscriptionDenied', exchange: 'widgets', routing_key: 1 });
    assert.equal(subscription.state, 'subscribing');
  });
});

describe('ending subscriptions', () => {
  test('unsubscribe() sends Unsubscribe, removes it at once, and emits Unsubscribed on the answer', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('myChannel', 1234);
    confirm(socket());
    const seen = [];
    subscription.on('Unsubscribed', (payload) => seen.push(payload));
    assert.equal(subscription.unsubscribe(), true);
    const sent = socket().lastAction('Unsubscribe');
    assert.deepEqual(sent.payload, { exchange: 'myChannel', routing_key: 1234 });
    assert.equal(typeof sent.tag, 'string');
    assert.equal(subscription.state, 'unsubscribed');
    assert.equal(connection.subscriptions['myChannel::1234'], undefined);
    const answer = { exchange: 'myChannel', exchange_name: 'myChannel', routing_key: 1234, auto: false };
    socket().reply('Unsubscribe', 'Unsubscribed', answer);
    assert.deepEqual(seen, [answer]);
    assert.equal(subscription.unsubscribe(), false, 'a second time does nothing');
    assert.equal(socket().actions('Unsubscribe').length, 1);
  });

  test('subscribing again right away is not undone by the old Unsubscribed', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.subscribe('w', 1);
    confirm(socket());
    connection.subscriptions['w::1'].unsubscribe();
    const again = connection.subscribe('w', 1);
    // Tagged answer, then the same answer from a server that forgets tags.
    socket().reply('Unsubscribe', 'Unsubscribed', { exchange: 'w', exchange_name: 'w', routing_key: 1, auto: false });
    socket().receive({ event: 'Unsubscribed', tag: null, payload: { exchange_name: 'w', routing_key: 1 } });
    assert.equal(connection.subscriptions['w::1'], again);
    confirm(socket());
    assert.equal(again.subscribed, true);
  });

  test('a Subscribed for an ended subscription does not bring it back', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('w', 1);
    subscription.unsubscribe();
    confirm(socket());
    assert.equal(subscription.state, 'unsubscribed');
    assert.equal(connection.subscriptions['w::1'], undefined);
  });

  test('unsubscribe() while disconnected returns false and it is not resubscribed', () => {
    const { connection, WebSocket } = openConnection(Myxi);
    const subscription = connection.subscribe('w', 1);
    WebSocket.last.drop(1006);
    assert.equal(subscription.unsubscribe(), false);
    assert.equal(connection.subscriptions['w::1'], undefined);
    mock.timers.tick(5000);
    WebSocket.last.open();
    assert.deepEqual(WebSocket.last.sent, []);
  });

  test('unsubscribe() of one the server never heard of sends nothing', () => {
    const { connection, socket } = openConnection(Myxi);
    connection.authentication(() => {});
    const subscription = connection.subscribe('w', 1);
    assert.equal(subscription.unsubscribe(), false);
    connection.isAuthenticated();
    assert.deepEqual(socket().sent, []);
  });

  for (const [name, payload] of [
    ['exchange_name (myxi 1.x)', { exchange_name: 'widgets', routing_key: '5', auto: true }],
    ['exchange', { exchange: 'widgets', routing_key: 5, auto: true }],
  ]) {
    test(`an Unsubscribed from the server naming ${name} removes it`, () => {
      const { connection, socket } = openConnection(Myxi);
      const subscription = connection.subscribe('widgets', 5);
      confirm(socket());
      const seen = [];
      subscription.on('Unsubscribed', (p) => seen.push(p.auto));
      socket().receive({ event: 'Unsubscribed', tag: null, payload });
      assert.deepEqual(seen, [true]);
      assert.equal(subscription.state, 'unsubscribed');
      assert.equal(connection.subscriptions['widgets::5'], undefined);
    });
  }

  test('the server\'s answer that removed nothing removes nothing', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 5);
    confirm(socket());
    socket().receive({ event: 'Unsubscribed', tag: 'app', payload: { exchange: null, exchange_name: null, routing_key: null, auto: false } });
    socket().receive({ event: 'Unsubscribed', tag: 'app', payload: { exchange: 'other', exchange_name: 'other', routing_key: null, auto: false } });
    assert.equal(subscription.subscribed, true);
  });
});
