/**
 * jupyter-dask-kube: the "Dask Clusters" sidebar for JupyterLab 4.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  WidgetTracker,
  showDialog
} from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import { refreshIcon } from '@jupyterlab/ui-components';
import { ToolbarButton } from '@jupyterlab/apputils';

import { Cluster, DaskKubeAPI } from './api';
import { DaskKubePanel } from './components/Panel';
import { LogsView } from './components/LogsView';
import { showScaleDialog } from './components/ScaleDialog';
import { hasDaskPanes, openInDaskPanes, syncClusterManager } from './daskpanes';
import { absoluteLink, clientCode, clusterLabel } from './format';
import { daskKubeIcon } from './icon';
import { DaskKubeModel } from './model';

export * from './api';
export { DaskKubeModel } from './model';
export { clientCode } from './format';

const PLUGIN_ID = 'jupyter-dask-kube:plugin';

export namespace CommandIDs {
  export const insertClient = 'dask-kube:insert-client';
  export const openLogs = 'dask-kube:open-logs';
  export const refresh = 'dask-kube:refresh';
  export const openPanel = 'dask-kube:open-panel';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Template-driven Dask clusters in a JupyterLab sidebar',
  autoStart: true,
  optional: [
    ISettingRegistry,
    INotebookTracker,
    ICommandPalette,
    ILayoutRestorer,
    IStateDB
  ],
  activate
};

function activate(
  app: JupyterFrontEnd,
  settingRegistry: ISettingRegistry | null,
  notebooks: INotebookTracker | null,
  palette: ICommandPalette | null,
  restorer: ILayoutRestorer | null,
  state: IStateDB | null
): void {
  const api = new DaskKubeAPI();
  const model = new DaskKubeModel(api);
  const logsTracker = new WidgetTracker<MainAreaWidget<LogsView>>({
    namespace: 'dask-kube-logs'
  });

  const findCluster = (id?: string): Cluster | undefined =>
    model.find(id || model.selectedId || '');
  const labelOf = (cluster: Cluster): string =>
    clusterLabel(
      cluster,
      model.templates.find(t => t.name === cluster.template)?.display_name
    );

  const openLogs = (cluster: Cluster) => {
    const existing = logsTracker.find(w => w.content.clusterId === cluster.id);
    if (existing) {
      app.shell.activateById(existing.id);
      void existing.content.refresh();
      return;
    }
    const content = new LogsView(api, cluster.id, labelOf(cluster));
    const widget = new MainAreaWidget({ content });
    widget.id = `dask-kube-logs-${cluster.id}`;
    widget.title.label = `Logs: ${labelOf(cluster)}`;
    widget.title.icon = daskKubeIcon;
    widget.title.closable = true;
    widget.toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        label: 'Refresh',
        tooltip: 'Fetch the logs again',
        onClick: () => void content.refresh()
      })
    );
    void logsTracker.add(widget);
    app.shell.add(widget, 'main');
    app.shell.activateById(widget.id);
  };

  const insertClient = (cluster: Cluster): boolean => {
    const current = notebooks?.currentWidget;
    if (!current || !current.content.model) {
      Notification.warning('Open a notebook to insert the Dask client code.', {
        autoClose: 4000
      });
      return false;
    }
    if (!cluster.scheduler_address) {
      Notification.warning(`${labelOf(cluster)} has no scheduler address yet.`, {
        autoClose: 4000
      });
      return false;
    }
    const notebook = current.content;
    const cells = notebook.model!.sharedModel;
    const index =
      notebook.activeCellIndex < 0
        ? cells.cells.length
        : Math.min(notebook.activeCellIndex + 1, cells.cells.length);
    cells.insertCell(index, {
      cell_type: 'code',
      source: clientCode(cluster),
      metadata: {}
    });
    notebook.activeCellIndex = index;
    app.shell.activateById(current.id);
    return true;
  };

  const panel = new DaskKubePanel(model, {
    scale: async cluster => {
      const request = await showScaleDialog(cluster, labelOf(cluster));
      if (request) {
        await model.scale(cluster.id, request);
      }
    },
    dashboard: cluster => {
      if (cluster.dashboard_link) {
        window.open(absoluteLink(cluster.dashboard_link), '_blank', 'noopener');
      }
    },
    logs: openLogs,
    insert: insertClient,
    shutdown: async cluster => {
      const result = await showDialog({
        title: 'Shut down cluster?',
        body: `${labelOf(cluster)} and all its workers will stop; data held in its memory is lost.`,
        buttons: [
          Dialog.cancelButton(),
          Dialog.warnButton({ label: 'Shut down', ariaLabel: 'Confirm shutdown' })
        ]
      });
      if (result.button.accept) {
        await model.shutdown(cluster.id);
      }
    },
    daskPanes: cluster => void openInDaskPanes(app, settingRegistry, cluster),
    hasDaskPanes: () => hasDaskPanes(app)
  });
  panel.id = 'dask-kube-sidebar';
  panel.title.icon = daskKubeIcon;
  panel.title.caption = 'Dask Clusters';
  app.shell.add(panel, 'left', { rank: 450 });
  restorer?.add(panel, 'dask-kube-sidebar');
  // dask-labextension may activate after us: re-render once everything is up.
  void app.restored.then(() => panel.update());

  app.commands.addCommand(CommandIDs.insertClient, {
    label: 'Insert Dask Client Code',
    caption: 'Insert a cell connecting a Dask client to the selected cluster',
    isEnabled: args =>
      !!notebooks?.currentWidget &&
      !!findCluster(args.id as string | undefined)?.scheduler_address,
    execute: args => {
      const cluster = findCluster(args.id as string | undefined);
      return cluster ? insertClient(cluster) : false;
    }
  });
  app.commands.addCommand(CommandIDs.openLogs, {
    label: 'Show Dask Cluster Logs',
    isEnabled: args => !!findCluster(args.id as string | undefined),
    execute: args => {
      const cluster = findCluster(args.id as string | undefined);
      if (cluster) {
        openLogs(cluster);
      }
    }
  });
  app.commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Dask Clusters',
    execute: () => model.reload()
  });
  app.commands.addCommand(CommandIDs.openPanel, {
    label: 'Show Dask Clusters',
    execute: () => app.shell.activateById(panel.id)
  });
  if (palette) {
    for (const command of Object.values(CommandIDs)) {
      palette.addItem({ command, category: 'Dask Kube' });
    }
  }
  app.contextMenu.addItem({
    command: CommandIDs.insertClient,
    selector: '.dask-kube-ClusterCard',
    rank: 1
  });

  if (settingRegistry) {
    void settingRegistry
      .load(PLUGIN_ID)
      .then(settings => {
        const apply = () => {
          model.refreshInterval = settings.get('refreshInterval')
            .composite as number;
          model.defaultTemplate = settings.get('defaultTemplate')
            .composite as string;
        };
        apply();
        settings.changed.connect(apply);
        // after restore: the workspace's state is loaded by then
        return app.restored.then(() =>
          syncClusterManager(app, settingRegistry, settings, state)
        );
      })
      .catch(reason =>
        console.warn('jupyter-dask-kube: settings not loaded', reason)
      );
  }
}

export default plugin;
