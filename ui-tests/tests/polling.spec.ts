import { expect, Locator, Page } from '@playwright/test';

import { isClusterList, openPanel, PLUGIN, polls, quietWindow, setSetting, showLeft, watchPolls, test } from './helpers';

/**
 * The cluster list is polled only while the sidebar is visible, and backs off
 * while the server fails. Short refresh intervals keep the windows short.
 */
test.describe.serial('polling', () => {
  let page: Page;
  let panel: Locator;

  test.beforeAll(async ({ lab }) => {
    page = lab;
    panel = await openPanel(page);
    await expect(panel.getByRole('button', { name: 'Create cluster' })).toBeVisible();
  });

  test.afterAll(async () => {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    await setSetting(page, PLUGIN, 'refreshInterval', null);
  });

  test('no polls while the sidebar shows another panel or is collapsed; they resume when shown', async () => {
    await setSetting(page, PLUGIN, 'refreshInterval', 500);
    for (const elsewhere of ['filebrowser', null]) {
      const visible = watchPolls(page);
      await polls(visible, 2);
      visible.stop();

      await showLeft(page, elsewhere);
      await expect(panel).toBeHidden();
      const hidden = watchPolls(page);
      await quietWindow(page, 3000); // six intervals
      hidden.stop();
      expect(hidden.times, `polls while hidden (${elsewhere ?? 'collapsed'})`).toHaveLength(0);

      const resumed = watchPolls(page);
      await openPanel(page);
      await polls(resumed, 3, 10_000);
      resumed.stop();
    }
  });

  test('server errors: the message is shown, the interval grows, then it recovers', async () => {
    await setSetting(page, PLUGIN, 'refreshInterval', 250);
    const message = 'Kubernetes API is not reachable (UI test)';
    await page.route(
      url => url.pathname.endsWith('/dask-kube/api/clusters'),
      route =>
        isClusterList(route.request())
          ? route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ message }) })
          : route.fallback()
    );
    const failing = watchPolls(page);
    await polls(failing, 4, 20_000);
    failing.stop();
    await expect(panel.locator('.dask-kube-StatusLine')).toContainText(`Could not refresh clusters: ${message}`);
    // 250 ms doubles with every failure: 500, 1000, 2000, ...
    const intervals = failing.intervals();
    expect(intervals[0]).toBeGreaterThanOrEqual(450);
    for (let i = 1; i < intervals.length; i++) {
      expect(intervals[i], `interval ${i} of ${intervals.join(', ')} ms`).toBeGreaterThan(1.5 * intervals[i - 1]);
    }

    await page.unrouteAll({ behavior: 'wait' });
    const recovered = watchPolls(page);
    await expect(panel.locator('.dask-kube-StatusLine')).not.toContainText('Could not refresh', { timeout: 20_000 });
    // back to the configured interval
    await polls(recovered, recovered.times.length + 3, 10_000);
    recovered.stop();
    const last = recovered.intervals().slice(-2);
    for (const interval of last) {
      expect(interval).toBeLessThan(1000);
    }
  });
});
