import type { ServerEvent, Tag } from './types.js';
export declare class Requests {
    private readonly _pending;
    /** Registers a request; `timeout` 0 waits forever. `frame` is the action still to send, if any. */
    _open(tag: Tag, action: string, timeout: number, frame?: string): Promise<ServerEvent>;
    /** Sends the requests still waiting for the connection, oldest first. */
    _flush(send: (frame: string) => void): void;
    /** Settles the request this event answers, if any: the first event with its tag. */
    _settle(event: ServerEvent): void;
    _fail(tag: Tag, error: string, message: string): void;
    /**
     * Rejects the requests that were sent (their answers can no longer
     * arrive) or, with `unsent`, those still waiting for a connection.
     */
    _failAll(error: string, message: string, unsent?: boolean): void;
    private _take;
}
