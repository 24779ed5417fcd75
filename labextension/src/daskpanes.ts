/**
 * dask-labextension, an optional peer found at runtime: point its dashboard
 * panes at one of our clusters, and hide its own cluster manager so users see
 * one "new cluster" button, not two.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';

import { Cluster } from './api';
import { absoluteLink } from './format';

export const DASK_LAB_PLUGIN = 'dask-labextension:plugin';
const DASK_LAB_SIDEBAR = 'dask-dashboard-launcher';
const DASK_LAB_HIDE = 'hideClusterManager';
/** Our setting that gates hiding dask-labextension's cluster manager. */
export const HIDE_SETTING = 'hideDaskLabextensionClusterManager';
/** Remembers that we (not the user) wrote its hideClusterManager. */
const HID_KEY = 'jupyter-dask-kube:hid-dask-cluster-manager';

export function hasDaskPanes(app: JupyterFrontEnd): boolean {
  return (
    app.hasPlugin(DASK_LAB_PLUGIN) ||
    app.commands.hasCommand('dask:launch-dashboard')
  );
}

/**
 * Give dask-labextension's sidebar this cluster's dashboard and show it; its
 * dashboard buttons then open panes of this cluster.
 */
export async function openInDaskPanes(
  app: JupyterFrontEnd,
  settingRegistry: ISettingRegistry | null,
  cluster: Cluster
): Promise<void> {
  if (!cluster.dashboard_link) {
    return;
  }
  // dask-labextension wants the dashboard's base URL, not its /status page.
  const url = absoluteLink(cluster.dashboard_link).replace(/status\/?$/, '');
  for (const widget of app.shell.widgets('left')) {
    const launcher = (widget as any).dashboardLauncher;
    if (widget.id === DASK_LAB_SIDEBAR && launcher?.input) {
      launcher.input.url = url;
      app.shell.activateById(widget.id);
      return;
    }
  }
  if (settingRegistry) {
    try {
      await settingRegistry.set(DASK_LAB_PLUGIN, 'defaultURL', url);
      Notification.info(
        'Dask panes will use this cluster (dashboard URL set in the dask-labextension settings).',
        { autoClose: 5000 }
      );
      return;
    } catch (error) {
      console.warn('jupyter-dask-kube: could not set the Dask panes URL', error);
    }
  }
  Notification.warning('dask-labextension did not accept the dashboard URL.');
}

/**
 * Keep dask-labextension's own `hideClusterManager` in line with our setting:
 * set it when the user has no value of their own, and remove it again only
 * if we were the ones who set it.
 */
export async function syncClusterManager(
  app: JupyterFrontEnd,
  registry: ISettingRegistry,
  ours: ISettingRegistry.ISettings,
  state: IStateDB | null
): Promise<void> {
  if (!app.hasPlugin(DASK_LAB_PLUGIN)) {
    return;
  }
  const theirs = await registry.load(DASK_LAB_PLUGIN);
  let hid = !!(await state?.fetch(HID_KEY));
  let running = Promise.resolve();
  const apply = async () => {
    const want = ours.get(HIDE_SETTING).composite !== false;
    const user = theirs.user[DASK_LAB_HIDE];
    if (want && user === undefined) {
      await theirs.set(DASK_LAB_HIDE, true);
      hid = true;
      await state?.save(HID_KEY, true);
    } else if (!want && hid) {
      if (user === true) {
        await theirs.remove(DASK_LAB_HIDE);
      }
      hid = false;
      await state?.remove(HID_KEY);
    }
  };
  // one at a time: our own writes fire `changed` again
  const queue = () => {
    running = running
      .then(apply)
      .catch(reason =>
        console.warn('jupyter-dask-kube: could not sync dask-labextension', reason)
      );
  };
  ours.changed.connect(queue);
  theirs.changed.connect(queue);
  queue();
  await running;
}
