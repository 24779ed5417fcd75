/**
 * Pure helpers: formatting and the client code.
 */
import { Cluster, Template } from './api';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 6442450944 -> "6 GiB", 1500000000 -> "1.4 GiB". Strings pass through. */
export function formatBytes(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === '') {
    return '?';
  }
  if (typeof value === 'string') {
    return value;
  }
  let n = value;
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  const digits = n >= 100 || Number.isInteger(n) ? 0 : 1;
  return `${n.toFixed(digits).replace(/\.0$/, '')} ${UNITS[i]}`;
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

/** The code inserted into notebooks for a cluster. */
export function clientCode(cluster: Pick<Cluster, 'scheduler_address'>): string {
  return (
    'from dask.distributed import Client\n' +
    `client = Client(${JSON.stringify(cluster.scheduler_address ?? '')})\n` +
    'client'
  );
}

/** Resolve a possibly relative dashboard link against the current page. */
export function absoluteLink(link: string): string {
  return new URL(link, window.location.href).href;
}

/** Whether a cluster is still coming up. */
export function isStarting(cluster: Cluster): boolean {
  return cluster.status === 'pending' || cluster.status === 'starting';
}

/** Why a cluster is stuck or failed, from the cluster and its pods. */
export function reasons(cluster: Cluster): string[] {
  const out: string[] = [];
  if (cluster.message) {
    out.push(cluster.message);
  }
  for (const pod of cluster.pods ?? []) {
    if (!pod.reason && !pod.message) {
      continue;
    }
    const text = [pod.reason, pod.message].filter(Boolean).join(': ');
    const line = `${pod.name}: ${text}`;
    if (!out.some(o => o.includes(text))) {
      out.push(line);
    }
  }
  return out;
}
