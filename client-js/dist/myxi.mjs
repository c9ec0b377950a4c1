// client-js/src/backoff.ts
var Backoff = class {
  constructor(options = {}) {
    this._attempt = 0;
    this._initial = options.initial ?? 1e3;
    this._max = options.max ?? 3e4;
    this._factor = options.factor ?? 2;
  }
  /** The delay before the next attempt, in ms. */
  _next() {
    const ceiling = Math.min(this._max, this._initial * Math.pow(this._factor, this._attempt++));
    return Math.floor(Math.random() * ceiling);
  }
  /** Starts again from the first delay (after a success). */
  _reset() {
    this._attempt = 0;
  }
};

// client-js/src/emitter.ts
var Emitter = class {
  constructor(_owner, _report) {
    this._owner = _owner;
    this._report = _report;
    this._listeners = /* @__PURE__ */ new Map();
  }
  /** Adds a listener (`off` removes it). */
  _on(event, listener) {
    if (typeof listener !== "function") return;
    const list = this._listeners.get(event);
    if (list) list.push(listener);
    else this._listeners.set(event, [listener]);
  }
  /** Removes one listener, every listener of an event, or every listener. */
  _off(event, listener) {
    if (event === void 0) {
      this._listeners.clear();
      return;
    }
    if (!listener) {
      this._listeners.delete(event);
      return;
    }
    const list = this._listeners.get(event);
    const index = list ? list.indexOf(listener) : -1;
    if (index >= 0) list.splice(index, 1);
  }
  _emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list) return;
    for (const listener of list.slice()) {
      try {
        listener.apply(this._owner, args);
      } catch (error) {
        this._report(error, event);
      }
    }
  }
};

// client-js/src/errors.ts
var MyxiError = class extends Error {
  constructor(error, message, event) {
    super(message);
    this.name = "MyxiError";
    this.error = error;
    this.event = event;
  }
};

// client-js/src/protocol.ts
var CLOSE_NORMAL = 1e3;
var CLOSE_ABNORMAL = 1006;
var CLOSE_TERMINATED = 4001;
var BACKOFF_CODES = [1002, 1007, 1008, 1009, 1011, 1013];
var JITTER_CODES = [1001, 4e3, 4002];
var DROPPING_ERRORS = [
  "SubscriptionDenied",
  "InvalidExchange",
  "InvalidRoutingKey",
  "InvalidPayload",
  "TooManySubscriptions"
];
var RETRYING_ERRORS = ["BrokerUnavailable", "RateLimited"];
function keyFor(exchange, routingKey) {
  return routingKey === null || routingKey === void 0 || routingKey === "" ? exchange : exchange + "::" + routingKey;
}
function own(map, key) {
  return Object.prototype.hasOwnProperty.call(map, key) ? map[key] : void 0;
}
function withBatch(url) {
  if (/[?&]batch=/.test(url)) return url;
  return url + (url.includes("?") ? "&" : "?") + "batch=1";
}
function toPosition(epoch, offset) {
  return typeof epoch === "string" && epoch && Number.isSafeInteger(offset) && offset >= 0 ? { epoch, offset } : null;
}
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function asEvent(value) {
  if (!isObject(value) || typeof value.event !== "string" || !isObject(value.payload)) return null;
  const mq = value.mq;
  if (mq !== void 0 && mq !== null && !(isObject(mq) && typeof mq.e === "string")) return null;
  return value;
}
function parseFrame(data) {
  if (typeof data !== "string") {
    console.debug("Myxi: skipped a frame", data);
    return [];
  }
  const events = [];
  for (const line of data.split("\n")) {
    if (!line.trim()) continue;
    let value;
    try {
      value = JSON.parse(line);
    } catch {
      value = void 0;
    }
    const event = asEvent(value);
    if (event) events.push(event);
    else console.debug("Myxi: skipped a line", line);
  }
  return events;
}

