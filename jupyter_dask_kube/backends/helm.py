"""Dask Helm chart releases in the user's namespace, attached beside another backend's clusters (as classic
dask-kubernetes' HelmCluster attaches to them): shown with status, workers, logs and dashboard, scaled through
the worker Deployment's replicas, deleted only when the admin allows it (``c.DaskKube.helm_allow_delete``).

``HelmReleases`` wraps the backend the server uses (kubernetes pods or the operator) and answers for the ids
``helm.{release}``; everything else goes to the wrapped backend. Calls: AppsV1Api on the KubernetesRuntime's
ApiClient and thread pool (``runtime._call``); pods, Services and logs through the runtime's own methods.
Mapping: helm_models.py (pure).
"""
from __future__ import annotations

import json

from kubernetes import client as k8s

from ..bodies import ApiError, CreateRequest
from ..runtimes import RuntimeAPIError
from . import helm_models as hm
from .base import ClusterBackend


class HelmReleases(ClusterBackend):
    def __init__(self, inner: ClusterBackend, runtime, *, allow_delete: bool = False, max_workers: int = 0,
                 base_url: str | None = None):
        self.inner = inner
        self.runtime = runtime
        self.apps = k8s.AppsV1Api(runtime.api_client)
        self.allow_delete = allow_delete
        self.max_workers = max_workers
        self.base_url = base_url
        self._hosts: set[str] = set()

    @property
    def name(self) -> str:
        return self.inner.name

    # -- reading the releases --------------------------------------------------------------------
    async def _deployments(self) -> list[dict]:
        resp = await self.runtime._call(self.apps.list_namespaced_deployment, self.runtime.namespace,
                                        label_selector=hm.SELECTOR, _preload_content=False)
        return json.loads(resp.data).get("items") or []

    async def _releases(self) -> dict[str, dict]:
        try:
            deployments = await self._deployments()
        except RuntimeAPIError as exc:
            # no Role for Deployments (deploy/rbac-helm.yaml), or an API without apps/v1: no releases shown
            if exc.status in (403, 404):
                return {}
            raise
        services = await self.runtime.list_services(hm.SELECTOR)
        return hm.releases(deployments, services)

    async def _models(self) -> list[dict]:
        found = await self._releases()
        if not found:
            return []
        pods = await self.runtime.list_pods(hm.SELECTOR)
        models = [hm.cluster_model(r, parts, pods, base_url=self.base_url) for r, parts in sorted(found.items())]
        for parts in found.values():
            ip, _, _ = hm._service_ports(parts.get("service"))
            if ip:
                self._hosts.add(ip)
        return models

    async def _release(self, cluster_id: str) -> tuple[str, dict]:
        release = hm.release_of(cluster_id)
        found = await self._releases()
        if release not in found:
            raise ApiError(404, f"no cluster {cluster_id!r}")
        return release, found[release]

    async def _model(self, cluster_id: str) -> dict:
        release, parts = await self._release(cluster_id)
        pods = await self.runtime.list_pods(hm.SELECTOR)
        return hm.cluster_model(release, parts, pods, base_url=self.base_url)

    # -- the backend interface -------------------------------------------------------------------
    async def start(self):
        await self.inner.start()

    async def close(self):
        await self.inner.close()

    async def templates(self) -> list[dict]:
        return await self.inner.templates()

    async def list_json(self) -> str:
        ours = json.loads(await self.inner.list_json())
        ours["clusters"] = ours.get("clusters", []) + await self._models()
        return json.dumps(ours)

    async def cluster_json(self, cluster_id: str) -> str:
        if hm.release_of(cluster_id) is None:
            return await self.inner.cluster_json(cluster_id)
        return json.dumps(await self._model(cluster_id))

    async def create(self, req: CreateRequest) -> dict:
        return await self.inner.create(req)

    async def scale(self, cluster_id: str, workers: int) -> dict:
        if hm.release_of(cluster_id) is None:
            return await self.inner.scale(cluster_id, workers)
        release, parts = await self._release(cluster_id)
        if parts["worker"] is None:
            raise ApiError(409, "; ".join(parts["problems"]) or f"release {release} has no worker Deployment")
        if self.max_workers and workers > self.max_workers:
            raise ApiError(403, f"{workers} workers is over the limit of {self.max_workers} per cluster")
        await self.runtime._call(self.apps.patch_namespaced_deployment, parts["worker"]["metadata"]["name"],
                                 self.runtime.namespace, hm.scale_patch(workers), _preload_content=False)
        return await self._model(cluster_id)

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        if hm.release_of(cluster_id) is None:
            return await self.inner.adapt(cluster_id, adapt)
        raise ApiError(409, "a Helm release does not adapt here: scale it, or deploy the chart with an autoscaler")

    async def delete(self, cluster_id: str):
        if hm.release_of(cluster_id) is None:
            return await self.inner.delete(cluster_id)
        release, parts = await self._release(cluster_id)
        if not self.allow_delete:
            raise ApiError(403, f"release {release} was deployed with Helm; your admin does not allow deleting it "
                                f"here (c.DaskKube.helm_allow_delete): use `helm uninstall {release}`")
        for kind, obj in (("deployment", parts["worker"]), ("deployment", parts["scheduler"]),
                          ("service", parts["service"])):
            if obj is None:
                continue
            name = obj["metadata"]["name"]
            try:
                if kind == "service":
                    await self.runtime.delete_service(name)
                else:
                    await self.runtime._call(self.apps.delete_namespaced_deployment, name, self.runtime.namespace,
                                             propagation_policy="Background", _preload_content=False)
            except RuntimeAPIError as exc:
                if exc.status != 404:
                    raise

    async def logs(self, cluster_id: str) -> dict[str, str]:
        if hm.release_of(cluster_id) is None:
            return await self.inner.logs(cluster_id)
        release, _ = await self._release(cluster_id)
        out = {}
        for pod in hm.release_pods(release, await self.runtime.list_pods(hm.SELECTOR)):
            name = pod["metadata"]["name"]
            try:
                out[name] = await self.runtime.pod_logs(name, tail_lines=500)
            except RuntimeAPIError as exc:
                out[name] = f"(logs not readable: {exc.message})"
        return out

    async def status(self) -> dict:
        return await self.inner.status()

    def scheduler_hosts(self) -> set[str]:
        return self.inner.scheduler_hosts() | self._hosts
