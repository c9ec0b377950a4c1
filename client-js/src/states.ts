// The states of a connection and of a subscription, as small ordered
// numbers inside the client (esbuild inlines them) and as the strings of
// ConnectionState and SubscriptionState outside.

import type { ConnectionState, SubscriptionState } from './types.js';

/** Ordered: from Open on, the socket is open. */
export const enum Conn {
  Closed,
  Connecting,
  Open,
  Authenticated,
}

export const CONNECTION_STATES: readonly ConnectionState[] = ['closed', 'connecting', 'open', 'authenticated'];

/** Ordered: from Subscribing on, the server has been asked for the subscription. */
export const enum Sub {
  Unsubscribed,
  Pending,
  Subscribing,
  Subscribed,
}

export const SUBSCRIPTION_STATES: readonly SubscriptionState[] = ['unsubscribed', 'pending', 'subscribing', 'subscribed'];
