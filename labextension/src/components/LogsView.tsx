import * as React from 'react';

import { ReactWidget } from '@jupyterlab/apputils';

import { DaskKubeAPI, errorMessage } from '../api';

/**
 * A main-area view of each pod's log text, refreshed on demand.
 */
export class LogsView extends ReactWidget {
  constructor(
    private _api: DaskKubeAPI,
    readonly clusterId: string,
    readonly clusterName: string
  ) {
    super();
    this.addClass('dask-kube-LogsView');
    void this.refresh();
  }

  async refresh(): Promise<void> {
    this._loading = true;
    this.update();
    try {
      this._logs = await this._api.logs(this.clusterId);
      this._error = null;
    } catch (error) {
      this._error = errorMessage(error);
    }
    this._loading = false;
    this._fetched = new Date();
    this.update();
  }

  render(): JSX.Element {
    const pods = Object.keys(this._logs ?? {}).sort((a, b) => {
      // scheduler first, then workers by name
      const rank = (n: string) => (n.includes('scheduler') ? 0 : 1);
      return rank(a) - rank(b) || a.localeCompare(b);
    });
    return (
      <div className="dask-kube-LogsView-content">
        <div className="dask-kube-LogsView-info" aria-live="polite">
          {this._loading
            ? 'Loading logs…'
            : this._fetched
              ? `Logs of ${this.clusterName} at ${this._fetched.toLocaleTimeString()}`
              : ''}
        </div>
        {this._error ? (
          <div className="dask-kube-error" role="alert">
            {this._error}
          </div>
        ) : null}
        {this._logs && !pods.length ? (
          <div className="dask-kube-empty">No logs yet.</div>
        ) : null}
        {pods.map(pod => (
          <section key={pod} className="dask-kube-LogsView-pod">
            <h3>{pod}</h3>
            <pre>{this._logs![pod] || '(empty)'}</pre>
          </section>
        ))}
      </div>
    );
  }

  private _logs: { [pod: string]: string } | null = null;
  private _error: string | null = null;
  private _loading = false;
  private _fetched: Date | null = null;
}
