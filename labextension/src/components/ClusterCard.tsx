import * as React from 'react';

import {
  Button,
  codeIcon,
  launchIcon,
  listIcon,
  stopIcon
} from '@jupyterlab/ui-components';

import { Cluster } from '../api';
import {
  clusterLabel,
  formatBytes,
  formatCores,
  lifetimeText,
  isStarting,
  reasons,
  warningNote
} from '../format';
import { Note } from './Note';

export interface IClusterCardProps {
  cluster: Cluster;
  templateLabel: string;
  selected: boolean;
  actionError: string | null;
  /** Offer "Open in Dask panes" (dask-labextension is installed). */
  daskPanes: boolean;
  onSelect: () => void;
  onPointerDown: (event: React.PointerEvent) => void;
  onScale: () => void;
  onDashboard: () => void;
  onLogs: () => void;
  onInsert: () => void;
  onDaskPanes: () => void;
  onShutdown: () => void;
}

/**
 * One cluster: name, template, status, workers, size, why it is stuck, and
 * what can be done with it. Drag it into a notebook for client code.
 * Focus inside a card selects it as a click does, so keyboard users choose
 * the cluster the insert-client command uses.
 */
export function ClusterCard(props: IClusterCardProps): JSX.Element {
  const { cluster, selected, actionError } = props;
  const starting = isStarting(cluster);
  const stopping = cluster.status === 'stopping';
  const requested = Math.max(cluster.requested_workers ?? 0, 0);
  const workers = Math.max(cluster.workers ?? 0, 0);
  const progress = requested > 0 ? Math.min(workers / requested, 1) : 0;
  const why = reasons(cluster);
  const canConnect = !!cluster.scheduler_address && !stopping;
  const label = clusterLabel(cluster, props.templateLabel);
  const fullName = label === cluster.id ? label : `${label} (${cluster.id})`;

  return (
    <li
      className={
        'dask-kube-ClusterCard' +
        (selected ? ' jp-mod-selected' : '') +
        ` dask-kube-mod-${cluster.status}`
      }
      data-cluster-id={cluster.id}
      data-status={cluster.status}
      aria-label={`Dask cluster ${label}`}
      title={
        canConnect
          ? 'Drag into a notebook to insert client code'
          : undefined
      }
      onClick={props.onSelect}
      onFocus={selected ? undefined : props.onSelect}
      onPointerDown={props.onPointerDown}
    >
      <div className="dask-kube-ClusterCard-header">
        <span className="dask-kube-ClusterCard-name" title={fullName}>
          {label}
        </span>
        <span
          className={`dask-kube-badge dask-kube-badge-status dask-kube-badge-${cluster.status}`}
          data-status={cluster.status}
        >
          {cluster.status}
        </span>
      </div>
      <div className="dask-kube-ClusterCard-meta">
        <span
          className="dask-kube-ClusterCard-template"
          title={
            props.templateLabel === cluster.template
              ? cluster.template
              : `${props.templateLabel} (${cluster.template})`
          }
        >
          {props.templateLabel}
        </span>
        {cluster.adapt ? (
          <span
            className="dask-kube-badge dask-kube-badge-adapt"
            title="Adaptive: the scheduler picks the worker count within these bounds"
          >
            adapt {cluster.adapt.minimum}–{cluster.adapt.maximum}
          </span>
        ) : null}
      </div>
      <div className="dask-kube-ClusterCard-workersRow">
        <span className="dask-kube-ClusterCard-stats">
          <span className="dask-kube-workers">
            {workers}/{requested} workers
          </span>
          <span className="dask-kube-ClusterCard-size">
            {' · '}
            {formatCores(cluster.cores)} · {formatBytes(cluster.memory)}
          </span>
        </span>
      </div>
      <div
        className="dask-kube-progress"
        role="progressbar"
        aria-label="workers started"
        aria-valuemin={0}
        aria-valuemax={requested}
        aria-valuenow={workers}
        style={{ visibility: starting ? 'visible' : 'hidden' }}
      >
        <div
          className="dask-kube-progress-bar"
          style={{ width: `${Math.round(progress * 100)}%` }}
        />
      </div>
      <div
        className="dask-kube-ClusterCard-address"
        title={cluster.scheduler_address ?? ''}
      >
        {cluster.scheduler_address || '\u00a0'}
      </div>
      {lifetimeText(cluster) ? (
        <div
          className="dask-kube-ClusterCard-lifetime"
          title={cluster.expires ?? ''}
        >
          {lifetimeText(cluster)}
        </div>
      ) : null}
      {why.length ? (
        <ul
          className={
            'dask-kube-reasons' +
            (cluster.status === 'failed' ? ' dask-kube-mod-error' : '')
          }
          aria-label="Why the cluster is not running"
        >
          {why.map(r => (
            <Note key={`${r.lead}:${r.text}`} note={r} kind="reason" />
          ))}
        </ul>
      ) : null}
      {cluster.warnings?.length ? (
        <ul className="dask-kube-warnings" aria-label="Warnings">
          {cluster.warnings.map(w => (
            <Note key={w} note={warningNote(w)} kind="warning" />
          ))}
        </ul>
      ) : null}
      {actionError ? (
        <div className="dask-kube-error" role="alert">
          {actionError}
        </div>
      ) : null}
      <div className="dask-kube-ClusterCard-buttons">
        <Button
          small
          minimal
          aria-label={`Scale ${label}`}
          title="Set the worker count or adapt bounds"
          disabled={stopping}
          onClick={props.onScale}
        >
          Scale
        </Button>
        <Button
          small
          minimal
          aria-label={`Dashboard of ${label}`}
          title={
            cluster.dashboard_link
              ? `Open the dashboard in a new tab (${cluster.dashboard_link})`
              : 'No dashboard yet'
          }
          disabled={!cluster.dashboard_link || stopping}
          onClick={props.onDashboard}
        >
          <launchIcon.react tag="span" className="dask-kube-buttonIcon" />
          Dashboard
        </Button>
        <Button
          small
          minimal
          aria-label={`Logs of ${label}`}
          title="Show the pods' logs"
          onClick={props.onLogs}
        >
          <listIcon.react tag="span" className="dask-kube-buttonIcon" />
          Logs
        </Button>
        <Button
          small
          minimal
          aria-label={`Insert client code for ${label}`}
          title="Insert client code into the active notebook"
          disabled={!canConnect}
          onClick={props.onInsert}
        >
          <codeIcon.react tag="span" className="dask-kube-buttonIcon" />
          Insert
        </Button>
        {props.daskPanes ? (
          <Button
            small
            minimal
            aria-label={`Open ${label} in Dask panes`}
            title="Point dask-labextension's dashboard panes at this cluster"
            disabled={!cluster.dashboard_link || stopping}
            onClick={props.onDaskPanes}
          >
            Dask panes
          </Button>
        ) : null}
        <Button
          small
          minimal
          className="dask-kube-shutdown"
          aria-label={`Shut down ${label}`}
          title="Shut the cluster down"
          disabled={stopping}
          onClick={props.onShutdown}
        >
          <stopIcon.react tag="span" className="dask-kube-buttonIcon" />
          Shutdown
        </Button>
      </div>
    </li>
  );
}