// client-js/src/requests.ts
var Requests = class {
  constructor() {
    this._pending = /* @__PURE__ */ new Map();
  }
  /** Registers a request; `timeout` 0 waits forever. `frame` is the action still to send, if any. */
  _open(tag, action, timeout, frame) {
    return new Promise((resolve, reject) => {
      const pending = { _action: action, _resolve: resolve, _reject: reject, _frame: frame };
      if (timeout > 0) {
        pending._timer = setTimeout(
          () => this._fail(tag, "Timeout", `timed out after ${timeout} ms`),
          timeout
        );
      }
      this._pending.set(tag, pending);
    });
  }
  /** Sends the requests still waiting for the connection, oldest first. */
  _flush(send) {
    for (const pending of this._pending.values()) {
      const frame = pending._frame;
      if (frame) {
        pending._frame = void 0;
        send(frame);
      }
    }
  }
  /** Settles the request this event answers, if any: the first event with its tag. */
  _settle(event) {
    const pending = this._take(event.tag);
    if (!pending) return;
    if (event.event === "Error" || event.event === "InternalError") {
      const name = typeof event.payload.error === "string" ? event.payload.error : event.event;
      pending._reject(new MyxiError(name, `${pending._action}: ${name}`, event));
    } else {
      pending._resolve(event);
    }
  }
  _fail(tag, error, message) {
    const pending = this._take(tag);
    if (pending) pending._reject(new MyxiError(error, `${pending._action}: ${message}`));
  }
  /**
   * Rejects the requests that were sent (their answers can no longer
   * arrive) or, with `unsent`, those still waiting for a connection.
   */
  _failAll(error, message, unsent) {
    for (const [tag, pending] of [...this._pending]) {
      if (!pending._frame === !unsent) this._fail(tag, error, message);
    }
  }
  _take(tag) {
    const pending = this._pending.get(tag);
    if (!pending) return void 0;
    this._pending.delete(tag);
    clearTimeout(pending._timer);
    return pending;
  }
};

// client-js/src/states.ts
var CONNECTION_STATES = ["closed", "connecting", "open", "authenticated"];
var SUBSCRIPTION_STATES = ["unsubscribed", "pending", "subscribing", "subscribed"];

