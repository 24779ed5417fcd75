import * as React from 'react';

import { HTMLSelect } from '@jupyterlab/ui-components';

import { OptionValue, TemplateOption } from '../api';

/** Whether a value is within the option's bounds (and choices). */
export function optionProblem(
  option: TemplateOption,
  value: OptionValue
): string | null {
  if (option.type === 'integer' || option.type === 'float') {
    const n = Number(value);
    if (value === '' || Number.isNaN(n)) {
      return 'a number is needed';
    }
    if (option.type === 'integer' && !Number.isInteger(n)) {
      return 'a whole number is needed';
    }
    if (option.min !== undefined && option.min !== null && n < option.min) {
      return `at least ${option.min}`;
    }
    if (option.max !== undefined && option.max !== null && n > option.max) {
      return `at most ${option.max}`;
    }
  }
  return null;
}

export interface IOptionInputProps {
  option: TemplateOption;
  value: OptionValue;
  idPrefix: string;
  onChange: (value: OptionValue) => void;
}

/**
 * One admin-bounded template option as a native input.
 */
export function OptionInput(props: IOptionInputProps): JSX.Element {
  const { option, value, onChange, idPrefix } = props;
  const id = `${idPrefix}-${option.name}`;
  const label = option.label || option.name;
  const problem = optionProblem(option, value);
  const hint =
    option.type === 'integer' || option.type === 'float'
      ? [
          option.min !== undefined && option.min !== null
            ? `min ${option.min}`
            : '',
          option.max !== undefined && option.max !== null
            ? `max ${option.max}`
            : ''
        ]
          .filter(Boolean)
          .join(', ')
      : '';

  let input: JSX.Element;
  if (option.type === 'bool') {
    return (
      <div className="dask-kube-Field dask-kube-Field-checkbox">
        <input
          id={id}
          type="checkbox"
          checked={Boolean(value)}
          onChange={e => onChange(e.currentTarget.checked)}
        />
        <label htmlFor={id}>{label}</label>
      </div>
    );
  } else if (option.type === 'select' || (option.choices && option.choices.length)) {
    const choices = option.choices ?? [];
    input = (
      <HTMLSelect
        id={id}
        value={String(value)}
        onChange={e => {
          const chosen = choices.find(c => String(c) === e.currentTarget.value);
          onChange(chosen !== undefined ? chosen : e.currentTarget.value);
        }}
      >
        {choices.map(c => (
          <option key={String(c)} value={String(c)}>
            {String(c)}
          </option>
        ))}
      </HTMLSelect>
    );
  } else if (option.type === 'integer' || option.type === 'float') {
    input = (
      <input
        id={id}
        className="jp-mod-styled"
        type="number"
        step={option.type === 'integer' ? 1 : 'any'}
        min={option.min ?? undefined}
        max={option.max ?? undefined}
        value={value === undefined || value === null ? '' : String(value)}
        aria-invalid={problem ? true : undefined}
        onChange={e => {
          const raw = e.currentTarget.value;
          onChange(raw === '' ? '' : Number(raw));
        }}
      />
    );
  } else {
    input = (
      <input
        id={id}
        className="jp-mod-styled"
        type="text"
        value={String(value ?? '')}
        onChange={e => onChange(e.currentTarget.value)}
      />
    );
  }
  return (
    <div className="dask-kube-Field">
      <label htmlFor={id}>
        {label}
        {hint ? <span className="dask-kube-hint"> ({hint})</span> : null}
      </label>
      {input}
      {problem ? (
        <div className="dask-kube-fieldError" role="alert">
          {label}: {problem}
        </div>
      ) : null}
    </div>
  );
}
