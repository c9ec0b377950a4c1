import { connect } from 'node:net';

/** The RabbitMQ of the tests: RABBITMQ_URL (its first URL) or a local default. */
export function rabbitmqURL(): string {
  const first = (process.env.RABBITMQ_URL || '').split(',')[0].trim();
  return first || 'amqp://guest:guest@127.0.0.1:5672/';
}

/** Whether something accepts TCP connections at the URL's host and port. */
export function reachable(url: string, timeoutMs = 2000): Promise<boolean> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === 'amqps:' ? 5671 : 5672));
  return new Promise((resolve) => {
    const socket = connect({ host: u.hostname, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
