import { defineConfig } from '@playwright/test';

// Debian's Chromium, as e2e/ uses it: the tests never download a browser.
// CHROMIUM_PATH points elsewhere when needed.
const chromium = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export default defineConfig({
  testDir: '.',
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  timeout: 240_000, // the first `go build` of the example
  expect: { timeout: 10_000 },
  reporter: 'list',
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: {
      executablePath: chromium,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    },
  },
});
