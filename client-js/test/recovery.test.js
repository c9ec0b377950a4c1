// Missed-event recovery (PROTOCOL.md, "Extension: history and recovery"):
// positions, Subscribe with `since`, replayed and live events, RecoveryFailed.

import { describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import * as Myxi from '../dist/myxi.mjs';
import { openConnection } from './fake-websocket.js';
import { assertQuiet, useHarness } from './harness.js';

const logged = useHarness();

/** The server answers the last Subscribe with Subscribed, plus `extra` (epoch, offset, recovered). */
function confirm(socket, extra = {}) {
  const { payload } = socket.lastAction('Subscribe');
  const { since, ...echo } = payload;
  return socket.reply('Subscribe', 'Subscribed', { ...echo, ...extra });
}

/** A recorded event of widgets::42 at offset `o` of epoch `ep`. */
function recorded(o, ep = 'A', event = 'WidgetQtyChanged') {
  return { event, tag: null, payload: { quantity: o }, mq: { e: 'widgets', rk: '42', o, ep } };
}

/** A subscription to widgets::42 that records what its listeners receive. */
function watched(connection, options) {
  const subscription = connection.subscribe('widgets', 42, options);
  const seen = [];
  subscription.on('WidgetQtyChanged', (payload, tag, mq) => seen.push([payload.quantity, !!mq.replayed]));
  subscription.on('RecoveryFailed', (payload) => seen.push(['RecoveryFailed', payload.epoch, payload.offset]));
  return { subscription, seen };
}

/** Drops the socket and reconnects (reconnectDelay 100). */
function reconnect(socket) {
  socket().drop(1006);
  mock.timers.tick(100);
  socket().open();
  return socket().lastAction('Subscribe');
}

describe('position', () => {
  test('starts null, then comes from Subscribed and from each event that carries o', () => {
    const { connection, socket } = openConnection(Myxi);
    const { subscription, seen } = watched(connection);
    assert.equal(subscription.position, null);
    assert.equal(subscription.recovered, null);
    assert.equal(socket().lastAction('Subscribe').payload.since, undefined, 'nothing to resume from');
    confirm(socket(), { epoch: 'A', offset: 7 });
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 7 });
    assert.equal(subscription.recovered, null, 'it did not ask to recover');
    socket().receive(recorded(9), recorded(12));
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 12 });
    assert.deepEqual(seen, [[9, false], [12, false]]);
    assertQuiet(logged);
  });

  test('events without o (live-only 1.x publishes) never move it, and are delivered', () => {
    const { connection, socket } = openConnection(Myxi);
    const { subscription, seen } = watched(connection);
    confirm(socket(), { epoch: 'A', offset: 7 });
    const live = { event: 'WidgetQtyChanged', tag: null, payload: { quantity: 1 }, mq: { e: 'widgets', rk: '42' } };
    socket().receive(live, { ...live, mq: { e: 'widgets', rk: '42', ep: 'A' } });
    // Nor do malformed positions, which would come back as an invalid since.
    for (const [o, ep] of [[8.5, 'A'], [-1, 'A'], [2 ** 53, 'A'], ['9', 'A'], [9, ''], [9, 1]]) {
      socket().receive({ ...live, mq: { e: 'widgets', rk: '42', o, ep } });
    }
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 7 });
    assert.equal(seen.length, 8);
  });

  test('stays null on an exchange without history', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription } = watched(connection);
    confirm(socket());
    assert.equal(subscription.position, null);
    assert.equal(reconnect(socket).payload.since, undefined);
  });

  test('a live mq is left as the server sent it (no replayed key)', () => {
    const { connection, socket } = openConnection(Myxi);
    const subscription = connection.subscribe('widgets', 42);
    const mqs = [];
    subscription.on('WidgetQtyChanged', (payload, tag, mq) => mqs.push(mq));
    connection.on('WidgetQtyChanged', (payload, tag, mq) => mqs.push(mq));
    confirm(socket(), { epoch: 'A', offset: 0 });
    socket().receive(recorded(1));
    assert.deepEqual(mqs, [
      { e: 'widgets', rk: '42', o: 1, ep: 'A' },
      { e: 'widgets', rk: '42', o: 1, ep: 'A' },
    ]);
  });
});

