import { defineConfig } from '@playwright/test';

/**
 * Plain Playwright with the system Chromium against a real `jupyter lab`
 * under a non-root base_url (as under JupyterHub).
 */
const PORT = Number(process.env.DASK_KUBE_UI_PORT || 8899);
const BASE_PATH = '/user/tester/';
export const BASE_URL = `http://127.0.0.1:${PORT}${BASE_PATH}`;

export default defineConfig({
  testDir: './tests',
  timeout: 180_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list'], ['html', { open: 'never' }]],
  use: {
    baseURL: BASE_URL,
    viewport: { width: 1280, height: 800 },
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    actionTimeout: 20_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--headless',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  webServer: {
    command:
      `jupyter lab --config jupyter_server_test_config.py --no-browser --allow-root ` +
      `--ServerApp.token='' --ServerApp.password='' --ServerApp.ip=127.0.0.1 ` +
      `--port ${PORT} --ServerApp.port_retries=0 --ServerApp.base_url=${BASE_PATH}`,
    url: `${BASE_URL}api`,
    timeout: 120_000,
    reuseExistingServer: false,
    stdout: 'pipe',
    stderr: 'pipe'
  }
});
