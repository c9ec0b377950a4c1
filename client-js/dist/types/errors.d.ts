import type { ServerEvent } from './types.js';
/**
 * The rejection of `Connection.request()`. `error` is the server's error name
 * (`payload.error` of its `Error` event, or `InternalError`), or one of the
 * client's own: `Timeout`, `SocketClosed`, `NotConnected`.
 */
export declare class MyxiError extends Error {
    readonly error: string;
    /** The server's event, when the server answered. */
    readonly event?: ServerEvent;
    constructor(error: string, message: string, event?: ServerEvent);
}
