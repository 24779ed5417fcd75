import { expect, Locator, Page } from '@playwright/test';

import { cards, fakeCluster, LONG_TEMPLATE, openPanel, PLUGIN, serveClusters, setSetting, test } from './helpers';

/**
 * Long cluster and template names neither overflow the sidebar nor move
 * things around: they end in an ellipsis and the full text is in the tooltip.
 * The cluster list is made up (no processes) so it can step through states.
 */
const LONG_NAME = 'dask-a-user-with-a-really-long-name-at-example-org-1a2b3c4d5e6f7';
const LONG_DISPLAY = 'A template with an uncommonly long display name that cannot fit a sidebar';

test.describe.serial('long names', () => {
  let page: Page;
  let panel: Locator;
  let cluster = fakeCluster();

  test.beforeAll(async ({ lab }) => {
    page = lab;
    await serveClusters(page, () => [cluster]);
    await setSetting(page, PLUGIN, 'refreshInterval', 250);
    panel = await openPanel(page);
  });

  test.afterAll(async () => {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    await setSetting(page, PLUGIN, 'refreshInterval', null);
    await setSetting(page, PLUGIN, 'defaultTemplate', null);
  });

  /** Nothing in the sidebar is wider than the sidebar. */
  async function expectNoOverflow(): Promise<void> {
    const wide = await panel.evaluate(root => {
      const out: string[] = [];
      const limit = root.getBoundingClientRect().right + 0.5;
      if (root.scrollWidth > root.clientWidth) {
        out.push(`panel scrollWidth ${root.scrollWidth} > clientWidth ${root.clientWidth}`);
      }
      for (const el of root.querySelectorAll<HTMLElement>('*')) {
        const box = el.getBoundingClientRect();
        if (box.width > 0 && box.right > limit) {
          out.push(`${el.tagName}.${el.className} ends at ${box.right} > ${limit}`);
        }
      }
      return out;
    });
    expect(wide).toEqual([]);
  }

  /** The element cuts its text with an ellipsis and carries it whole in its title. */
  async function expectEllipsis(el: Locator, full: string): Promise<void> {
    await expect(el).toHaveAttribute('title', new RegExp(full.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    const cut = await el.evaluate(e => ({
      truncated: e.scrollWidth > e.clientWidth,
      ellipsis: getComputedStyle(e).textOverflow === 'ellipsis'
    }));
    expect(cut).toEqual({ truncated: true, ellipsis: true });
  }

  test('a long template name in the picker', async () => {
    await setSetting(page, PLUGIN, 'defaultTemplate', LONG_TEMPLATE);
    const picker = panel.getByLabel('Template', { exact: true });
    await expect(picker).toHaveValue(LONG_TEMPLATE);
    await expect(picker).toHaveAttribute('title', LONG_DISPLAY);
    await expectNoOverflow();
  });

  test('a long cluster name: ellipsis, tooltip, and a card height that stays put', async () => {
    const states = [
      { status: 'pending', workers: 0, requested_workers: 2, scheduler_address: null, dashboard_link: null },
      { status: 'starting', workers: 1, requested_workers: 2 },
      { status: 'running', workers: 2, requested_workers: 2 },
      { status: 'running', workers: 3, requested_workers: 3, adapt: { minimum: 1, maximum: 3 } },
      { status: 'running', workers: 10, requested_workers: 12, cores: 24, memory: 48_000_000_000 }
    ];
    const heights: number[] = [];
    for (const state of states) {
      cluster = fakeCluster({ name: LONG_NAME, template: LONG_TEMPLATE, ...state });
      const card = cards(panel).first();
      await expect(card).toHaveAttribute('data-status', state.status);
      await expect(card.locator('.dask-kube-workers')).toHaveText(`${state.workers}/${state.requested_workers} workers`);
      await expectNoOverflow();
      await expectEllipsis(card.locator('.dask-kube-ClusterCard-name'), LONG_NAME);
      await expectEllipsis(card.locator('.dask-kube-ClusterCard-template'), LONG_DISPLAY);
      heights.push((await card.boundingBox())!.height);
    }
    expect(new Set(heights).size, `card heights ${heights.join(', ')}`).toBe(1);
  });
});
