// A small event emitter. Callbacks are called with `this` set to the object
// that owns the emitter (as myxi 1.x did), and one that throws is reported
// without stopping the dispatch to the others.

export type AnyListener = (...args: never[]) => void;
export type ErrorReporter = (error: unknown, event: string) => void;

export class Emitter {
  private readonly _listeners = new Map<string, AnyListener[]>();

  constructor(
    private readonly _owner: object,
    private readonly _report: ErrorReporter,
  ) {}

  /** Adds a listener (`off` removes it). */
  _on(event: string, listener: AnyListener): void {
    // The 1.x README lists its events as `webSocket.on 'SocketConnected'`,
    // without a callback: a line copied from it must not fail later.
    if (typeof listener !== 'function') return;
    const list = this._listeners.get(event);
    if (list) list.push(listener);
    else this._listeners.set(event, [listener]);
  }

  /** Removes one listener, every listener of an event, or every listener. */
  _off(event?: string, listener?: AnyListener): void {
    if (event === undefined) {
      this._listeners.clear();
      return;
    }
    if (!listener) {
      this._listeners.delete(event);
      return;
    }
    const list = this._listeners.get(event);
    const index = list ? list.indexOf(listener) : -1;
    if (index >= 0) list!.splice(index, 1);
  }

  _emit(event: string, ...args: unknown[]): void {
    const list = this._listeners.get(event);
    if (!list) return;
    // A snapshot: listeners added or removed by a listener take effect from
    // the next event on, not in the middle of this one.
    for (const listener of list.slice()) {
      try {
        (listener as (...a: unknown[]) => void).apply(this._owner, args);
      } catch (error) {
        this._report(error, event);
      }
    }
  }
}
