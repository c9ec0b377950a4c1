// Wire-level helpers for PROTOCOL.md: decoding frames, subscription keys,
// the error names that decide a subscription's fate, close codes.

import type { Position, RoutingKey, ServerEvent } from './types.js';

/** Close code of a close the client asked for (`disconnect()`, or settling a dead socket). */
export const CLOSE_NORMAL = 1000;
/** What browsers report for a connection that failed or dropped without a close frame. */
export const CLOSE_ABNORMAL = 1006;
/** Terminated by the application (`Session.Terminate`): the client does not come back. */
export const CLOSE_TERMINATED = 4001;
/**
 * Closes after which the client backs off (capped exponential, full jitter):
 * protocol error, invalid UTF-8, policy (too slow, flooding), frame too big,
 * internal error, overloaded. A failed attempt to connect (an HTTP 503 at
 * the upgrade looks like that to a browser) backs off too.
 */
export const BACKOFF_CODES: readonly number[] = [1002, 1007, 1008, 1009, 1011, 1013];
/**
 * Closes that send many clients away at once (draining 1001, idle 4000,
 * closed by the application 4002): the client comes back after a jittered
 * delay, so that they do not all return together.
 */
export const JITTER_CODES: readonly number[] = [1001, 4000, 4002];

/** Errors after which a Subscribe will never succeed: the subscription is dropped. */
export const DROPPING_ERRORS: readonly string[] = [
  'SubscriptionDenied',
  'InvalidExchange',
  'InvalidRoutingKey',
  'InvalidPayload',
  'TooManySubscriptions',
];

/** Errors that say "not now": the subscription is kept and retried with backoff. */
export const RETRYING_ERRORS: readonly string[] = ['BrokerUnavailable', 'RateLimited'];

/**
 * The key of a subscription in `connection.subscriptions`: `"exchange::key"`,
 * or just `"exchange"` for the exchange as a whole. Numbers and their string
 * form give the same key, because the server echoes a routing key as it was
 * sent while `mq.rk` is always a string.
 */
export function keyFor(exchange: string, routingKey?: RoutingKey): string {
  return routingKey === null || routingKey === undefined || routingKey === ''
    ? exchange
    : exchange + '::' + routingKey;
}

/** `map[key]` for own properties only: a server-chosen key such as `"__proto__"` finds nothing. */
export function own<T>(map: Record<string, T>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(map, key) ? map[key] : undefined;
}

/** Adds `batch=1` to a socket URL's query, unless the URL already says something about it. */
export function withBatch(url: string): string {
  if (/[?&]batch=/.test(url)) return url;
  return url + (url.includes('?') ? '&' : '?') + 'batch=1';
}

/**
 * A history position from the wire or from the application, or null unless
 * it is one the server accepts (PROTOCOL.md: an epoch that is a non-empty
 * string, an offset that is an integer in [0, 2^53)): a stale or damaged
 * saved position must not get the subscription refused as InvalidPayload.
 */
export function toPosition(epoch: unknown, offset: unknown): Position | null {
  return typeof epoch === 'string' && epoch && Number.isSafeInteger(offset) && (offset as number) >= 0
    ? { epoch, offset: offset as number }
    : null;
}

type JSONObject = Record<string, unknown>;

function isObject(value: unknown): value is JSONObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Accepts a decoded line only if it has the shape of an event: a string
 * `event`, an object `payload` and, when present, an `mq` with a string
 * exchange. Anything else would reach callbacks as garbage.
 */
function asEvent(value: unknown): ServerEvent | null {
  if (!isObject(value) || typeof value.event !== 'string' || !isObject(value.payload)) return null;
  const mq = value.mq;
  if (mq !== undefined && mq !== null && !(isObject(mq) && typeof mq.e === 'string')) return null;
  return value as unknown as ServerEvent;
}

/**
 * Splits a frame into its events. A server that batches (`?batch=1`) puts
 * several compact JSON objects in one frame, one per line; one that does not
 * sends a single object, which is the same thing with one line. Lines that
 * are not valid events are skipped with a debug message: a bad line must
 * neither close the connection nor reach a callback.
 */
export function parseFrame(data: unknown): ServerEvent[] {
  // The server sends text frames only (PROTOCOL.md), which both browsers and
  // the `ws` package deliver as strings.
  if (typeof data !== 'string') {
    console.debug('Myxi: skipped a frame', data);
    return [];
  }
  const events: ServerEvent[] = [];
  for (const line of data.split('\n')) {
    if (!line.trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      value = undefined;
    }
    const event = asEvent(value);
    if (event) events.push(event);
    else console.debug('Myxi: skipped a line', line);
  }
  return events;
}
