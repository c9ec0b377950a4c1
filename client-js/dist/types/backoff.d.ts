import type { BackoffOptions } from './types.js';
/**
 * Capped exponential backoff with full jitter: attempt n waits a uniform
 * random time in [0, min(max, initial * factor^n)). The randomness matters
 * more than the growth: it spreads the clients of a restarted node over the
 * whole window instead of bringing them back in the same second.
 */
export declare class Backoff {
    private _attempt;
    private readonly _initial;
    private readonly _max;
    private readonly _factor;
    constructor(options?: BackoffOptions);
    /** The delay before the next attempt, in ms. */
    _next(): number;
    /** Starts again from the first delay (after a success). */
    _reset(): void;
}
