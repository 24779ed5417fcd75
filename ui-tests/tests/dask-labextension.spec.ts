import { expect, Locator, Page } from '@playwright/test';

import {
  cards,
  createCluster,
  DASK_LAB,
  deleteAllClusters,
  openPanel,
  PLUGIN,
  setSetting,
  showLeft,
  START,
  test,
  userSettings
} from './helpers';

/**
 * With dask-labextension installed too (it is in the [test] extra): its
 * cluster manager is hidden through its own setting, and "Dask panes" points
 * its dashboard panes at one of our clusters.
 */
const HIDE = 'hideDaskLabextensionClusterManager';

test.describe.serial('dask-labextension', () => {
  let page: Page;
  let panel: Locator;
  let daskSidebar: Locator;
  let daskManager: Locator;

  test.beforeAll(async ({ lab }) => {
    page = lab;
    panel = await openPanel(page);
    daskSidebar = page.locator('#dask-dashboard-launcher');
    daskManager = daskSidebar.locator('.dask-DaskClusterManager');
  });

  test.afterAll(async () => {
    await setSetting(page, PLUGIN, HIDE, null);
    await deleteAllClusters(page);
  });

  test('one "new cluster" button: its cluster manager is hidden, ours is there', async () => {
    await expect.poll(async () => (await userSettings(page, DASK_LAB)).hideClusterManager).toBe(true);
    await showLeft(page, 'dask-dashboard-launcher');
    await expect(daskSidebar).toBeVisible();
    // its dashboard panes stay, its "+ NEW" does not
    await expect(daskSidebar.locator('.dask-URLInput input')).toBeVisible();
    await expect(daskManager).toBeHidden();
    await expect(daskSidebar.locator('[data-command="dask:launch-cluster"]')).toBeHidden();
    await openPanel(page);
    await expect(panel.getByRole('button', { name: 'Create cluster' })).toBeVisible();
  });

  test('our setting turns it back on, and a value the user set is never overridden', async () => {
    await showLeft(page, 'dask-dashboard-launcher');
    await setSetting(page, PLUGIN, HIDE, false);
    await expect(daskManager).toBeVisible();
    expect((await userSettings(page, DASK_LAB)).hideClusterManager).toBeUndefined();
    await setSetting(page, PLUGIN, HIDE, true);
    await expect(daskManager).toBeHidden();

    // the user shows it explicitly in dask-labextension's own settings: that wins
    await setSetting(page, DASK_LAB, 'hideClusterManager', false);
    await expect(daskManager).toBeVisible();
    await setSetting(page, PLUGIN, HIDE, false);
    await setSetting(page, PLUGIN, HIDE, true);
    await expect(daskManager).toBeVisible();
    expect((await userSettings(page, DASK_LAB)).hideClusterManager).toBe(false);

    // back to its default: ours applies again
    await setSetting(page, DASK_LAB, 'hideClusterManager', null);
    await expect(daskManager).toBeHidden();
    await expect.poll(async () => (await userSettings(page, DASK_LAB)).hideClusterManager).toBe(true);
  });

  test('"Dask panes" points its dashboard panes at the cluster, through the proxy', async () => {
    const cluster = await createCluster(page, { template: 'tiny', workers: 1 });
    await openPanel(page);
    const card = cards(panel).and(page.locator(`[data-cluster-id="${cluster.id}"]`));
    await expect(card.locator('.dask-kube-badge-status')).toHaveText('running', { timeout: START });
    await card.getByRole('button', { name: /in Dask panes$/ }).click();

    // its sidebar shows the proxied dashboard URL and enables its dashboard buttons
    await expect(daskSidebar).toBeVisible();
    const url = daskSidebar.locator('.dask-URLInput input');
    await expect(url).toHaveValue(/\/user\/tester\/proxy\/[^/]+:\d+\/$/);
    const progress = daskSidebar.getByRole('button', { name: 'Progress', exact: true });
    await expect(progress).toBeEnabled({ timeout: 60_000 });
    await expect(daskSidebar.locator('.dask-DashboardListing-item button').first()).toBeEnabled();

    // one pane opens in the main area and loads the plot through the proxy
    await progress.click();
    const pane = page.locator('.dask-DaskDashboard-widget:visible');
    await expect(pane).toBeVisible();
    const frame = pane.locator('iframe');
    await expect(frame).toHaveAttribute('src', /\/user\/tester\/proxy\/[^/]+:\d+\/individual-progress/);
    await expect(
      pane.frameLocator('iframe').locator('.bk-root, .bk-Figure, [data-root-id]').first()
    ).toBeAttached({ timeout: 60_000 });
    await page.evaluate(async () => {
      const app = window.jupyterapp;
      for (const widget of [...app.shell.widgets('main')]) {
        if (widget.hasClass('dask-DaskDashboard-widget')) {
          widget.close();
        }
      }
    });
  });
});
