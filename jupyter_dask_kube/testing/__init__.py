"""An emulated Kubernetes cluster: an HTTP API server on 127.0.0.1 plus a local kubelet.

The project's Kubernetes code (the official ``kubernetes`` client over HTTP, through a kubeconfig) is tested
against it for real, without a cluster; admins try templates offline with ``python -m jupyter_dask_kube.testing``.

- :class:`EmulatedKubernetes`: start one (subprocess or thread), ``.url``, ``.kubeconfig``, ``.namespace``,
  ``.pid``, ``set_faults()``, ``compact()``, ``stop()``.
- :class:`KubeEmulator`: the API server (kmock's KubernetesEmulator extended); :class:`NodeAgent`: scheduler,
  kubelet and kube-proxy for any API server, over HTTP through a kubeconfig; :func:`serve`: the emulator on a
  port in the running event loop, with a node agent pointed at it.
- :class:`EmulatorFaults`: injected errors, latency, RBAC denials, quota.
- pytest fixtures: ``pytest_plugins = ["jupyter_dask_kube.testing.fixtures"]``.
"""
from .emulator import ApiError, EmulatorFaults, KubeEmulator
from .nodeagent import Autoscaler, NodeAgent, default_image_pull_fail
from .scheduling import NodeSpec, parse_node
from .server import EmulatedKubernetes, ServerInfo, serve, write_kubeconfig

__all__ = ["ApiError", "EmulatedKubernetes", "EmulatorFaults", "KubeEmulator", "NodeAgent", "Autoscaler", "NodeSpec",
           "ServerInfo", "default_image_pull_fail", "parse_node", "serve", "write_kubeconfig"]
