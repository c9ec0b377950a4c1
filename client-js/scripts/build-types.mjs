// Writes the type declarations of the npm package into client-js/dist:
//
//   types/*.d.ts   tsc's declarations of client-js/src (internals stripped)
//   myxi.d.mts     the types of the ES module ("import")
//   myxi.d.cts     the types of the CommonJS build ("require")
//
// Both entry files re-export types/. That directory is marked CommonJS (its
// own package.json) because TypeScript lets an ES module re-export a
// CommonJS declaration but, under "module": "node16", not the reverse.
//
//   node client-js/scripts/build-types.mjs           write them
//   node client-js/scripts/build-types.mjs --check   fail if the committed ones drift
//
// esbuild (go run ./internal/jsbuild) builds the JavaScript; tsc only the types.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = join(root, 'client-js', 'dist');

const entry = "export * from './types/index.js';\n";
const extra = {
  'types/package.json': '{\n  "type": "commonjs"\n}\n',
  'myxi.d.mts': entry,
  'myxi.d.cts': entry,
};

/** Writes the declarations into outDir (its types/ is replaced). */
export function buildTypes(outDir) {
  const typesDir = join(outDir, 'types');
  rmSync(typesDir, { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const run = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.types.json', '--outDir', typesDir], {
    cwd: root,
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`tsc failed:\n${run.stdout}${run.stderr}`);
  for (const [name, text] of Object.entries(extra)) {
    mkdirSync(dirname(join(outDir, name)), { recursive: true });
    writeFileSync(join(outDir, name), text);
  }
}

/** The files buildTypes writes, relative to its outDir. */
function typeFiles(outDir) {
  const types = join(outDir, 'types');
  let names = [];
  try {
    names = readdirSync(types).filter((name) => statSync(join(types, name)).isFile());
  } catch {
    // no types/ at all: every file will be reported missing
  }
  return [...names.map((name) => `types/${name}`), 'myxi.d.mts', 'myxi.d.cts'];
}

/** Returns the declaration files of client-js/dist that differ from a fresh build. */
export function staleTypes() {
  const fresh = mkdtempSync(join(tmpdir(), 'myxi-types-'));
  try {
    buildTypes(fresh);
    const names = new Set([...typeFiles(fresh), ...typeFiles(dist)]);
    const read = (dir, name) => {
      try {
        return readFileSync(join(dir, name), 'utf8');
      } catch {
        return null;
      }
    };
    return [...names].sort().filter((name) => read(fresh, name) !== read(dist, name));
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--check')) {
    const stale = staleTypes();
    if (stale.length > 0) {
      console.error(`stale type declarations in ${relative(root, dist)}: ${stale.join(', ')}`);
      console.error('run: npm run build:types');
      process.exit(1);
    }
  } else {
    buildTypes(dist);
  }
}
