import { expect, Locator, Page } from '@playwright/test';

import { LONG_TEMPLATE, openPanel, PLUGIN, polls, setSetting, watchPolls, test } from './helpers';

/**
 * The sidebar follows its settings (changed through Lab's setting registry,
 * as the Settings editor does) without a reload. No clusters run here, so the
 * plain refresh interval applies (not the faster one used while starting).
 */
test.describe.serial('settings', () => {
  let page: Page;
  let panel: Locator;

  test.beforeAll(async ({ lab }) => {
    page = lab;
    panel = await openPanel(page);
    await expect(panel.getByRole('button', { name: 'Create cluster' })).toBeVisible();
  });

  test.afterAll(async () => {
    await setSetting(page, PLUGIN, 'refreshInterval', null);
    await setSetting(page, PLUGIN, 'defaultTemplate', null);
  });

  test('refreshInterval sets the polling interval', async () => {
    await setSetting(page, PLUGIN, 'refreshInterval', 500);
    let watch = watchPolls(page);
    await polls(watch, 6);
    watch.stop();
    for (const interval of watch.intervals()) {
      expect(interval).toBeGreaterThanOrEqual(450);
      expect(interval).toBeLessThan(1500);
    }

    // slower than before, and not the 2000 ms default either
    await setSetting(page, PLUGIN, 'refreshInterval', 1200);
    watch = watchPolls(page);
    await polls(watch, 4, 20_000);
    watch.stop();
    for (const interval of watch.intervals()) {
      expect(interval).toBeGreaterThanOrEqual(1150);
      expect(interval).toBeLessThan(1900);
    }
  });

  test('defaultTemplate selects that template; unknown or empty falls back to the server default', async () => {
    const picker = panel.getByLabel('Template', { exact: true });
    await expect(picker).toHaveValue('tiny');
    await setSetting(page, PLUGIN, 'defaultTemplate', LONG_TEMPLATE);
    await expect(picker).toHaveValue(LONG_TEMPLATE);
    await expect(panel.locator('.dask-kube-TemplateInfo-description')).toContainText('The same tiny local workers');
    await setSetting(page, PLUGIN, 'defaultTemplate', 'no-such-template');
    await expect(picker).toHaveValue('tiny');
    await setSetting(page, PLUGIN, 'defaultTemplate', LONG_TEMPLATE);
    await expect(picker).toHaveValue(LONG_TEMPLATE);
    await setSetting(page, PLUGIN, 'defaultTemplate', null);
    await expect(picker).toHaveValue('tiny');
  });
});
