// The Myxi JavaScript client. The script build exposes these as the global
// `Myxi` (`new Myxi.Connection(url)`, as in myxi 1.x).

export { Connection } from './connection.js';
export type { AuthenticationHook, EventCallback, SocketEventMap } from './connection.js';
export { Subscription } from './subscription.js';
export type { MessageHandler, SubscriptionCallback } from './subscription.js';
export { MyxiError } from './errors.js';
export { connectFromMeta } from './meta.js';
export type { DocumentLike } from './meta.js';
export type {
  BackoffOptions,
  CloseInfo,
  ConnectionOptions,
  ConnectionState,
  Mq,
  Payload,
  Position,
  RequestOptions,
  RoutingKey,
  ServerEvent,
  SubscribeOptions,
  SubscriptionState,
  Tag,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
