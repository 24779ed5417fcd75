"""Prove it: pod faults, on the emulated Kubernetes API with real dask processes.

Worker pods are deleted under adapt (the minimum is kept), evicted and OOM-killed (replaced; the reason is
seen), made too small for their memory limit (OOMKilled reaches cluster.problem and the REST model), crash
forever (the guard stops replacing them after a bounded number of pods), and the scheduler pod is lost (the
cluster is marked failed with "Scheduler lost" and its workers and Service go: by ownerReference garbage
collection and by the cluster's own cleanup, each proven alone).
"""
import asyncio
import json
import logging
import time
import uuid

import pytest
from distributed.core import Status

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.bodies import CreateRequest
from jupyter_dask_kube.cluster import FAILURE_WINDOW, MAX_FAILURES
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.podstatus import is_terminal, pod_summary
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_template

from helpers import Pending, small_pod, wait_until

pytestmark = pytest.mark.asyncio





SCHEDULER = small_pod(args=["dask-scheduler"])


@pytest.fixture
def emu(emulated_kubernetes):
    emulated_kubernetes.clear_faults()
    yield emulated_kubernetes
    emulated_kubernetes.clear_faults()


@pytest.fixture
def runtime(emu):
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    yield rt
    loop = asyncio.new_event_loop()
    loop.run_until_complete(rt.close())
    loop.close()


@pytest.fixture
def check(emu):
    """A second client: what the API really holds."""
    return emu.api(no_faults=True)


def user():
    return f"p{uuid.uuid4().hex[:6]}"




async def api_objects(check, namespace, selector):
    def read():
        pods = json.loads(check.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False).data)
        svcs = json.loads(check.list_namespaced_service(namespace, label_selector=selector,
                                                        _preload_content=False).data)
        return {p["metadata"]["name"]: p for p in pods["items"]}, [s["metadata"]["name"] for s in svcs["items"]]
    return await asyncio.to_thread(read)


def is_worker(pod):
    return pod["metadata"].get("labels", {}).get("dask.org/component") == "worker"


def live(pod):
    return not pod["metadata"].get("deletionTimestamp") and not is_terminal(pod)


async def live_workers(check, namespace, name):
    pods, _ = await api_objects(check, namespace, cluster_selector(name))
    return {n for n, p in pods.items() if is_worker(p) and live(p)}


def connected(cluster):
    return {w.get("name") for w in (cluster.scheduler_info or {}).get("workers", {}).values()}


class WorkerLog:
    """Every worker pod event the cluster's pod cache saw: pods created, and each pod's (phase, reason)."""

    def __init__(self, cache, cluster_name):
        self.name = cluster_name
        self.added: list[str] = []
        self.states: dict[str, list[tuple[str, str, str]]] = {}
        self._unsub = cache.subscribe(self._on)

    def _on(self, etype, pod):
        if not is_worker(pod) or pod["metadata"]["labels"].get("dask.org/cluster-name") != self.name:
            return
        name = pod["metadata"]["name"]
        if etype == "ADDED" and name not in self.states:
            self.added.append(name)
        s = pod_summary(pod)
        entry = (s["phase"], s["reason"], s["message"])
        seen = self.states.setdefault(name, [])
        if not seen or seen[-1] != entry:
            seen.append(entry)

    def reasons(self, name):
        return [r for _, r, _ in self.states.get(name, [])]

    def close(self):
        self._unsub()


async def wait_settled(cluster, check, n, timeout=120, avoid=()):
    """n workers: worker_spec == live worker pods in the API == workers connected to the scheduler."""
    async def ok():
        pods = await live_workers(check, cluster.namespace, cluster.name)
        spec = set(cluster.worker_spec)
        return len(spec) == n and spec == pods == connected(cluster) and not (spec & set(avoid))
    await wait_until(ok, timeout, interval=0.2, what=f"{n} workers, view == API (avoiding {sorted(avoid)})")


# -- deleted under adapt ----------------------------------------------------------------------------------
async def test_deleted_workers_are_replaced_and_adapt_minimum_kept(emu, runtime, check):
    async with KubeCluster(small_pod(), runtime=runtime, username=user(), asynchronous=True) as cluster:
        log = WorkerLog(cluster.pod_cache, cluster.name)
        cluster.adapt(minimum=2, maximum=4, interval="200ms")
        await wait_settled(cluster, check, 2)
        recoveries = []
        for round_ in range(2):
            victims = sorted(cluster.worker_spec)
            t = time.monotonic()
            for v in victims:  # both at once, as kubectl delete pod would
                await asyncio.to_thread(check.delete_namespaced_pod, v, emu.namespace)
            await wait_settled(cluster, check, 2, avoid=victims)
            recoveries.append(time.monotonic() - t)
        # exactly the replacements needed: 2, then 2 + 2 + 2; no churn
        assert len(log.added) == 6, log.added
        await asyncio.sleep(2)  # adapt keeps the minimum and no more
        assert len(cluster.worker_spec) == 2 and len(log.added) == 6
        log.close()
        print(f"\n[deleted workers, adapt minimum 2] recovered to 2 connected workers in "
              + ", ".join(f"{r:.1f}s" for r in recoveries))


