/**
 * Pure helpers: formatting and the client code.
 */
import { Cluster, Template } from './api';

const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const DECIMAL = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/**
 * Bytes in the units the template was written in: 6442450944 -> "6 GiB"
 * (6Gi), 1000000000 -> "1 GB" (1G, 1GB), 1500000000 -> "1.5 GB". Strings
 * pass through.
 */
export function formatBytes(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === '') {
    return '?';
  }
  if (typeof value === 'string') {
    return value;
  }
  const binary = value >= 1024 && value % 1024 ** 2 === 0;
  const base = binary ? 1024 : 1000;
  const units = binary ? BINARY : DECIMAL;
  let n = value;
  let i = 0;
  while (n >= base && i < units.length - 1) {
    n /= base;
    i++;
  }
  const digits = n >= 100 || Number.isInteger(n) ? 0 : 1;
  return `${n.toFixed(digits).replace(/\.0$/, '')} ${units[i]}`;
}

/** 1 -> "1 core", 2.5 -> "2.5 cores". */
export function formatCores(value: number | null | undefined): string {
  if (value === null || value === undefined) {
    return '? cores';
  }
  const n = Math.round(value * 100) / 100;
  return `${n} ${n === 1 ? 'core' : 'cores'}`;
}

/** Worker size line of a template. */
export function describeWorker(template: Template): string {
  const w = template.worker ?? { cores: null, memory: null, image: null };
  const parts = [formatCores(w.cores), formatBytes(w.memory)];
  return `${parts.join(', ')} per worker`;
}

/**
 * The code inserted into notebooks for a cluster: the backend's own when it
 * gives one (a Dask-Gateway cluster connects through the gateway's client,
 * which brings the cluster's TLS credentials). On Kubernetes the notebook
 * gets the cluster object itself (scale, adapt, logs) by name; the local
 * backend's clusters live in the Jupyter server, so a Client by address.
 */
export function clientCode(
  cluster: Pick<Cluster, 'scheduler_address' | 'connect_code'> &
    Partial<Pick<Cluster, 'id' | 'backend'>>
): string {
  if (cluster.connect_code) {
    return cluster.connect_code;
  }
  if (cluster.backend === 'kubernetes' && cluster.id) {
    return (
      'from jupyter_dask_kube import KubeCluster\n' +
      `cluster = KubeCluster.from_name(${JSON.stringify(cluster.id)})\n` +
      'client = cluster.get_client()\n' +
      'client'
    );
  }
  return (
    'from dask.distributed import Client\n' +
    `client = Client(${JSON.stringify(cluster.scheduler_address ?? '')})\n` +
    'client'
  );
}

/**
 * When the cluster ends by itself, in a line for its card ("" when never):
 * "Ends at 18:30" / "Ends Dec 5, 09:00", plus whether it outlives the server.
 */
export function lifetimeText(
  cluster: Pick<Cluster, 'expires' | 'keep'>,
  now: Date = new Date()
): string {
  const kept = cluster.keep ? 'kept after your server stops' : '';
  if (!cluster.expires) {
    return kept ? kept.charAt(0).toUpperCase() + kept.slice(1) : '';
  }
  const end = new Date(cluster.expires);
  if (isNaN(end.getTime())) {
    return kept;
  }
  const time = end.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const sameDay = end.toDateString() === now.toDateString();
  const when = sameDay
    ? time
    : `${end.toLocaleDateString([], { month: 'short', day: 'numeric' })}, ${time}`;
  return `Ends at ${when}` + (kept ? ` · ${kept}` : '');
}

/** Resolve a possibly relative dashboard link against the current page. */
export function absoluteLink(link: string): string {
  return new URL(link, window.location.href).href;
}

/**
 * The name a cluster is shown by. Unnamed clusters are named after their
 * template; their unique id tells them apart.
 */
export function clusterLabel(
  cluster: Pick<Cluster, 'id' | 'name' | 'template'>,
  templateLabel = ''
): string {
  const unnamed =
    !cluster.name ||
    cluster.name === cluster.template ||
    cluster.name === templateLabel;
  return unnamed ? cluster.id : cluster.name;
}

/** Whether a cluster is still coming up. */
export function isStarting(cluster: Cluster): boolean {
  return cluster.status === 'pending' || cluster.status === 'starting';
}

/** One line of a card's notes: a short reason first, then the whole text. */
export interface INote {
  /** Kubernetes' reason or the kind of warning ("ErrImagePull", "Version mismatch"), or null. */
  lead: string | null;
  /** The full text, never shortened here: the card clamps it and lets the user expand it. */
  text: string;
}

/** Kubernetes reasons are CamelCase words: "ErrImagePull", "Unschedulable", "OOMKilled". */
const REASON_WORD =
  /\b([A-Z][a-z]+(?:[A-Z][A-Za-z]*)+|OOMKilled|Unschedulable|Error|Evicted)\b/;

/**
 * The reason a message is about, to show first. Pod reasons the message
 * mentions win (the server's message may put them anywhere); else the
 * first Kubernetes-style reason word in it.
 */
export function leadingReason(text: string, podReasons: string[]): string | null {
  const known = podReasons.find(r => text.includes(r));
  if (known) {
    return known;
  }
  const m = REASON_WORD.exec(text);
  return m ? m[1] : null;
}

/** Why a cluster is stuck or failed, from the cluster and its pods; reason first. */
export function reasons(cluster: Cluster): INote[] {
  const pods = cluster.pods ?? [];
  const podReasons = pods.map(p => p.reason).filter((r): r is string => !!r);
  const out: INote[] = [];
  if (cluster.message) {
    const lead = leadingReason(cluster.message, podReasons);
    // a message that already leads with its reason ("Unschedulable: ...") is not shown it twice
    const text =
      lead && cluster.message.startsWith(`${lead}:`)
        ? cluster.message.slice(lead.length + 1).trim()
        : cluster.message;
    out.push({ lead, text });
  }
  for (const pod of pods) {
    if (!pod.reason && !pod.message) {
      continue;
    }
    const detail = pod.message ?? '';
    if (out.some(o => o.text.includes(detail || pod.reason || ''))) {
      continue;
    }
    out.push({
      lead: pod.reason,
      text: `${pod.role} pod ${pod.name}${detail ? `: ${detail}` : ''}`
    });
  }
  return out;
}

/**
 * What a warning is about, to show first: "Resource limits" for a container
 * whose limits disagree with its dask args, else the part before the first
 * colon when it is short ("Version mismatch between this server and the cluster").
 */
export function warningNote(text: string): INote {
  if (text.startsWith('container ')) {
    return { lead: 'Resource limits', text };
  }
  const m = /^([^:\n]{1,60}):\s*([\s\S]*)$/.exec(text);
  if (m && !/^Worker /.test(m[1])) {
    return { lead: m[1], text: m[2] };
  }
  return { lead: leadingReason(text, []), text };
}
