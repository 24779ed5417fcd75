/**
 * Typed REST client for the jupyter-dask-kube server extension.
 *
 * Every call goes through ServerConnection.makeRequest with the settings of
 * ServerConnection.makeSettings(), so the base URL (e.g. JupyterHub's
 * /user/<name>/), the token and the XSRF cookie are handled for us.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The path of the REST API below the server's base URL. */
export const API_PATH = 'dask-kube/api';

export type OptionType = 'integer' | 'float' | 'select' | 'bool' | 'string';
export type OptionValue = number | string | boolean;

/** A user-changeable template field, bounded by the admin. */
export interface TemplateOption {
  name: string;
  label?: string;
  type: OptionType;
  default: OptionValue;
  min?: number;
  max?: number;
  choices?: OptionValue[];
}

export interface WorkerSize {
  cores: number | null;
  memory: number | string | null;
  image: string | null;
}

export interface Template {
  name: string;
  display_name: string;
  description: string;
  default: boolean;
  backend: string;
  worker: WorkerSize;
  options: TemplateOption[];
  /** Not in the contract yet; used for the form's initial value when sent. */
  workers?: number;
  adapt?: AdaptBounds | null;
}

export interface AdaptBounds {
  minimum: number;
  maximum: number;
}

export type ClusterStatus =
  | 'pending'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'failed';

export interface PodInfo {
  name: string;
  role: 'scheduler' | 'worker' | string;
  phase: string;
  reason: string | null;
  message: string | null;
}

export interface Cluster {
  id: string;
  name: string;
  template: string;
  backend: string;
  status: ClusterStatus;
  message: string | null;
  scheduler_address: string | null;
  dashboard_link: string | null;
  /** Connected workers. */
  workers: number;
  requested_workers: number;
  cores: number;
  /** Bytes. */
  memory: number;
  adapt: AdaptBounds | null;
  created: string | number | null;
  pods: PodInfo[];
  warnings: string[];
  /** ISO time the cluster ends by itself (max lifetime), or null. */
  expires?: string | null;
  /** Kept after the owner's Jupyter server stops. */
  keep?: boolean;
  /** Code a notebook runs to use the cluster, when the backend has its own (gateway). */
  connect_code?: string;
}

export interface Status {
  backend: string;
  namespace: string;
  version: string;
  problems: string[];
  /** Running package versions older than the security floor (advisories.py). */
  warnings?: string[];
}

export interface CreateRequest {
  template?: string;
  name?: string;
  workers?: number;
  adapt?: AdaptBounds;
  options?: { [name: string]: OptionValue };
  /** Survive the owner's server (up to the admin's detached lifetime). */
  keep?: boolean;
}

export type ScaleRequest = { workers: number } | { adapt: AdaptBounds | null };

/**
 * An error answered by the server (or the network), carrying the server's
 * own message (`{"message": ...}`) and the HTTP status (0 = no answer).
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly url: string = ''
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /**
   * Whether the answer says the server extension itself is missing (a plain
   * 404 page instead of JSON, or no answer at all).
   */
  get unreachable(): boolean {
    return this.status === 0 || (this.status === 404 && !this.fromApi);
  }

  /** True when the body was the API's JSON error. */
  fromApi = false;
}

/**
 * The REST client.
 */
export class DaskKubeAPI {
  constructor(settings?: ServerConnection.ISettings) {
    this.serverSettings = settings ?? ServerConnection.makeSettings();
  }

  readonly serverSettings: ServerConnection.ISettings;

  /** Absolute URL of an API path. */
  url(...parts: string[]): string {
    return URLExt.join(
      this.serverSettings.baseUrl,
      API_PATH,
      ...parts.map(encodeURIComponent)
    );
  }

  async templates(): Promise<Template[]> {
    const data = await this.request<{ templates: Template[] }>(
      this.url('templates')
    );
    return data.templates ?? [];
  }

  async clusters(): Promise<Cluster[]> {
    const data = await this.request<{ clusters: Cluster[] }>(
      this.url('clusters')
    );
    return data.clusters ?? [];
  }

  cluster(id: string): Promise<Cluster> {
    return this.request<Cluster>(this.url('clusters', id));
  }

  create(body: CreateRequest): Promise<Cluster> {
    return this.request<Cluster>(this.url('clusters'), {
      method: 'POST',
      body: JSON.stringify(body)
    });
  }

  scale(id: string, body: ScaleRequest): Promise<Cluster> {
    return this.request<Cluster>(this.url('clusters', id), {
      method: 'PATCH',
      body: JSON.stringify(body)
    });
  }

  async remove(id: string): Promise<void> {
    await this.request<void>(this.url('clusters', id), { method: 'DELETE' });
  }

  async logs(id: string): Promise<{ [pod: string]: string }> {
    const data = await this.request<{ logs: { [pod: string]: string } }>(
      this.url('clusters', id, 'logs')
    );
    return data.logs ?? {};
  }

  status(): Promise<Status> {
    return this.request<Status>(this.url('status'));
  }

  /**
   * Make a request and decode the JSON answer; throw ApiError otherwise.
   */
  async request<T>(url: string, init: RequestInit = {}): Promise<T> {
    if (init.body && !init.headers) {
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(
        url,
        init,
        this.serverSettings
      );
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new ApiError(`no answer from the server (${reason})`, 0, url);
    }
    const text = await response.text();
    let data: any = undefined;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = undefined;
      }
    }
    if (!response.ok) {
      const isApiError =
        data !== null && typeof data === 'object' && 'message' in data;
      const message = isApiError
        ? String(data.message)
        : `${response.status} ${response.statusText || 'error'}`.trim() +
          ` (${init.method ?? 'GET'} ${new URL(url, window.location.href).pathname})`;
      const err = new ApiError(message, response.status, url);
      err.fromApi = isApiError;
      throw err;
    }
    if (response.status !== 204 && text && data === undefined) {
      throw new ApiError(
        `the server answered with something that is not JSON (${url})`,
        response.status,
        url
      );
    }
    return data as T;
  }
}

/**
 * Human message for anything thrown by the client.
 */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}
