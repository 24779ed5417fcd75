"""The Dask Kubernetes operator as a backend (``c.DaskKube.backend = "operator"``): our templates become
DaskCluster custom resources (``kubernetes.dask.org/v1``) and the operator's controller makes the pods.

Calls go through the official client's CustomObjectsApi on the KubernetesRuntime's ApiClient and thread pool
(``runtime._call``: the same threads, retries and readable errors as our pod calls). The pods, the scheduler
Service and pod logs are read with the runtime's own methods.

Mapping template <-> DaskCluster <-> Cluster model: operator_models.py (pure).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from kubernetes import client as k8s

from .._version import __version__
from ..bodies import ApiError, CreateRequest
from ..manager import Limits
from ..naming import format_cluster_name
from ..objects import LABEL_CLUSTER
from ..runtimes import RuntimeAPIError
from ..templates import ClusterTemplate, OptionError
from . import operator_models as om
from .base import ClusterBackend

logger = logging.getLogger(__name__)

MISSING_CRDS = (f"the Dask operator's custom resources ({om.GROUP}/{om.VERSION} DaskCluster, DaskWorkerGroup, "
                "DaskAutoscaler) are not installed in this Kubernetes cluster: install the dask-kubernetes-operator "
                "Helm chart, or choose another backend (c.DaskKube.backend)")


def operator_problems_sync(api_client, namespace: str) -> list[str]:
    """Why the operator backend cannot serve this user ([] when it can): the CRDs must be served and the
    user must be allowed to create DaskClusters. Blocking: for ``backend = "auto"`` at server start."""
    try:
        resources = k8s.CustomObjectsApi(api_client).get_api_resources(om.GROUP, om.VERSION, _request_timeout=10)
    except k8s.ApiException as exc:
        return [MISSING_CRDS] if exc.status == 404 else [f"Kubernetes API: {exc.status} {exc.reason}"]
    except Exception as exc:  # unreachable API
        return [f"Kubernetes API not reachable: {exc}"]
    served = {r.name for r in resources.resources or []}
    missing = {om.CLUSTERS, om.WORKER_GROUPS, om.AUTOSCALERS} - served
    if missing:
        return [MISSING_CRDS + f" (missing: {', '.join(sorted(missing))})"]
    review = k8s.AuthorizationV1Api(api_client).create_self_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create", "resource": om.CLUSTERS,
                                        "group": om.GROUP}}}, _request_timeout=10)
    if not review.status.allowed:
        return [f"you may not create {om.CLUSTERS}.{om.GROUP} in namespace {namespace} (see deploy/rbac-operator.yaml)"]
    return []


class OperatorBackend(ClusterBackend):
    name = om.BACKEND

    def __init__(self, runtime, *, username: str, templates: list[ClusterTemplate], default_template=None,
                 limits: Limits | None = None, name_template=None, idle_timeout: float = 0,
                 start_timeout: float = 600, base_url: str | None = None, options_handler=None,
                 template_problems: list[str] | None = None):
        self.runtime = runtime  # a KubernetesRuntime: its ApiClient, thread pool and pod/Service calls
        self.custom = k8s.CustomObjectsApi(runtime.api_client)
        self.username = username
        self.templates_by_name = {t.name: t for t in templates}
        self.default_template = default_template
        self.limits = limits or Limits()
        self.name_template = name_template
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.base_url = base_url
        self.options_handler = options_handler
        self.template_problems = list(template_problems or [])
        self._hosts: set[str] = set()

    @property
    def namespace(self) -> str:
        return self.runtime.namespace

    # -- plumbing --------------------------------------------------------------------------------
    async def _custom(self, fn, *args, **kwargs):
        resp = await self.runtime._call(fn, om.GROUP, om.VERSION, self.namespace, *args, _preload_content=False,
                                        **kwargs)
        return json.loads(resp.data) if resp.data else {}

    async def _get(self, plural: str, name: str) -> dict | None:
        try:
            return await self._custom(self.custom.get_namespaced_custom_object, plural, name)
        except RuntimeAPIError as exc:
            if exc.status == 404:
                return None
            raise

    async def _delete(self, plural: str, name: str) -> bool:
        try:
            await self._custom(self.custom.delete_namespaced_custom_object, plural, name)
            return True
        except RuntimeAPIError as exc:
            if exc.status == 404:
                return False
            raise

    async def _owned(self, cluster_id: str) -> dict:
        cr = await self._get(om.CLUSTERS, cluster_id)
        if cr is None or not om.owned_by(cr, self.username):  # another user's name is not confirmed
            raise ApiError(404, f"no cluster {cluster_id!r}")
        return cr

    async def _crs(self) -> list[dict]:
        try:
            listing = await self._custom(self.custom.list_namespaced_custom_object, om.CLUSTERS,
                                         label_selector=om.user_label_selector(self.username))
        except RuntimeAPIError as exc:
            if exc.status == 404:
                raise ApiError(503, MISSING_CRDS) from None
            raise
        return listing.get("items") or []

    async def _model(self, cr: dict) -> dict:
        name = cr["metadata"]["name"]
        pods = await self.runtime.list_pods(f"{LABEL_CLUSTER}={name}")
        service = await self.runtime.read_service(f"{name}-scheduler")
        scaler = await self._get(om.AUTOSCALERS, name)
        group = await self._get(om.WORKER_GROUPS, om.default_worker_group(name))
        model = om.cluster_model(cr, pods=pods, service=service, autoscaler_cr=scaler, worker_group=group,
                                 start_timeout=self.start_timeout, base_url=self.base_url)
        ip, _, _ = om.service_address(service)
        if ip:
            self._hosts.add(ip)
        return model

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self):
        await self._crs()

    async def close(self):
        await self.runtime.close()

    # -- read ------------------------------------------------------------------------------------
    async def templates(self) -> list[dict]:
        default = self.default_template
        out = []
        for t in self.templates_by_name.values():
            j = t.to_json(self.name)
            if default is not None:
                j["default"] = t.name == default
            out.append(j)
        return out

    async def list_json(self) -> str:
        models = [await self._model(cr) for cr in await self._crs()]
        models.sort(key=lambda m: (m["created"] or "", m["id"]))
        return json.dumps({"clusters": models})

    async def cluster_json(self, cluster_id: str) -> str:
        return json.dumps(await self._model(await self._owned(cluster_id)))

    async def status(self) -> dict:
        import asyncio

        problems = list(self.template_problems)
        try:
            problems += await asyncio.to_thread(operator_problems_sync, self.runtime.api_client, self.namespace)
        except Exception as exc:  # the review itself refused
            problems.append(f"Kubernetes API: {exc}")
        return {"backend": self.name, "namespace": self.namespace, "version": __version__, "problems": problems}

    async def logs(self, cluster_id: str) -> dict[str, str]:
        await self._owned(cluster_id)
        out = {}
        for pod in await self.runtime.list_pods(f"{LABEL_CLUSTER}={cluster_id}"):
            name = pod["metadata"]["name"]
            try:
                out[name] = await self.runtime.pod_logs(name, tail_lines=500)
            except RuntimeAPIError as exc:  # not started yet, or gone
                out[name] = f"(logs not readable: {exc.message})"
        return out

    def scheduler_hosts(self) -> set[str]:
        return set(self._hosts)

    # -- limits ----------------------------------------------------------------------------------
    def _check_limits(self, models: list[dict], workers: int, cores: float, memory: int, exclude: str | None = None):
        lim = self.limits
        if lim.max_workers and workers > lim.max_workers:
            raise ApiError(403, f"{workers} workers is over the limit of {lim.max_workers} per cluster")
        others = [m for m in models if m["id"] != exclude and m["status"] not in ("stopping", "failed")]

        def need(m):
            return (m["adapt"] or {}).get("maximum", m["requested_workers"]) if m["adapt"] else m["requested_workers"]
        if lim.max_cores:
            used = sum(need(m) * (m["cores"] or 1.0) for m in others)
            if used + workers * cores > lim.max_cores:
                raise ApiError(403, f"{workers} workers x {cores:g} cores would use {used + workers * cores:g} cores; "
                                    f"your limit is {lim.max_cores:g} cores across all clusters ({used:g} in use)")
        if lim.max_memory and memory:
            used = sum(need(m) * (m["memory"] or 0) for m in others)
            if used + workers * memory > lim.max_memory:
                gib = 2**30
                raise ApiError(403, f"{workers} workers x {memory / gib:.3g} GiB would use "
                                    f"{(used + workers * memory) / gib:.3g} GiB; your limit is "
                                    f"{lim.max_memory / gib:.3g} GiB across all clusters")

    # -- change ----------------------------------------------------------------------------------
    def _template(self, name: str | None) -> ClusterTemplate:
        name = name or self.default_template or next((t.name for t in self.templates_by_name.values() if t.default),
                                                     next(iter(self.templates_by_name), None))
        if name is None:
            raise ApiError(404, "no cluster templates are configured; ask your hub admin")
        tmpl = self.templates_by_name.get(name)
        if tmpl is None:
            raise ApiError(404, f"unknown template {name!r}; available: {', '.join(self.templates_by_name) or 'none'}")
        return tmpl

    async def create(self, req: CreateRequest) -> dict:
        tmpl = self._template(req.template)
        try:
            values = tmpl.option_values(req.options)
            applied = tmpl.apply_options(req.options)
            if self.options_handler is not None:
                applied = self.options_handler(applied, values) or applied
        except OptionError as exc:
            raise ApiError(exc.status, exc.message) from None
        except ApiError:
            raise
        except ValueError as exc:  # an options_handler refusing a value
            raise ApiError(400, str(exc)) from None
        adapt = req.adapt if req.adapt is not None else (None if req.workers is not None else tmpl.adapt)
        workers = req.workers if req.workers is not None else (0 if adapt else tmpl.workers)
        models = [await self._model(cr) for cr in await self._crs()]
        live = [m for m in models if m["status"] not in ("stopping",)]
        if self.limits.max_clusters and len(live) >= self.limits.max_clusters:
            raise ApiError(403, f"you already have {len(live)} cluster(s); the limit is {self.limits.max_clusters}")
        res = applied.worker_resources()
        self._check_limits(models, adapt["maximum"] if adapt else workers, float(res["cores"] or 1.0),
                           int(res["memory"] or 0))
        try:
            name = format_cluster_name(self.name_template, user=self.username)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        display = req.name or applied.display_name or applied.name
        cr = om.daskcluster(applied, name=name, username=self.username, display_name=display,
                            workers=adapt["minimum"] if adapt else workers, adapt=adapt, options=values,
                            idle_timeout=self.idle_timeout or None, created=datetime.now(timezone.utc))
        made = await self._custom(self.custom.create_namespaced_custom_object, om.CLUSTERS, cr)
        if adapt:
            try:
                await self._custom(self.custom.create_namespaced_custom_object, om.AUTOSCALERS,
                                   om.autoscaler(name, adapt["minimum"], adapt["maximum"]))
            except Exception:  # no half-made cluster: without its autoscaler it would not adapt
                await self._delete(om.CLUSTERS, name)
                raise
        return await self._model(made)

    async def scale(self, cluster_id: str, workers: int) -> dict:
        cr = await self._owned(cluster_id)
        models = [await self._model(c) for c in await self._crs()]
        m = next(m for m in models if m["id"] == cluster_id)
        self._check_limits(models, workers, float(m["cores"] or 1.0), int(m["memory"] or 0), exclude=cluster_id)
        # Scaling by hand ends adapting, as Cluster.scale does.
        await self._delete(om.AUTOSCALERS, cluster_id)
        patch = om.scale_patch(workers)
        patch["metadata"] = om.adapt_annotation_patch(None)["metadata"]
        cr = await self._custom(self.custom.patch_namespaced_custom_object, om.CLUSTERS, cluster_id, patch)
        # The worker group too (as dask-kubernetes' KubeCluster.scale does): after an autoscaler changed it, the
        # DaskCluster's count may already equal the new one, and the operator acts only on a change.
        try:
            await self._custom(self.custom.patch_namespaced_custom_object, om.WORKER_GROUPS,
                               om.default_worker_group(cluster_id), om.scale_patch(workers))
        except RuntimeAPIError as exc:
            if exc.status != 404:  # not made yet: the operator makes it from the DaskCluster's count
                raise
        return await self._model(cr)

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        cr = await self._owned(cluster_id)
        await self._delete(om.AUTOSCALERS, cluster_id)
        if adapt is not None:
            models = [await self._model(c) for c in await self._crs()]
            m = next(m for m in models if m["id"] == cluster_id)
            self._check_limits(models, adapt["maximum"], float(m["cores"] or 1.0), int(m["memory"] or 0),
                               exclude=cluster_id)
            await self._custom(self.custom.create_namespaced_custom_object, om.AUTOSCALERS,
                               om.autoscaler(cluster_id, adapt["minimum"], adapt["maximum"]))
        cr = await self._custom(self.custom.patch_namespaced_custom_object, om.CLUSTERS, cluster_id,
                                om.adapt_annotation_patch(adapt))
        return await self._model(cr)

    async def delete(self, cluster_id: str):
        await self._owned(cluster_id)
        # The autoscaler first: the operator adopts it (ownerReference), but not when it is not running.
        await self._delete(om.AUTOSCALERS, cluster_id)
        await self._delete(om.CLUSTERS, cluster_id)
