// The TypeScript side: the sources type-check, the shipped declarations
// match the sources, and they work for users (Node ESM and CommonJS without
// the DOM, browser projects with it).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { staleTypes } from '../scripts/build-types.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

async function typecheck(project) {
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', project], { cwd: root });
  } catch (error) {
    assert.fail(`tsc -p ${project}:\n${error.stdout}${error.stderr}`);
  }
}

describe('types', { concurrency: true }, () => {
  test('the sources type-check (strict)', () => typecheck('tsconfig.json'));

  test('the declarations in client-js/dist match the sources (else: npm run build:types)', () => {
    assert.deepEqual(staleTypes(), []);
  });

  test('Node, ES module and CommonJS, through package.json exports', () =>
    typecheck('client-js/test/types/tsconfig.json'));

  test('browser project with the DOM library', () => typecheck('client-js/test/types/dom/tsconfig.json'));
});
