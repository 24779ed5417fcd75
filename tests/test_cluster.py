"""KubeCluster end to end: the same test bodies on the local runtime and on every Kubernetes target.

On "kubernetes" (the emulated API), "kubernetes-real" (kube-apiserver built from source) and
"kubernetes-kubeconfig" (JDK_TEST_REAL_KUBECONFIG) every pod is made by the official client over HTTP; on the
first two the node agent runs it as real `dask scheduler` / `dask worker` processes.
"""
import asyncio
import os
import time
from pathlib import Path

import dask
import dask.array as da
import psutil
import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.cluster import PodStartError
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.runtimes.local import LocalRuntime

from jupyter_dask_kube.testing.fixtures import BACKEND_PARAMS, backend_target

from helpers import no_pods, small_pod, wait_until

pytestmark = pytest.mark.asyncio

SEED_SPEC = Path(__file__).parent / "data" / "worker-spec.yml"
#: "local", then every Kubernetes target (the emulator, the real API server, JDK_TEST_REAL_KUBECONFIG)
BACKENDS = BACKEND_PARAMS






def dask_processes(root_pid: int | None = None):
    """Live dask scheduler/worker processes started under root_pid (default: this test process)."""
    root = psutil.Process(root_pid or os.getpid())
    out = []
    for p in root.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "distributed.cli" in cmd or " dask " in f" {cmd} " or "dask_worker" in cmd or "dask_scheduler" in cmd:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param.split("-")[0]


@pytest.fixture
def target(request):
    """The Kubernetes target of a "kubernetes[-target]" backend."""
    return backend_target(request)


@pytest.fixture
def make_runtime(backend, request):
    """A factory of runtimes for the backend under test; all closed at the end."""
    made = []

    def make():
        if backend == "local":
            rt = LocalRuntime("default")
        else:
            emu = request.getfixturevalue("target")
            rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
        made.append(rt)
        return rt

    yield make
    loop = asyncio.new_event_loop()
    for rt in made:
        loop.run_until_complete(rt.close())
    loop.close()


@pytest.fixture
def process_root(backend, request):
    """The process under which pod processes run for this backend."""
    if backend == "local":
        return os.getpid()
    return request.getfixturevalue("target").pid


async def assert_nothing_left(runtime, name, process_root):
    await wait_until(lambda: _empty(runtime, name), timeout=30, what=f"pods and service of {name} gone")
    await wait_until(lambda: not dask_processes(process_root), timeout=30, what="dask processes gone")


async def _empty(runtime, name):
    pods = await runtime.list_pods(cluster_selector(name))
    svc = await runtime.read_service(name)
    secret = await runtime.read_secret(f"{name}-tls")  # the cluster's TLS credentials
    return not pods and svc is None and secret is None


# -- the seed's example, unchanged but for the import --------------------------------------------
def test_seed_example(backend, request, monkeypatch, tmp_path):
    if backend == "local":
        monkeypatch.setitem(dask.config.config["kubernetes"], "backend", "local")
        root = os.getpid()
    else:
        emu = request.getfixturevalue("target")
        monkeypatch.setenv("KUBECONFIG", emu.kubeconfig)
        root = emu.pid
    # 10 workers of the seed's spec: each runs a nanny + worker; this machine holds that (2 cores, 24 GiB).
    cluster = KubeCluster.from_yaml(str(SEED_SPEC))
    try:
        assert cluster.backend == backend
        cluster.scale(10)
        client = Client(cluster)
        client.wait_for_workers(10, timeout=180)
        array = da.ones((1000, 1000, 1000))
        assert array.mean().compute() == 1.0
        client.close()
        name = cluster.name
        assert name.startswith("dask-tester-")
        cluster.adapt(minimum=1, maximum=100)
    finally:
        cluster.close()
    check = LocalRuntime() if backend == "local" else KubernetesRuntime(kubeconfig=os.environ["KUBECONFIG"])

    async def verify():
        try:
            await assert_nothing_left(check, name, root)
        finally:
            await check.close()

    asyncio.run(verify())


