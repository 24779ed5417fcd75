"""A pod that waits for a node is not a failed start: the cluster stays pending with the reason shown
("waiting for a node: 0/1 nodes are available: ..."), until the admin's start timeout, or at once when the
autoscaler says no node will come (its NotTriggerScaleUp event). On the emulated Kubernetes API."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import pytest_asyncio

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.bodies import CreateRequest
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.objects import cluster_selector, user_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_template

from helpers import no_pods, small_pod, wait_until

HUGE = {"requests": {"cpu": "1000", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


def huge_pod():
    return small_pod(resources=HUGE)


@pytest.fixture
def emu(emulated_kubernetes_noproc):
    emulated_kubernetes_noproc.clear_faults()
    return emulated_kubernetes_noproc


@pytest_asyncio.fixture
async def runtime(emu):
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    yield rt
    await rt.close()


def post_not_trigger_scale_up(api, namespace: str, pod_name: str, message: str):
    """What cluster-autoscaler posts when no node group it can grow would fit the pod."""
    api.create_namespaced_event(namespace, {
        "metadata": {"generateName": f"{pod_name}."},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod_name, "apiVersion": "v1"},
        "reason": "NotTriggerScaleUp", "message": message, "type": "Normal", "count": 1,
        "source": {"component": "cluster-autoscaler"},
        "firstTimestamp": "2026-12-04T10:00:00Z", "lastTimestamp": "2026-12-04T10:00:00Z",
    })


@pytest.mark.asyncio
async def test_unschedulable_scheduler_waits_until_start_timeout(emu, runtime):
    cluster = KubeCluster(huge_pod(), runtime=runtime, asynchronous=True, start_timeout=4, scheduler_timeout=1)
    t = time.monotonic()
    start = asyncio.ensure_future(cluster._start())
    try:
        waiting = await wait_until(lambda: cluster.waiting, 30, what="the waiting reason")
        assert waiting.startswith("waiting for a node: 0/1 nodes are available: 1 Insufficient cpu."), waiting
        assert waiting.endswith(f"(scheduler pod {cluster.name}-scheduler)")
        with pytest.raises(RuntimeError) as info:
            await asyncio.wait_for(start, 60)
        elapsed = time.monotonic() - t
        message = str(info.value.__cause__)
        # not the scheduler_timeout (1 s): a pod waiting for a node has the start timeout
        assert elapsed >= 4, elapsed
        assert message.startswith("Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."), message
        assert f"scheduler pod {cluster.name}-scheduler" in message and "within 4s" in message
        await wait_until(lambda: no_pods(runtime, cluster_selector(cluster.name)), 30, what="pods removed")
        print(f"\n[Unschedulable, start timeout 4 s] failed after {elapsed:.1f}s: {message}")
    finally:
        start.cancel()
        await cluster.close()


@pytest.mark.asyncio
async def test_not_trigger_scale_up_fails_at_once(emu, runtime):
    api = emu.api(no_faults=True)
    cluster = KubeCluster(huge_pod(), runtime=runtime, asynchronous=True, start_timeout=300)
    start = asyncio.ensure_future(cluster._start())
    try:
        await wait_until(lambda: cluster.waiting, 30, what="the waiting reason")
        t = time.monotonic()
        await asyncio.to_thread(post_not_trigger_scale_up, api, emu.namespace, f"{cluster.name}-scheduler",
                                "pod didn't trigger scale-up: 1 Insufficient cpu")
        with pytest.raises(RuntimeError) as info:
            await asyncio.wait_for(start, 60)
        elapsed = time.monotonic() - t
        message = str(info.value.__cause__)
        assert message == (f"NotTriggerScaleUp: pod didn't trigger scale-up: 1 Insufficient cpu "
                           f"(scheduler pod {cluster.name}-scheduler)"), message
        assert elapsed < 40, elapsed  # one look at the events every 5 s: far from the 300 s timeout
        await wait_until(lambda: no_pods(runtime, cluster_selector(cluster.name)), 30, what="pods removed")
        print(f"\n[NotTriggerScaleUp] failed {elapsed:.1f}s after the event: {message}")
    finally:
        start.cancel()
        await cluster.close()


@pytest.mark.asyncio
async def test_manager_shows_pending_with_reason_then_the_autoscalers_refusal(kube_target):
    """Through the manager (what the REST API serves), on every Kubernetes target: pending with "waiting for
    a node: ...", then failed with the autoscaler's words first; nothing left."""
    user = f"u{uuid.uuid4().hex[:6]}"
    emu = kube_target
    api = emu.api(no_faults=True)
    runtime = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    manager = ClusterManager(runtime=runtime, username=user, start_timeout=300,
                             templates=[load_template({"workers": 1, "worker": huge_pod()}, name="huge")])
    try:
        model = await manager.create(CreateRequest(template="huge"))
        rec = manager.records[model["id"]]

        def pending_with_reason():
            m = manager.model(rec)
            return m if m["status"] == "pending" and m["message"].startswith("waiting for a node:") else None

        m = await wait_until(pending_with_reason, 30, what="pending with the waiting reason")
        assert m["message"] == ("waiting for a node: 0/1 nodes are available: 1 Insufficient cpu. "
                                f"(scheduler pod {rec.id}-scheduler)"), m["message"]
        assert rec.state == "creating"
        await asyncio.to_thread(post_not_trigger_scale_up, api, emu.namespace, f"{rec.id}-scheduler",
                                "pod didn't trigger scale-up: 2 max node group size reached")
        m = await wait_until(lambda: manager.model(rec)["status"] == "failed" and manager.model(rec), 30, what="failed")
        assert m["message"].startswith("NotTriggerScaleUp: pod didn't trigger scale-up: 2 max node group size reached"), m
        await wait_until(lambda: no_pods(runtime, user_selector(user)), 30, what="pods removed")
    finally:
        await manager.close(detach=False)
        await runtime.close()


