import { Subscription } from './subscription.js';
import type { CloseInfo, ConnectionOptions, ConnectionState, Mq, Payload, RequestOptions, RoutingKey, ServerEvent, SubscribeOptions, Tag } from './types.js';
/** A callback for a server event: `(payload, tag, mq)`, `this` being the connection. */
export type EventCallback<P extends object = Payload> = (this: Connection, payload: P, tag: Tag, mq: Mq | undefined) => void;
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
/**
 * A connection to a Myxi server, compatible with myxi 1.x's `Myxi.Connection`.
 * It connects at once and reconnects after every close it did not ask for,
 * except 4001 (terminated by the application).
 */
export declare class Connection {
    /** The URL given to the constructor (without the `batch` parameter). */
    readonly serverURL: string;
    /** The live subscriptions, keyed by `Subscription.keyFor(exchange, routingKey)`. */
    readonly subscriptions: Record<string, Subscription>;
    private _state;
    private _ws;
    private _sessionId;
    /** Set by disconnect(): no reconnect until connect() is called again. */
    private _stopped;
    private _reconnectTimer;
    /** The connect timeout, then the liveness check, of the current socket. */
    private _liveTimer;
    /** The tag of the client's own Ping: its answer is not emitted. */
    private _pingTag;
    private _openedAt;
    private _authHook;
    private _seq;
    private readonly _socketURL;
    private readonly _WebSocket;
    private readonly _reconnectDelay;
    private readonly _useBackoff;
    private readonly _backoff;
    private readonly _requestTimeout;
    private readonly _connectTimeout;
    private readonly _pingInterval;
    private readonly _pingTimeout;
    private readonly _events;
    private readonly _requests;
    /** Subscribe tags waiting for their answer. */
    private readonly _subscribing;
    /** Unsubscribe tags waiting for their answer. */
    private readonly _unsubscribing;
    constructor(url: string, options?: ConnectionOptions);
    get state(): ConnectionState;
    /** True while the socket is open (1.x property). */
    get connected(): boolean;
    /** True once `isAuthenticated()` was called on the current socket (1.x property). */
    get authenticated(): boolean;
    /** The session id of the server's `Welcome` event on the current socket. */
    get sessionId(): string | null;
    /**
     * Sets the hook run after every (re)connect. Until the hook calls
     * `isAuthenticated()`, subscriptions wait. Set while the socket is already
     * open, it runs at once; `null` removes it.
     */
    authentication(hook: AuthenticationHook | null): void;
    /** Tells the connection that authentication succeeded: pending subscriptions are sent. */
    isAuthenticated(): void;
    /**
     * Returns the subscription to `exchange` and `routingKey`, making it if
     * there is none. It is sent when the connection is ready and again after
     * every reconnect, until it ends. `options.since` resumes a new
     * subscription from a saved position; an existing one keeps its own.
     */
    subscribe(exchange: string, routingKey?: RoutingKey, options?: SubscribeOptions): Subscription;
    /** Sends an action; false when the socket is not open. */
    sendAction(action: string, payload?: Payload, tag?: Tag): boolean;
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
    request<P extends object = Payload>(action: string, payload?: Payload, options?: RequestOptions): Promise<ServerEvent<P>>;
    /** Listens to a server event or one of the `Socket*` events; returns the connection, for chaining. */
    on<K extends keyof SocketEventMap>(event: K, callback: SocketEventMap[K]): this;
    on<P extends object = Payload>(event: string, callback: EventCallback<P>): this;
    /** Removes a listener, every listener of `event`, or every listener; returns the connection. */
    off<K extends keyof SocketEventMap>(event: K, callback?: SocketEventMap[K]): this;
    off<P extends object = Payload>(event?: string, callback?: EventCallback<P>): this;
    /**
     * Connects again after `disconnect()` or a 4001 close, or at once when waiting to
     * reconnect; does nothing while connected or connecting.
     */
    connect(): void;
    /** Closes the socket (code 1000) and stops reconnecting. Subscriptions are kept for `connect()`. */
    disconnect(): void;
    private get _sendable();
    private get _ready();
    /** The subscription to `exchange` and `routingKey`, if there is one. */
    private _find;
    private _nextTag;
    private _open;
    private _opened;
    /**
     * Arms the socket's one timer: when it runs out, the socket is taken for
     * dead. `ms` 0 disarms it.
     */
    private _watch;
    /**
     * Something arrived: the path works. After `pingInterval` of silence the
     * client asks for a Pong (a browser never sees WebSocket pings), and
     * gives the socket up if nothing at all arrives within `pingTimeout`.
     */
    private _heard;
    /**
     * Gives up a socket that connects or answers too slowly. On a dead path
     * close() sends a close frame that nothing answers, and a browser may
     * keep the socket CLOSING for a minute without a close event: so the
     * client settles the close now, and the socket's own handlers ignore it
     * from here on (they check that it is still the current one).
     */
    private _abandon;
    private _runAuthHook;
    private _closed;
    /** The delay before reconnecting after a close with `code` (PROTOCOL.md's table). */
    private _delayAfter;
    private _dispatch;
    /** Keeps the subscriptions in step with the server's answers. */
    private _track;
    /**
     * The subscriptions a Subscribed or Error answers: the one of the
     * Subscribe with that tag, else (a server that forgot the tag, or a
     * Subscribe the application sent itself) those of the payload's exchange
     * and `routing_key`, or each of its `routing_keys` (TooManySubscriptions,
     * RateLimited answer a whole action at once), that are waiting for an
     * answer.
     */
    private _answered;
    private _onUnsubscribed;
    private _confirm;
    /** Removes a subscription for good. */
    private _end;
    private _sendSubscribe;
    /** Cancels a subscription's retry, or the wait for its Subscribe's answer. */
    private _stopTimer;
    private _scheduleRetry;
    /**
     * The connection is ready: sends the requests made while it was not, then
     * every pending subscription, except those waiting for a retry.
     */
    private _flush;
}
