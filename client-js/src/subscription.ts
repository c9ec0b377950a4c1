import { Backoff } from './backoff.js';
import type { Connection } from './connection.js';
import { Emitter, type AnyListener } from './emitter.js';
import { keyFor, toPosition } from './protocol.js';
import { SUBSCRIPTION_STATES, Sub } from './states.js';
import type { Mq, Payload, Position, RoutingKey, SubscriptionState, Tag } from './types.js';

/**
 * A callback for one event of a subscription; `this` is the subscription.
 * `mq` is set on application events (`mq.replayed` tells a replayed one).
 */
export type SubscriptionCallback<P extends object = Payload> = (
  this: Subscription,
  payload: P,
  tag: Tag,
  mq: Mq | undefined,
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
  mq: Mq | undefined,
) => void;

/**
 * One exchange and routing key the application wants events from. Made by
 * `connection.subscribe()`, which keeps it in `connection.subscriptions`
 * until it ends; the connection subscribes it again after every reconnect.
 *
 * Besides the application's events it emits, with `(payload, tag)`:
 * `Subscribed` (the server confirmed), `Error` plus the error's own name
 * (e.g. `SubscriptionDenied`, `BrokerUnavailable`) when the server refused
 * it, `Unsubscribed` when it ended on the server, and `RecoveryFailed`
 * (after `Subscribed`) when it asked to resume from a position and the server
 * could not replay what it missed: the application reloads its state.
 *
 * On an exchange with history it keeps its `position`, and resubscribes from
 * it after a reconnect: the server replays the events it missed (flagged
 * `mq.replayed`), and the client drops any event it already had.
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
  /** @internal The last recorded event received, or where the subscription went live. */
  _pos: Position | null;
  /** @internal The Subscribe sent last carried `since`. */
  _asked = false;
  /** @internal Events of the position's epoch up to this offset are replayed ones. */
  private _replayTo = -1;
  private _recovered: boolean | null = null;

  private readonly _events: Emitter;
  private readonly _handlers = new Map<string, { handler: MessageHandler; param: unknown }>();

  /** Made by `connection.subscribe()`; one made directly is not tracked by the connection. */
  constructor(connection: Connection, exchange: string, routingKey?: RoutingKey, since?: Position | null) {
    this.connection = connection;
    this.exchange = exchange;
    this.routingKey = routingKey;
    this._pos = toPosition(since?.epoch, since?.offset);
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

  /**
   * Where it is in the exchange's history (`{epoch, offset}`), to save and
   * pass back as `subscribe(…, { since })`; null on an exchange without
   * history, or before the server's first answer.
   */
  get position(): Position | null {
    return this._pos;
  }

  /**
   * The outcome of the last `Subscribe` that asked to resume (`since`): true
   * when the server replays everything missed, false when it could not
   * (`RecoveryFailed`); null when the last `Subscribe` did not ask.
   */
  get recovered(): boolean | null {
    return this._recovered;
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

  /**
   * @internal The server confirmed it: the position becomes the answer's,
   * unless the server replays from ours. Returns true when the recovery
   * asked for failed.
   */
  _confirmed(payload: Payload): boolean {
    const recovered = (this._recovered = this._asked ? payload.recovered === true : null);
    const position = toPosition(payload.epoch, payload.offset);
    this._replayTo = recovered && position ? position.offset : -1;
    if (!recovered) this._pos = position;
    return recovered === false;
  }

  /**
   * @internal Moves the position to a recorded event (one with `o`) and
   * flags it replayed or live; false for one at or before the position in
   * the same epoch, which the subscription already had.
   */
  _seen(mq: Mq): boolean {
    const position = this._pos;
    // Checked like a saved position: a bad one would be sent back as `since`.
    const seen = toPosition(mq.ep, mq.o);
    if (!seen) return true;
    if (position && position.epoch === seen.epoch) {
      if (seen.offset <= position.offset) return false;
      // Set only when true: a live event's mq stays as the server sent it.
      if (seen.offset <= this._replayTo) mq.replayed = true;
    }
    this._pos = seen;
    return true;
  }

  /** @internal Delivers one event to the listeners, then to the message handlers. */
  _emit(event: string, payload: Payload, tag: Tag, mq?: Mq): void {
    this._events._emit(event, payload, tag, mq);
    for (const [name, { handler, param }] of [...this._handlers]) {
      try {
        handler.call(this, event, payload, tag, param, mq);
      } catch (error) {
        this.connection._report(error, `${event} handler ${name}`);
      }
    }
  }
}
