// The table of `request()` calls waiting for their answer, keyed by tag.
// A request made while the socket is not open keeps its frame here until
// the connection is ready (or its timeout ends the wait).

import { MyxiError } from './errors.js';
import type { ServerEvent, Tag } from './types.js';

interface Pending {
  _action: string;
  _resolve: (event: ServerEvent) => void;
  _reject: (error: MyxiError) => void;
  _timer?: ReturnType<typeof setTimeout>;
  /** The encoded action, until it is sent. */
  _frame?: string;
}

export class Requests {
  private readonly _pending = new Map<Tag, Pending>();

  /** Registers a request; `timeout` 0 waits forever. `frame` is the action still to send, if any. */
  _open(tag: Tag, action: string, timeout: number, frame?: string): Promise<ServerEvent> {
    return new Promise((resolve, reject) => {
      const pending: Pending = { _action: action, _resolve: resolve, _reject: reject, _frame: frame };
      if (timeout > 0) {
        pending._timer = setTimeout(
          () => this._fail(tag, 'Timeout', `timed out after ${timeout} ms`),
          timeout,
        );
      }
      this._pending.set(tag, pending);
    });
  }

  /** Sends the requests still waiting for the connection, oldest first. */
  _flush(send: (frame: string) => void): void {
    for (const pending of this._pending.values()) {
      const frame = pending._frame;
      if (frame) {
        pending._frame = undefined;
        send(frame);
      }
    }
  }

  /** Settles the request this event answers, if any: the first event with its tag. */
  _settle(event: ServerEvent): void {
    const pending = this._take(event.tag);
    if (!pending) return;
    if (event.event === 'Error' || event.event === 'InternalError') {
      const name = typeof event.payload.error === 'string' ? event.payload.error : event.event;
      pending._reject(new MyxiError(name, `${pending._action}: ${name}`, event));
    } else {
      pending._resolve(event);
    }
  }

  _fail(tag: Tag, error: string, message: string): void {
    const pending = this._take(tag);
    if (pending) pending._reject(new MyxiError(error, `${pending._action}: ${message}`));
  }

  /**
   * Rejects the requests that were sent (their answers can no longer
   * arrive) or, with `unsent`, those still waiting for a connection.
   */
  _failAll(error: string, message: string, unsent?: boolean): void {
    for (const [tag, pending] of [...this._pending]) {
      if (!pending._frame === !unsent) this._fail(tag, error, message);
    }
  }

  private _take(tag: Tag): Pending | undefined {
    const pending = this._pending.get(tag);
    if (!pending) return undefined;
    this._pending.delete(tag);
    clearTimeout(pending._timer);
    return pending;
  }
}
