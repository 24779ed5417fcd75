import * as React from 'react';

import { INote } from '../format';

export interface INoteProps {
  note: INote;
  /** "reason" (why a cluster is stuck or failed) or "warning". */
  kind: 'reason' | 'warning';
}

let nextId = 0;

/**
 * One reason or warning on a card: its lead (the Kubernetes reason or what
 * the warning is about) first, then the text clamped to two lines. When the
 * text does not fit, a "more" toggle shows it in full (keyboard and screen
 * readers: a button with aria-expanded that controls the text); the whole
 * text is also the tooltip.
 */
export function Note(props: INoteProps): JSX.Element {
  const { note, kind } = props;
  const [expanded, setExpanded] = React.useState(false);
  const [overflows, setOverflows] = React.useState(false);
  const textRef = React.useRef<HTMLSpanElement>(null);
  const id = React.useMemo(() => `dask-kube-note-${++nextId}`, []);

  // Whether the clamped text hides anything: measured after layout, again when the card is resized.
  React.useLayoutEffect(() => {
    const el = textRef.current;
    if (!el || expanded) {
      return;
    }
    const measure = () =>
      setOverflows(el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1);
    measure();
    if (typeof ResizeObserver === 'undefined') {
      return;
    }
    const observer = new ResizeObserver(measure);
    observer.observe(el);
    return () => observer.disconnect();
  }, [note.text, note.lead, expanded]);

  const full = note.lead ? `${note.lead}: ${note.text}` : note.text;
  return (
    <li
      className={`dask-kube-note dask-kube-${kind}` + (expanded ? ' dask-kube-mod-expanded' : '')}
      title={full}
    >
      <span
        ref={textRef}
        id={id}
        className="dask-kube-note-body"
      >
        {note.lead ? <strong className="dask-kube-note-lead">{note.lead}</strong> : null}
        {note.lead ? ' ' : null}
        <span className="dask-kube-note-text">{note.text}</span>
      </span>
      {overflows || expanded ? (
        <button
          type="button"
          className="dask-kube-note-toggle"
          aria-expanded={expanded}
          aria-controls={id}
          aria-label={expanded ? `Show less of: ${note.lead ?? kind}` : `Show all of: ${note.lead ?? kind}`}
          onClick={event => {
            event.stopPropagation();
            setExpanded(!expanded);
          }}
        >
          {expanded ? 'less' : 'more'}
        </button>
      ) : null}
    </li>
  );
}