// client-js/src/subscription.ts
var Subscription = class {
  /** Made by `connection.subscribe()`; one made directly is not tracked by the connection. */
  constructor(connection, exchange, routingKey, since) {
    /** @internal */
    this._state = 1 /* Pending */;
    /** @internal The tag of the Subscribe waiting for its answer. */
    this._tag = null;
    /** @internal The Subscribe sent last carried `since`. */
    this._asked = false;
    /** @internal Events of the position's epoch up to this offset are replayed ones. */
    this._replayTo = -1;
    this._recovered = null;
    this._handlers = /* @__PURE__ */ new Map();
    this.connection = connection;
    this.exchange = exchange;
    this.routingKey = routingKey;
    this._pos = toPosition(since?.epoch, since?.offset);
    this._events = new Emitter(this, connection._report);
    this._retry = new Backoff(connection._retryOptions);
  }
  /** The key of a subscription in `connection.subscriptions`. */
  static keyFor(exchange, routingKey) {
    return keyFor(exchange, routingKey);
  }
  get state() {
    return SUBSCRIPTION_STATES[this._state];
  }
  /** True once the server has confirmed the subscription (and until it ends or the socket closes). */
  get subscribed() {
    return this._state === 3 /* Subscribed */;
  }
  /**
   * Where it is in the exchange's history (`{epoch, offset}`), to save and
   * pass back as `subscribe(…, { since })`; null on an exchange without
   * history, or before the server's first answer.
   */
  get position() {
    return this._pos;
  }
  /**
   * The outcome of the last `Subscribe` that asked to resume (`since`): true
   * when the server replays everything missed, false when it could not
   * (`RecoveryFailed`); null when the last `Subscribe` did not ask.
   */
  get recovered() {
    return this._recovered;
  }
  key() {
    return keyFor(this.exchange, this.routingKey);
  }
  /** Listens to one event of this subscription; returns the subscription, for chaining. */
  on(event, callback) {
    this._events._on(event, callback);
    return this;
  }
  /** Removes a listener, every listener of `event`, or every listener; returns the subscription. */
  off(event, callback) {
    this._events._off(event, callback);
    return this;
  }
  /**
   * Ends the subscription: it leaves `connection.subscriptions` at once and is
   * not subscribed again after a reconnect. Returns true when an Unsubscribe
   * was sent to the server, false when there was nothing to tell it (not
   * connected, or never subscribed), as myxi 1.x did.
   */
  unsubscribe() {
    return this.connection._unsubscribe(this);
  }
  /** Adds (or replaces) the handler called `name`, called for every event with `param`. */
  addMessageHandler(name, handler, param) {
    this._handlers.set(name, { handler, param });
  }
  /** Removes the handler called `name`; returns whether there was one. */
  removeMessageHandler(name) {
    return this._handlers.delete(name);
  }
  /**
   * @internal The server confirmed it: the position becomes the answer's,
   * unless the server replays from ours. Returns true when the recovery
   * asked for failed.
   */
  _confirmed(payload) {
    const recovered = this._recovered = this._asked ? payload.recovered === true : null;
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
  _seen(mq) {
    const position = this._pos;
    const seen = toPosition(mq.ep, mq.o);
    if (!seen) return true;
    if (position && position.epoch === seen.epoch) {
      if (seen.offset <= position.offset) return false;
      if (seen.offset <= this._replayTo) mq.replayed = true;
    }
    this._pos = seen;
    return true;
  }
  /** @internal Delivers one event to the listeners, then to the message handlers. */
  _emit(event, payload, tag, mq) {
    this._events._emit(event, payload, tag, mq);
    for (const [name, { handler, param }] of [...this._handlers]) {
      try {
        handler.call(this, event, payload, tag, param, mq);
      } catch (error) {
        this.connection._report(error, `${event} handler ${name}`);
      }
    }
  }
};

// client-js/src/connection.ts
var WS_OPEN = 1;
var TAG_PREFIX = "myxi:";
var HEALTHY_AFTER = 6e4;
var Connection = class {
  constructor(url, options = {}) {
    /** The live subscriptions, keyed by `Subscription.keyFor(exchange, routingKey)`. */
    this.subscriptions = {};
    this._state = 1 /* Connecting */;
    this._ws = null;
    this._sessionId = null;
    /** Set by disconnect(): no reconnect until connect() is called again. */
    this._stopped = false;
    /** The tag of the client's own Ping: its answer is not emitted. */
    this._pingTag = null;
    this._openedAt = 0;
    this._authHook = null;
    this._seq = 0;
    this._requests = new Requests();
    /** Subscribe tags waiting for their answer. */
    this._subscribing = /* @__PURE__ */ new Map();
    /** Unsubscribe tags waiting for their answer. */
    this._unsubscribing = /* @__PURE__ */ new Map();
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (!WebSocketImpl) {
      throw new TypeError("Myxi: no WebSocket; pass options.WebSocket");
    }
    this.serverURL = url;
    this._socketURL = options.batch === false ? url : withBatch(url);
    this._WebSocket = WebSocketImpl;
    this._reconnectDelay = options.reconnectDelay ?? 5e3;
    this._requestTimeout = options.requestTimeout ?? 1e4;
    this._connectTimeout = options.connectTimeout ?? 1e4;
    this._pingInterval = options.pingInterval ?? 2e4;
    this._pingTimeout = options.pingTimeout ?? 1e4;
    const backoff = options.backoff;
    this._useBackoff = !!backoff;
    this._retryOptions = backoff && typeof backoff === "object" ? backoff : {};
    this._backoff = new Backoff(
      backoff ? this._retryOptions : { initial: this._reconnectDelay, max: Math.max(6e4, this._reconnectDelay) }
    );
    const onCallbackError = options.onCallbackError;
    this._report = (error, event) => {
      try {
        if (onCallbackError) onCallbackError(error, event);
        else console.error(`Myxi: ${event} callback threw`, error);
      } catch {
      }
    };
    this._events = new Emitter(this, this._report);
    this._open();
  }
  get state() {
    return CONNECTION_STATES[this._state];
  }
  /** True while the socket is open (1.x property). */
  get connected() {
    return this._state >= 2 /* Open */;
  }
  /** True once `isAuthenticated()` was called on the current socket (1.x property). */
  get authenticated() {
    return this._state === 3 /* Authenticated */;
  }
  /** The session id of the server's `Welcome` event on the current socket. */
  get sessionId() {
    return this._sessionId;
  }
  /**
   * Sets the hook run after every (re)connect. Until the hook calls
   * `isAuthenticated()`, subscriptions wait. Set while the socket is already
   * open, it runs at once; `null` removes it.
   */
  authentication(hook) {
    this._authHook = hook;
    if (this._state !== 2 /* Open */) return;
    if (hook) this._runAuthHook();
    else this._flush();
  }
  /** Tells the connection that authentication succeeded: pending subscriptions are sent. */
  isAuthenticated() {
    if (!this.connected) return;
    this._state = 3 /* Authenticated */;
    this._events._emit("SocketAuthenticated");
    if (this._state === 3 /* Authenticated */) this._flush();
  }
  /**
   * Returns the subscription to `exchange` and `routingKey`, making it if
   * there is none. It is sent when the connection is ready and again after
   * every reconnect, until it ends. `options.since` resumes a new
   * subscription from a saved position; an existing one keeps its own.
   */
  subscribe(exchange, routingKey, options) {
    const existing = this._find(exchange, routingKey);
    if (existing) return existing;
    const subscription = new Subscription(this, exchange, routingKey, options?.since);
    this.subscriptions[subscription.key()] = subscription;
    if (this._ready) this._sendSubscribe(subscription);
    return subscription;
  }
  /** Sends an action; false when the socket is not open. */
  sendAction(action, payload = {}, tag) {
    if (!this._sendable) return false;
    this._ws.send(JSON.stringify({ action, tag, payload }));
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
  request(action, payload = {}, options = {}) {
    const tag = this._nextTag();
    let frame;
    try {
      frame = JSON.stringify({ action, tag, payload });
    } catch (error) {
      return Promise.reject(error);
    }
    if (this._stopped) return Promise.reject(new MyxiError("NotConnected", `${action}: not connected`));
    if (this._sendable) {
      this._ws.send(frame);
      frame = void 0;
    }
    const answer = this._requests._open(tag, action, options.timeout ?? this._requestTimeout, frame);
    return answer;
  }
  on(event, callback) {
    this._events._on(event, callback);
    return this;
  }
  off(event, callback) {
    this._events._off(event, callback);
    return this;
  }
  /**
   * Connects again after `disconnect()` or a 4001 close, or at once when waiting to
   * reconnect; does nothing while connected or connecting.
   */
  connect() {
    this._stopped = false;
    if (this._ws) return;
    clearTimeout(this._reconnectTimer);
    this._open();
  }
  /** Closes the socket (code 1000) and stops reconnecting. Subscriptions are kept for `connect()`. */
  disconnect() {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = void 0;
    const ws = this._ws;
    if (ws) {
      ws.close(CLOSE_NORMAL);
      this._closed(CLOSE_NORMAL, "");
    } else {
      this._requests._failAll("NotConnected", "not connected", true);
    }
  }
  /** @internal Called by `Subscription.unsubscribe()`. */
  _unsubscribe(subscription) {
    const state = subscription._state;
    if (state === 0 /* Unsubscribed */) return false;
    this._end(subscription);
    if (state < 2 /* Subscribing */) return false;
    const tag = this._nextTag();
    const { exchange, routingKey } = subscription;
    if (!this.sendAction("Unsubscribe", { exchange, routing_key: routingKey }, tag)) return false;
    this._unsubscribing.set(tag, subscription);
    return true;
  }
  get _sendable() {
    const ws = this._ws;
    return !!ws && this.connected && ws.readyState === WS_OPEN;
  }
  get _ready() {
    return this._state === 3 /* Authenticated */ || this._state === 2 /* Open */ && !this._authHook;
  }
  /** The subscription to `exchange` and `routingKey`, if there is one. */
  _find(exchange, routingKey) {
    return own(this.subscriptions, keyFor(exchange, routingKey));
  }
  _nextTag() {
    return TAG_PREFIX + ++this._seq;
  }
  _open() {
    this._reconnectTimer = void 0;
    this._state = 1 /* Connecting */;
    this._sessionId = null;
    const ws = new this._WebSocket(this._socketURL);
    this._ws = ws;
    this._watch(this._connectTimeout, "connect timeout");
    ws.onopen = () => {
      if (this._ws === ws) this._opened();
    };
    ws.onmessage = (event) => {
      if (this._ws === ws) this._heard();
      for (const message of this._ws === ws ? parseFrame(event.data) : []) {
        if (this._ws !== ws) break;
        this._dispatch(message);
      }
    };
    ws.onclose = (event) => {
      if (this._ws === ws) this._closed(event.code ?? CLOSE_ABNORMAL, event.reason ?? "");
    };
    ws.onerror = () => {
    };
  }
  _opened() {
    this._state = 2 /* Open */;
    this._openedAt = Date.now();
    this._heard();
    this._events._emit("SocketConnected");
    if (this._state !== 2 /* Open */) return;
    if (this._authHook) this._runAuthHook();
    else this._flush();
  }
  /**
   * Arms the socket's one timer: when it runs out, the socket is taken for
   * dead. `ms` 0 disarms it.
   */
  _watch(ms, reason, then = () => this._abandon(reason)) {
    clearTimeout(this._liveTimer);
    this._liveTimer = ms > 0 ? setTimeout(then, ms) : void 0;
  }
  /**
   * Something arrived: the path works. After `pingInterval` of silence the
   * client asks for a Pong (a browser never sees WebSocket pings), and
   * gives the socket up if nothing at all arrives within `pingTimeout`.
   */
  _heard() {
    this._watch(this._pingInterval, "", () => {
      this.sendAction("Ping", {}, this._pingTag = this._nextTag());
      this._watch(this._pingTimeout, "ping timeout");
    });
  }
  /**
   * Gives up a socket that connects or answers too slowly. On a dead path
   * close() sends a close frame that nothing answers, and a browser may
   * keep the socket CLOSING for a minute without a close event: so the
   * client settles the close now, and the socket's own handlers ignore it
   * from here on (they check that it is still the current one).
   */
  _abandon(reason) {
    this._ws.close(CLOSE_NORMAL);
    this._closed(CLOSE_ABNORMAL, reason);
  }
  _runAuthHook() {
    try {
      this._authHook.call(this, this);
    } catch (error) {
      this._report(error, "authentication");
    }
  }
  _closed(code, reason) {
    const wasOpen = this._state !== 1 /* Connecting */;
    this._ws = null;
    this._state = 0 /* Closed */;
    this._watch(0, "");
    if (code === CLOSE_TERMINATED) this._stopped = true;
    for (const subscription of Object.values(this.subscriptions)) {
      this._stopTimer(subscription);
      subscription._tag = null;
      subscription._state = 1 /* Pending */;
    }
    this._subscribing.clear();
    this._unsubscribing.clear();
    this._requests._failAll("SocketClosed", "socket closed");
    const reconnectIn = this._stopped ? null : this._delayAfter(code, wasOpen);
    if (reconnectIn !== null) {
      this._reconnectTimer = setTimeout(() => this._open(), reconnectIn);
    } else {
      this._requests._failAll("NotConnected", "not connected", true);
    }
    const info = { code, reason, reconnectIn };
    if (wasOpen) this._events._emit("SocketDisconnected", info);
    this._events._emit("SocketClosed", info);
  }
  /** The delay before reconnecting after a close with `code` (PROTOCOL.md's table). */
  _delayAfter(code, wasOpen) {
    if (wasOpen && Date.now() - this._openedAt >= HEALTHY_AFTER) this._backoff._reset();
    if (this._useBackoff || !wasOpen || BACKOFF_CODES.includes(code)) return this._backoff._next();
    return Math.floor(this._reconnectDelay * (JITTER_CODES.includes(code) ? 0.5 + Math.random() : 1));
  }
  _dispatch(message) {
    const { event, payload, tag, mq } = message;
    if (tag === this._pingTag && tag !== null) return;
    const subscription = mq ? this._find(mq.e, mq.rk) : void 0;
    if (subscription && !subscription._seen(mq)) return;
    if (event === "Welcome" && typeof payload.id === "string") this._sessionId = payload.id;
    this._track(message);
    subscription?._emit(event, payload, tag, mq);
    this._requests._settle(message);
    this._events._emit(event, payload, tag, mq);
    this._events._emit("SocketMessageReceived", message);
  }
  /** Keeps the subscriptions in step with the server's answers. */
  _track(message) {
    const { event, payload, tag } = message;
    if (event === "Unsubscribed") {
      this._onUnsubscribed(message);
      return;
    }
    if (event !== "Subscribed" && event !== "Error" && event !== "InternalError") return;
    const error = event === "InternalError" ? event : String(payload.error);
    for (const subscription of this._answered(message)) {
      if (subscription._state !== 2 /* Subscribing */) continue;
      this._stopTimer(subscription);
      if (event === "Subscribed" || error === "AlreadySubscribed") {
        this._confirm(subscription, payload, tag);
        continue;
      }
      if (DROPPING_ERRORS.includes(error)) {
        this._end(subscription);
      } else {
        subscription._state = 1 /* Pending */;
        if (RETRYING_ERRORS.includes(error)) this._scheduleRetry(subscription);
      }
      subscription._emit("Error", payload, tag);
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
  _answered({ payload, tag }) {
    const byTag = this._subscribing.get(tag);
    if (byTag) {
      this._subscribing.delete(tag);
      return [byTag];
    }
    const { exchange, routing_keys: keys } = payload;
    if (typeof tag === "string" && tag.startsWith(TAG_PREFIX) || typeof exchange !== "string") return [];
    const found = [];
    for (const key of Array.isArray(keys) ? keys : [payload.routing_key]) {
      const subscription = this._find(exchange, key);
      if (subscription && subscription._state === 2 /* Subscribing */ && !found.includes(subscription)) {
        if (subscription._tag !== null) this._subscribing.delete(subscription._tag);
        found.push(subscription);
      }
    }
    return found;
  }
  _onUnsubscribed({ payload, tag }) {
    const ours = this._unsubscribing.get(tag);
    if (ours) {
      this._unsubscribing.delete(tag);
      ours._emit("Unsubscribed", payload, tag);
      return;
    }
    const exchange = payload.exchange_name ?? payload.exchange;
    if (typeof exchange !== "string") return;
    const subscription = this._find(exchange, payload.routing_key);
    if (!subscription || subscription._state !== 3 /* Subscribed */) return;
    this._end(subscription);
    subscription._emit("Unsubscribed", payload, tag);
  }
  _confirm(subscription, payload, tag) {
    subscription._tag = null;
    subscription._retry._reset();
    subscription._state = 3 /* Subscribed */;
    const failed = subscription._confirmed(payload);
    subscription._emit("Subscribed", payload, tag);
    if (failed && subscription._state === 3 /* Subscribed */) subscription._emit("RecoveryFailed", payload, tag);
  }
  /** Removes a subscription for good. */
  _end(subscription) {
    const key = subscription.key();
    if (own(this.subscriptions, key) === subscription) delete this.subscriptions[key];
    this._stopTimer(subscription);
    if (subscription._tag !== null) this._subscribing.delete(subscription._tag);
    subscription._tag = null;
    subscription._state = 0 /* Unsubscribed */;
  }
  _sendSubscribe(subscription) {
    const tag = this._nextTag();
    const { exchange, routingKey, _pos: since } = subscription;
    if (!this.sendAction("Subscribe", { exchange, routing_key: routingKey, since: since || void 0 }, tag)) return;
    subscription._asked = !!since;
    subscription._tag = tag;
    subscription._state = 2 /* Subscribing */;
    this._subscribing.set(tag, subscription);
    if (this._requestTimeout > 0) {
      subscription._retryTimer = setTimeout(() => {
        this._subscribing.delete(tag);
        subscription._tag = null;
        subscription._state = 1 /* Pending */;
        this._scheduleRetry(subscription);
      }, this._requestTimeout);
    }
  }
  /** Cancels a subscription's retry, or the wait for its Subscribe's answer. */
  _stopTimer(subscription) {
    clearTimeout(subscription._retryTimer);
    subscription._retryTimer = void 0;
  }
  _scheduleRetry(subscription) {
    subscription._retryTimer = setTimeout(() => {
      subscription._retryTimer = void 0;
      if (this._ready && subscription._state === 1 /* Pending */) this._sendSubscribe(subscription);
    }, subscription._retry._next());
  }
  /**
   * The connection is ready: sends the requests made while it was not, then
   * every pending subscription, except those waiting for a retry.
   */
  _flush() {
    if (!this._sendable) return;
    this._requests._flush((frame) => this._ws.send(frame));
    for (const subscription of Object.values(this.subscriptions)) {
      if (subscription._state === 1 /* Pending */ && subscription._retryTimer === void 0) {
        this._sendSubscribe(subscription);
      }
    }
  }
};

// client-js/src/meta.ts
function connectFromMeta(options, doc) {
  const page = doc ?? globalThis.document;
  const url = page?.querySelector('meta[name="myxi-host"]')?.getAttribute("content");
  if (!url) throw new Error('Myxi: no <meta name="myxi-host">');
  return new Connection(socketURL(url, page.location?.href), options);
}
function socketURL(url, base) {
  if (!base || /^wss?:/i.test(url)) return url;
  const absolute = new URL(url, base);
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
  return absolute.href;
}
export {
  Connection,
  MyxiError,
  Subscription,
  connectFromMeta
};
//# sourceMappingURL=myxi.mjs.map
