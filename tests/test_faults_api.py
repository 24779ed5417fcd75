"""Prove it: API faults. The Kubernetes API answers ~30% of requests with 500/503/429, adds latency to every
answer and cuts every watch connection after a few seconds; or it stops answering at all.

What must hold: KubeCluster create / scale up / scale down / adapt / close, and the REST layer's create and
delete, either complete (the runtime retries with backoff, the pod watch resumes from its resourceVersion) or
fail with a readable message; after every step the cluster's own view (pod cache, worker_spec, the scheduler's
workers) equals the pods that exist in the API, read through a second client the faults do not touch; nothing
is left behind. The retries and watch resumptions seen are counted and printed.
"""
import asyncio
import json
import logging
import time
import uuid

import pytest

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.bodies import ApiError, CreateRequest
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.objects import cluster_selector, user_selector
from jupyter_dask_kube.podstatus import is_terminal
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_template
from jupyter_dask_kube.testing import write_kubeconfig

from helpers import Pending, rest_call, small_pod, wait_model, wait_until
from jupyter_process import free_port

pytest_plugins = ["pytest_jupyter.jupyter_server"]

FAULTS = {
    "error_rate": 0.3,
    "error_statuses": [500, 503, 429],
    "latency": 0.05,
    "drop_watch_after": 3.0,
}
RUNTIME_LOGGER = "jupyter_dask_kube.runtimes.kubernetes"
MODEL_WAIT = 150  # s for a cluster to reach the state a test waits for
TINY = {"workers": 1, "worker": small_pod()}