# -- scale, adapt, failures ------------------------------------------------------------------------
async def test_scale_up_and_down(make_runtime, process_root, caplog):
    rt = make_runtime()
    caplog.set_level("WARNING", logger="jupyter_dask_kube.cluster")
    async with KubeCluster(small_pod(), runtime=rt, asynchronous=True) as cluster:
        pods_of = lambda: [p for p in cluster.pod_cache.pods.values() if p["metadata"]["labels"]["dask.org/component"] == "worker"]  # noqa: E731
        cluster.scale(3)
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(3, timeout=120)
            assert len(pods_of()) == 3
            result = await client.submit(lambda x: x + 1, 41)
            assert result == 42
            cluster.scale(1)
            await wait_until(lambda: len(cluster.scheduler_info["workers"]) == 1, 60, what="1 worker")
            await wait_until(lambda: len(pods_of()) == 1, 60, what="1 worker pod")
        # worker names are pod names, so the scheduler and Kubernetes agree on who is who
        assert set(cluster.worker_spec) == {p["metadata"]["name"] for p in pods_of()}
        name = cluster.name
    await assert_nothing_left(rt, name, process_root)
    # closing deletes the pods itself: that is no lost scheduler or worker
    assert "lost" not in caplog.text.lower(), caplog.text
    assert cluster.problem is None and not cluster.lost_workers


async def test_adapt_replaces_killed_worker(make_runtime):
    rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, asynchronous=True) as cluster:
        cluster.adapt(minimum=2, maximum=4, interval="200ms")
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=120)
            victim = sorted(cluster.worker_spec)[0]
            assert await rt.delete_pod(victim)
            await wait_until(lambda: victim not in cluster.worker_spec, 30, what="lost worker forgotten")
            names = lambda: {w["name"] for w in cluster.scheduler_info["workers"].values()}  # noqa: E731
            await wait_until(lambda: len(names()) >= 2 and victim not in names(), 120, what="a replacement worker")
            assert len(cluster.worker_spec) >= 2


