"""Why a cluster is stuck or failed reaches the user in the REST model, in Kubernetes' own words;
and the idle timeout ends clusters nobody uses. On the emulated Kubernetes API."""
import asyncio
import copy
import json
import time
import uuid

import pytest

from jupyter_dask_kube.objects import user_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

pytest_plugins = ["pytest_jupyter.jupyter_server"]

WORKER = {
    "kind": "Pod",
    "spec": {
        "containers": [
            {
                "name": "dask",
                "image": "ghcr.io/dask/dask:latest",
                "args": ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"],
            }
        ]
    },
}


def template(**changes):
    worker = copy.deepcopy(WORKER)
    worker["spec"]["containers"][0].update(changes)
    return {"workers": 1, "worker": worker}


def huge_workers():
    t = template(resources={"requests": {"memory": "900Gi", "cpu": "1"}, "limits": {"memory": "900Gi"}})
    # the scheduler must fit, so it gets its own modest pod
    t["scheduler"] = copy.deepcopy(WORKER)
    t["scheduler"]["spec"]["containers"][0]["args"] = ["dask-scheduler"]
    return t


TEMPLATES = {
    "tiny": template(),
    "huge": huge_workers(),
    "badimage": template(image="registry.example/doesnotexist:1"),
}


@pytest.fixture
def emu(emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    monkeypatch.setenv("JUPYTERHUB_USER", f"r{uuid.uuid4().hex[:8]}")
    yield emulated_kubernetes
    emulated_kubernetes.set_faults()


@pytest.fixture
def jp_server_config(emu):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": TEMPLATES, "idle_timeout": 4},
    }


async def call(jp_fetch, method, *path, body=None):
    kwargs = {"method": method, "raise_error": False}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    resp = await jp_fetch("dask-kube", "api", *path, **kwargs)
    return resp.code, (json.loads(resp.body) if resp.body else None)


async def wait_model(jp_fetch, cid, predicate, timeout=90, what="state"):
    deadline = time.monotonic() + timeout
    while True:
        code, model = await call(jp_fetch, "GET", "clusters", cid)
        if code == 200 and predicate(model):
            return model
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last {code} {model}")
        await asyncio.sleep(0.2)


async def test_unschedulable_workers_are_explained(jp_fetch, emu):
    code, model = await call(jp_fetch, "POST", "clusters", body={"template": "huge"})
    assert code == 201, model
    model = await wait_model(
        jp_fetch, model["id"], lambda m: "Unschedulable" in m["message"], what="the Unschedulable reason"
    )
    assert model["status"] == "starting"  # the scheduler runs; the worker cannot be placed
    assert "Insufficient memory" in model["message"]
    worker = next(p for p in model["pods"] if p["role"] == "worker")
    assert worker["phase"] == "Pending" and worker["reason"] == "Unschedulable"
    assert (await call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_image_pull_failure_is_explained(jp_fetch, emu):
    code, model = await call(jp_fetch, "POST", "clusters", body={"template": "badimage"})
    assert code == 201
    # the scheduler is derived from the worker template, so it cannot pull its image either
    model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", what="failed")
    assert "ImagePullBackOff" in model["message"] or "ErrImagePull" in model["message"]
    assert "doesnotexist" in model["message"]
    assert (await call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_rbac_refusal_is_explained_and_nothing_is_left(jp_fetch, emu):
    emu.set_faults(forbidden=[["create", "services"]])
    code, model = await call(jp_fetch, "POST", "clusters", body={"template": "tiny"})
    assert code == 201
    model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", what="failed")
    assert "forbidden" in model["message"] and "services" in model["message"]
    emu.set_faults()
    rt = KubernetesRuntime(kubeconfig=emu.kubeconfig)
    try:
        user = model["id"].split("-")[1]
        deadline = time.monotonic() + 30
        while await rt.list_pods(user_selector(user)):  # the half-made scheduler pod is removed
            assert time.monotonic() < deadline, "scheduler pod of a failed create left behind"
            await asyncio.sleep(0.2)
    finally:
        await rt.close()
    assert (await call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_idle_cluster_shuts_itself_down(jp_fetch, emu):
    code, model = await call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 0})
    assert code == 201
    cid = model["id"]
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", what="running")
    # idle_timeout is 4 s: the scheduler exits by itself, the manager forgets it and removes its pods
    deadline = time.monotonic() + 60
    while (await call(jp_fetch, "GET", "clusters", cid))[0] != 404:
        assert time.monotonic() < deadline, "idle cluster was not shut down"
        await asyncio.sleep(0.5)
    code, data = await call(jp_fetch, "GET", "clusters")
    assert cid not in [c["id"] for c in data["clusters"]]
