// Type-level usage of the package as an ES module in Node. Compiled, never
// run: `@ts-expect-error` lines prove the types reject what they should.

import WebSocket from 'ws';
import {
  Connection,
  MyxiError,
  Subscription,
  connectFromMeta,
  type CloseInfo,
  type ConnectionOptions,
  type ConnectionState,
  type Mq,
  type Position,
  type SubscribeOptions,
  type ServerEvent,
  type SubscriptionState,
  type Tag,
} from 'myxi';

const options: ConnectionOptions = {
  WebSocket, // the ws package's class fits
  batch: true,
  reconnectDelay: 5000,
  backoff: { initial: 1000, max: 30000, factor: 2 },
  requestTimeout: 10000,
  connectTimeout: 10000,
  pingInterval: 20000,
  pingTimeout: 10000,
  onCallbackError: (error: unknown, event: string) => console.log(error, event),
};
const connection = new Connection('ws://localhost:5005/', options);
new Connection('ws://localhost:5005/', { backoff: true });

connection.authentication(function () {
  this.on('Authenticated', () => this.isAuthenticated());
  this.sendAction('Authenticate', { session_token: 'x' });
});

interface Qty {
  quantity: number;
}
const subscription: Subscription = connection.subscribe('widgets', 42);
connection.subscribe('widgets', '42');
connection.subscribe('widgets');
function onQty(this: Subscription, payload: Qty, tag: Tag) {
  const n: number = payload.quantity;
  const self: Subscription = this;
  console.log(n, tag, self.key());
}
// on() and off() return the subscription: calls chain (issue 15).
const chained: Subscription = subscription
  .on<Qty>('WidgetQtyChanged', onQty)
  .on('SubscriptionDenied', () => {})
  .off<Qty>('WidgetQtyChanged', onQty);
chained.off('WidgetQtyChanged');
subscription.addMessageHandler('view', (event: string, payload, tag, param) => console.log(event, payload, tag, param), {});
const removed: boolean = subscription.removeMessageHandler('view');
const subscribed: boolean = subscription.subscribed;
const subscriptionState: SubscriptionState = subscription.state;
const key: string = Subscription.keyFor('widgets', 42);
const same: Subscription | undefined = connection.subscriptions[key];
const unsubscribed: boolean = subscription.unsubscribe();

connection.on('Hello', (payload, tag, mq: Mq | undefined) => console.log(payload.anything, tag, mq?.rk));
connection.on('SocketClosed', (info: CloseInfo) => console.log(info.code, info.reason, info.reconnectIn));
connection.on('SocketMessageReceived', (event: ServerEvent) => console.log(event.event, event.payload));
const self: Connection = connection.on('SocketConnected', () => {}).on('Welcome', () => {});
self.off('Hello').off();

const sent: boolean = connection.sendAction('SayHello', { name: 'Adam' }, 'tag-1');
async function ask(): Promise<number> {
  try {
    const answer = await connection.request<{ time: number }>('Ping', {}, { timeout: 1000 });
    return answer.payload.time;
  } catch (error) {
    if (error instanceof MyxiError) console.log(error.error, error.event?.payload);
    return 0;
  }
}
const state: ConnectionState = connection.state;
const flags: boolean[] = [connection.connected, connection.authenticated];
const id: string | null = connection.sessionId;
connection.disconnect();
connection.connect();
connectFromMeta({ WebSocket }, { querySelector: () => null });

// Recovery (issue 14): resume from a saved position, tell replayed events, reload when it fails.
const saved: Position | null = subscription.position;
const resumeOptions: SubscribeOptions = { since: saved };
const resumed: Subscription = connection
  .subscribe('widgets', 7, resumeOptions)
  .on<Qty>('WidgetQtyChanged', function (payload, tag, mq) {
    const replayed: boolean = mq?.replayed === true;
    const offset: number | undefined = mq?.o;
    const epoch: string | undefined = mq?.ep;
    console.log(payload.quantity, tag, replayed, offset, epoch, this.position?.offset);
  })
  .on('RecoveryFailed', function () {
    const recovered: boolean | null = this.recovered;
    console.log(recovered);
  });
connection.subscribe('widgets', 8, { since: { epoch: 'e', offset: 3 } });
connection.subscribe('widgets', 9, {});
resumed.addMessageHandler('h', (event, payload, tag, param, mq) => console.log(mq?.replayed));
// @ts-expect-error: an offset is a number
connection.subscribe('widgets', 7, { since: { epoch: 'e', offset: '3' } });
// @ts-expect-error: the position is read-only
subscription.position = null;

// @ts-expect-error: an exchange is a string
connection.subscribe(42, 1);
// @ts-expect-error: routing keys are strings or numbers
connection.subscribe('widgets', { id: 1 });
// @ts-expect-error: no such state
const bogus: ConnectionState = 'reconnecting';
// @ts-expect-error: close listeners get CloseInfo
connection.on('SocketClosed', (info: string) => info);
// @ts-expect-error: on() returns the connection, no longer a remover (issue 15)
const remover: () => void = connection.on('Hello', () => {});
// @ts-expect-error: internals are not part of the types
subscription._state;
// @ts-expect-error: a WebSocket needs send and close
new Connection('ws://x', { WebSocket: class {} });

export { ask, bogus, flags, id, remover, removed, same, sent, state, subscribed, subscriptionState, unsubscribed };
