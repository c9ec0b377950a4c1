// Builds the demo once for the whole run and finds RabbitMQ. What it finds
// reaches the workers through the environment.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rabbitmqURL, reachable } from './rabbitmq.ts';
import { repoRoot } from './paths.ts';

export default async function globalSetup(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'myxi-e2e-'));
  const binary = join(dir, 'myxi-demo');
  execFileSync('go', ['build', '-o', binary, './demo'], { cwd: repoRoot, stdio: 'inherit' });
  process.env.MYXI_E2E_DIR = dir;
  process.env.MYXI_E2E_DEMO_BIN = binary;

  const url = rabbitmqURL();
  if (await reachable(url)) {
    process.env.MYXI_E2E_RABBITMQ_URL = ownVhost(url);
    return;
  }
  // CI promises a RabbitMQ: its absence is a failure there, never a skip.
  if (process.env.CI) {
    throw new Error(`RabbitMQ is not reachable at ${redact(url)}; CI must start it before the e2e tests`);
  }
  process.env.MYXI_E2E_RABBITMQ_URL = '';
  console.warn(`e2e: no RabbitMQ at ${redact(url)}: single-node tests use the embedded broker, multi-node tests are skipped`);
}

// ownVhost gives the run a RabbitMQ vhost of its own (deleted by the
// global teardown), so the demo's `widgets` exchange never meets another
// test's or a developer's demo, and nothing is left on the shared broker.
// Without rabbitmqctl (a remote broker) the URL is used as it is.
function ownVhost(url: string): string {
  const vhost = `myxi-e2e-${process.pid}-${Date.now().toString(36)}`;
  const user = decodeURIComponent(new URL(url).username || 'guest');
  try {
    execFileSync('rabbitmqctl', ['-q', 'add_vhost', vhost], { stdio: 'pipe' });
    execFileSync('rabbitmqctl', ['-q', 'set_permissions', '-p', vhost, user, '.*', '.*', '.*'], { stdio: 'pipe' });
  } catch (err) {
    console.warn(`e2e: cannot create a RabbitMQ vhost (${(err as Error).message.split('\n')[0]}); using ${redact(url)} as it is`);
    return url;
  }
  process.env.MYXI_E2E_VHOST = vhost;
  const u = new URL(url);
  u.pathname = '/' + encodeURIComponent(vhost);
  return u.toString();
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}
