"""The operator backend where the Dask operator's CRDs are not installed (the emulated API serves none):
every answer is a 503 with the reason, nothing is created; ``auto`` does not pick the operator there."""
from __future__ import annotations

import pytest

from helpers import rest_call, tiny_template

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(params=["operator", "auto"])
def backend(request):
    return request.param


@pytest.fixture
def jp_server_config(emulated_kubernetes_only, backend, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes_only.kubeconfig)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    return {"ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
            "DaskKube": {"backend": backend, "templates": {"tiny": tiny_template()}}}


async def test_missing_crds(jp_fetch, backend, emulated_kubernetes_only):
    code, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    if backend == "auto":  # falls back to our own pods
        assert status["backend"] == "kubernetes"
        return
    assert status["backend"] == "operator"
    assert any("custom resources" in p and "not installed" in p for p in status["problems"]), status
    code, err = await rest_call(jp_fetch, "GET", "clusters")
    assert code == 503 and "not installed" in err["message"]
    before = len(emulated_kubernetes_only.api().list_namespaced_pod(emulated_kubernetes_only.namespace).items)
    code, err = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1})
    assert code == 503 and "not installed" in err["message"]
    after = len(emulated_kubernetes_only.api().list_namespaced_pod(emulated_kubernetes_only.namespace).items)
    assert after == before
    code, err = await rest_call(jp_fetch, "POST", "clusters", body={"template": "nope"})
    assert code == 404
