import { Backoff } from './backoff.js';
import type { Connection } from './connection.js';
import { Emitter, type AnyListener } from './emitter.js';
import { keyFor } from './protocol.js';
import { SUBSCRIPTION_STATES, Sub } from './states.js';
import type { Payload, RoutingKey, SubscriptionState, Tag } from './types.js';

/** A callback for one event of a subscription; `this` is the subscription. */
export type SubscriptionCallback<P extends object = Payload> = (
  this: Subscription,
  payload: P,
  tag: Tag,
) => void;

/**
 * A named handler that sees every event of a subscription, with the `param`
 * it was added with (for example the view it updates).
 */
export type MessageHandler = (
  this: Subscription,
  event: string,
  payload: Payload,
  tag: Tag,
  param: unknown,
) => void;

/**
 * One exchange and routing key the application wants events from. Made by
 * `connection.subscribe()`, which keeps it in `connection.subscriptions`
 * until it ends; the connection subscribes it again after every reconnect.
 *
 * Besides the application's events it emits, with `(payload, tag)`:
 * `Subscribed` (the server confirmed), `Error` plus the error's own name
 * (e.g. `SubscriptionDenied`, `BrokerUnavailable`) when the server refused
 * it, and `Unsubscribed` when it ended on the server.
 */
export class Subscription {
  /** The key of a subscription in `connection.subscriptions`. */
  static keyFor(exchange: string, routingKey?: RoutingKey): string {
    return keyFor(exchange, routingKey);
  }

  readonly connection: Connection;
  readonly exchange: string;
  /** The routing key as given: sent to the server as it is. */
  readonly routingKey: RoutingKey;

  /** @internal */
  _state = Sub.Pending;
  /** @internal The tag of the Subscribe waiting for its answer. */
  _tag: Tag = null;
  /** @internal Retry after BrokerUnavailable or RateLimited, or the wait for the Subscribe's answer. */
  _retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal */
  readonly _retry: Backoff;

  private readonly _events: Emitter;
  private readonly _handlers = new Map<string, { handler: MessageHandler; param: unknown }>();

  /** Made by `connection.subscribe()`; one made directly is not tracked by the connection. */
  constructor(connection: Connection, exchange: string, routingKey?: RoutingKey) {
    this.connection = connection;
    this.exchange = exchange;
    this.routingKey = routingKey;
    this._events = new Emitter(this, connection._report);
    this._retry = new Backoff(connection._retryOptions);
  }

  get state(): SubscriptionState {
    return SUBSCRIPTION_STATES[this._state];
  }

  /** True once the server has confirmed the subscription (and until it ends or the socket closes). */
  get subscribed(): boolean {
    return this._state === Sub.Subscribed;
  }

  key(): string {
    return keyFor(this.exchange, this.routingKey);
  }

  /** Listens to one event of this subscription; returns the subscription, for chaining. */
  on<P extends object = Payload>(event: string, callback: SubscriptionCallback<P>): this {
    this._events._on(event, callback as AnyListener);
    return this;
  }

  /** Removes a listener, every listener of `event`, or every listener; returns the subscription. */
  off<P extends object = Payload>(event?: string, callback?: SubscriptionCallback<P>): this {
    this._events._off(event, callback as AnyListener | undefined);
    return this;
  }

  /**
   * Ends the subscription: it leaves `connection.subscriptions` at once and is
   * not subscribed again after a reconnect. Returns true when an Unsubscribe
   * was sent to the server, false when there was nothing to tell it (not
   * connected, or never subscribed), as myxi 1.x did.
   */
  unsubscribe(): boolean {
    return this.connection._unsubscribe(this);
  }

  /** Adds (or replaces) the handler called `name`, called for every event with `param`. */
  addMessageHandler(name: string, handler: MessageHandler, param?: unknown): void {
    this._handlers.set(name, { handler, param });
  }

  /** Removes the handler called `name`; returns whether there was one. */
  removeMessageHandler(name: string): boolean {
    return this._handlers.delete(name);
  }

  /** @internal Delivers one event to the listeners, then to the message handlers. */
  _emit(event: string, payload: Payload, tag: Tag): void {
    this._events._emit(event, payload, tag);
    for (const [name, { handler, param }] of [...this._handlers]) {
      try {
        handler.call(this, event, payload, tag, param);
      } catch (error) {
        this.connection._report(error, `${event} handler ${name}`);
      }
    }
  }
}
