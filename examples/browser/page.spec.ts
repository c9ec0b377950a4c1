// examples/browser in Chromium: the README's page, served beside Myxi by
// main.go, signs in, calls SayHello, subscribes to widget 42, and shows
// the quantity pushed when the widget is saved.
import { test, expect } from '@playwright/test';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function waitReady(base: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the example exited (${child.exitCode}):\n${log()}`);
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${base}/readyz not ready in 30 s:\n${log()}`);
}

test('the README page gets the pushed event', async ({ page }) => {
  const dir = mkdtempSync(join(tmpdir(), 'myxi-example-browser-'));
  const bin = join(dir, 'browser-example');
  execFileSync('go', ['build', '-o', bin, './examples/browser'], { cwd: root, stdio: 'inherit' });
  const port = await freePort();
  let output = '';
  const child = spawn(bin, [], { env: { ...process.env, MYXI_PORT: String(port), MYXI_BIND_ADDRESS: '127.0.0.1' } });
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  try {
    const base = `http://127.0.0.1:${port}`;
    await waitReady(base, child, () => output);
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    await page.goto(`${base}/`);
    await expect(page.locator('#user')).toHaveText('alice');
    await expect(page.locator('#status')).toHaveText('subscribed');
    await expect(page.locator('#hello')).toHaveText(/^\d{4}-\d\d-\d\dT/);

    // "Save" widget 42: main.go pushes its quantity.
    const saved = await fetch(`${base}/widgets/42`, { method: 'POST', body: JSON.stringify({ quantity: 7 }) });
    expect(saved.status).toBe(204);
    await expect(page.locator('#quantity')).toHaveText('7');
    expect(errors).toEqual([]);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    rmSync(dir, { recursive: true, force: true });
  }
});
