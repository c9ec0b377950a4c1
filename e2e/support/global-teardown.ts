import { rmSync } from 'node:fs';

// Demo processes are stopped by each test's fixture (and killed when a
// worker exits); this removes the binary built by the global setup.
export default async function globalTeardown(): Promise<void> {
  const dir = process.env.MYXI_E2E_DIR;
  if (dir) rmSync(dir, { recursive: true, force: true });
}
