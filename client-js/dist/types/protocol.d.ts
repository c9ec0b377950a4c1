import type { Position, RoutingKey, ServerEvent } from './types.js';
/** Close code of a close the client asked for (`disconnect()`, or settling a dead socket). */
export declare const CLOSE_NORMAL = 1000;
/** What browsers report for a connection that failed or dropped without a close frame. */
export declare const CLOSE_ABNORMAL = 1006;
/** Terminated by the application (`Session.Terminate`): the client does not come back. */
export declare const CLOSE_TERMINATED = 4001;
/**
 * Closes after which the client backs off (capped exponential, full jitter):
 * protocol error, invalid UTF-8, policy (too slow, flooding), frame too big,
 * internal error, overloaded. A failed attempt to connect (an HTTP 503 at
 * the upgrade looks like that to a browser) backs off too.
 */
export declare const BACKOFF_CODES: readonly number[];
/**
 * Closes that send many clients away at once (draining 1001, idle 4000,
 * closed by the application 4002): the client comes back after a jittered
 * delay, so that they do not all return together.
 */
export declare const JITTER_CODES: readonly number[];
/** Errors after which a Subscribe will never succeed: the subscription is dropped. */
export declare const DROPPING_ERRORS: readonly string[];
/** Errors that say "not now": the subscription is kept and retried with backoff. */
export declare const RETRYING_ERRORS: readonly string[];
/**
 * The key of a subscription in `connection.subscriptions`: `"exchange::key"`,
 * or just `"exchange"` for the exchange as a whole. Numbers and their string
 * form give the same key, because the server echoes a routing key as it was
 * sent while `mq.rk` is always a string.
 */
export declare function keyFor(exchange: string, routingKey?: RoutingKey): string;
/** `map[key]` for own properties only: a server-chosen key such as `"__proto__"` finds nothing. */
export declare function own<T>(map: Record<string, T>, key: string): T | undefined;
/** Adds `batch=1` to a socket URL's query, unless the URL already says something about it. */
export declare function withBatch(url: string): string;
/**
 * A history position from the wire or from the application, or null unless
 * it is one the server accepts (PROTOCOL.md: an epoch that is a non-empty
 * string, an offset that is an integer in [0, 2^53)): a stale or damaged
 * saved position must not get the subscription refused as InvalidPayload.
 */
export declare function toPosition(epoch: unknown, offset: unknown): Position | null;
/**
 * Splits a frame into its events. A server that batches (`?batch=1`) puts
 * several compact JSON objects in one frame, one per line; one that does not
 * sends a single object, which is the same thing with one line. Lines that
 * are not valid events are skipped with a debug message: a bad line must
 * neither close the connection nor reach a callback.
 */
export declare function parseFrame(data: unknown): ServerEvent[];
