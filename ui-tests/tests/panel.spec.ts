import { expect, Locator, Page } from '@playwright/test';
import * as path from 'path';

import { cards, deleteAllClusters, openLab, openPanel, START, test } from './helpers';

/**
 * The Dask Clusters sidebar against a real `jupyter lab` (base_url
 * /user/tester/) with the server extension configured by
 * ../jupyter_server_test_config.py (local backend, template "tiny",
 * max_workers 4): real dask processes behind every step.
 */
// the README shows this screenshot
const SCREENSHOT = path.resolve(__dirname, '..', '..', 'docs', 'panel.png');

test.describe('without the server extension', () => {
  test('the panel shows a clear error state', async ({ page }) => {
    await page.route('**/dask-kube/api/**', route =>
      route.fulfill({ status: 404, contentType: 'text/html', body: '<html>404: Not Found</html>' })
    );
    await openLab(page);
    const panel = await openPanel(page);
    await expect(panel.locator('.dask-kube-StatusLine')).toContainText(
      'Dask Kube server extension not reachable: 404'
    );
  });
});

test.describe.serial('cluster lifecycle', () => {
  let page: Page;
  let panel: Locator;

  test.beforeAll(async ({ lab }) => {
    page = lab;
    panel = await openPanel(page);
  });

  test.afterAll(async () => {
    // leave nothing running if a step failed half-way
    await deleteAllClusters(page);
  });

  test('status line shows backend and namespace', async () => {
    await expect(panel.locator('.dask-kube-StatusLine')).toContainText('Backend:', { timeout: 60_000 });
    await expect(panel.locator('.dask-kube-StatusLine')).not.toContainText('not reachable');
  });

  test('a forbidden value shows the server message', async () => {
    await expect(panel.getByRole('button', { name: 'Create cluster' })).toBeEnabled();
    await panel.getByLabel('Adapt to the load').uncheck();
    await panel.getByLabel('Workers', { exact: true }).fill('50');
    await panel.getByRole('button', { name: 'Create cluster' }).click();
    const error = panel.locator('.dask-kube-CreateForm .dask-kube-error');
    await expect(error).toBeVisible();
    // the server's own words, e.g. "workers: 50 is above the maximum 4 allowed"
    await expect(error).toContainText('50');
    await expect(error).toContainText('4');
    await expect(cards(panel)).toHaveCount(0);
  });

  test('create from the template with 2 workers reaches running 2/2', async () => {
    await panel.getByLabel('Workers', { exact: true }).fill('2');
    await panel.getByRole('button', { name: 'Create cluster' }).click();
    await expect(panel.locator('.dask-kube-CreateForm .dask-kube-error')).toHaveCount(0);
    const card = cards(panel).first();
    await expect(cards(panel)).toHaveCount(1);
    await expect(card.locator('.dask-kube-badge-status')).toHaveText('running', { timeout: START });
    await expect(card.locator('.dask-kube-workers')).toHaveText('2/2 workers', { timeout: START });
  });

  test('scale to 3 shows 3/3', async () => {
    const card = cards(panel).first();
    await card.getByRole('button', { name: /^Scale / }).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await dialog.getByLabel('Workers', { exact: true }).fill('3');
    await dialog.getByRole('button', { name: 'Apply scaling' }).click();
    await expect(dialog).toHaveCount(0);
    await expect(card.locator('.dask-kube-workers')).toHaveText('3/3 workers', { timeout: START });
    await expect(card.locator('.dask-kube-badge-status')).toHaveText('running', { timeout: START });
  });

  test('switch to adapt (1..3) shows the adapt badge', async () => {
    const card = cards(panel).first();
    await card.getByRole('button', { name: /^Scale / }).click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.getByLabel('Adapt to the load').check();
    await dialog.getByLabel('Minimum workers').fill('1');
    await dialog.getByLabel('Maximum workers').fill('3');
    await dialog.getByRole('button', { name: 'Apply scaling' }).click();
    await expect(dialog).toHaveCount(0);
    await expect(card.locator('.dask-kube-badge-adapt')).toHaveText('adapt 1–3', { timeout: 60_000 });
  });

  test('logs open in the main area with scheduler text', async () => {
    const card = cards(panel).first();
    await card.getByRole('button', { name: /^Logs of / }).click();
    const logs = page.locator('.dask-kube-LogsView');
    await expect(logs).toBeVisible();
    await expect(logs.locator('.dask-kube-LogsView-pod').first()).toContainText(/scheduler/i, {
      timeout: 60_000
    });
    await expect(logs.locator('pre').first()).not.toHaveText('');
    await page.getByRole('button', { name: 'Refresh' }).first().click();
    await expect(logs.locator('.dask-kube-LogsView-info')).toContainText('Logs of');
  });

  test('drag the card into a notebook, run it, see the client', async () => {
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('notebook:create-new', { kernelName: 'python3' });
    });
    const notebook = page.locator('.jp-NotebookPanel:visible');
    await expect(notebook.locator('.jp-Cell').first()).toBeVisible({ timeout: 60_000 });
    await openPanel(page);
    const card = cards(panel).first();
    const source = await card.locator('.dask-kube-ClusterCard-name').boundingBox();
    const target = await notebook.locator('.jp-Cell').first().boundingBox();
    expect(source && target).toBeTruthy();
    await page.mouse.move(source!.x + 10, source!.y + 5);
    await page.mouse.down();
    await page.mouse.move(source!.x + 40, source!.y + 20, { steps: 5 });
    await page.mouse.move(target!.x + 60, target!.y + target!.height / 2, { steps: 10 });
    await page.mouse.up();
    const inserted = notebook.locator('.jp-CodeCell').first();
    // local backend, TLS on: a Client with the owner-only credential files (the model's connect_code)
    await expect(inserted.locator('.jp-InputArea')).toContainText('from distributed import Client, Security');
    await expect(inserted.locator('.jp-InputArea')).toContainText("client = Client('tls://");
    await expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).toBeVisible({
      timeout: 90_000
    });
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('notebook:run-cell');
    });
    await expect(inserted.locator('.jp-OutputArea-output')).toContainText('Workers', { timeout: START });
  });

  test('insert-client command adds a cell below the active one', async () => {
    const notebook = page.locator('.jp-NotebookPanel:visible');
    const before = await notebook.locator('.jp-Cell').count();
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('dask-kube:insert-client');
    });
    await expect(notebook.locator('.jp-Cell')).toHaveCount(before + 1);
  });

  test('the dashboard opens through the proxy, websockets included', async () => {
    const card = cards(panel).first();
    const [dashboard] = await Promise.all([
      page.context().waitForEvent('page'),
      card.getByRole('button', { name: /^Dashboard of / }).click()
    ]);
    // Bokeh streams the plots over a websocket: it must pass through jupyter-server-proxy too
    const socket = await dashboard.waitForEvent('websocket', {
      predicate: ws => ws.url().includes('/proxy/'),
      timeout: 60_000
    });
    await socket.waitForEvent('framereceived', { timeout: 60_000 });
    expect(dashboard.url()).toContain('/user/tester/proxy/');
    expect(dashboard.url()).toContain('/status');
    await expect(dashboard.locator('.bk-root, .bk-Figure, [data-root-id]').first()).toBeAttached({
      timeout: 60_000
    });
    await dashboard.close();
  });

  test('screenshot of the panel with a running cluster', async () => {
    await openPanel(page);
    const card = cards(panel).first();
    await expect(card.locator('.dask-kube-badge-status')).toHaveText('running', { timeout: START });
    // no focus or hover left over from the previous clicks
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await page.mouse.move(800, 600);
    await panel.screenshot({ path: SCREENSHOT });
    // the dark theme too (kept with the test results, for a look)
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Dark' });
    });
    await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false', { timeout: 30_000 });
    await expect(card.locator('.dask-kube-badge-status')).toHaveText('running');
    await panel.screenshot({ path: path.resolve(__dirname, '..', 'test-results', 'panel-dark.png') });
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' });
    });
    await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'true', { timeout: 30_000 });
  });

  test('shutdown with confirm: stopping, then gone', async () => {
    const card = cards(panel).first();
    await card.getByRole('button', { name: /^Shut down / }).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Shut down cluster?');
    await dialog.getByRole('button', { name: 'Confirm shutdown' }).click();
    // DELETE answers once the pods are gone (about a second): the card shows "stopping" meanwhile,
    // unless the answer was faster than one frame.
    await expect(
      panel.locator('.dask-kube-ClusterCard[data-status="stopping"]').or(panel.locator('.dask-kube-empty'))
    ).not.toHaveCount(0, { timeout: 30_000 });
    await expect(cards(panel)).toHaveCount(0, { timeout: 90_000 });
    await expect(panel.locator('.dask-kube-empty').last()).toHaveText('No clusters yet.');
  });
});