# -- with the node agent playing cluster-autoscaler ----------------------------------------------------------
def needs_cpu(cpu: str):
    return small_pod(resources={"requests": {"cpu": cpu, "memory": "1Gi"}, "limits": {"cpu": cpu, "memory": "1Gi"}})


@pytest.fixture(scope="module")
def autoscaled():
    """One 2-core node; the agent adds an 8-core node 5 s after a pod that would fit there asks for one."""
    from jupyter_dask_kube.testing import EmulatedKubernetes

    with EmulatedKubernetes(processes=True, nodes=["cpu=2,memory=8Gi,name=small"],
                            autoscale=("cpu=8,memory=16Gi", 5.0)) as emu:
        yield emu


@pytest.mark.asyncio
async def test_cluster_waits_for_the_autoscaled_node_then_comes_up(autoscaled):
    rt = KubernetesRuntime(autoscaled.namespace, kubeconfig=autoscaled.kubeconfig)
    cluster = KubeCluster(needs_cpu("3"), runtime=rt, n_workers=1, asynchronous=True, start_timeout=120)
    t = time.monotonic()
    start = asyncio.ensure_future(cluster._start())
    try:
        waiting = await wait_until(lambda: cluster.waiting, 30, what="the waiting reason")
        assert waiting.startswith("waiting for a node: 0/1 nodes are available: 1 Insufficient cpu."), waiting
        await asyncio.wait_for(start, 120)
        elapsed = time.monotonic() - t
        assert elapsed >= 5  # the node came after the autoscaler's delay; the start waited for it
        sched = await rt.read_pod(f"{cluster.name}-scheduler")
        assert sched["spec"]["nodeName"].startswith("autoscaled"), sched["spec"].get("nodeName")
        await cluster._wait_for_workers(1, timeout=120)  # the worker waits for (and gets) a node too
        print(f"\n[autoscaler] cluster up {elapsed:.1f}s after create (node added after 5 s)")
    finally:
        start.cancel()
        await cluster.close()
        await rt.close()


@pytest.mark.asyncio
async def test_agents_not_trigger_scale_up_fails_the_start_at_once(autoscaled):
    rt = KubernetesRuntime(autoscaled.namespace, kubeconfig=autoscaled.kubeconfig)
    cluster = KubeCluster(needs_cpu("32"), runtime=rt, asynchronous=True, start_timeout=300)
    t = time.monotonic()
    try:
        with pytest.raises(RuntimeError) as info:
            await asyncio.wait_for(cluster._start(), 60)
        elapsed = time.monotonic() - t
        message = str(info.value.__cause__)
        assert message.startswith("NotTriggerScaleUp: pod didn't trigger scale-up"), message
        assert "Insufficient cpu" in message and message.endswith(f"(scheduler pod {cluster.name}-scheduler)")
        assert elapsed < 40, elapsed  # far from the 300 s start timeout
        await wait_until(lambda: no_pods(rt, cluster_selector(cluster.name)), 30, what="pods removed")
    finally:
        await cluster.close()
        await rt.close()
