import type { BackoffOptions } from './types.js';

/**
 * Capped exponential backoff with full jitter: attempt n waits a uniform
 * random time in [0, min(max, initial * factor^n)). The randomness matters
 * more than the growth: it spreads the clients of a restarted node over the
 * whole window instead of bringing them back in the same second.
 */
export class Backoff {
  private _attempt = 0;
  private readonly _initial: number;
  private readonly _max: number;
  private readonly _factor: number;

  constructor(options: BackoffOptions = {}) {
    this._initial = options.initial ?? 1000;
    this._max = options.max ?? 30000;
    this._factor = options.factor ?? 2;
  }

  /** The delay before the next attempt, in ms. */
  _next(): number {
    const ceiling = Math.min(this._max, this._initial * Math.pow(this._factor, this._attempt++));
    return Math.floor(Math.random() * ceiling);
  }

  /** Starts again from the first delay (after a success). */
  _reset(): void {
    this._attempt = 0;
  }
}
