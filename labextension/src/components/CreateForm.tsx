import * as React from 'react';

import { Button, HTMLSelect } from '@jupyterlab/ui-components';

import {
  CreateRequest,
  OptionValue,
  Template,
  errorMessage
} from '../api';
import { describeWorker } from '../format';
import { OptionInput, optionProblem } from './OptionInput';
import { IScaleValue, ScaleFields, scaleProblem, toRequest } from './ScaleFields';

export interface ICreateFormProps {
  templates: Template[];
  /** Setting: preferred template name ("" = the server's default). */
  defaultTemplate: string;
  /** The server extension does not answer. */
  disabled: boolean;
  /** Templates were asked for at least once. */
  loaded: boolean;
  onCreate: (request: CreateRequest) => Promise<unknown>;
}

function pickTemplate(templates: Template[], preferred: string): string {
  if (preferred && templates.some(t => t.name === preferred)) {
    return preferred;
  }
  const byDefault = templates.find(t => t.default);
  return (byDefault ?? templates[0])?.name ?? '';
}

function initialScale(template: Template | undefined): IScaleValue {
  const adapt = template?.adapt;
  return {
    adapt: !!adapt,
    workers: template?.workers ?? 1,
    minimum: adapt?.minimum ?? 0,
    maximum: adapt?.maximum ?? Math.max(template?.workers ?? 1, 1)
  };
}

function initialOptions(template: Template | undefined): {
  [name: string]: OptionValue;
} {
  const out: { [name: string]: OptionValue } = {};
  for (const option of template?.options ?? []) {
    out[option.name] = option.default;
  }
  return out;
}

/**
 * Template picker, the admin's options, worker count or adapt bounds, and
 * Create. Server errors are shown as the server wrote them.
 */
export function CreateForm(props: ICreateFormProps): JSX.Element {
  const { templates, defaultTemplate, disabled, loaded, onCreate } = props;
  const [name, setName] = React.useState(() =>
    pickTemplate(templates, defaultTemplate)
  );
  const template = templates.find(t => t.name === name);
  const [scale, setScale] = React.useState<IScaleValue>(() =>
    initialScale(template)
  );
  const [options, setOptions] = React.useState(() => initialOptions(template));
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  const [keep, setKeep] = React.useState(false);

  // Keep a valid selection when the template list changes, and follow the
  // setting when it changes (it is the user's explicit wish).
  const lastDefault = React.useRef(defaultTemplate);
  React.useEffect(() => {
    const settingChanged = lastDefault.current !== defaultTemplate;
    lastDefault.current = defaultTemplate;
    if (settingChanged || !templates.some(t => t.name === name)) {
      const next = pickTemplate(templates, defaultTemplate);
      if (next !== name) {
        selectTemplate(next);
      }
    }
  }, [templates, defaultTemplate]);

  const selectTemplate = (next: string) => {
    const t = templates.find(x => x.name === next);
    setName(next);
    setOptions(initialOptions(t));
    setScale(initialScale(t));
    setError(null);
  };

  const problems = [
    ...(template?.options ?? [])
      .map(o => optionProblem(o, options[o.name]))
      .filter(Boolean),
    scaleProblem(scale)
  ].filter(Boolean);

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    if (busy || problems.length || !template) {
      return;
    }
    const request: CreateRequest = {
      template: template.name,
      ...(toRequest(scale) as CreateRequest)
    };
    const changed: { [name: string]: OptionValue } = {};
    for (const option of template.options ?? []) {
      const value = options[option.name];
      if (value !== option.default) {
        changed[option.name] = value;
      }
    }
    if (Object.keys(changed).length) {
      request.options = changed;
    }
    if (keep) {
      request.keep = true;
    }
    setBusy(true);
    setError(null);
    try {
      await onCreate(request);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  if (!templates.length) {
    return (
      <div className="dask-kube-CreateForm dask-kube-empty">
        {disabled
          ? 'Creating clusters needs the server extension.'
          : loaded
            ? 'No templates available.'
            : 'Loading templates…'}
      </div>
    );
  }

  return (
    <form
      className="dask-kube-CreateForm"
      aria-label="New Dask cluster"
      onSubmit={submit}
    >
      <div className="dask-kube-Field">
        <label htmlFor="dask-kube-template">Template</label>
        <HTMLSelect
          id="dask-kube-template"
          value={name}
          title={template?.display_name || name}
          onChange={e => selectTemplate(e.currentTarget.value)}
        >
          {templates.map(t => (
            <option key={t.name} value={t.name}>
              {t.display_name || t.name}
            </option>
          ))}
        </HTMLSelect>
      </div>
      {template ? (
        <div className="dask-kube-TemplateInfo">
          {template.description ? (
            <div className="dask-kube-TemplateInfo-description">
              {template.description}
            </div>
          ) : null}
          <div className="dask-kube-TemplateInfo-size">
            {describeWorker(template)}
          </div>
          {template.worker?.image ? (
            <div
              className="dask-kube-TemplateInfo-image"
              title={template.worker.image}
            >
              {template.worker.image}
            </div>
          ) : null}
        </div>
      ) : null}
      {(template?.options ?? []).map(option => (
        <OptionInput
          key={`${name}/${option.name}`}
          idPrefix="dask-kube-option"
          option={option}
          value={options[option.name]}
          onChange={value => setOptions({ ...options, [option.name]: value })}
        />
      ))}
      <ScaleFields idPrefix="dask-kube-create" value={scale} onChange={setScale} />
      <div className="dask-kube-Field dask-kube-keep">
        <label
          htmlFor="dask-kube-keep"
          title="Otherwise the cluster ends when your Jupyter server stops"
        >
          <input
            id="dask-kube-keep"
            type="checkbox"
            checked={keep}
            onChange={e => setKeep(e.currentTarget.checked)}
          />{' '}
          Keep after my server stops
        </label>
      </div>
      {error ? (
        <div className="dask-kube-error" role="alert">
          {error}
        </div>
      ) : null}
      <div className="dask-kube-actions">
        <Button
          type="submit"
          className="dask-kube-create jp-mod-accept"
          disabled={busy || disabled || problems.length > 0}
          aria-label="Create cluster"
          title={problems.length ? problems.join('; ') : 'Create a Dask cluster'}
        >
          {busy ? 'Creating…' : 'Create'}
        </Button>
      </div>
    </form>
  );
}