# -- evicted and OOM-killed -------------------------------------------------------------------------------
async def test_evicted_and_oomkilled_workers_are_replaced_with_their_reason(emu, runtime, check, caplog):
    caplog.set_level(logging.WARNING, logger="jupyter_dask_kube.cluster")
    async with KubeCluster(small_pod(), runtime=runtime, username=user(), n_workers=2, asynchronous=True) as cluster:
        log = WorkerLog(cluster.pod_cache, cluster.name)
        await wait_settled(cluster, check, 2)
        evicted, oomed = sorted(cluster.worker_spec)
        initial = set(cluster.worker_spec)

        t = time.monotonic()
        pod = await asyncio.to_thread(emu.evict, evicted)
        assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "Evicted"
        # the cluster saw why: the pod summary the REST model shows says Evicted, in the kubelet's words
        await wait_until(lambda: "Evicted" in log.reasons(evicted), 10, what="the Evicted state in the pod cache")
        phase, reason, message = next(s for s in log.states[evicted] if s[1] == "Evicted")
        assert phase == "Failed" and message.startswith("The node was low on resource: memory.")
        await wait_settled(cluster, check, 2, avoid=[evicted])
        evict_recovery = time.monotonic() - t

        t = time.monotonic()
        await asyncio.to_thread(emu.oom_kill, oomed)
        await wait_until(lambda: "OOMKilled" in log.reasons(oomed), 10, what="the OOMKilled state in the pod cache")
        await wait_settled(cluster, check, 2, avoid=[evicted, oomed])
        oom_recovery = time.monotonic() - t

        # the dead pods were removed, not left behind as Failed objects
        pods, _ = await api_objects(check, emu.namespace, cluster_selector(cluster.name))
        assert evicted not in pods and oomed not in pods
        assert f"worker {evicted} lost: Evicted: The node was low on resource: memory." in caplog.text
        assert f"worker {oomed} lost: OOMKilled: container dask was killed for using more memory" in caplog.text
        # the replacement hides the dead pods, so the reason stays in the REST model's warnings for a while
        from jupyter_dask_kube.manager import ClusterManager

        lost = [r for _, n, r in cluster.lost_workers]
        assert any("Evicted" in r for r in lost) and any("OOMKilled" in r for r in lost)
        (warning,) = ClusterManager._recent_losses(cluster)
        assert oomed in warning and "OOMKilled" in warning and "2 in the last" in warning
        assert not cluster.failing and cluster.problem is None  # two losses are not a crash loop
        replacements = [n for n in log.added if n not in initial]
        assert len(replacements) == 2, log.added  # one each, no churn
        log.close()
        print(f"\n[evicted] replaced, 2 workers again in {evict_recovery:.1f}s; "
              f"[OOM-killed] replaced in {oom_recovery:.1f}s")


async def test_worker_over_its_memory_limit_is_reported_as_oomkilled(emu, runtime):
    """A template whose workers cannot live in their memory limit (64 MiB: a dask worker allocates more as
    it starts): the kubelet OOM-kills them, the guard stops after a bounded number, and "OOMKilled" reaches
    cluster.problem and the REST model's message."""
    tiny = small_pod(resources={"limits": {"memory": "64Mi", "cpu": "1"}})
    template = load_template({"workers": 2, "worker": tiny, "scheduler": SCHEDULER}, name="tiny-memory")
    manager = ClusterManager(runtime=runtime, username=user(), templates=[template])
    try:
        await manager.start()
        model = await manager.create(CreateRequest(template="tiny-memory"))
        rec = manager.records[model["id"]]
        cluster = rec.cluster
        log = WorkerLog(manager.pod_cache, cluster.name)
        t = time.monotonic()
        await wait_until(lambda: cluster.failing, 120, interval=0.2, what="the crash-loop guard")
        elapsed = time.monotonic() - t
        assert "OOMKilled" in cluster.problem and "more memory than its limit" in cluster.problem, cluster.problem
        oom_pods = [n for n in log.states if "OOMKilled" in log.reasons(n)]
        assert len(oom_pods) >= MAX_FAILURES - 1, log.states
        made = len(log.added)
        assert made <= MAX_FAILURES + 2, log.added  # the requested 2, replaced until 5 had failed
        # the last worker may still be dying when the guard trips: the model reaches 0 workers, with the reason
        model = await wait_until(
            lambda: (m := manager.model(rec))["workers"] == 0 and "OOMKilled" in m["message"] and m
                    or Pending(f"{m['workers']} workers, {m['message']!r}"), 60, interval=0.2, what="0 workers")
        assert len(log.added) == made, "workers were still replaced after the guard tripped"
        log.close()
        print(f"\n[OOMKilled] guard tripped after {elapsed:.1f}s and {made} worker pods: {cluster.problem!r}")
        await manager.delete(model["id"])
    finally:
        await manager.close(detach=False)