describe('resubscribing after a reconnect', () => {
  test('sends since with the last position, one key per Subscribe', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription } = watched(connection);
    const other = connection.subscribe('widgets', 43);
    const [s42, s43] = socket().actions('Subscribe');
    socket().receive({ event: 'Subscribed', tag: s42.tag, payload: { ...s42.payload, epoch: 'A', offset: 7 } });
    socket().receive({ event: 'Subscribed', tag: s43.tag, payload: s43.payload }); // no history
    socket().receive(recorded(9));
    reconnect(socket);
    const sent = socket().actions('Subscribe').map((a) => a.payload);
    assert.deepEqual(sent.find((p) => p.routing_key === 42), {
      exchange: 'widgets',
      routing_key: 42,
      since: { epoch: 'A', offset: 9 },
    });
    assert.deepEqual(sent.find((p) => p.routing_key === 43), { exchange: 'widgets', routing_key: 43 });
    assert.equal(subscription.state, 'subscribing');
    assert.equal(other.state, 'subscribing');
  });

  test('recovered true: events up to the answer\'s offset are replayed, later ones live', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription, seen } = watched(connection);
    const handled = [];
    subscription.addMessageHandler('h', (event, payload, tag, param, mq) => mq && handled.push(mq.replayed === true));
    confirm(socket(), { epoch: 'A', offset: 7 });
    reconnect(socket);
    confirm(socket(), { recovered: true, epoch: 'A', offset: 12 });
    assert.equal(subscription.recovered, true);
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 7 }, 'unchanged until the replayed events arrive');
    socket().receive(recorded(9), recorded(12), recorded(13));
    assert.deepEqual(seen, [[9, true], [12, true], [13, false]]);
    assert.deepEqual(handled, [true, true, false]);
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 13 });
    assertQuiet(logged);
  });

  test('a replay cut short (1011) resumes from the last replayed event', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { seen } = watched(connection);
    confirm(socket(), { epoch: 'A', offset: 7 });
    reconnect(socket);
    confirm(socket(), { recovered: true, epoch: 'A', offset: 12 });
    socket().receive(recorded(9));
    socket().drop(1011);
    mock.timers.tick(60000); // 1011 backs off
    socket().open();
    assert.deepEqual(socket().lastAction('Subscribe').payload.since, { epoch: 'A', offset: 9 });
    confirm(socket(), { recovered: true, epoch: 'A', offset: 12 });
    socket().receive(recorded(12), recorded(14));
    assert.deepEqual(seen, [[9, true], [12, true], [14, false]]);
  });

  test('recovered false: RecoveryFailed after Subscribed, and the position becomes the answer\'s', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription, seen } = watched(connection);
    const order = [];
    subscription.on('Subscribed', () => order.push('Subscribed'));
    subscription.on('RecoveryFailed', function (payload, tag) {
      order.push('RecoveryFailed');
      assert.equal(this, subscription);
      assert.equal(typeof tag, 'string');
      assert.equal(this.recovered, false);
      assert.deepEqual(this.position, { epoch: 'A', offset: 50 }, 'already moved when it fires');
    });
    confirm(socket(), { epoch: 'A', offset: 7 });
    reconnect(socket);
    confirm(socket(), { recovered: false, epoch: 'A', offset: 50 });
    assert.deepEqual(order, ['Subscribed', 'Subscribed', 'RecoveryFailed']);
    socket().receive(recorded(50), recorded(51));
    assert.deepEqual(seen, [['RecoveryFailed', 'A', 50], [51, false]], 'nothing at or before the new position');
    assert.deepEqual(reconnect(socket).payload.since, { epoch: 'A', offset: 51 });
    assertQuiet(logged);
  });

  test('a new epoch: the old offsets no longer count', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription, seen } = watched(connection);
    confirm(socket(), { epoch: 'A', offset: 70 });
    reconnect(socket);
    confirm(socket(), { recovered: false, epoch: 'B', offset: 3 });
    assert.deepEqual(subscription.position, { epoch: 'B', offset: 3 });
    socket().receive(recorded(3, 'B'), recorded(4, 'B'));
    // A live event of yet another epoch (history lost while connected) is delivered and adopted.
    socket().receive(recorded(1, 'C'), recorded(1, 'C'));
    assert.deepEqual(seen, [['RecoveryFailed', 'B', 3], [4, false], [1, false]]);
    assert.deepEqual(subscription.position, { epoch: 'C', offset: 1 });
  });

  test('since asked but the answer does not say recovered (a server without history): RecoveryFailed', () => {
    const { connection, socket } = openConnection(Myxi);
    const { subscription, seen } = watched(connection, { since: { epoch: 'A', offset: 5 } });
    confirm(socket());
    assert.equal(subscription.recovered, false);
    assert.equal(subscription.position, null);
    assert.deepEqual(seen, [['RecoveryFailed', undefined, undefined]]);
  });

  test('BrokerUnavailable: retried with backoff, from the same position', (t) => {
    t.mock.method(Math, 'random', () => 0.5);
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { subscription } = watched(connection);
    confirm(socket(), { epoch: 'A', offset: 7 });
    socket().receive(recorded(8));
    const first = reconnect(socket);
    const refuse = () =>
      socket().reply('Subscribe', 'Error', { error: 'BrokerUnavailable', exchange: 'widgets', routing_key: 42 });
    refuse();
    assert.equal(subscription.state, 'pending');
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 8 });
    mock.timers.tick(500);
    const second = socket().lastAction('Subscribe');
    assert.notEqual(second, first);
    assert.deepEqual(second.payload.since, { epoch: 'A', offset: 8 });
    refuse();
    mock.timers.tick(1000);
    assert.deepEqual(socket().lastAction('Subscribe').payload.since, { epoch: 'A', offset: 8 });
    assert.equal(socket().actions('Subscribe').length, 3);
    confirm(socket(), { recovered: true, epoch: 'A', offset: 8 });
    assert.equal(subscription.recovered, true);
  });
});

