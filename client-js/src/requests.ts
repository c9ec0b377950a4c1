// The table of `request()` calls waiting for their answer, keyed by tag.

import { MyxiError } from './errors.js';
import type { ServerEvent, Tag } from './types.js';

interface Pending {
  action: string;
  resolve: (event: ServerEvent) => void;
  reject: (error: MyxiError) => void;
  timer?: ReturnType<typeof setTimeout>;
}

export class Requests {
  private readonly _pending = new Map<Tag, Pending>();

  /** Registers a request; `timeout` 0 waits forever. */
  open(tag: Tag, action: string, timeout: number): Promise<ServerEvent> {
    return new Promise((resolve, reject) => {
      const pending: Pending = { action, resolve, reject };
      if (timeout > 0) {
        pending.timer = setTimeout(
          () => this.fail(tag, 'Timeout', `timed out after ${timeout} ms`),
          timeout,
        );
      }
      this._pending.set(tag, pending);
    });
  }

  /** Settles the request this event answers, if any: the first event with its tag. */
  settle(event: ServerEvent): void {
    const pending = this._take(event.tag);
    if (!pending) return;
    if (event.event === 'Error' || event.event === 'InternalError') {
      const name = typeof event.payload.error === 'string' ? event.payload.error : event.event;
      pending.reject(new MyxiError(name, `${pending.action}: ${name}`, event));
    } else {
      pending.resolve(event);
    }
  }

  fail(tag: Tag, error: string, message: string): void {
    const pending = this._take(tag);
    if (pending) pending.reject(new MyxiError(error, `${pending.action}: ${message}`));
  }

  /** Rejects every request: their answers can no longer arrive. */
  failAll(error: string, message: string): void {
    for (const tag of [...this._pending.keys()]) this.fail(tag, error, message);
  }

  private _take(tag: Tag): Pending | undefined {
    const pending = this._pending.get(tag);
    if (!pending) return undefined;
    this._pending.delete(tag);
    clearTimeout(pending.timer);
    return pending;
  }
}
