import * as React from 'react';

import { Dialog, ReactWidget, showDialog } from '@jupyterlab/apputils';

import { Cluster, ScaleRequest } from '../api';
import { IScaleValue, ScaleFields, scaleProblem, toRequest } from './ScaleFields';

/**
 * The body of the Scale dialog: holds the edited value for getValue().
 */
class ScaleBody extends ReactWidget implements Dialog.IBodyWidget<IScaleValue> {
  constructor(cluster: Cluster) {
    super();
    this.addClass('dask-kube-ScaleDialog');
    const adapt = cluster.adapt;
    this._value = {
      adapt: !!adapt,
      workers: cluster.requested_workers ?? cluster.workers ?? 0,
      minimum: adapt?.minimum ?? 0,
      maximum: adapt?.maximum ?? Math.max(cluster.requested_workers ?? 1, 1)
    };
  }

  getValue(): IScaleValue {
    return this._value;
  }

  render(): JSX.Element {
    const problem = scaleProblem(this._value);
    return (
      <div>
        <ScaleFields
          idPrefix="dask-kube-scale"
          value={this._value}
          onChange={value => {
            this._value = value;
            this.update();
          }}
        />
        {problem ? (
          <div className="dask-kube-fieldError" role="alert">
            {problem}
          </div>
        ) : null}
      </div>
    );
  }

  private _value: IScaleValue;
}

/**
 * Ask for a worker count or adapt bounds. Resolves to null when cancelled.
 */
export async function showScaleDialog(
  cluster: Cluster,
  label: string
): Promise<ScaleRequest | null> {
  const result = await showDialog({
    title: `Scale ${label}`,
    body: new ScaleBody(cluster),
    buttons: [
      Dialog.cancelButton(),
      Dialog.okButton({ label: 'Scale', ariaLabel: 'Apply scaling' })
    ],
    focusNodeSelector: 'input[type="number"]'
  });
  if (!result.button.accept || !result.value) {
    return null;
  }
  if (scaleProblem(result.value)) {
    return null;
  }
  return toRequest(result.value);
}
