import type { ConnectionState, SubscriptionState } from './types.js';
/** Ordered: from Open on, the socket is open. */
export declare const enum Conn {
    Closed = 0,
    Connecting = 1,
    Open = 2,
    Authenticated = 3
}
export declare const CONNECTION_STATES: readonly ConnectionState[];
/** Ordered: from Subscribing on, the server has been asked for the subscription. */
export declare const enum Sub {
    Unsubscribed = 0,
    Pending = 1,
    Subscribing = 2,
    Subscribed = 3
}
export declare const SUBSCRIPTION_STATES: readonly SubscriptionState[];
