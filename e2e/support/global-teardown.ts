import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

// Demo processes are stopped by each test's fixture (and killed when a
// worker exits); this removes the binary built by the global setup and the
// run's RabbitMQ vhost, with everything the demos declared in it.
export default async function globalTeardown(): Promise<void> {
  const dir = process.env.MYXI_E2E_DIR;
  if (dir) rmSync(dir, { recursive: true, force: true });
  const vhost = process.env.MYXI_E2E_VHOST;
  if (vhost) {
    try {
      execFileSync('rabbitmqctl', ['-q', 'delete_vhost', vhost], { stdio: 'pipe' });
    } catch (err) {
      console.warn(`e2e: could not delete the RabbitMQ vhost ${vhost}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
}
