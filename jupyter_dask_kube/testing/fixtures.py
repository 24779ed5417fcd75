"""pytest fixtures for an emulated cluster (register with ``pytest_plugins = ["jupyter_dask_kube.testing.fixtures"]``).

- ``emulated_kubernetes`` (session): an :class:`EmulatedKubernetes` whose pods run as processes. When the
  environment variable ``JDK_TEST_REAL_KUBECONFIG`` names a real cluster's kubeconfig, an object with the same
  attributes pointing at that cluster is yielded instead, so the same test bodies run there.
- ``emulated_kubernetes_noproc`` (session): the no-process mode (pods Running at once, nothing runs).
- ``kubeconfig_env`` (function): ``KUBECONFIG`` set to the emulated cluster's kubeconfig for one test.
- :func:`kube_api`: a ``kubernetes.client.CoreV1Api`` for such an object.
"""
from __future__ import annotations

import os

import pytest

from .server import EmulatedKubernetes

__all__ = ["RealKubernetes", "kube_api", "emulated_kubernetes", "emulated_kubernetes_noproc", "kubeconfig_env",
           "real_control_plane"]


class RealKubernetes:
    """A real cluster presented like :class:`EmulatedKubernetes` (no faults, no pid)."""

    processes = True

    def __init__(self, kubeconfig: str):
        from kubernetes import config

        self.kubeconfig = kubeconfig
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        self.namespace = (active.get("context") or {}).get("namespace") or "default"
        client = config.new_client_from_config(config_file=kubeconfig)
        self.url = client.configuration.host
        client.close()
        self.pid = None

    def set_faults(self, *args, **kwargs):
        pytest.skip("fault injection needs the emulated cluster")

    clear_faults = compact = stats = evict = oom_kill = set_faults

    def api(self, no_faults: bool = False):
        return kube_api(self)

    def stop(self):
        pass


def kube_api(emu, no_faults: bool = False):
    """A ``kubernetes.client.CoreV1Api`` configured from ``emu.kubeconfig`` (nothing global is touched).
    ``no_faults``: its requests carry the emulator's fault-exemption header."""
    from kubernetes import client, config

    from .emulator import NO_FAULTS_HEADER

    api_client = config.new_client_from_config(config_file=emu.kubeconfig)
    if no_faults:
        api_client.set_default_header(NO_FAULTS_HEADER, "1")
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def emulated_kubernetes():
    real = os.environ.get("JDK_TEST_REAL_KUBECONFIG")
    if real:
        yield RealKubernetes(real)
        return
    emu = EmulatedKubernetes(processes=True)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def emulated_kubernetes_noproc():
    emu = EmulatedKubernetes(processes=False)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubeconfig_env(emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    return emulated_kubernetes.kubeconfig


# --- real control plane (helper A) ---------------------------------------------------------------------------
# Building kube-apiserver takes minutes, so pytest never builds it: `make kube-binaries` does (make test and
# .ci/run run it first). Missing binaries skip this tier locally, and fail it in CI.
@pytest.fixture(scope="session")
def real_control_plane():
    """A :class:`~jupyter_dask_kube.testing.controlplane.RealControlPlane` (etcd, kube-apiserver,
    kube-controller-manager v1.20.2 on 127.0.0.1) with a node agent running pods as processes, for the
    whole session."""
    from .controlplane import RealControlPlane, missing

    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the real control plane cannot start: {why}", pytrace=False)
        pytest.skip(why)
    with RealControlPlane(node_agent=True) as cp:
        yield cp
