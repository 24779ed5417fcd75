"""The Dask Kubernetes operator for the real API server tier: its own CRDs (shipped in the ``dask-kubernetes``
package) and its own controller (``kopf run -m dask_kubernetes.operator.controller``) as a process.

The controller runs here, outside any cluster, so it has no cluster DNS: ``python -m
jupyter_dask_kube.testing.daskoperator`` installs clusterdns.install_resolver (Service names -> their loopback
clusterIPs, read from the API) before starting kopf, so the controller reaches schedulers through the Services
as it would in a pod. Nothing listens beyond what the pods themselves bind (no kopf liveness endpoint, no peering).

Two test-tier shims run in that process too: kr8s_compat.patch_discovery (kube-apiserver 1.20's discovery lacks
the singular names kr8s looks resources up by) and daskoperator_phase (dask/dask-kubernetes#968, a race that
leaves a DaskCluster Pending for good).
"""
from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import time

import yaml

CRD_NAMES = ("daskclusters", "daskworkergroups", "daskautoscalers", "daskjobs")


def crd_manifests() -> list[dict]:
    """The CustomResourceDefinitions shipped with dask-kubernetes (its Helm chart's crds/ directory)."""
    import dask_kubernetes

    root = os.path.join(os.path.dirname(dask_kubernetes.__file__), "operator", "deployment", "helm",
                        "dask-kubernetes-operator", "crds")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "*.yaml"))):
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition")
    if not docs:
        raise FileNotFoundError(f"no CRDs under {root}: is dask-kubernetes installed?")
    return docs


def install_crds(api_client, timeout: float = 60) -> list[str]:
    """Create (or keep) the operator's CRDs and wait until the API serves them; their names."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for crd in crd_manifests():
        names.append(crd["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(crd)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not established within {timeout}s")
            time.sleep(0.2)
    return names


def uninstall_crds(api_client) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    for crd in crd_manifests():
        try:
            ext.delete_custom_resource_definition(crd["metadata"]["name"])
        except client.ApiException as exc:
            if exc.status != 404:
                raise


class DaskOperator:
    """The operator's controller as a subprocess watching ``namespace`` with ``kubeconfig`` (admin)."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: str | None = None):
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> DaskOperator:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--kubeconfig", self.kubeconfig, "--namespace", self.namespace],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()

    def __enter__(self) -> DaskOperator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    args = p.parse_args(argv)
    from kubernetes import client, config

    from .clusterdns import install_resolver
    from .kr8s_compat import patch_discovery, patch_read_retry

    patch_discovery()
    patch_read_retry()

    api = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    install_resolver(lambda: [api.api_client.sanitize_for_serialization(s)
                              for s in api.list_namespaced_service(args.namespace).items])
    # aiohttp (the controller's HTTP calls to the scheduler) resolves with aiodns when installed, past
    # socket.getaddrinfo: make it use the threaded resolver, which asks getaddrinfo.
    import aiohttp.connector
    import aiohttp.resolver

    aiohttp.resolver.DefaultResolver = aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver
    from kopf.cli import main as kopf_main

    sys.argv = ["kopf", "run", "--standalone", "--namespace", args.namespace, "-m",
                "dask_kubernetes.operator.controller", "-m", "jupyter_dask_kube.testing.daskoperator_phase"]
    kopf_main()


if __name__ == "__main__":
    main()
