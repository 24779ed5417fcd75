import * as React from 'react';

import { Status } from '../api';

export interface IStatusLineProps {
  status: Status | null;
  unreachable: string | null;
  pollError: string | null;
  loaded: boolean;
}

/**
 * Backend and namespace from GET status, and what is wrong (missing RBAC
 * verbs, no API reach, or no server extension at all), and package versions
 * older than the security floor.
 */
export function StatusLine(props: IStatusLineProps): JSX.Element {
  const { status, unreachable, pollError, loaded } = props;
  if (unreachable) {
    return (
      <div className="dask-kube-StatusLine dask-kube-mod-error" role="alert">
        Dask Kube server extension not reachable: {unreachable}
      </div>
    );
  }
  return (
    <div className="dask-kube-StatusLine" aria-live="polite">
      <div className="dask-kube-StatusLine-info">
        {status ? (
          <>
            <span title="Where clusters run">
              Backend: <strong>{status.backend}</strong>
            </span>
            {status.namespace ? (
              <span title="Kubernetes namespace">
                Namespace: <strong>{status.namespace}</strong>
              </span>
            ) : null}
          </>
        ) : (
          <span>{loaded ? 'Status unknown' : 'Connecting…'}</span>
        )}
      </div>
      {status?.problems?.length ? (
        <ul className="dask-kube-StatusLine-problems" role="alert">
          {status.problems.map(p => (
            <li key={p} className="dask-kube-warning">
              {p}
            </li>
          ))}
        </ul>
      ) : null}
      {status?.warnings?.length ? (
        <ul className="dask-kube-StatusLine-problems" aria-label="Security warnings">
          {status.warnings.map(w => (
            <li key={w} className="dask-kube-warning">
              {w}
            </li>
          ))}
        </ul>
      ) : null}
      {pollError ? (
        <div className="dask-kube-warning" role="alert">
          Could not refresh clusters: {pollError}
        </div>
      ) : null}
    </div>
  );
}
