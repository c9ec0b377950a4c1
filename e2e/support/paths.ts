import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root, where go.mod and the client's package.json live. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
