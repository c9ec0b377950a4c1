/** Any JSON value. The server copies an action's tag onto every reply. */
export type Tag = unknown;
/** An event's or an action's payload: a JSON object. */
export type Payload = Record<string, unknown>;
/**
 * A routing key as the application gives it. The server echoes numbers as
 * numbers; `null`, `undefined` and `""` all mean the exchange as a whole.
 */
export type RoutingKey = string | number | null | undefined;
/**
 * Where an application event came from: exchange and routing key (always a
 * string) and, for an event recorded in an exchange's history, its position.
 */
export interface Mq {
    e: string;
    rk: string;
    /** The event's offset in the history of its exchange and routing key. */
    o?: number;
    /** The epoch of that history: offsets of two epochs are not comparable. */
    ep?: string;
    /**
     * Set (true) by the client on an event that the server replays to a
     * subscription after a recovery (one it missed); absent on a live event.
     */
    replayed?: boolean;
}
/**
 * Where a subscription is in its exchange's history: the last recorded event
 * it received (or where it went live). A plain JSON value, for saving.
 */
export interface Position {
    epoch: string;
    offset: number;
}
export interface SubscribeOptions {
    /**
     * Resume from this position (saved from `subscription.position`): the
     * server replays what came after it, or says it cannot (`RecoveryFailed`).
     * Ignored unless well formed.
     */
    since?: Position | null;
}
/** One event from the server, as decoded from its JSON line. */
export interface ServerEvent<P extends object = Payload> {
    event: string;
    tag?: Tag;
    payload: P;
    mq?: Mq;
}
/** `'open'` is ready for subscriptions when no authentication hook is set. */
export type ConnectionState = 'connecting' | 'open' | 'authenticated' | 'closed';
/**
 * - `pending`: wanted, waiting for the connection to be ready (or for a retry);
 * - `subscribing`: Subscribe sent, no answer yet;
 * - `subscribed`: the server confirmed it, events flow;
 * - `unsubscribed`: ended (by `unsubscribe()`, a refusal or the server); it
 *   is out of `connection.subscriptions` and never comes back.
 */
export type SubscriptionState = 'pending' | 'subscribing' | 'subscribed' | 'unsubscribed';
/** What `SocketDisconnected` and `SocketClosed` listeners receive. */
export interface CloseInfo {
    /**
     * The WebSocket close code: 1006 when the connection failed or dropped,
     * or when the client gave the socket up (`reason` says why).
     */
    code: number;
    /** The server's close reason, or the client's: `'connect timeout'`, `'ping timeout'`. */
    reason: string;
    /** Milliseconds until the next connection attempt; `null` when none will be made. */
    reconnectIn: number | null;
}
/** Capped exponential backoff with full jitter (milliseconds). */
export interface BackoffOptions {
    /** Ceiling of the first delay. Default 1000. */
    initial?: number;
    /** Largest ceiling. Default 30000. */
    max?: number;
    /** Growth of the ceiling per attempt. Default 2. */
    factor?: number;
}
/**
 * The part of a WebSocket the client uses: the browser's `WebSocket` and the
 * `ws` package's class both fit. The handler properties are typed `unknown`
 * so that both libraries' own event types are accepted.
 */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: unknown;
    onmessage: unknown;
    onclose: unknown;
    onerror: unknown;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export interface ConnectionOptions {
    /** WebSocket implementation, e.g. `import WebSocket from 'ws'`. Default: `globalThis.WebSocket`. */
    WebSocket?: WebSocketConstructor;
    /** Ask the server for batched frames (`?batch=1`). Default true. */
    batch?: boolean;
    /** Fixed delay before reconnecting, in ms. Default 5000 (as in myxi 1.x). */
    reconnectDelay?: number;
    /**
     * Reconnect with capped exponential backoff and full jitter instead of the
     * fixed delay: `true` for the defaults or the settings. A failed attempt
     * and the closes that call for it (1002, 1007, 1008, 1009, 1011, 1013)
     * always back off.
     */
    backoff?: boolean | BackoffOptions;
    /**
     * Default timeout of `request()`, in ms, waiting for the connection
     * included; also how long a Subscribe may go unanswered before it is sent
     * again. 0 for none. Default 10000.
     */
    requestTimeout?: number;
    /** Give up an attempt to connect that has not opened after this many ms; 0 for never. Default 10000. */
    connectTimeout?: number;
    /**
     * After this many ms without a frame from the server, send a `Ping`; 0
     * turns the liveness check off. Default 20000: with `pingTimeout`, a dead
     * socket is given up within 30 s, well inside the server's idle limit
     * (two of its 25 s ping intervals).
     */
    pingInterval?: number;
    /** Give the socket up (and reconnect) when nothing arrives this many ms after the `Ping`. Default 10000. */
    pingTimeout?: number;
    /**
     * Called when a listener, message handler or the authentication hook
     * throws; the other listeners still run. Default: `console.error`.
     */
    onCallbackError?: (error: unknown, event: string) => void;
}
export interface RequestOptions {
    /** Milliseconds before the promise rejects with `Timeout`; 0 for none. */
    timeout?: number;
}