describe('subscribe with since', () => {
  test('a saved position is sent with the first Subscribe', () => {
    const { connection, socket } = openConnection(Myxi);
    const saved = JSON.parse(JSON.stringify({ epoch: 'A', offset: 7 }));
    const { subscription, seen } = watched(connection, { since: saved });
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 7 });
    assert.deepEqual(socket().lastAction('Subscribe').payload, {
      exchange: 'widgets',
      routing_key: 42,
      since: { epoch: 'A', offset: 7 },
    });
    confirm(socket(), { recovered: true, epoch: 'A', offset: 9 });
    socket().receive(recorded(8), recorded(9), recorded(10));
    assert.deepEqual(seen, [[8, true], [9, true], [10, false]]);
  });

  test('a malformed one is ignored rather than refused by the server', () => {
    const { connection, socket } = openConnection(Myxi);
    const bad = [null, 'x', {}, { epoch: '', offset: 1 }, { epoch: 'A', offset: -1 }, { epoch: 'A', offset: 1.5 }, { epoch: 'A', offset: '7' }, { epoch: 1, offset: 1 }];
    bad.forEach((since, i) => {
      const subscription = connection.subscribe('w', i, { since });
      assert.equal(subscription.position, null, JSON.stringify(since));
      assert.equal(socket().lastAction('Subscribe').payload.since, undefined);
    });
  });

  test('an existing subscription keeps its own position', () => {
    const { connection, socket } = openConnection(Myxi);
    const first = connection.subscribe('widgets', 42);
    confirm(socket(), { epoch: 'A', offset: 7 });
    assert.equal(connection.subscribe('widgets', '42', { since: { epoch: 'A', offset: 1 } }), first);
    assert.deepEqual(first.position, { epoch: 'A', offset: 7 });
  });
});

describe('duplicates', () => {
  test('an event at or before the position in its epoch reaches no listener', () => {
    const { connection, socket } = openConnection(Myxi);
    const { subscription, seen } = watched(connection);
    const all = [];
    connection.on('WidgetQtyChanged', (payload) => all.push(payload.quantity));
    confirm(socket(), { epoch: 'A', offset: 7 });
    socket().receive(recorded(6), recorded(7), recorded(8), recorded(8), recorded(5), recorded(9));
    assert.deepEqual(seen, [[8, false], [9, false]]);
    assert.deepEqual(all, [8, 9]);
    assert.deepEqual(subscription.position, { epoch: 'A', offset: 9 });
  });

  test('during a replay too', () => {
    const { connection, socket } = openConnection(Myxi, { reconnectDelay: 100 });
    const { seen } = watched(connection);
    confirm(socket(), { epoch: 'A', offset: 7 });
    reconnect(socket);
    confirm(socket(), { recovered: true, epoch: 'A', offset: 10 });
    socket().receive(recorded(7), recorded(9), recorded(9), recorded(10), recorded(10), recorded(11));
    assert.deepEqual(seen, [[9, true], [10, true], [11, false]]);
  });

  test('events for a key nobody subscribed to are not filtered', () => {
    const { connection, socket } = openConnection(Myxi);
    const all = [];
    connection.on('WidgetQtyChanged', (payload) => all.push(payload.quantity));
    socket().receive(recorded(3), recorded(3));
    assert.deepEqual(all, [3, 3]);
  });
});
