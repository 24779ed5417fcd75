import * as React from 'react';

import { ReactWidget } from '@jupyterlab/apputils';
import { refreshIcon, ToolbarButtonComponent } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';

import { Cluster } from '../api';
import { armClusterDrag } from '../dnd';
import { DaskKubeModel } from '../model';
import { ClusterCard } from './ClusterCard';
import { CreateForm } from './CreateForm';
import { StatusLine } from './StatusLine';

/** What the panel asks its host (the plugin) to do. */
export interface IPanelActions {
  scale(cluster: Cluster): void;
  dashboard(cluster: Cluster): void;
  logs(cluster: Cluster): void;
  insert(cluster: Cluster): void;
  shutdown(cluster: Cluster): void;
  daskPanes(cluster: Cluster): void;
  hasDaskPanes(): boolean;
}

/**
 * The "Dask Clusters" sidebar. Polls only while it is visible.
 */
export class DaskKubePanel extends ReactWidget {
  constructor(
    readonly model: DaskKubeModel,
    private _actions: IPanelActions
  ) {
    super();
    this.addClass('dask-kube-Panel');
    this.model.changed.connect(this._onChanged, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this._onChanged, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.active = true;
    this.update();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.active = true;
    }
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.active = false;
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.active = false;
    super.onBeforeDetach(msg);
  }

  private _onChanged(): void {
    if (this.isVisible) {
      this.update();
    }
  }

  render(): JSX.Element {
    const model = this.model;
    const templates = model.templates;
    const label = (name: string) =>
      templates.find(t => t.name === name)?.display_name || name;
    const selected = model.selectedId;
    const daskPanes = this._actions.hasDaskPanes();
    const clusters = model.clusters;
    return (
      <div className="dask-kube-Panel-content">
        <header className="dask-kube-Panel-header">
          <h2>Dask Clusters</h2>
          <ToolbarButtonComponent
            icon={refreshIcon}
            tooltip="Refresh"
            aria-label="Refresh clusters"
            onClick={() => void model.reload()}
          />
        </header>
        <StatusLine
          status={model.status}
          unreachable={model.unreachable}
          pollError={model.pollError}
          loaded={model.loaded}
        />
        <section className="dask-kube-Section" aria-label="New cluster">
          <h3>New cluster</h3>
          <CreateForm
            templates={templates}
            defaultTemplate={model.defaultTemplate}
            disabled={!!model.unreachable}
            loaded={model.loaded}
            onCreate={request => model.create(request)}
          />
        </section>
        <section className="dask-kube-Section" aria-label="Your clusters">
          <h3>
            Your clusters{' '}
            <span className="dask-kube-count">({clusters.length})</span>
          </h3>
          {clusters.length ? (
            <ul className="dask-kube-ClusterList">
              {clusters.map(cluster => (
                <ClusterCard
                  key={cluster.id}
                  cluster={cluster}
                  templateLabel={label(cluster.template)}
                  selected={cluster.id === selected}
                  actionError={model.actionError(cluster.id)}
                  daskPanes={daskPanes}
                  onSelect={() => (model.selectedId = cluster.id)}
                  onPointerDown={event =>
                    armClusterDrag(event, cluster, this)
                  }
                  onScale={() => this._actions.scale(cluster)}
                  onDashboard={() => this._actions.dashboard(cluster)}
                  onLogs={() => this._actions.logs(cluster)}
                  onInsert={() => this._actions.insert(cluster)}
                  onDaskPanes={() => this._actions.daskPanes(cluster)}
                  onShutdown={() => this._actions.shutdown(cluster)}
                />
              ))}
            </ul>
          ) : (
            <div className="dask-kube-empty">
              {model.unreachable ? '' : 'No clusters yet.'}
            </div>
          )}
        </section>
      </div>
    );
  }
}
