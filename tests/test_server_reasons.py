"""Why a cluster is stuck or failed reaches the user in the REST model, in Kubernetes' own words;
and the idle timeout ends clusters nobody uses. On the emulated Kubernetes API."""
import uuid

import pytest

from jupyter_dask_kube.objects import user_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import no_pods, rest_call, small_pod, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

MODEL_WAIT = 90  # s for a cluster to reach the state a test waits for


def template(**changes):
    return {"workers": 1, "worker": small_pod(**changes)}


def huge_workers():
    t = template(resources={"requests": {"memory": "900Gi", "cpu": "1"}, "limits": {"memory": "900Gi"}})
    # the scheduler must fit, so it gets its own modest pod
    t["scheduler"] = small_pod(args=["dask-scheduler"])
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


async def test_unschedulable_workers_are_explained(jp_fetch, emu):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "huge"})
    assert code == 201, model
    model = await wait_model(
        jp_fetch, model["id"], lambda m: m["message"].startswith("waiting for a node:"), MODEL_WAIT,
        what="the Unschedulable reason"
    )
    assert model["status"] == "starting"  # the scheduler runs; the worker waits for a node (not a failure)
    assert "Insufficient memory" in model["message"] and "(worker pod " in model["message"]
    worker = next(p for p in model["pods"] if p["role"] == "worker")
    assert worker["phase"] == "Pending" and worker["reason"] == "Unschedulable"
    assert (await rest_call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_image_pull_failure_is_explained(jp_fetch, emu):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "badimage"})
    assert code == 201
    # the scheduler is derived from the worker template, so it cannot pull its image either
    model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", MODEL_WAIT, what="failed")
    assert "ImagePullBackOff" in model["message"] or "ErrImagePull" in model["message"]
    assert "doesnotexist" in model["message"]
    assert (await rest_call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_rbac_refusal_is_explained_and_nothing_is_left(jp_fetch, emu):
    emu.set_faults(forbidden=[["create", "services"]])
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny"})
    assert code == 201
    model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", MODEL_WAIT, what="failed")
    assert "forbidden" in model["message"] and "services" in model["message"]
    emu.set_faults()
    rt = KubernetesRuntime(kubeconfig=emu.kubeconfig)
    try:
        user = model["id"].split("-")[1]
        await wait_until(lambda: no_pods(rt, user_selector(user)), 30, interval=0.2,
                         what="the half-made scheduler pod of a failed create to be removed")
    finally:
        await rt.close()
    assert (await rest_call(jp_fetch, "DELETE", "clusters", model["id"]))[0] == 204


async def test_idle_cluster_shuts_itself_down(jp_fetch, emu):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 0})
    assert code == 201
    cid = model["id"]
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", MODEL_WAIT, what="running")
    # idle_timeout is 4 s: the scheduler exits by itself, the manager forgets it and removes its pods
    async def gone():
        return (await rest_call(jp_fetch, "GET", "clusters", cid))[0] == 404

    await wait_until(gone, 60, interval=0.5, what="the idle cluster to shut down")
    code, data = await rest_call(jp_fetch, "GET", "clusters")
    assert cid not in [c["id"] for c in data["clusters"]]
