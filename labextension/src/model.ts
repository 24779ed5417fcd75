/**
 * The sidebar's state: templates, status and the live cluster list, polled
 * while the panel is visible.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ApiError,
  Cluster,
  CreateRequest,
  DaskKubeAPI,
  ScaleRequest,
  Status,
  Template,
  errorMessage
} from './api';
import { isStarting } from './format';

/** Polling delay while some cluster is pending or starting. */
export const FAST_INTERVAL = 500;
/** Upper bound of the error back-off. */
export const MAX_BACKOFF = 30000;

export class DaskKubeModel implements IDisposable {
  constructor(readonly api: DaskKubeAPI) {
    document.addEventListener('visibilitychange', this._onVisibility);
  }

  /** Emitted whenever anything shown changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get clusters(): Cluster[] {
    return this._clusters;
  }
  get templates(): Template[] {
    return this._templates;
  }
  get status(): Status | null {
    return this._status;
  }
  /** Set when the server extension does not answer at all. */
  get unreachable(): string | null {
    return this._unreachable;
  }
  /** The last polling error (the list is then possibly stale). */
  get pollError(): string | null {
    return this._pollError;
  }
  /** Whether templates and status have been asked for at least once. */
  get loaded(): boolean {
    return this._loaded;
  }
  /** Per-cluster error of the last action (scale, shutdown). */
  actionError(id: string): string | null {
    return this._actionErrors.get(id) ?? null;
  }
  /** Current polling delay in ms (for tests and debugging). */
  get delay(): number {
    return this._delay;
  }

  get defaultTemplate(): string {
    return this._defaultTemplate;
  }
  set defaultTemplate(value: string) {
    this._defaultTemplate = value ?? '';
    this._changed.emit();
  }

  get refreshInterval(): number {
    return this._refreshInterval;
  }
  set refreshInterval(value: number) {
    this._refreshInterval = Math.max(250, Number(value) || 2000);
    this._schedule();
  }

  /** The cluster the "insert client" command uses without an id. */
  get selectedId(): string | null {
    if (this._selectedId && this.find(this._selectedId)) {
      return this._selectedId;
    }
    const running = this._clusters.filter(c => c.status === 'running');
    return running.length ? running[0].id : null;
  }
  set selectedId(id: string | null) {
    this._selectedId = id;
    this._changed.emit();
  }

  find(id: string): Cluster | undefined {
    return this._clusters.find(c => c.id === id);
  }

  /** Start or stop polling (the panel's visibility). */
  get active(): boolean {
    return this._active;
  }
  set active(value: boolean) {
    if (this._active === value) {
      return;
    }
    this._active = value;
    if (value) {
      void this.reload();
    } else {
      this._clearTimer();
    }
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._clearTimer();
    document.removeEventListener('visibilitychange', this._onVisibility);
    Signal.clearData(this);
  }

  /** Load templates and status, then the clusters. */
  async reload(): Promise<void> {
    await Promise.all([this.loadMeta(), this.refresh()]);
  }

  async loadMeta(): Promise<void> {
    const [templates, status] = await Promise.allSettled([
      this.api.templates(),
      this.api.status()
    ]);
    this._loaded = true;
    if (templates.status === 'fulfilled') {
      this._templates = templates.value;
    } else {
      this._noteError(templates.reason);
    }
    if (status.status === 'fulfilled') {
      this._status = status.value;
    } else if (
      templates.status === 'fulfilled' ||
      !(status.reason instanceof ApiError && status.reason.unreachable)
    ) {
      // status is optional when the rest answers
      this._status = null;
    } else {
      this._noteError(status.reason);
    }
    if (templates.status === 'fulfilled' && status.status === 'fulfilled') {
      this._unreachable = null;
    }
    this._changed.emit();
  }

