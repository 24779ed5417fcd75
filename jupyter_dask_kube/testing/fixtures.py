"""pytest fixtures for an emulated cluster (register with ``pytest_plugins = ["jupyter_dask_kube.testing.fixtures"]``).

- ``emulated_kubernetes`` (session): an :class:`EmulatedKubernetes` whose pods run as processes. When the
  environment variable ``JDK_TEST_REAL_KUBECONFIG`` names a real cluster's kubeconfig, an object with the same
  attributes pointing at that cluster is yielded instead, so the same test bodies run there.
- ``emulated_kubernetes_noproc`` (session): the no-process mode (pods Running at once, nothing runs).
- ``kubeconfig_env`` (function): ``KUBECONFIG`` set to the emulated cluster's kubeconfig for one test.
- ``kube_target`` (function, parametrized): the same test body on every Kubernetes target: ``emulator``, ``real``
  (a kube-apiserver built from source, with the node agent: needs ``make kube-binaries``) and, when
  ``JDK_TEST_REAL_KUBECONFIG`` is set, ``kubeconfig`` (the cluster it names). Each target has ``kubeconfig``,
  ``namespace``, ``url``, ``pid`` (the process its pods' processes run under; None when not on this machine),
  ``api()`` and the fault methods (which skip the test where faults cannot be injected).
- :func:`kube_api`: a ``kubernetes.client.CoreV1Api`` for such an object.
"""
from __future__ import annotations

import os

import pytest

from .server import EmulatedKubernetes

__all__ = ["BACKEND_PARAMS", "KUBE_TARGETS", "backend_target", "RealKubernetes", "kube_api", "kube_target", "kube_target_for", "emulated_kubernetes",
           "emulated_kubernetes_noproc", "kubeconfig_env", "real_control_plane"]


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


# --- Kubernetes targets: one test body, three API servers (helper B) -----------------------------------------
#: Targets ``kube_target`` runs a test on.
KUBE_TARGETS = ["emulator", "real"] + (["kubeconfig"] if os.environ.get("JDK_TEST_REAL_KUBECONFIG") else [])


class _OnRealControlPlane(RealKubernetes):
    """The source-built control plane presented like :class:`EmulatedKubernetes`: its node agent runs in this
    process (a thread), so ``pid`` is this process."""

    def __init__(self, plane):
        self.plane = plane
        self.kubeconfig = plane.kubeconfig
        self.namespace = plane.namespace
        self.url = plane.url
        self.pid = os.getpid()
        self.processes = True

    def in_namespace(self, namespace: str) -> _OnRealControlPlane:
        """The same plane seen from a namespace of its own (created; admin kubeconfig whose context uses it),
        for tests that act on a whole namespace."""
        import yaml

        self.plane.create_namespace(namespace)
        with open(self.plane.kubeconfig) as f:
            config = yaml.safe_load(f)
        for ctx in config.get("contexts") or []:
            ctx.setdefault("context", {})["namespace"] = namespace
        path = os.path.join(os.path.dirname(self.plane.kubeconfig), f"admin-{namespace}.kubeconfig")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        other = _OnRealControlPlane(self.plane)
        other.kubeconfig, other.namespace = path, namespace
        return other


@pytest.fixture(scope="session")
def emulated_kubernetes_only(emulated_kubernetes):
    """The emulator, even when ``JDK_TEST_REAL_KUBECONFIG`` points ``emulated_kubernetes`` elsewhere."""
    if isinstance(emulated_kubernetes, EmulatedKubernetes):
        yield emulated_kubernetes
        return
    with EmulatedKubernetes(processes=True) as emu:
        yield emu


def kube_target_for(request, target: str):
    """The object for one of :data:`KUBE_TARGETS` (fixtures are made on first use, once per session)."""
    if target == "emulator":
        return request.getfixturevalue("emulated_kubernetes_only")
    if target == "real":
        plane = request.getfixturevalue("real_control_plane")
        dead = plane.dead()
        if dead:  # say why, rather than let every later test time out against a dead API server
            pytest.fail("the session's real control plane died:\n" + "\n".join(dead), pytrace=False)
        return _OnRealControlPlane(plane)
    if target == "kubeconfig":
        real = os.environ.get("JDK_TEST_REAL_KUBECONFIG")
        if not real:
            pytest.skip("JDK_TEST_REAL_KUBECONFIG is not set")
        target = RealKubernetes(real)
        target.pid = None
        return target
    raise ValueError(f"unknown Kubernetes target {target!r}")


#: Backend parameters for tests written for both runtimes: "local", then "kubernetes" (on the emulator) and
#: "kubernetes-<target>" for every other Kubernetes target.
BACKEND_PARAMS = ["local", "kubernetes", *(f"kubernetes-{t}" for t in KUBE_TARGETS if t != "emulator")]


def backend_target(request, param: str | None = None):
    """For a test parametrized over :data:`BACKEND_PARAMS`: None for "local", else its Kubernetes target."""
    param = param or request.node.callspec.params["backend"]
    if param == "local":
        return None
    return kube_target_for(request, param.split("-", 1)[1] if "-" in param else "emulator")


@pytest.fixture(params=KUBE_TARGETS)
def kube_target(request):
    return kube_target_for(request, request.param)


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
