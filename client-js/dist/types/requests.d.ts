import type { ServerEvent, Tag } from './types.js';
export declare class Requests {
    private readonly _pending;
    /** Registers a request; `timeout` 0 waits forever. */
    open(tag: Tag, action: string, timeout: number): Promise<ServerEvent>;
    /** Settles the request this event answers, if any: the first event with its tag. */
    settle(event: ServerEvent): void;
    fail(tag: Tag, error: string, message: string): void;
    /** Rejects every request: their answers can no longer arrive. */
    failAll(error: string, message: string): void;
    private _take;
}