  /** Fetch the cluster list now, and schedule the next poll. */
  async refresh(): Promise<void> {
    const seq = ++this._seq;
    this._clearTimer();
    try {
      const clusters = await this.api.clusters();
      if (seq !== this._seq) {
        return; // a newer refresh is on its way
      }
      const wasUnreachable = this._unreachable !== null;
      this._errors = 0;
      this._pollError = null;
      this._unreachable = null;
      this._setClusters(clusters);
      if (wasUnreachable || !this._templates.length) {
        void this.loadMeta();
      }
    } catch (error) {
      if (seq !== this._seq) {
        return;
      }
      this._errors++;
      this._noteError(error);
    } finally {
      if (seq === this._seq) {
        this._schedule();
        this._changed.emit();
      }
    }
  }

  async create(body: CreateRequest): Promise<Cluster> {
    const cluster = await this.api.create(body);
    if (cluster && cluster.id && !this.find(cluster.id)) {
      this._clusters = [...this._clusters, cluster];
    }
    if (cluster?.id) {
      this._selectedId = cluster.id;
    }
    this._changed.emit();
    void this.refresh();
    return cluster;
  }

  async scale(id: string, body: ScaleRequest): Promise<void> {
    this._actionErrors.delete(id);
    try {
      const cluster = await this.api.scale(id, body);
      if (cluster?.id) {
        this._replace(cluster);
      }
    } catch (error) {
      this._actionErrors.set(id, `Scaling failed: ${errorMessage(error)}`);
    }
    this._changed.emit();
    void this.refresh();
  }

  async shutdown(id: string): Promise<void> {
    this._actionErrors.delete(id);
    this._stopping.add(id);
    this._changed.emit();
    try {
      await this.api.remove(id);
    } catch (error) {
      this._stopping.delete(id);
      if (error instanceof ApiError && error.status === 404) {
        // already gone
        this._clusters = this._clusters.filter(c => c.id !== id);
      } else {
        this._actionErrors.set(id, `Shutdown failed: ${errorMessage(error)}`);
      }
    }
    this._changed.emit();
    void this.refresh();
  }

  private _setClusters(clusters: Cluster[]): void {
    const ids = new Set(clusters.map(c => c.id));
    for (const id of [...this._stopping]) {
      if (!ids.has(id)) {
        this._stopping.delete(id);
      }
    }
    this._clusters = clusters.map(c =>
      this._stopping.has(c.id) && c.status !== 'failed'
        ? { ...c, status: 'stopping' }
        : c
    );
  }

  private _replace(cluster: Cluster): void {
    this._clusters = this._clusters.map(c =>
      c.id === cluster.id ? cluster : c
    );
  }

  private _noteError(error: unknown): void {
    if (error instanceof ApiError && error.unreachable) {
      this._unreachable = error.message;
    } else {
      this._pollError = errorMessage(error);
    }
  }

  private _schedule(): void {
    this._clearTimer();
    if (!this._active || this._isDisposed || document.hidden) {
      return;
    }
    let delay = this._refreshInterval;
    if (this._errors > 0) {
      delay = Math.min(
        this._refreshInterval * 2 ** this._errors,
        MAX_BACKOFF
      );
    } else if (
      this._clusters.some(isStarting) ||
      this._stopping.size > 0 ||
      this._clusters.some(c => c.status === 'stopping')
    ) {
      delay = Math.min(FAST_INTERVAL, this._refreshInterval);
    }
    this._delay = delay;
    this._timer = window.setTimeout(() => {
      this._timer = 0;
      void this.refresh();
    }, delay);
  }

  private _clearTimer(): void {
    if (this._timer) {
      window.clearTimeout(this._timer);
      this._timer = 0;
    }
  }

  private _onVisibility = (): void => {
    if (document.hidden) {
      this._clearTimer();
    } else if (this._active) {
      void this.refresh();
    }
  };

  private _changed = new Signal<this, void>(this);
  private _clusters: Cluster[] = [];
  private _templates: Template[] = [];
  private _status: Status | null = null;
  private _unreachable: string | null = null;
  private _pollError: string | null = null;
  private _loaded = false;
  private _actionErrors = new Map<string, string>();
  private _stopping = new Set<string>();
  private _selectedId: string | null = null;
  private _defaultTemplate = '';
  private _refreshInterval = 2000;
  private _active = false;
  private _isDisposed = false;
  private _timer = 0;
  private _delay = 0;
  private _errors = 0;
  private _seq = 0;
}
