"""The two test-tier shims that let dask-kubernetes' KubeCluster and its controller run against kube-apiserver
v1.20 (testing/kr8s_compat.py, testing/daskoperator_phase.py): pure parts, and the kr8s lookup they fix."""
import asyncio

import pytest

pytest.importorskip("kr8s")

from jupyter_dask_kube.testing.kr8s_compat import fill_singular_names, patch_discovery  # noqa: E402

# kube-apiserver 1.20's discovery of two built-ins and a CRD (singularName empty for built-ins)
OLD_DISCOVERY = [
    {"version": "v1", "name": "pods", "singularName": "", "namespaced": True, "kind": "Pod", "shortNames": ["po"]},
    {"version": "apps/v1", "name": "deployments", "singularName": "", "namespaced": True, "kind": "Deployment"},
    {"version": "kubernetes.dask.org/v1", "name": "daskclusters", "singularName": "daskcluster",
     "namespaced": True, "kind": "DaskCluster"},
]


def test_empty_singular_names_become_the_lowercased_kind():
    filled = fill_singular_names(OLD_DISCOVERY)
    assert [r["singularName"] for r in filled] == ["pod", "deployment", "daskcluster"]
    assert OLD_DISCOVERY[0]["singularName"] == ""  # the input is left alone


@pytest.mark.parametrize("patched, expected", [(False, "/v1"), (True, "pod/v1")])
def test_kr8s_looks_pods_up_by_singular_name(monkeypatch, patched, expected):
    """Without the shim kr8s 0.20 turns "pods" into "/v1" on an old API server (what made KubeCluster fail)."""
    from kr8s._api import Api

    monkeypatch.setattr(Api, "async_api_resources_uncached", lambda self: _resources())
    if patched:
        patch_discovery()
        patch_discovery()  # idempotent
    api = Api.__new__(Api)  # no connection: lookup_kind only reads the (replaced) discovery
    kind, plural, namespaced = asyncio.run(api.async_lookup_kind("pods", skip_cache=True))
    assert (kind, plural, namespaced) == (expected, "pods", True)


async def _resources():
    return [dict(r) for r in OLD_DISCOVERY]


def test_phase_for_the_scheduler_service():
    pytest.importorskip("kopf")
    from jupyter_dask_kube.testing.daskoperator_phase import phase_for_service

    assert phase_for_service(None) is None
    assert phase_for_service({"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {}}}) == "Running"
    assert phase_for_service({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}}) == "Pending"
    assert phase_for_service({"spec": {"type": "LoadBalancer"},
                              "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}}) == "Running"


@pytest.mark.asyncio
async def test_read_retry_repeats_a_get_on_a_stale_connection_only(monkeypatch):
    """A GET whose kept-alive connection was closed is sent again; a POST is not (it may have been applied)."""
    import httpx
    from kr8s._api import Api

    from jupyter_dask_kube.testing.kr8s_compat import patch_read_retry

    calls = []

    async def fake_original(self):
        async def request(*args, **kwargs):
            calls.append(kwargs["method"])
            if len(calls) == 1 or kwargs["method"] == "POST":
                raise httpx.ReadError("stale connection")
            return "answer"
        self._session = type("S", (), {"request": staticmethod(request)})()

    monkeypatch.setattr(Api, "_create_session", fake_original)
    patch_read_retry()
    patch_read_retry()  # idempotent
    api = object.__new__(Api)
    await Api._create_session(api)
    assert await api._session.request(method="GET", url="/x") == "answer" and calls == ["GET", "GET"]
    with pytest.raises(httpx.ReadError):
        await api._session.request(method="POST", url="/x")
    assert calls == ["GET", "GET", "POST"]