async def test_env_container_name_and_tolerations(make_runtime):
    rt = make_runtime()
    pod = small_pod(name="my-worker")
    pod["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    async with KubeCluster(pod, runtime=rt, env={"MY_SETTING": "hello-42"}, n_workers=1, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=120)
            values = await client.run(lambda: os.environ.get("MY_SETTING"))
            assert list(values.values()) == ["hello-42"]
        worker = next(p for p in await rt.list_pods(cluster_selector(cluster.name)) if p["metadata"]["labels"]["dask.org/component"] == "worker")
        assert worker["spec"]["containers"][0]["name"] == "my-worker"
        keys = {t["key"] for t in worker["spec"]["tolerations"]}
        assert {"gpu", "k8s.dask.org/dedicated", "k8s.dask.org_dedicated"} <= keys
        assert worker["spec"]["restartPolicy"] == "Never"
        assert "--death-timeout" in worker["spec"]["containers"][0]["args"]


async def test_name_template_with_env(make_runtime, monkeypatch):
    monkeypatch.setenv("TEAM", "Geo.Science")
    rt = make_runtime()
    with dask.config.set({"kubernetes.worker-name": "dask-{TEAM}-{JUPYTERHUB_USER}-{uuid}"}):
        cluster = KubeCluster(small_pod(), runtime=rt, asynchronous=True)
    try:
        assert cluster.name.startswith("dask-geo"), cluster.name
        assert "tester" in cluster.name and len(cluster.name) <= 50
        await cluster
        sched = await rt.read_pod(f"{cluster.name}-scheduler")
        assert sched["metadata"]["labels"]["dask.org/cluster-name"] == cluster.name
    finally:
        await cluster.close()


async def test_count_max_clamps_scale(make_runtime, caplog):
    rt = make_runtime()
    with dask.config.set({"kubernetes.count.max": 2}):
        async with KubeCluster(small_pod(), runtime=rt, asynchronous=True) as cluster:
            with caplog.at_level("INFO", logger="jupyter_dask_kube.cluster"):
                cluster.scale(5)
            assert len(cluster.worker_spec) == 2
            assert "clamped to kubernetes.count.max=2" in caplog.text


async def test_scheduler_that_cannot_start_fails_fast(make_runtime):
    rt = make_runtime()
    pod = small_pod()
    start = time.monotonic()
    # The scheduler is derived from the worker template; give it a command that does not exist.
    sched = small_pod(args=["dask-schedulr-typo"])
    with pytest.raises(Exception) as info:
        await KubeCluster(pod, scheduler_pod_template=sched, runtime=rt, asynchronous=True)
    assert time.monotonic() - start < 30
    assert "executable file not found" in str(info.value) or "StartError" in str(info.value)
    # deletion is asynchronous on Kubernetes (the kubelet stops the pod first): wait for it, bounded
    sel = "app.kubernetes.io/managed-by=jupyter-dask-kube,dask.org/component=scheduler"
    await wait_until(lambda: no_pods(rt, sel), 30, what="the failed scheduler pod removed")


async def test_bad_arguments():
    with pytest.raises(ValueError, match="n_workers"):
        KubeCluster(small_pod(), n_workers=-1, runtime=LocalRuntime(), asynchronous=True)
    with pytest.raises(ValueError, match="deploy_mode"):
        KubeCluster(small_pod(), deploy_mode="sideways", runtime=LocalRuntime(), asynchronous=True)
    with pytest.raises(ValueError):
        KubeCluster({"kind": "Pod", "spec": {"containers": []}}, runtime=LocalRuntime(), asynchronous=True)
    with pytest.raises(ValueError, match="backend"):
        KubeCluster(small_pod(), backend="mesos", asynchronous=True)


async def test_stuck_workers_fail_wait_for_workers_with_reason(make_runtime, backend):
    """Workers that cannot start (image pull on Kubernetes, a missing executable locally) are reported
    with their reason within seconds instead of hanging (classic dask-kubernetes #404)."""
    rt = make_runtime()
    if backend == "kubernetes":
        # the scheduler gets a pullable image; only the workers' image is missing
        pod = small_pod(image="registry.example/doesnotexist:1")
        sched = small_pod(args=["dask-scheduler"])
        expected = ("ImagePullBackOff", "ErrImagePull")
    else:
        pod = small_pod(args=["dask-wurker-typo"])
        sched = None
        expected = ("StartError", "keep failing")
    async with KubeCluster(pod, scheduler_pod_template=sched, runtime=rt, asynchronous=True) as cluster:
        cluster.scale(2)
        start = time.monotonic()
        with pytest.raises(PodStartError) as info:
            await cluster._wait_for_workers(2, timeout=120)
        assert time.monotonic() - start < 60
        assert any(word in str(info.value) for word in expected), str(info.value)
        if backend == "kubernetes":  # stuck pods stay, with their reason
            assert all("ImagePull" in p or "ErrImage" in p for p in cluster.pod_problems().values())
            assert len(cluster.pod_problems()) == 2
        else:  # failed pods are removed; the guard says why
            assert cluster.failing and "executable file not found" in cluster.problem


async def test_crashing_workers_are_not_replaced_forever(make_runtime):
    rt = make_runtime()
    crash = small_pod(command=["python", "-c", "import sys; sys.exit(3)"], args=[])
    sched = small_pod(args=["dask-scheduler"])
    async with KubeCluster(crash, scheduler_pod_template=sched, runtime=rt, asynchronous=True) as cluster:
        cluster.scale(2)
        await wait_until(lambda: cluster.failing, 90, what="the crash-loop guard")
        assert "keep failing" in cluster.problem and "exited with code 3" in cluster.problem
        made = len(cluster._failures)
        assert made >= 5
        # no more replacements once the guard tripped
        await asyncio.sleep(0)  # let pending callbacks run
        snapshot = set(cluster.pod_cache.pods)
        await wait_until(lambda: not [n for n in cluster.worker_spec], 30, what="no live worker specs")
        assert set(cluster.pod_cache.pods) <= snapshot | {f"{cluster.name}-scheduler"}
