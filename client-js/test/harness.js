// Shared set-up of the unit tests: fake timers and a recorded console.

import { afterEach, beforeEach, mock } from 'node:test';
import assert from 'node:assert/strict';

/**
 * Installs, around every test of the file: fake timers and clock (a reconnect
 * scheduled by one test must neither keep the process waiting nor fire in
 * another) and a console that records instead of printing, because console
 * output is part of the contract ("nothing alarming is logged").
 * Returns the record, refilled for each test.
 */
export function useHarness() {
  const logged = { error: [], warn: [], log: [], debug: [] };
  beforeEach(() => {
    for (const level of Object.keys(logged)) {
      logged[level] = [];
      mock.method(console, level, (...args) => logged[level].push(args));
    }
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  });
  afterEach(() => mock.reset());
  return logged;
}

/** Fails if anything was logged above debug level. */
export function assertQuiet(logged) {
  assert.deepEqual(logged.error, [], 'console.error');
  assert.deepEqual(logged.warn, [], 'console.warn');
  assert.deepEqual(logged.log, [], 'console.log');
}