# -- crash loop under adapt -------------------------------------------------------------------------------
async def test_crash_looping_workers_under_adapt_stop_after_a_bounded_number(emu, runtime, check):
    crash = small_pod(command=["python", "-c", "import sys; print('bad config'); sys.exit(3)"], args=[])
    async with KubeCluster(crash, scheduler_pod_template=SCHEDULER, runtime=runtime, username=user(),
                           asynchronous=True) as cluster:
        log = WorkerLog(cluster.pod_cache, cluster.name)
        t = time.monotonic()
        cluster.adapt(minimum=2, maximum=4, interval="200ms")
        await wait_until(lambda: cluster.failing, 90, what="the crash-loop guard")
        elapsed = time.monotonic() - t
        assert cluster.problem.startswith(f"Workers keep failing ({MAX_FAILURES} in {FAILURE_WINDOW:.0f}s)")
        assert "exited with code 3" in cluster.problem
        made = len(log.added)
        assert MAX_FAILURES <= made <= MAX_FAILURES + 2, log.added
        # Adaptive asks for its minimum every 200 ms: no pod is made for it any more
        await asyncio.sleep(5)
        assert len(log.added) == made, f"{len(log.added) - made} more pods after the guard tripped"
        await wait_until(lambda: not cluster.worker_spec, 30, what="no worker specs left")
        assert not await live_workers(check, emu.namespace, cluster.name)
        log.close()
        print(f"\n[crash loop under adapt] guard tripped after {elapsed:.1f}s and {made} pods; "
              f"none made in the next 5s: {cluster.problem!r}")


# -- the scheduler lost -----------------------------------------------------------------------------------
async def test_lost_scheduler_fails_cluster_and_everything_goes(emu, runtime, check):
    """Two clusters. A is managed (REST model): its scheduler pod is deleted with propagationPolicy Orphan,
    so garbage collection does not help: the cluster must notice (failed, "Scheduler lost") and remove its
    workers and Service itself. B is detached (nobody manages it): its scheduler pod is deleted normally and
    ownerReference garbage collection alone must remove its workers and Service."""
    template = load_template({"workers": 1, "worker": small_pod()}, name="one")
    manager = ClusterManager(runtime=runtime, username=user(), templates=[template])
    b_rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    b = KubeCluster(small_pod(), runtime=b_rt, username=user(), n_workers=1, asynchronous=True)
    try:
        await manager.start()
        model, _ = await asyncio.gather(manager.create(CreateRequest(template="one")), b)
        a_id = model["id"]
        rec = manager.records[a_id]
        await wait_until(lambda: manager.model(rec)["status"] == "running" and manager.model(rec)["workers"] == 1,
                         120, interval=0.2, what="cluster A running with 1 worker")
        await wait_settled(b, check, 1)
        a_pods, a_svcs = await api_objects(check, emu.namespace, cluster_selector(a_id))
        b_pods, b_svcs = await api_objects(check, emu.namespace, cluster_selector(b.name))
        assert len(a_pods) == 2 and a_svcs == [a_id] and len(b_pods) == 2 and b_svcs == [b.name]

        # A: no garbage collection; the cluster's own cleanup
        t = time.monotonic()
        await asyncio.to_thread(check.delete_namespaced_pod, f"{a_id}-scheduler", emu.namespace,
                                grace_period_seconds=0, propagation_policy="Orphan")
        await wait_until(lambda: manager.model(rec)["status"] == "failed", 30, what="A marked failed")
        model = manager.model(rec)
        assert model["message"].startswith("Scheduler lost: scheduler pod was deleted"), model
        assert rec.cluster.status == Status.failed
        a_failed = time.monotonic() - t

        async def gone(name):
            pods, svcs = await api_objects(check, emu.namespace, cluster_selector(name))
            return not pods and not svcs
        await wait_until(lambda: gone(a_id), 30, interval=0.2, what="A's workers and Service removed by the cluster")
        a_clean = time.monotonic() - t

        # B: nobody watches; garbage collection by ownerReference
        await b.detach()
        t = time.monotonic()
        await asyncio.to_thread(check.delete_namespaced_pod, f"{b.name}-scheduler", emu.namespace)
        await wait_until(lambda: gone(b.name), 30, interval=0.2, what="B's workers and Service garbage-collected")
        b_clean = time.monotonic() - t

        await manager.delete(a_id)
        assert manager.list() == []
        print(f"\n[scheduler lost] A failed after {a_failed:.1f}s, cleaned by the cluster in {a_clean:.1f}s; "
              f"B garbage-collected in {b_clean:.1f}s")
    finally:
        await manager.close(detach=False)
        await b.close()
        await b_rt.close()