# -- helpers -------------------------------------------------------------------------------------------
class RetryCounter(logging.Handler):
    """Counts what the runtime logs when it retries a call or resumes an interrupted watch."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.retries = 0
        self.watch_resumes = 0

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("retrying "):
            self.retries += 1
        elif msg.startswith("pod watch interrupted"):
            self.watch_resumes += 1


@pytest.fixture
def retry_counter():
    logger = logging.getLogger(RUNTIME_LOGGER)
    handler = RetryCounter()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.fixture
def emu(emulated_kubernetes):
    emulated_kubernetes.clear_faults()
    yield emulated_kubernetes
    emulated_kubernetes.clear_faults()


def api_state(check_api, namespace: str, selector: str) -> tuple[dict, list]:
    """(pods by name, service names) matching ``selector``, read through the fault-exempt client."""
    pods = json.loads(check_api.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False).data)
    svcs = json.loads(check_api.list_namespaced_service(namespace, label_selector=selector, _preload_content=False).data)
    return {p["metadata"]["name"]: p for p in pods["items"]}, [s["metadata"]["name"] for s in svcs["items"]]


def live_worker(pod: dict) -> bool:
    return (pod["metadata"]["labels"].get("dask.org/component") == "worker"
            and not pod["metadata"].get("deletionTimestamp") and not is_terminal(pod))


async def wait_view_matches_api(cluster, check_api, *, workers=None, timeout=90):
    """Until the cluster's view equals the API: the pod cache holds exactly the API's pods at their latest
    resourceVersion, worker_spec names exactly the live worker pods, the scheduler knows exactly those
    workers (and, given ``workers``, there are that many). Fails with the differences."""
    sel = cluster_selector(cluster.name)
    seen = {}

    async def matches():
        pods, _ = await asyncio.to_thread(api_state, check_api, cluster.namespace, sel)
        api_versions = {n: p["metadata"]["resourceVersion"] for n, p in pods.items()}
        cache_versions = {n: p["metadata"]["resourceVersion"] for n, p in cluster.pod_cache.pods.items()
                          if p["metadata"].get("labels", {}).get("dask.org/cluster-name") == cluster.name}
        api_workers = {n for n, p in pods.items() if live_worker(p)}
        spec = set(cluster.worker_spec)
        sched = {w.get("name") for w in (cluster.scheduler_info or {}).get("workers", {}).values()}
        problems = []
        if cache_versions != api_versions:
            problems.append(f"pod cache {cache_versions} != API {api_versions}")
        if spec != api_workers:
            problems.append(f"worker_spec {sorted(spec)} != live worker pods {sorted(api_workers)}")
        if sched != spec:
            problems.append(f"scheduler's workers {sorted(sched)} != worker_spec {sorted(spec)}")
        if workers is not None and len(spec) != workers:
            problems.append(f"{len(spec)} workers, expected {workers}")
        seen["pods"] = pods
        return Pending("; ".join(problems)) if problems else True

    await wait_until(matches, timeout, interval=0.25, what="the cluster view to equal the API")
    return seen["pods"]


async def wait_gone(check_api, namespace, selector, timeout=60, what="objects"):
    async def gone():
        pods, svcs = await asyncio.to_thread(api_state, check_api, namespace, selector)
        return (not pods and not svcs) or Pending(f"left behind: pods {sorted(pods)}, services {svcs}")

    await wait_until(gone, timeout, interval=0.25, what=f"{what} to be gone")


def fault_report(label, before, after, counter):
    keys = ["requests", "faults_injected", "faults_500", "faults_503", "faults_429", "faults_on_watch",
            "watches", "watches_dropped", "watches_resumed", "watches_gone_410"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    print(f"\n[{label}] emulator: " + ", ".join(f"{k}={v}" for k, v in delta.items())
          + f"; client: retries={counter.retries}, watch resumes={counter.watch_resumes}")
    return delta


# -- KubeCluster under API faults ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_cluster_lifecycle_under_api_faults(emu, retry_counter):
    check = emu.api(no_faults=True)
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    before = emu.stats()
    emu.set_faults(FAULTS)
    times = {}
    cluster = KubeCluster(small_pod(), runtime=rt, username=f"f{uuid.uuid4().hex[:6]}", asynchronous=True)
    name = cluster.name
    try:
        t = time.monotonic()
        await cluster
        await wait_view_matches_api(cluster, check, workers=0)
        times["create"] = time.monotonic() - t
        # The lifecycle can now finish within one watch connection's life: wait for a real cut, so the steps
        # below run on the resumed watch.
        await wait_until(lambda: emu.stats().get("watches_dropped", 0) > before.get("watches_dropped", 0),
                         30, interval=0.1, what="the emulator to cut the pod watch")

        t = time.monotonic()
        cluster.scale(3)
        pods = await wait_view_matches_api(cluster, check, workers=3, timeout=150)
        times["scale up to 3"] = time.monotonic() - t
        assert all(p["status"]["phase"] == "Running" for p in pods.values())

        t = time.monotonic()
        cluster.scale(1)
        await wait_view_matches_api(cluster, check, workers=1)
        times["scale down to 1"] = time.monotonic() - t

        t = time.monotonic()
        cluster.adapt(minimum=2, maximum=3, interval="300ms")
        await wait_view_matches_api(cluster, check, workers=2, timeout=120)
        times["adapt to minimum 2"] = time.monotonic() - t
        sched, svcs = await asyncio.to_thread(api_state, check, emu.namespace, cluster_selector(name))
        assert svcs == [name]
    finally:
        t = time.monotonic()
        await asyncio.wait_for(cluster.close(), 120)
        times["close"] = time.monotonic() - t
        await rt.close()
    await wait_gone(check, emu.namespace, cluster_selector(name), what=f"pods/service of closed {name}")
    delta = fault_report("KubeCluster lifecycle", before, emu.stats(), retry_counter)
    print("  step times: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    # the faults really happened, and the code under test really lived through them
    assert delta["faults_injected"] >= 2 and retry_counter.retries >= 1
    assert delta["watches_dropped"] >= 1 and retry_counter.watch_resumes >= 1
    # every watch reconnect resumed from a resourceVersion the server still had: no relist was needed
    assert delta["watches_resumed"] >= delta["watches_dropped"] and delta["watches_gone_410"] == 0


@pytest.mark.asyncio
async def test_scale_up_while_api_is_down_completes_when_it_returns(emu, retry_counter):
    """Worker creates that fail even after the runtime's retries (the API answered only 503 for ~5 s) must
    not leave worker_spec naming pods that do not exist: the cluster forgets them, replaces them, and the
    scale-up completes once the API answers again."""
    check = emu.api(no_faults=True)
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    try:
        async with KubeCluster(small_pod(), runtime=rt, username=f"o{uuid.uuid4().hex[:6]}",
                               asynchronous=True) as cluster:
            emu.set_faults(error_rate=1.0, error_statuses=[503])
            t = time.monotonic()
            cluster.scale(2)
            await asyncio.sleep(5)  # longer than the runtime's whole retry budget
            emu.clear_faults()
            await wait_view_matches_api(cluster, check, workers=2, timeout=90)
            elapsed = time.monotonic() - t
            assert not cluster.failing
            print(f"\n[API down 5s during scale-up] 2 workers running {elapsed:.1f}s after scale(2); "
                  f"client retries={retry_counter.retries}")
    finally:
        emu.clear_faults()
        await rt.close()


@pytest.mark.asyncio
async def test_create_fails_with_reason_when_api_answers_only_errors(emu, retry_counter):
    """The API goes down (every request 503) after the manager started: a create fails within seconds with
    Kubernetes' words, the status says the API is not reachable, nothing is left; when the API comes back the
    pod watch resumes by itself."""
    user = f"d{uuid.uuid4().hex[:6]}"
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    manager = ClusterManager(runtime=rt, username=user, templates=[load_template(TINY, name="tiny")])
    check = emu.api(no_faults=True)
    try:
        await manager.start()
        emu.set_faults(error_rate=1.0, error_statuses=[503])
        t = time.monotonic()
        model = await manager.create(CreateRequest(template="tiny"))
        rec = manager.records[model["id"]]
        while rec.state == "creating":
            assert time.monotonic() - t < 20, "create did not fail while the API answered only errors"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t
        model = manager.model(rec)
        print(f"\n[API answers 503] create failed after {elapsed:.1f}s: {model['message']!r}; "
              f"client retries={retry_counter.retries}")
        assert model["status"] == "failed"
        assert "ServiceUnavailable" in model["message"] and "unable to handle the request" in model["message"]
        status = await manager.status()
        assert any(p.startswith("Kubernetes API not reachable") for p in status["problems"]), status
        assert retry_counter.retries >= 4
        emu.clear_faults()
        await wait_gone(check, emu.namespace, user_selector(user), timeout=10, what="objects of a failed create")
        # the API is back: the user's pod watch resumed (a pod made now reaches the cache)
        probe = f"probe-{user}"
        await asyncio.to_thread(check.create_namespaced_pod, emu.namespace, {
            "metadata": {"name": probe, "labels": {"hub.jupyter.org/username": user,
                                                    "app.kubernetes.io/managed-by": "jupyter-dask-kube"}},
            "spec": {"containers": [{"name": "c", "image": "ghcr.io/dask/dask:latest", "args": ["true"]}]}})
        await asyncio.wait_for(manager.pod_cache.wait_for(lambda: probe in manager.pod_cache.pods, 30), 35)
        await asyncio.to_thread(check.delete_namespaced_pod, probe, emu.namespace, grace_period_seconds=0)
        await manager.delete(model["id"])
        assert manager.list() == []
    finally:
        emu.clear_faults()
        await manager.close(detach=False)
        await rt.close()


@pytest.mark.asyncio
async def test_unreachable_api_create_fails_within_seconds(tmp_path, retry_counter):
    """Nothing listens where the kubeconfig points: KubeCluster and the manager both fail within seconds
    with "unreachable" in their words; the status reports it."""
    kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), f"http://127.0.0.1:{free_port()}")
    rt = KubernetesRuntime(kubeconfig=kubeconfig)
    try:
        t = time.monotonic()
        with pytest.raises(Exception) as info:
            await KubeCluster(small_pod(), runtime=rt, asynchronous=True)
        elapsed = time.monotonic() - t
        assert elapsed < 15, elapsed
        assert "unreachable" in str(info.value), str(info.value)

        manager = ClusterManager(runtime=rt, username="nobody", templates=[load_template(TINY, name="tiny")])
        t = time.monotonic()
        with pytest.raises(ApiError) as info:
            await manager.create(CreateRequest(template="tiny"))
        create_elapsed = time.monotonic() - t
        assert info.value.status == 503 and info.value.message.startswith("Kubernetes API not reachable")
        assert "unreachable" in info.value.message
        assert manager.records == {}
        status = await manager.status()
        assert any(p.startswith("Kubernetes API not reachable") for p in status["problems"]), status
        print(f"\n[API unreachable] KubeCluster failed after {elapsed:.1f}s, manager create after "
              f"{create_elapsed:.1f}s: {info.value.message!r}; client retries={retry_counter.retries}")
        await manager.close(detach=False)
    finally:
        await rt.close()


# -- the REST layer under API faults ---------------------------------------------------------------------
@pytest.fixture
def kube_target(request, emulated_kubernetes, monkeypatch, tmp_path):
    """The Kubernetes API the server talks to: the shared emulator, or ("down") a port nothing listens on."""
    if getattr(request, "param", "emulator") == "down":
        path = write_kubeconfig(str(tmp_path / "dead-kubeconfig"), f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("KUBECONFIG", path)
        yield None
        return
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    emulated_kubernetes.clear_faults()
    yield emulated_kubernetes
    emulated_kubernetes.clear_faults()


@pytest.fixture
def rest_user(monkeypatch):
    name = f"r{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def jp_server_config(kube_target, rest_user):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": {"tiny": TINY}, "max_workers": 4},
    }


class Recorder:
    """jp_fetch that remembers every answer (use it as rest_call's and wait_model's jp_fetch)."""

    def __init__(self, jp_fetch):
        self.jp_fetch = jp_fetch
        self.answers: list[tuple[str, int, object]] = []

    async def __call__(self, *parts, **kwargs):
        resp = await self.jp_fetch(*parts, **kwargs)
        data = json.loads(resp.body) if resp.body else None
        self.answers.append((f"{kwargs['method']} /{'/'.join(parts[2:])}", resp.code, data))
        return resp

    async def until(self, method, *path, ok=(200,), body=None, timeout=60):
        """Repeat a request while it answers 503 (Kubernetes unreachable: a client may try again)."""
        deadline = time.monotonic() + timeout
        while True:
            code, data = await rest_call(self, method, *path, body=body)
            if code in ok or code != 503 or time.monotonic() > deadline:
                return code, data
            await asyncio.sleep(0.5)

    def check(self):
        bad = [(what, code, data) for what, code, data in self.answers
               if code >= 500 and not (code == 503 and isinstance(data, dict) and data.get("message"))]
        assert not bad, f"server errors: {bad}"
        assert all(isinstance(data, dict) and data.get("message") for _, code, data in self.answers if code >= 400)


async def test_rest_create_scale_delete_under_api_faults(jp_fetch, kube_target, rest_user):
    emu = kube_target
    check = emu.api(no_faults=True)
    rec = Recorder(jp_fetch)
    counter = RetryCounter()
    logging.getLogger(RUNTIME_LOGGER).addHandler(counter)
    logging.getLogger(RUNTIME_LOGGER).setLevel(logging.DEBUG)
    before = emu.stats()
    emu.set_faults(FAULTS)
    try:
        t = time.monotonic()
        code, a = await rec.until("POST", "clusters", body={"template": "tiny", "workers": 1}, ok=(201,))
        assert code == 201, a
        code, b = await rec.until("POST", "clusters", body={"template": "tiny", "workers": 2}, ok=(201,))
        assert code == 201, b
        a = await wait_model(rec, a["id"], lambda m: m["status"] == "running" and m["workers"] == 1, MODEL_WAIT,
                             interval=0.3, what="a runs")
        b = await wait_model(rec, b["id"], lambda m: m["status"] == "running" and m["workers"] == 2, MODEL_WAIT,
                             interval=0.3, what="b runs")
        created = time.monotonic() - t
        code, a = await rest_call(rec, "PATCH", "clusters", a["id"], body={"workers": 2})
        assert code == 200, a
        code, b = await rest_call(rec, "PATCH", "clusters", b["id"], body={"adapt": {"minimum": 1, "maximum": 2}})
        assert code == 200, b
        for cid, n in ((a["id"], 2), (b["id"], 1)):
            model = await wait_model(rec, cid, lambda m, n=n: m["status"] == "running" and m["workers"] == n
                                     and m["requested_workers"] == n, MODEL_WAIT, interval=0.3,
                                     what=f"{cid} at {n} workers")
            sel = cluster_selector(cid)
            current = {"model": model}

            async def same_pods(cid=cid, sel=sel, current=current):
                pods, _ = await asyncio.to_thread(api_state, check, emu.namespace, sel)
                names = {p["name"] for p in current["model"]["pods"]}
                if names == set(pods):
                    return True
                current["model"] = (await rest_call(rec, "GET", "clusters", cid))[1]
                return Pending(f"model pods {sorted(names)} != API pods {sorted(pods)}")

            await wait_until(same_pods, 60, interval=0.3, what="the model's pods to be the API's pods")
        code, _ = await rest_call(rec, "GET", "status")
        assert code == 200
        t = time.monotonic()
        for cid in (a["id"], b["id"]):
            code, data = await rest_call(rec, "DELETE", "clusters", cid)
            assert code == 204, data
        deleted = time.monotonic() - t
        code, data = await rest_call(rec, "GET", "clusters")
        assert code == 200 and data["clusters"] == []
        await wait_gone(check, emu.namespace, user_selector(rest_user), what="the user's pods after delete")
    finally:
        emu.clear_faults()
        logging.getLogger(RUNTIME_LOGGER).removeHandler(counter)
    rec.check()
    codes = sorted({code for _, code, _ in rec.answers})
    fault_report("REST create/scale/delete", before, emu.stats(), counter)
    print(f"  {len(rec.answers)} requests answered with {codes}; both clusters running after {created:.1f}s, "
          f"deleted in {deleted:.1f}s")


@pytest.mark.parametrize("kube_target", ["down"], indirect=True)
async def test_rest_when_api_is_down(jp_fetch, kube_target):
    rec = Recorder(jp_fetch)
    t = time.monotonic()
    code, data = await rest_call(rec, "POST", "clusters", body={"template": "tiny"})
    elapsed = time.monotonic() - t
    assert code == 503 and data["message"].startswith("Kubernetes API not reachable"), (code, data)
    assert elapsed < 15
    code, data = await rest_call(rec, "GET", "status")
    assert code == 200
    assert any(p.startswith("Kubernetes API not reachable") for p in data["problems"]), data
    code, data = await rest_call(rec, "GET", "clusters")
    assert code == 503 and "not reachable" in data["message"]
    code, data = await rest_call(rec, "GET", "templates")
    assert code == 200 and data["templates"]
    rec.check()
    print(f"\n[REST, API down] POST answered 503 after {elapsed:.1f}s: {rec.answers[0][2]['message']!r}")
