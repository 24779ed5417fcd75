import { expect, Locator, Page } from '@playwright/test';

import { cards, fakeCluster, LONG_TEMPLATE, openPanel, serveClusters, test } from './helpers';

/**
 * Everything in the sidebar is reachable and usable with the keyboard alone,
 * with a visible focus ring. Two made-up running clusters (no processes)
 * give the cards; dask-labextension is installed, so "Dask panes" shows.
 */
test.describe.serial('keyboard', () => {
  let page: Page;
  let panel: Locator;
  const clusters = [
    fakeCluster({ id: 'fake-1', name: 'dask-tester-first' }),
    fakeCluster({ id: 'fake-2', name: 'dask-tester-second' })
  ];

  test.beforeAll(async ({ lab }) => {
    page = lab;
    await serveClusters(page, () => clusters);
    panel = await openPanel(page);
    await expect(cards(panel)).toHaveCount(2);
    await expect(panel.getByRole('button', { name: 'Create cluster' })).toBeEnabled();
  });

  test.afterAll(async () => {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
  });

  /** The controls in Tab order, from the template picker on. */
  function tabOrder(): Locator[] {
    const order = [
      panel.getByLabel('Template', { exact: true }),
      panel.getByLabel(/^Cores per worker/),
      panel.getByLabel('Adapt to the load'),
      panel.getByLabel('Workers', { exact: true }),
      panel.getByLabel('Keep after my server stops'),
      panel.getByRole('button', { name: 'Create cluster' })
    ];
    for (const c of clusters) {
      const card = cards(panel).and(page.locator(`[data-cluster-id="${c.id}"]`));
      for (const name of [/^Scale /, /^Dashboard of /, /^Logs of /, /^Insert client code /, /in Dask panes$/, /^Shut down /]) {
        order.push(card.getByRole('button', { name }));
      }
    }
    return order;
  }

  /** The focused element shows an outline or a focus shadow. */
  async function expectFocusRing(target: Locator): Promise<void> {
    const style = await target.evaluate(el => {
      const s = getComputedStyle(el);
      return { outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0, shadow: s.boxShadow !== 'none' };
    });
    expect(style.outline || style.shadow, 'visible focus style').toBe(true);
  }

  test('Tab and Shift+Tab reach the picker, its options, Create and every card button', async () => {
    const order = tabOrder();
    // from the header's refresh button into the form
    await panel.locator('.dask-kube-Panel-header .jp-ToolbarButtonComponent').focus();
    for (const target of order) {
      await page.keyboard.press('Tab');
      await expect(target).toBeFocused();
      await expectFocusRing(target);
    }
    for (const target of order.slice(0, -1).reverse()) {
      await page.keyboard.press('Shift+Tab');
      await expect(target).toBeFocused();
    }
    await page.keyboard.press('Shift+Tab');
    await expect(panel.locator('.dask-kube-Panel-header .jp-ToolbarButtonComponent')).toBeFocused();
  });

  test('the arrow keys pick a template', async () => {
    const picker = panel.getByLabel('Template', { exact: true });
    await picker.focus();
    await page.keyboard.press('ArrowDown');
    await expect(picker).toHaveValue(LONG_TEMPLATE);
    await page.keyboard.press('ArrowUp');
    await expect(picker).toHaveValue('tiny');
  });

  test('focusing a card selects it (the insert-client command uses the selection)', async () => {
    const second = cards(panel).nth(1);
    await second.getByRole('button', { name: /^Logs of / }).focus();
    await expect(second).toHaveClass(/jp-mod-selected/);
    await expect(cards(panel).first()).not.toHaveClass(/jp-mod-selected/);
  });

  test('Enter opens the Scale dialog, Escape closes it and focus returns', async () => {
    const scale = cards(panel).first().getByRole('button', { name: /^Scale / });
    await scale.focus();
    await page.keyboard.press('Enter');
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await expect(dialog.getByLabel('Workers', { exact: true })).toBeFocused();
    await page.keyboard.press('Escape');
    await expect(dialog).toHaveCount(0);
    await expect(scale).toBeFocused();
  });

  test('Space asks before a shutdown; Escape cancels', async () => {
    const shutdown = cards(panel).first().getByRole('button', { name: /^Shut down / });
    await shutdown.focus();
    await page.keyboard.press('Space');
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Shut down cluster?');
    await page.keyboard.press('Escape');
    await expect(dialog).toHaveCount(0);
    await expect(cards(panel)).toHaveCount(2);
    await expect(shutdown).toBeFocused();
  });

  test('Enter on Create submits the form', async () => {
    let body: any = null;
    await page.route(
      url => url.pathname.endsWith('/dask-kube/api/clusters'),
      route => {
        if (route.request().method() !== 'POST') {
          return route.fallback();
        }
        body = route.request().postDataJSON();
        return route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify(clusters[0]) });
      }
    );
    await panel.getByRole('button', { name: 'Create cluster' }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => body).toMatchObject({ template: 'tiny', workers: 2 });
  });
});
