// The npm package as a user gets it: `npm pack` of the repository root,
// installed with `ws` into an empty project, used from Node against a
// running demo node. No browser.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test, expect } from '../support/fixtures.ts';
import { repoRoot } from '../support/paths.ts';

// What the empty project runs: the README's flow with the ES module and
// `ws` as the WebSocket. Each step is one JSON line on stdout.
const clientScript = `
import { Connection } from 'myxi';
import WebSocket from 'ws';

const [url, token] = process.argv.slice(2);
const say = (step, data = {}) => process.stdout.write(JSON.stringify({ step, ...data }) + '\\n');
const connection = new Connection(url, { WebSocket });
connection.on('Welcome', (payload) => say('welcome', { id: payload.id }));
connection.authentication(() => {
  connection.request('Authenticate', { session_token: token }).then((event) => {
    say('authenticated', { username: event.payload.username });
    connection.isAuthenticated();
  }, (error) => say('failed', { error: error.error }));
});
const subscription = connection.subscribe('widgets', '1');
subscription.on('Subscribed', () => say('subscribed', { subscribed: subscription.subscribed }));
subscription.on('WidgetQtyChanged', (payload) => {
  say('event', { quantity: payload.quantity });
  connection.disconnect();
});
`;

test('the npm package installs from `npm pack` and works from Node with ws', async ({ demo }) => {
  test.setTimeout(180_000); // npm install talks to the registry
  const dir = mkdtempSync(join(tmpdir(), 'myxi-npm-pack-'));
  try {
    const packed = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: repoRoot, encoding: 'utf8' }),
    ) as { filename: string; files: { path: string }[] }[];
    const tarball = join(dir, packed[0].filename);
    // Only the built client ships: no sources, tests or Go code.
    for (const file of packed[0].files) {
      expect(file.path).toMatch(/^(package\.json|README\.md|LICENSE|client-js\/(dist\/|README\.md))/);
    }

    const project = join(dir, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-myxi', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, 'ws@8'], {
      cwd: project,
      stdio: 'pipe',
    });
    writeFileSync(join(project, 'client.mjs'), clientScript);

    // CommonJS users get the same API, and the declared types exist.
    const cjs = execFileSync('node', ['-e', "process.stdout.write(typeof require('myxi').Connection)"], {
      cwd: project,
      encoding: 'utf8',
    });
    expect(cjs).toBe('function');
    const manifest = JSON.parse(
      execFileSync('node', ['-p', "JSON.stringify(require('myxi/package.json'))"], { cwd: project, encoding: 'utf8' }),
    );
    for (const types of [manifest.types, manifest.exports?.['.']?.import?.types, manifest.exports?.['.']?.require?.types]) {
      if (types) expect(existsSync(join(project, 'node_modules', 'myxi', types)), `${types} is in the package`).toBe(true);
    }

    const steps = await runClient(project, `ws://127.0.0.1:${demo.port}/`, 'bob-token', async (step) => {
      // Once subscribed, a script changes the quantity through the demo's API.
      if (step.step === 'subscribed') await demo.changeQuantity(1, { quantity: 77 }, 'bob-token');
    });
    expect(steps.map((s) => s.step)).toEqual(['welcome', 'authenticated', 'subscribed', 'event']);
    expect(steps[0].id).toMatch(/^[0-9a-f]{16}$/);
    expect(steps[1].username).toBe('bob');
    expect(steps[2].subscribed).toBe(true);
    expect(steps[3].quantity).toBe(77);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

type Step = { step: string; [key: string]: unknown };

/** Runs the client until it exits (it disconnects after its first event), calling onStep for each line. */
function runClient(cwd: string, url: string, token: string, onStep: (step: Step) => Promise<void>): Promise<Step[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('node', ['client.mjs', url, token], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const steps: Step[] = [];
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`client did not finish in 20 s; steps: ${JSON.stringify(steps)}; stderr: ${stderr}`));
    }, 20_000);
    child.stderr.on('data', (chunk) => (stderr += chunk));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const step = JSON.parse(line) as Step;
      steps.push(step);
      onStep(step).catch((error) => {
        child.kill('SIGKILL');
        reject(error);
      });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(steps);
      else reject(new Error(`client exited with ${code}; steps: ${JSON.stringify(steps)}; stderr: ${stderr}`));
    });
  });
}
