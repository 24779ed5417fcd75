import * as React from 'react';

import { AdaptBounds, ScaleRequest } from '../api';

/** The worker count or adapt bounds being edited. */
export interface IScaleValue {
  adapt: boolean;
  workers: number | '';
  minimum: number | '';
  maximum: number | '';
}

export function scaleProblem(value: IScaleValue): string | null {
  const whole = (n: number | '') =>
    n !== '' && Number.isInteger(n) && n >= 0;
  if (value.adapt) {
    if (!whole(value.minimum) || !whole(value.maximum)) {
      return 'Adapt bounds must be whole numbers, 0 or more';
    }
    if ((value.minimum as number) > (value.maximum as number)) {
      return 'The adapt minimum is above the maximum';
    }
    return null;
  }
  return whole(value.workers) ? null : 'Workers must be a whole number, 0 or more';
}

export function toRequest(value: IScaleValue): ScaleRequest {
  if (value.adapt) {
    const adapt: AdaptBounds = {
      minimum: Number(value.minimum),
      maximum: Number(value.maximum)
    };
    return { adapt };
  }
  return { workers: Number(value.workers) };
}

export interface IScaleFieldsProps {
  value: IScaleValue;
  idPrefix: string;
  onChange: (value: IScaleValue) => void;
}

const num = (raw: string): number | '' => (raw === '' ? '' : Number(raw));

/**
 * A worker count, or an adapt toggle with minimum and maximum.
 */
export function ScaleFields(props: IScaleFieldsProps): JSX.Element {
  const { value, onChange, idPrefix } = props;
  const set = (patch: Partial<IScaleValue>) => onChange({ ...value, ...patch });
  return (
    <div className="dask-kube-ScaleFields">
      <div className="dask-kube-Field dask-kube-Field-checkbox">
        <input
          id={`${idPrefix}-adapt`}
          type="checkbox"
          checked={value.adapt}
          onChange={e => set({ adapt: e.currentTarget.checked })}
        />
        <label htmlFor={`${idPrefix}-adapt`}>Adapt to the load</label>
      </div>
      {value.adapt ? (
        <div className="dask-kube-row">
          <div className="dask-kube-Field">
            <label htmlFor={`${idPrefix}-min`}>Minimum workers</label>
            <input
              id={`${idPrefix}-min`}
              className="jp-mod-styled"
              type="number"
              min={0}
              step={1}
              value={value.minimum}
              onChange={e => set({ minimum: num(e.currentTarget.value) })}
            />
          </div>
          <div className="dask-kube-Field">
            <label htmlFor={`${idPrefix}-max`}>Maximum workers</label>
            <input
              id={`${idPrefix}-max`}
              className="jp-mod-styled"
              type="number"
              min={0}
              step={1}
              value={value.maximum}
              onChange={e => set({ maximum: num(e.currentTarget.value) })}
            />
          </div>
        </div>
      ) : (
        <div className="dask-kube-Field">
          <label htmlFor={`${idPrefix}-workers`}>Workers</label>
          <input
            id={`${idPrefix}-workers`}
            className="jp-mod-styled"
            type="number"
            min={0}
            step={1}
            value={value.workers}
            onChange={e => set({ workers: num(e.currentTarget.value) })}
          />
        </div>
      )}
    </div>
  );
}
