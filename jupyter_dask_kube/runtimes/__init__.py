"""Pod runtimes: one interface (base.PodRuntime), one file per way of running pods."""
from __future__ import annotations

import dask.config

from .base import PodRuntime, RuntimeAPIError, WatchEvent

__all__ = ["PodRuntime", "RuntimeAPIError", "WatchEvent", "make_runtime", "resolve_backend"]

BACKENDS = ("kubernetes", "local")


def resolve_backend(backend: str | None = None) -> str:
    """``kubernetes`` | ``local``; ``auto``/None asks whether a Kubernetes API is configured (in-cluster or kubeconfig)."""
    from .kubernetes import kubernetes_available

    backend = backend or dask.config.get("kubernetes.backend", "auto") or "auto"
    if backend == "auto":
        return "kubernetes" if kubernetes_available() else "local"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of kubernetes, local, auto; not {backend!r}")
    return backend


def make_runtime(backend: str | None = None, namespace: str | None = None, **kwargs) -> PodRuntime:
    backend = resolve_backend(backend)
    namespace = namespace or dask.config.get("kubernetes.namespace", None)
    if namespace and "{username}" in namespace:  # a namespace per user ("dask-{username}")
        from ..naming import current_user, format_namespace

        namespace = format_namespace(namespace, current_user())
    if backend == "kubernetes":
        from .kubernetes import KubernetesRuntime

        return KubernetesRuntime(namespace, **kwargs)
    from .local import LocalRuntime

    return LocalRuntime(namespace or "default", **kwargs)
