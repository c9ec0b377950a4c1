import type { Connection } from './connection.js';
import type { Mq, Payload, Position, RoutingKey, SubscriptionState, Tag } from './types.js';
/**
 * A callback for one event of a subscription; `this` is the subscription.
 * `mq` is set on application events (`mq.replayed` tells a replayed one).
 */
export type SubscriptionCallback<P extends object = Payload> = (this: Subscription, payload: P, tag: Tag, mq: Mq | undefined) => void;
/**
 * A named handler that sees every event of a subscription, with the `param`
 * it was added with (for example the view it updates).
 */
export type MessageHandler = (this: Subscription, event: string, payload: Payload, tag: Tag, param: unknown, mq: Mq | undefined) => void;
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
export declare class Subscription {
    /** The key of a subscription in `connection.subscriptions`. */
    static keyFor(exchange: string, routingKey?: RoutingKey): string;
    readonly connection: Connection;
    readonly exchange: string;
    /** The routing key as given: sent to the server as it is. */
    readonly routingKey: RoutingKey;
    private _recovered;
    private readonly _events;
    private readonly _handlers;
    /** Made by `connection.subscribe()`; one made directly is not tracked by the connection. */
    constructor(connection: Connection, exchange: string, routingKey?: RoutingKey, since?: Position | null);
    get state(): SubscriptionState;
    /** True once the server has confirmed the subscription (and until it ends or the socket closes). */
    get subscribed(): boolean;
    /**
     * Where it is in the exchange's history (`{epoch, offset}`), to save and
     * pass back as `subscribe(…, { since })`; null on an exchange without
     * history, or before the server's first answer.
     */
    get position(): Position | null;
    /**
     * The outcome of the last `Subscribe` that asked to resume (`since`): true
     * when the server replays everything missed, false when it could not
     * (`RecoveryFailed`); null when the last `Subscribe` did not ask.
     */
    get recovered(): boolean | null;
    key(): string;
    /** Listens to one event of this subscription; returns the subscription, for chaining. */
    on<P extends object = Payload>(event: string, callback: SubscriptionCallback<P>): this;
    /** Removes a listener, every listener of `event`, or every listener; returns the subscription. */
    off<P extends object = Payload>(event?: string, callback?: SubscriptionCallback<P>): this;
    /**
     * Ends the subscription: it leaves `connection.subscriptions` at once and is
     * not subscribed again after a reconnect. Returns true when an Unsubscribe
     * was sent to the server, false when there was nothing to tell it (not
     * connected, or never subscribed), as myxi 1.x did.
     */
    unsubscribe(): boolean;
    /** Adds (or replaces) the handler called `name`, called for every event with `param`. */
    addMessageHandler(name: string, handler: MessageHandler, param?: unknown): void;
    /** Removes the handler called `name`; returns whether there was one. */
    removeMessageHandler(name: string): boolean;
}
