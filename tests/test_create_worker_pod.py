"""KubernetesRuntime.create_worker_pod: the fast path of scale-up sends what the client's validating create sends.

The client (>= 35) validates every body into a V1Pod model and serializes it back. create_worker_pod checks
that once per ``shape`` (the manifests of one WorkerPodBuilder) and then calls the client's create without
it. These tests hold it to: the same objects stored by the API server, the validated call wherever the
client would rewrite or refuse the body, and the client's own error for a bad one.
"""
from __future__ import annotations

import copy

import pytest
import pytest_asyncio
from kubernetes.client import rest as k8s_rest

from jupyter_dask_kube import naming
from jupyter_dask_kube.objects import WorkerPodBuilder
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_pod

from test_objects import SEED

CLUSTER = "dask-alice-fa57c0ffee"
KW = {"cluster_name": CLUSTER, "username": "alice", "scheduler_address": f"tcp://{CLUSTER}:8786",
      "env": {"EXTRA": "1"}}


@pytest_asyncio.fixture
async def runtime(emulated_kubernetes_noproc):
    emu = emulated_kubernetes_noproc
    emu.clear_faults()
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    yield rt
    await rt.delete_pods(f"dask.org/cluster-name={CLUSTER}", grace_period_seconds=0)
    await rt.close()


def capture(rt: KubernetesRuntime, monkeypatch) -> list:
    """The bodies the client's REST layer is given for pod creates (after the client's own serialization)."""
    bodies = []
    original = rt.api_client.rest_client.request

    def request(method, url, *args, **kwargs):
        if method == "POST" and url.split("?")[0].endswith("/pods"):
            bodies.append(copy.deepcopy(kwargs.get("body")))
        return original(method, url, *args, **kwargs)

    monkeypatch.setattr(rt.api_client.rest_client, "request", request)
    return bodies


def comparable(pod: dict) -> dict:
    """A stored pod without what differs between any two pods (server-set fields, its own name)."""
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    for key in ("name", "uid", "resourceVersion", "creationTimestamp", "selfLink", "managedFields"):
        meta.pop(key, None)
    pod.pop("status", None)
    pod["spec"].pop("nodeName", None)
    for c in pod["spec"]["containers"]:
        c["args"] = [a for a in c.get("args", []) if not a.startswith(CLUSTER)]
    return pod


@pytest.mark.asyncio
async def test_fast_path_sends_and_stores_what_the_validated_create_does(runtime, monkeypatch):
    rt = runtime
    assert rt._create_pod_unchecked is not None, "kubernetes client without validate_call: nothing to test"
    unchecked_calls = []
    unchecked = rt._create_pod_unchecked
    rt._create_pod_unchecked = lambda *a, **k: (unchecked_calls.append(1), unchecked(*a, **k))[1]
    bodies = capture(rt, monkeypatch)
    builder = WorkerPodBuilder(load_pod(SEED), **KW)
    names = [naming.worker_pod_name(CLUSTER, s) for s in ("aaaa1", "bbbb2", "cccc3")]
    for n in names[:2]:
        assert await rt.create_worker_pod(builder(n), shape=builder) is None
    stored_by_create_pod = await rt.create_pod(builder(names[2]))  # the client's validating call
    assert len(unchecked_calls) == 2
    assert bodies == [builder(n) for n in names]  # the validating call sent the manifest as it is, too
    stored = [await rt.read_pod(n) for n in names]
    assert [p["metadata"]["name"] for p in stored] == names
    assert comparable(stored[0]) == comparable(stored[1]) == comparable(stored_by_create_pod)


@pytest.mark.asyncio
async def test_a_body_the_client_rewrites_takes_the_validated_call(runtime, monkeypatch):
    rt = runtime
    bodies = capture(rt, monkeypatch)
    tpl = load_pod(SEED)
    c = tpl["spec"]["containers"][0]
    c["image_pull_policy"] = "Never"  # the client's model turns this into imagePullPolicy
    c.pop("imagePullPolicy", None)
    builder = WorkerPodBuilder(tpl, **KW)
    name = naming.worker_pod_name(CLUSTER, "ddd44")
    await rt.create_worker_pod(builder(name), shape=builder)
    sent = bodies[0]["spec"]["containers"][0]
    assert sent.get("imagePullPolicy") == "Never" and "image_pull_policy" not in sent
    assert (await rt.read_pod(name))["spec"]["containers"][0]["imagePullPolicy"] == "Never"


@pytest.mark.asyncio
async def test_a_body_the_client_refuses_raises_the_clients_error(runtime, monkeypatch):
    rt = runtime
    bodies = capture(rt, monkeypatch)
    tpl = load_pod(SEED)
    tpl["spec"]["bogus"] = 1
    builder = WorkerPodBuilder(tpl, **KW)
    name = naming.worker_pod_name(CLUSTER, "eee55")
    with pytest.raises(Exception) as by_create_pod:
        await rt.create_pod(builder(name))
    with pytest.raises(type(by_create_pod.value)):
        await rt.create_worker_pod(builder(name), shape=builder)
    assert bodies == [] and await rt.read_pod(name) is None
