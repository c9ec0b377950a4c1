import { Backoff } from './backoff.js';
import { Emitter, type AnyListener } from './emitter.js';
import { MyxiError } from './errors.js';
import {
  BACKOFF_CODES,
  CLOSE_ABNORMAL,
  CLOSE_NORMAL,
  CLOSE_TERMINATED,
  DROPPING_ERRORS,
  JITTER_CODES,
  RETRYING_ERRORS,
  keyFor,
  own,
  parseFrame,
  withBatch,
} from './protocol.js';
import { Requests } from './requests.js';
import { CONNECTION_STATES, Conn, Sub } from './states.js';
import { Subscription } from './subscription.js';
import type {
  BackoffOptions,
  CloseInfo,
  ConnectionOptions,
  ConnectionState,
  Mq,
  Payload,
  RequestOptions,
  RoutingKey,
  ServerEvent,
  SubscribeOptions,
  Tag,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';

/** A callback for a server event: `(payload, tag, mq)`, `this` being the connection. */
export type EventCallback<P extends object = Payload> = (
  this: Connection,
  payload: P,
  tag: Tag,
  mq: Mq | undefined,
) => void;

/** The connection's own events and what their listeners receive. */
export interface SocketEventMap {
  SocketConnected: (this: Connection) => void;
  SocketAuthenticated: (this: Connection) => void;
  SocketDisconnected: (this: Connection, info: CloseInfo) => void;
  SocketClosed: (this: Connection, info: CloseInfo) => void;
  SocketMessageReceived: (this: Connection, event: ServerEvent) => void;
}

/** Run after every (re)connect; it calls `connection.isAuthenticated()` once the server agrees. */
export type AuthenticationHook = (this: Connection, connection: Connection) => void;

const WS_OPEN = 1;
// Tags of the actions the client sends on its own (Subscribe, Unsubscribe,
// request()); the prefix keeps them apart from an application's tags.
const TAG_PREFIX = 'myxi:';
// A connection open this long has proved itself: the backoff starts over.
const HEALTHY_AFTER = 60000;

/**
 * A connection to a Myxi server, compatible with myxi 1.x's `Myxi.Connection`.
 * It connects at once and reconnects after every close it did not ask for,
 * except 4001 (terminated by the application).
 */
export class Connection {
  /** The URL given to the constructor (without the `batch` parameter). */
  readonly serverURL: string;
  /** The live subscriptions, keyed by `Subscription.keyFor(exchange, routingKey)`. */
  readonly subscriptions: Record<string, Subscription> = {};

  private _state = Conn.Connecting;
  private _ws: WebSocketLike | null = null;
  private _sessionId: string | null = null;
  /** Set by disconnect(): no reconnect until connect() is called again. */
  private _stopped = false;
  private _reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** The connect timeout, then the liveness check, of the current socket. */
  private _liveTimer: ReturnType<typeof setTimeout> | undefined;
  /** The tag of the client's own Ping: its answer is not emitted. */
  private _pingTag: Tag = null;
  private _openedAt = 0;
  private _authHook: AuthenticationHook | null = null;
  private _seq = 0;

  private readonly _socketURL: string;
  private readonly _WebSocket: WebSocketConstructor;
  private readonly _reconnectDelay: number;
  private readonly _useBackoff: boolean;
  private readonly _backoff: Backoff;
  /** @internal Backoff of a subscription's retries after BrokerUnavailable. */
  readonly _retryOptions: BackoffOptions;
  private readonly _requestTimeout: number;
  private readonly _connectTimeout: number;
  private readonly _pingInterval: number;
  private readonly _pingTimeout: number;
  private readonly _events: Emitter;
  private readonly _requests = new Requests();
  /** Subscribe tags waiting for their answer. */
  private readonly _subscribing = new Map<Tag, Subscription>();
  /** Unsubscribe tags waiting for their answer. */
  private readonly _unsubscribing = new Map<Tag, Subscription>();
  /** @internal Reports a callback that threw. */
  readonly _report: (error: unknown, event: string) => void;

  constructor(url: string, options: ConnectionOptions = {}) {
    const WebSocketImpl =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketImpl) {
      throw new TypeError('Myxi: no WebSocket; pass options.WebSocket');
    }
    this.serverURL = url;
    this._socketURL = options.batch === false ? url : withBatch(url);
    this._WebSocket = WebSocketImpl;
    this._reconnectDelay = options.reconnectDelay ?? 5000;
    this._requestTimeout = options.requestTimeout ?? 10000;
    this._connectTimeout = options.connectTimeout ?? 10000;
    this._pingInterval = options.pingInterval ?? 20000;
    this._pingTimeout = options.pingTimeout ?? 10000;
    const backoff = options.backoff;
    this._useBackoff = !!backoff;
    this._retryOptions = backoff && typeof backoff === 'object' ? backoff : {};
    // Without `backoff`, the closes that call for it (BACKOFF_CODES, failed
    // attempts) still back off, starting from the fixed delay.
    this._backoff = new Backoff(
      backoff
        ? this._retryOptions
        : { initial: this._reconnectDelay, max: Math.max(60000, this._reconnectDelay) },
    );
    const onCallbackError = options.onCallbackError;
    this._report = (error, event) => {
      try {
        if (onCallbackError) onCallbackError(error, event);
        else console.error(`Myxi: ${event} callback threw`, error);
      } catch {
        // A failing error reporter must not break the dispatch either.
      }
    };
    this._events = new Emitter(this, this._report);
    this._open();
  }

  get state(): ConnectionState {
    return CONNECTION_STATES[this._state];
  }

  /** True while the socket is open (1.x property). */
  get connected(): boolean {
    return this._state >= Conn.Open;
  }

  /** True once `isAuthenticated()` was called on the current socket (1.x property). */
  get authenticated(): boolean {
    return this._state === Conn.Authenticated;
  }

  /** The session id of the server's `Welcome` event on the current socket. */
  get sessionId(): string | null {
    return this._sessionId;
  }

  /**
   * Sets the hook run after every (re)connect. Until the hook calls
   * `isAuthenticated()`, subscriptions wait. Set while the socket is already
   * open, it runs at once; `null` removes it.
   */
  authentication(hook: AuthenticationHook | null): void {
    this._authHook = hook;
    if (this._state !== Conn.Open) return;
    if (hook) this._runAuthHook();
    else this._flush();
  }

  /** Tells the connection that authentication succeeded: pending subscriptions are sent. */
  isAuthenticated(): void {
    if (!this.connected) return;
    this._state = Conn.Authenticated;
    this._events._emit('SocketAuthenticated');
    if (this._state === Conn.Authenticated) this._flush();
  }

  /**
   * Returns the subscription to `exchange` and `routingKey`, making it if
   * there is none. It is sent when the connection is ready and again after
   * every reconnect, until it ends. `options.since` resumes a new
   * subscription from a saved position; an existing one keeps its own.
   */
  subscribe(exchange: string, routingKey?: RoutingKey, options?: SubscribeOptions): Subscription {
    const existing = this._find(exchange, routingKey);
    if (existing) return existing;
    const subscription = new Subscription(this, exchange, routingKey, options?.since);
    this.subscriptions[subscription.key()] = subscription;
    if (this._ready) this._sendSubscribe(subscription);
    return subscription;
  }

  /** Sends an action; false when the socket is not open. */
  sendAction(action: string, payload: Payload = {}, tag?: Tag): boolean {
    if (!this._sendable) return false;
    this._ws!.send(JSON.stringify({ action, tag, payload }));
    return true;
  }

  /**
   * Sends an action with a tag of its own and resolves with the first event
   * carrying that tag. Made while the socket is not open, the action waits
   * and is sent once the connection is ready (authenticated, when there is an
   * authentication hook). Rejects with a `MyxiError` on an `Error` or
   * `InternalError` answer (`error` is the server's error name), on timeout
   * (`Timeout`, waiting for the connection included), when the socket closes
   * after sending it (`SocketClosed`), or when the client will not connect
   * (`NotConnected`: after `disconnect()` or a 4001 close). Works before
   * authentication on an open socket, so the authentication hook can use it.
   */
  request<P extends object = Payload>(
    action: string,
    payload: Payload = {},
    options: RequestOptions = {},
  ): Promise<ServerEvent<P>> {
    const tag = this._nextTag();
    let frame: string | undefined;
    try {
      frame = JSON.stringify({ action, tag, payload });
    } catch (error) {
      return Promise.reject(error); // a payload JSON cannot encode
    }
    if (this._stopped) return Promise.reject(new MyxiError('NotConnected', `${action}: not connected`));
    if (this._sendable) {
      this._ws!.send(frame);
      frame = undefined;
    }
    // Registered after sending: a socket delivers nothing during send().
    const answer = this._requests._open(tag, action, options.timeout ?? this._requestTimeout, frame);
    return answer as Promise<ServerEvent<P>>;
  }

  /** Listens to a server event or one of the `Socket*` events; returns the connection, for chaining. */
  on<K extends keyof SocketEventMap>(event: K, callback: SocketEventMap[K]): this;
  on<P extends object = Payload>(event: string, callback: EventCallback<P>): this;
  on(event: string, callback: AnyListener): this {
    this._events._on(event, callback);
    return this;
  }

  /** Removes a listener, every listener of `event`, or every listener; returns the connection. */
  off<K extends keyof SocketEventMap>(event: K, callback?: SocketEventMap[K]): this;
  off<P extends object = Payload>(event?: string, callback?: EventCallback<P>): this;
  off(event?: string, callback?: AnyListener): this {
    this._events._off(event, callback);
    return this;
  }

  /**
   * Connects again after `disconnect()` or a 4001 close, or at once when waiting to
   * reconnect; does nothing while connected or connecting.
   */
  connect(): void {
    this._stopped = false;
    if (this._ws) return;
    clearTimeout(this._reconnectTimer);
    this._open();
  }

  /** Closes the socket (code 1000) and stops reconnecting. Subscriptions are kept for `connect()`. */
  disconnect(): void {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    const ws = this._ws;
    if (ws) {
      ws.close(CLOSE_NORMAL);
      // Settle now rather than on the close event, which may come late or never.
      this._closed(CLOSE_NORMAL, '');
    } else {
      this._requests._failAll('NotConnected', 'not connected', true);
    }
  }

  /** @internal Called by `Subscription.unsubscribe()`. */
  _unsubscribe(subscription: Subscription): boolean {
    const state = subscription._state;
    if (state === Sub.Unsubscribed) return false;
    this._end(subscription);
    // A subscription the server never heard of needs no Unsubscribe.
    if (state < Sub.Subscribing) return false;
    const tag = this._nextTag();
    const { exchange, routingKey } = subscription;
    if (!this.sendAction('Unsubscribe', { exchange, routing_key: routingKey }, tag)) return false;
    this._unsubscribing.set(tag, subscription);
    return true;
  }

  private get _sendable(): boolean {
    const ws = this._ws;
    return !!ws && this.connected && ws.readyState === WS_OPEN;
  }

  private get _ready(): boolean {
    return this._state === Conn.Authenticated || (this._state === Conn.Open && !this._authHook);
  }

  /** The subscription to `exchange` and `routingKey`, if there is one. */
  private _find(exchange: string, routingKey: unknown): Subscription | undefined {
    return own(this.subscriptions, keyFor(exchange, routingKey as RoutingKey));
  }

  private _nextTag(): string {
    return TAG_PREFIX + ++this._seq;
  }

  private _open(): void {
    this._reconnectTimer = undefined;
    this._state = Conn.Connecting;
    this._sessionId = null;
    const ws = new this._WebSocket(this._socketURL);
    this._ws = ws;
    this._watch(this._connectTimeout, 'connect timeout');
    // Handlers stay attached to a socket the client has left behind (the
    // `ws` package throws on an error event nobody listens to), so each one
    // first checks that its socket is still the current one.
    ws.onopen = () => {
      if (this._ws === ws) this._opened();
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (this._ws === ws) this._heard();
      for (const message of this._ws === ws ? parseFrame(event.data) : []) {
        if (this._ws !== ws) break; // a callback closed the connection mid-frame
        this._dispatch(message);
      }
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (this._ws === ws) this._closed(event.code ?? CLOSE_ABNORMAL, event.reason ?? '');
    };
    // A close event always follows an error event, with more to say.
    ws.onerror = () => {};
  }

  private _opened(): void {
    this._state = Conn.Open;
    this._openedAt = Date.now();
    this._heard();
    this._events._emit('SocketConnected');
    if (this._state !== Conn.Open) return; // a listener disconnected
    if (this._authHook) this._runAuthHook();
    else this._flush();
  }

  /**
   * Arms the socket's one timer: when it runs out, the socket is taken for
   * dead. `ms` 0 disarms it.
   */
  private _watch(ms: number, reason: string, then = () => this._abandon(reason)): void {
    clearTimeout(this._liveTimer);
    this._liveTimer = ms > 0 ? setTimeout(then, ms) : undefined;
  }

  /**
   * Something arrived: the path works. After `pingInterval` of silence the
   * client asks for a Pong (a browser never sees WebSocket pings), and
   * gives the socket up if nothing at all arrives within `pingTimeout`.
   */
  private _heard(): void {
    this._watch(this._pingInterval, '', () => {
      this.sendAction('Ping', {}, (this._pingTag = this._nextTag()));
      this._watch(this._pingTimeout, 'ping timeout');
    });
  }

  /**
   * Gives up a socket that connects or answers too slowly. On a dead path
   * close() sends a close frame that nothing answers, and a browser may
   * keep the socket CLOSING for a minute without a close event: so the
   * client settles the close now, and the socket's own handlers ignore it
   * from here on (they check that it is still the current one).
   */
  private _abandon(reason: string): void {
    this._ws!.close(CLOSE_NORMAL);
    this._closed(CLOSE_ABNORMAL, reason);
  }

  private _runAuthHook(): void {
    try {
      this._authHook!.call(this, this);
    } catch (error) {
      this._report(error, 'authentication');
    }
  }

  private _closed(code: number, reason: string): void {
    const wasOpen = this._state !== Conn.Connecting;
    this._ws = null;
    this._state = Conn.Closed;
    this._watch(0, '');
    if (code === CLOSE_TERMINATED) this._stopped = true;
    // Everything still wanted goes back to pending, to be sent again once the
    // next connection is ready; answers to this socket's actions are lost.
    for (const subscription of Object.values(this.subscriptions)) {
      this._stopTimer(subscription);
      subscription._tag = null;
      subscription._state = Sub.Pending;
    }
    this._subscribing.clear();
    this._unsubscribing.clear();
    this._requests._failAll('SocketClosed', 'socket closed');

    const reconnectIn = this._stopped ? null : this._delayAfter(code, wasOpen);
    if (reconnectIn !== null) {
      // The WebSocket constructor throws only for a URL it rejects, which the
      // first attempt, in the constructor, has already reported.
      this._reconnectTimer = setTimeout(() => this._open(), reconnectIn);
    } else {
      this._requests._failAll('NotConnected', 'not connected', true);
    }
    const info: CloseInfo = { code, reason, reconnectIn };
    if (wasOpen) this._events._emit('SocketDisconnected', info);
    this._events._emit('SocketClosed', info);
  }

  /** The delay before reconnecting after a close with `code` (PROTOCOL.md's table). */
  private _delayAfter(code: number, wasOpen: boolean): number {
    // A connection that lasted has proved the server well (one that closes
    // soon after opening, e.g. over its limit or too slow, has not).
    if (wasOpen && Date.now() - this._openedAt >= HEALTHY_AFTER) this._backoff._reset();
    if (this._useBackoff || !wasOpen || BACKOFF_CODES.includes(code)) return this._backoff._next();
    // Draining, idle and application closes send many clients away at once:
    // spread their return over [0.5, 1.5) times the delay.
    return Math.floor(this._reconnectDelay * (JITTER_CODES.includes(code) ? 0.5 + Math.random() : 1));
  }

  private _dispatch(message: ServerEvent): void {
    const { event, payload, tag, mq } = message;
    // The answer to the client's own keepalive is nobody else's business.
    if (tag === this._pingTag && tag !== null) return;
    const subscription = mq ? this._find(mq.e, mq.rk) : undefined;
    // A recorded event the subscription already had (a server must not send
    // one, but a duplicate would corrupt an application that adds up events).
    if (subscription && !subscription._seen(mq!)) return;
    if (event === 'Welcome' && typeof payload.id === 'string') this._sessionId = payload.id;
    this._track(message);
    subscription?._emit(event, payload, tag, mq);
    this._requests._settle(message);
    this._events._emit(event, payload, tag, mq);
    this._events._emit('SocketMessageReceived', message);
  }

  /** Keeps the subscriptions in step with the server's answers. */
  private _track(message: ServerEvent): void {
    const { event, payload, tag } = message;
    if (event === 'Unsubscribed') {
      this._onUnsubscribed(message);
      return;
    }
    if (event !== 'Subscribed' && event !== 'Error' && event !== 'InternalError') return;
    const error = event === 'InternalError' ? event : String(payload.error);
    for (const subscription of this._answered(message)) {
      // A callback for one of them may have ended or reset the next.
      if (subscription._state !== Sub.Subscribing) continue;
      this._stopTimer(subscription);
      // AlreadySubscribed: the server has it (e.g. the application also
      // subscribed by hand).
      if (event === 'Subscribed' || error === 'AlreadySubscribed') {
        this._confirm(subscription, payload, tag);
        continue;
      }
      if (DROPPING_ERRORS.includes(error)) {
        this._end(subscription);
      } else {
        // Kept: retried with backoff when the server says "not now", otherwise
        // (e.g. AuthRequired) at the next authentication or reconnect.
        subscription._state = Sub.Pending;
        if (RETRYING_ERRORS.includes(error)) this._scheduleRetry(subscription);
      }
      subscription._emit('Error', payload, tag);
      subscription._emit(error, payload, tag);
    }
  }

  /**
   * The subscriptions a Subscribed or Error answers: the one of the
   * Subscribe with that tag, else (a server that forgot the tag, or a
   * Subscribe the application sent itself) those of the payload's exchange
   * and `routing_key`, or each of its `routing_keys` (TooManySubscriptions,
   * RateLimited answer a whole action at once), that are waiting for an
   * answer.
   */
  private _answered({ payload, tag }: ServerEvent): Subscription[] {
    const byTag = this._subscribing.get(tag);
    if (byTag) {
      this._subscribing.delete(tag);
      return [byTag];
    }
    // The answer to another of the client's own actions (or to a Subscribe of
    // a subscription that has ended since).
    const { exchange, routing_keys: keys } = payload;
    if ((typeof tag === 'string' && tag.startsWith(TAG_PREFIX)) || typeof exchange !== 'string') return [];
    const found: Subscription[] = [];
    for (const key of Array.isArray(keys) ? keys : [payload.routing_key]) {
      const subscription = this._find(exchange, key);
      if (subscription && subscription._state === Sub.Subscribing && !found.includes(subscription)) {
        if (subscription._tag !== null) this._subscribing.delete(subscription._tag);
        found.push(subscription);
      }
    }
    return found;
  }

  private _onUnsubscribed({ payload, tag }: ServerEvent): void {
    const ours = this._unsubscribing.get(tag);
    if (ours) {
      this._unsubscribing.delete(tag);
      ours._emit('Unsubscribed', payload, tag);
      return;
    }
    // The server ended a subscription on its own (`auto`: authorization
    // revoked) or for an Unsubscribe the application sent itself. 1.x servers
    // name the exchange `exchange_name`.
    const exchange = payload.exchange_name ?? payload.exchange;
    if (typeof exchange !== 'string') return;
    const subscription = this._find(exchange, payload.routing_key);
    // Only a confirmed one: a subscription still waiting for its Subscribed
    // is a newer one than the Unsubscribe this answers.
    if (!subscription || subscription._state !== Sub.Subscribed) return;
    this._end(subscription);
    subscription._emit('Unsubscribed', payload, tag);
  }

  private _confirm(subscription: Subscription, payload: Payload, tag: Tag): void {
    subscription._tag = null;
    subscription._retry._reset();
    subscription._state = Sub.Subscribed;
    const failed = subscription._confirmed(payload);
    subscription._emit('Subscribed', payload, tag);
    if (failed && subscription._state === Sub.Subscribed) subscription._emit('RecoveryFailed', payload, tag);
  }

  /** Removes a subscription for good. */
  private _end(subscription: Subscription): void {
    const key = subscription.key();
    if (own(this.subscriptions, key) === subscription) delete this.subscriptions[key];
    this._stopTimer(subscription);
    if (subscription._tag !== null) this._subscribing.delete(subscription._tag);
    subscription._tag = null;
    subscription._state = Sub.Unsubscribed;
  }

  private _sendSubscribe(subscription: Subscription): void {
    const tag = this._nextTag();
    const { exchange, routingKey, _pos: since } = subscription;
    // From its position, if it has one: kept through retries and reconnects.
    if (!this.sendAction('Subscribe', { exchange, routing_key: routingKey, since: since || undefined }, tag)) return;
    subscription._asked = !!since;
    subscription._tag = tag;
    subscription._state = Sub.Subscribing;
    this._subscribing.set(tag, subscription);
    // A server over its rate limit may drop a frame without answering it:
    // a Subscribe still unanswered after requestTimeout is tried again later.
    if (this._requestTimeout > 0) {
      subscription._retryTimer = setTimeout(() => {
        this._subscribing.delete(tag);
        subscription._tag = null;
        subscription._state = Sub.Pending;
        this._scheduleRetry(subscription);
      }, this._requestTimeout);
    }
  }

  /** Cancels a subscription's retry, or the wait for its Subscribe's answer. */
  private _stopTimer(subscription: Subscription): void {
    clearTimeout(subscription._retryTimer);
    subscription._retryTimer = undefined;
  }

  private _scheduleRetry(subscription: Subscription): void {
    subscription._retryTimer = setTimeout(() => {
      subscription._retryTimer = undefined;
      if (this._ready && subscription._state === Sub.Pending) this._sendSubscribe(subscription);
    }, subscription._retry._next());
  }

  /**
   * The connection is ready: sends the requests made while it was not, then
   * every pending subscription, except those waiting for a retry.
   */
  private _flush(): void {
    if (!this._sendable) return;
    this._requests._flush((frame) => this._ws!.send(frame));
    for (const subscription of Object.values(this.subscriptions)) {
      if (subscription._state === Sub.Pending && subscription._retryTimer === undefined) {
        this._sendSubscribe(subscription);
      }
    }
  }
}
