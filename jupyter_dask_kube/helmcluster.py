"""Attach to a Dask Helm chart release from Python, as classic dask-kubernetes' ``HelmCluster`` did:
``HelmCluster("my-release").get_client()``. Finding the release and reading its state is helm_models.py (the
same rules as the panel's attached cards); this only talks to the API through the official client (blocking,
as a notebook calls it). It never deletes the release: ``helm uninstall`` does.
"""
from __future__ import annotations

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from .backends import helm_models as hm


class HelmCluster:
    def __init__(self, release_name: str, namespace: str | None = None, *, kubeconfig: str | None = None,
                 context: str | None = None):
        self.release_name = release_name
        if kubeconfig or context or not _in_cluster():
            api = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
            if namespace is None:
                _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
                namespace = (active.get("context") or {}).get("namespace")
        else:
            k8s_config.load_incluster_config()
            api = k8s.ApiClient()
        self.namespace = namespace or "default"
        self._api = api
        self._core, self._apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        self._parts  # a LookupError now for a release that is not there

    @property
    def _parts(self) -> dict:
        san = self._api.sanitize_for_serialization
        deps = [san(d) for d in self._apps.list_namespaced_deployment(self.namespace, label_selector=hm.SELECTOR).items]
        svcs = [san(s) for s in self._core.list_namespaced_service(self.namespace, label_selector=hm.SELECTOR).items]
        found = hm.releases(deps, svcs)
        if self.release_name not in found:
            raise LookupError(f"no Dask Helm release {self.release_name!r} in namespace {self.namespace} "
                              f"(objects labelled {hm.SELECTOR}, release={self.release_name})")
        return found[self.release_name]

    def model(self) -> dict:
        """The release as the panel shows it (status, message, workers, scheduler_address, dashboard_link...)."""
        pods = [self._api.sanitize_for_serialization(p)
                for p in self._core.list_namespaced_pod(self.namespace, label_selector=hm.SELECTOR).items]
        return hm.cluster_model(self.release_name, self._parts, pods)

    @property
    def scheduler_address(self) -> str:
        return self.model()["scheduler_address"]

    @property
    def dashboard_link(self) -> str:
        return self.model()["dashboard_link"]

    def scale(self, n: int) -> None:
        parts = self._parts
        if parts["worker"] is None:
            raise ValueError("; ".join(parts["problems"]))
        self._apps.patch_namespaced_deployment(parts["worker"]["metadata"]["name"], self.namespace, hm.scale_patch(n))

    def get_logs(self) -> dict[str, str]:
        out = {}
        for p in self.model()["pods"]:
            out[p["name"]] = self._core.read_namespaced_pod_log(p["name"], self.namespace, tail_lines=500)
        return out

    def get_client(self, **kwargs):
        from distributed import Client

        address = self.scheduler_address
        if not address:
            raise RuntimeError(f"release {self.release_name} is not running: {self.model()['message']}")
        return Client(address, **kwargs)

    def close(self) -> None:
        self._api.close()

    def __repr__(self) -> str:
        return f"HelmCluster({self.release_name!r}, namespace={self.namespace!r})"


def _in_cluster() -> bool:
    from .runtimes.kubernetes import in_cluster

    return in_cluster()
