"""kr8s (dask-kubernetes' Kubernetes client) against the real tier's kube-apiserver v1.20.

kr8s finds a resource named by a string ("pods", "services", ...) through API discovery and builds its type
name from the resource's ``singularName``. kube-apiserver before 1.27 serves built-in resources with an empty
``singularName`` (``{"name": "pods", "singularName": "", "kind": "Pod", ...}``), so kr8s 0.20.x (which
supports Kubernetes 1.28 and later) looks "pods" up as "/v1", finds no class, and makes a nameless one:
``Service.ready()`` then finds that the pods it listed are not ``Pod`` objects and raises
``TypeError: Unexpected type <class 'list'> returned from API`` -- ``KubeCluster()`` fails while it waits for
the scheduler Service. Every kr8s release from 0.17 to 0.20.15 has that lookup (upstream: kr8s-org/kr8s#651,
closed unmerged; kopf has the same fallback for K3s, nolar/kopf#629).

``patch_discovery()`` makes kr8s in this process see what kube-apiserver 1.27+ serves: an empty singular
name filled with the lowercased kind. Test processes only (the tests' ``KubeCluster`` and the operator's
controller); nothing in the package imports this.
"""
from __future__ import annotations

_PATCHED = "_jdk_singular_names_filled"


def fill_singular_names(resources: list[dict]) -> list[dict]:
    """API resources (kr8s' discovery list) with every empty ``singularName`` set to the lowercased kind,
    as kube-apiserver 1.27+ serves it (pure; new dicts, the input is not changed)."""
    return [{**r, "singularName": r.get("singularName") or str(r.get("kind", "")).lower()} for r in resources]


def patch_discovery() -> None:
    """Make kr8s' API discovery (``Api.async_api_resources_uncached``; the cached lookup goes through it)
    fill empty singular names in this process. Idempotent."""
    from kr8s._api import Api

    original = Api.async_api_resources_uncached
    if getattr(original, _PATCHED, False):
        return

    async def async_api_resources_uncached(self) -> list[dict]:
        return fill_singular_names(await original(self))

    setattr(async_api_resources_uncached, _PATCHED, True)
    Api.async_api_resources_uncached = async_api_resources_uncached


_RETRYING = "_jdk_reads_retried"


def patch_read_retry(attempts: int = 3) -> None:
    """Make kr8s retry an idempotent request (GET) whose kept-alive connection the API server had closed:
    httpx reports that as ``ReadError``/``RemoteProtocolError`` and, unlike the official client's urllib3, does
    not retry it, so one stale pooled connection fails ``KubeCluster()`` while it polls the DaskCluster.
    Test processes only, as :func:`patch_discovery`. Idempotent."""
    import httpx
    from kr8s._api import Api

    original = Api._create_session
    if getattr(original, _RETRYING, False):
        return

    async def _create_session(self) -> None:
        await original(self)
        request = self._session.request

        async def retrying(*args, **kwargs):
            method = kwargs.get("method", args[0] if args else "")
            for attempt in range(attempts):
                try:
                    return await request(*args, **kwargs)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    if str(method).upper() != "GET" or attempt == attempts - 1:
                        raise

        self._session.request = retrying

    setattr(_create_session, _RETRYING, True)
    Api._create_session = _create_session
