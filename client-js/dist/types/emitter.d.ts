export type AnyListener = (...args: never[]) => void;
export type ErrorReporter = (error: unknown, event: string) => void;
export declare class Emitter {
    private readonly _owner;
    private readonly _report;
    private readonly _listeners;
    constructor(_owner: object, _report: ErrorReporter);
    /** Adds a listener (`off` removes it). */
    _on(event: string, listener: AnyListener): void;
    /** Removes one listener, every listener of an event, or every listener. */
    _off(event?: string, listener?: AnyListener): void;
    _emit(event: string, ...args: unknown[]): void;
}
