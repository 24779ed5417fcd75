"""Environment parity: under a hub (JUPYTER_IMAGE_SPEC set) the built-in templates run the notebook's image,
on the emulated Kubernetes API through a real jupyter_server; admin templates keep theirs."""
import uuid

import pytest

from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.parity import notebook_image, with_image
from jupyter_dask_kube.templates import load_template

from helpers import rest_call, small_pod, wait_model

pytest_plugins = ["pytest_jupyter.jupyter_server"]
IMAGE = "registry.example/jupyter/user-env:2026.12"


def test_with_image_and_the_environment():
    t = load_template({"worker": small_pod(), "scheduler": small_pod(args=["dask-scheduler"]),
                       "options": [{"name": "image", "type": "select", "default": "a:1", "choices": ["a:1", IMAGE]}]},
                      name="t")
    u = with_image(t, IMAGE)
    assert u.worker["spec"]["containers"][0]["image"] == IMAGE and u.scheduler["spec"]["containers"][0]["image"] == IMAGE
    assert u.options[0].default == IMAGE
    assert t.worker["spec"]["containers"][0]["image"] == "ghcr.io/dask/dask:latest"  # the original is untouched
    assert notebook_image({"JUPYTER_IMAGE_SPEC": IMAGE, "JUPYTER_IMAGE": "x"}) == IMAGE
    assert notebook_image({"JUPYTER_IMAGE": IMAGE}) == IMAGE and notebook_image({}) is None


@pytest.fixture
def jp_server_config(emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    monkeypatch.setenv("JUPYTERHUB_USER", f"p{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", IMAGE)
    return {"ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}}, "DaskKube": {"backend": "kubernetes"}}


async def test_builtin_template_runs_the_notebook_image(jp_fetch, emulated_kubernetes):
    code, data = await rest_call(jp_fetch, "GET", "templates", expect=200)
    assert [(t["name"], t["worker"]["image"]) for t in data["templates"]] == [("small", IMAGE)]
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 1, "options": {"cores": 1}}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, what="1 worker")
    api = emulated_kubernetes.api()
    images = {p.metadata.name: p.spec.containers[0].image
              for p in api.list_namespaced_pod(emulated_kubernetes.namespace, label_selector=cluster_selector(cid)).items}
    assert len(images) == 2 and set(images.values()) == {IMAGE}, images
    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
