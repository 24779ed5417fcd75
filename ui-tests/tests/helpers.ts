import { expect, Locator, Page, Request, test as base } from '@playwright/test';

/**
 * Shared steps of the UI tests: open Lab and the sidebar, change settings
 * through Lab's own setting registry, watch the cluster-list polls, and serve
 * made-up clusters where a test needs no real dask processes.
 */
export const START = 120_000; // workers on 2 busy cores
export const PLUGIN = 'jupyter-dask-kube:plugin';
export const DASK_LAB = 'dask-labextension:plugin';
/** The second template of ../jupyter_server_test_config.py. */
export const LONG_TEMPLATE = 'a-template-with-an-uncommonly-long-name-for-layout-tests';

declare global {
  interface Window {
    jupyterapp: any;
  }
}

export async function openLab(page: Page): Promise<void> {
  await page.goto('lab');
  // not the splash: it may not be there yet when looked for
  await page.waitForFunction(() => !!window.jupyterapp, undefined, { timeout: 90_000 });
  await page.evaluate(async () => {
    await window.jupyterapp.restored;
  });
  await page.waitForSelector('#jupyterlab-splash', { state: 'detached', timeout: 90_000 });
}

export async function openPanel(page: Page): Promise<Locator> {
  await page.evaluate(async () => {
    await window.jupyterapp.commands.execute('dask-kube:open-panel');
  });
  const panel = page.locator('#dask-kube-sidebar');
  await expect(panel).toBeVisible();
  await expect(panel.getByRole('heading', { name: 'Dask Clusters' })).toBeVisible();
  return panel;
}

/**
 * One Lab page for all test files of a worker: loading Lab is the slowest
 * step on 2 cores. Each file restores what it changes (settings, routes).
 */
export const test = base.extend<object, { lab: Page }>({
  lab: [
    async ({ browser }, use) => {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await openLab(page);
      await use(page);
      await page.close();
    },
    { scope: 'worker', timeout: 120_000 }
  ]
});

export function cards(panel: Locator): Locator {
  return panel.locator('.dask-kube-ClusterCard');
}

/** Show another left-sidebar panel (by widget id), or collapse the sidebar with null. */
export async function showLeft(page: Page, id: string | null): Promise<void> {
  await page.evaluate(id => {
    const shell = window.jupyterapp.shell;
    if (id) {
      shell.activateById(id);
    } else {
      shell.collapseLeft();
    }
  }, id);
}

/**
 * Set (or, with null, remove) a user setting through Lab's setting registry,
 * exactly as the Settings editor does. The registry is reached through the
 * app that LabApp.expose_app_in_browser puts on window.
 */
export async function setSetting(page: Page, plugin: string, key: string, value: unknown): Promise<void> {
  await page.evaluate(
    async ({ plugin, key, value }) => {
      const app = window.jupyterapp;
      const token = [...app.pluginRegistry._services.keys()].find(
        (t: any) => t.name === '@jupyterlab/coreutils:ISettingRegistry'
      );
      const registry = await app.resolveRequiredService(token);
      if (value === null) {
        await registry.remove(plugin, key);
      } else {
        await registry.set(plugin, key, value);
      }
    },
    { plugin, key, value: value ?? null }
  );
}

/** The user-level values of a plugin's settings (what the user set explicitly). */
export async function userSettings(page: Page, plugin: string): Promise<Record<string, unknown>> {
  return page.evaluate(async plugin => {
    const app = window.jupyterapp;
    const token = [...app.pluginRegistry._services.keys()].find(
      (t: any) => t.name === '@jupyterlab/coreutils:ISettingRegistry'
    );
    const registry = await app.resolveRequiredService(token);
    return (await registry.load(plugin)).user;
  }, plugin);
}

export function isClusterList(request: Request): boolean {
  return request.method() === 'GET' && new URL(request.url()).pathname.endsWith('/dask-kube/api/clusters');
}

/** Times (ms) of the cluster-list GETs the page sends from now on. */
export function watchPolls(page: Page): { times: number[]; intervals: () => number[]; stop: () => void } {
  const times: number[] = [];
  const onRequest = (request: Request) => {
    if (isClusterList(request)) {
      times.push(Date.now());
    }
  };
  page.on('request', onRequest);
  return {
    times,
    intervals: () => times.slice(1).map((t, i) => t - times[i]),
    stop: () => page.off('request', onRequest)
  };
}

/** Wait until `count` polls have been seen. */
export async function polls(watch: { times: number[] }, count: number, timeout = 30_000): Promise<void> {
  await expect.poll(() => watch.times.length, { timeout }).toBeGreaterThanOrEqual(count);
}

/**
 * A measurement window: proving that nothing happens takes waiting a while.
 * Used only where absence is asserted, never to wait for something.
 */
export async function quietWindow(page: Page, ms: number): Promise<void> {
  await page.waitForTimeout(ms);
}

export function apiBase(page: Page): string {
  return `${page.url().split('/lab')[0]}/dask-kube/api`;
}

export async function xsrf(page: Page): Promise<string> {
  return (await page.context().cookies()).find(c => c.name === '_xsrf')?.value ?? '';
}

/** Create a cluster through the REST API (as the panel does) and wait until it runs. */
export async function createCluster(page: Page, body: object): Promise<any> {
  const created = await page.request.post(`${apiBase(page)}/clusters`, {
    headers: { 'X-XSRFToken': await xsrf(page), 'Content-Type': 'application/json' },
    data: body
  });
  expect(created.status()).toBe(201);
  const cluster = await created.json();
  await expect
    .poll(
      async () => {
        const answer = await page.request.get(`${apiBase(page)}/clusters/${cluster.id}`);
        return answer.ok() ? (await answer.json()).status : answer.status();
      },
      { timeout: START, intervals: [250, 500, 1000] }
    )
    .toBe('running');
  return cluster;
}

/** Delete every cluster of the test user (cleanup after a test file). */
export async function deleteAllClusters(page: Page): Promise<void> {
  try {
    const list = await page.request.get(`${apiBase(page)}/clusters`, { timeout: 10_000 });
    if (list.ok()) {
      const token = await xsrf(page);
      for (const c of (await list.json()).clusters ?? []) {
        await page.request.delete(`${apiBase(page)}/clusters/${c.id}`, {
          headers: { 'X-XSRFToken': token },
          timeout: 30_000
        });
      }
    }
  } catch (error) {
    console.warn('cleanup of clusters failed:', error);
  }
}

/** A cluster as GET clusters returns it, made up for layout and keyboard tests. */
export function fakeCluster(patch: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'fake-1',
    name: 'dask-tester-fake1',
    template: 'tiny',
    backend: 'local',
    status: 'running',
    message: null,
    scheduler_address: 'tcp://127.0.0.99:8786',
    dashboard_link: '/user/tester/proxy/127.0.0.99:8787/status',
    workers: 2,
    requested_workers: 2,
    cores: 2,
    memory: 2_000_000_000,
    adapt: null,
    created: '2026-11-23T12:00:00Z',
    pods: [],
    warnings: [],
    ...patch
  };
}

/** Answer the panel's cluster-list GETs with whatever `clusters()` returns at the time. */
export async function serveClusters(page: Page, clusters: () => object[]): Promise<void> {
  await page.route(
    url => url.pathname.endsWith('/dask-kube/api/clusters'),
    route =>
      route.request().method() === 'GET'
        ? route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ clusters: clusters() }) })
        : route.fallback()
  );
}
