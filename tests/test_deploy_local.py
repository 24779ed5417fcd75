"""deploy_mode="local": the scheduler runs in the user's process, the workers run as pods; on the local
runtime and on the emulated Kubernetes API (pods made over HTTP by the official client, run by the
emulator's kubelet as real `dask worker` processes). The seed's example, then nothing left behind, checked
against the API and the process table."""
import asyncio
import os

import dask
import dask.array as da
import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.runtimes.local import LocalRuntime

from helpers import small_pod, wait_until
from test_cluster import SEED_SPEC, assert_nothing_left, dask_processes

BACKENDS = ["local", "kubernetes"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "local":
        monkeypatch.setitem(dask.config.config["kubernetes"], "backend", "local")
        return request.param, os.getpid()
    emu = request.getfixturevalue("emulated_kubernetes")
    monkeypatch.setenv("KUBECONFIG", emu.kubeconfig)
    monkeypatch.setitem(dask.config.config["kubernetes"], "backend", "kubernetes")
    return request.param, emu.pid


def _runtime(backend):
    return LocalRuntime() if backend == "local" else KubernetesRuntime(kubeconfig=os.environ["KUBECONFIG"])


def test_seed_example_with_the_scheduler_in_this_process(backend):
    kind, root = backend
    cluster = KubeCluster.from_yaml(str(SEED_SPEC), deploy_mode="local")
    try:
        assert cluster.backend == kind and cluster.deploy_mode == "local"
        # the scheduler is an object of this process, listening on loopback (pods run on this machine)
        assert cluster.scheduler.__class__.__name__ == "Scheduler"
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")  # TLS per cluster here too
        assert cluster.sync(cluster.runtime.read_secret, f"{cluster.name}-tls") is not None
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            assert da.ones((1000, 1000, 1000)).mean().compute() == 1.0  # the seed's own
            # the workers are pods of this cluster, and the scheduler made no pod
            pods = cluster.sync(cluster.runtime.list_pods, cluster_selector(cluster.name))
            roles = sorted(p["metadata"]["labels"]["dask.org/component"] for p in pods)
            assert roles == ["worker", "worker"], roles
            assert all(w.startswith(f"{cluster.name}-worker-") for w in cluster.worker_spec)
            logs = cluster.get_logs()
            assert "Scheduler" in logs and "Scheduler at" in logs["Scheduler"]
            worker_logs = {k: v for k, v in logs.items() if "-worker-" in k}
            assert len(worker_logs) == 2 and all("Start worker" in t for t in worker_logs.values()), logs
        cluster.adapt(minimum=1, maximum=100)  # the seed's last step: adapt works with a local scheduler too
        name = cluster.name
    finally:
        cluster.close()

    async def verify():
        check = _runtime(kind)
        try:
            # no Service was made (there is no scheduler pod to serve); worker pods and processes gone
            await assert_nothing_left(check, name, root)
        finally:
            await check.close()

    asyncio.run(verify())


@pytest.mark.asyncio
async def test_scale_down_and_close_remove_worker_pods(backend):
    """Scaling down deletes a worker pod as in remote mode; closing the process's cluster deletes the rest."""
    kind, root = backend
    async with KubeCluster(small_pod(), deploy_mode="local", n_workers=2, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=120)
        cluster.scale(1)
        await wait_until(lambda: _worker_pods(cluster, 1), 60, what="one worker pod left")
        name = cluster.name
    check = _runtime(kind)
    try:
        await assert_nothing_left(check, name, root)
    finally:
        await check.close()


async def _worker_pods(cluster, n):
    pods = await cluster.runtime.list_pods(cluster_selector(cluster.name))
    return len(pods) == n and all(p["metadata"]["labels"]["dask.org/component"] == "worker" for p in pods)


SCRIPT = """
import sys, time
from jupyter_dask_kube import KubeCluster
from distributed import Client
cluster = KubeCluster.from_yaml(sys.argv[1], deploy_mode="local", n_workers=1)
Client(cluster).wait_for_workers(1, timeout=180)
print(cluster.name, flush=True)
time.sleep(600)
"""


def test_killed_process_leaves_worker_pods_the_admin_cli_cleans_up(emulated_kubernetes, monkeypatch, tmp_path):
    """The process holding the scheduler is SIGKILLed: nothing closes its cluster. Its worker pods are
    left (no scheduler pod owns them, no server adopts them); `jupyter dask-kube list` shows them with no
    scheduler and `cleanup --user` removes them: nothing left, checked against the API."""
    import signal
    import subprocess
    import sys

    from jupyter_dask_kube.cli import main as cli
    from jupyter_dask_kube.testing.fixtures import kube_api

    from helpers import pods_of, wait_for

    user = f"k{os.getpid()}{id(tmp_path) % 10000}"
    env = {**os.environ, "KUBECONFIG": emulated_kubernetes.kubeconfig, "JUPYTERHUB_USER": user,
           "DASK_KUBERNETES__BACKEND": "kubernetes"}
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(SEED_SPEC)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith(f"dask-{user}-"), name
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    api = kube_api(emulated_kubernetes)
    try:
        pods = pods_of(api, emulated_kubernetes.namespace, cluster_selector(name))
        assert len(pods) == 1 and all("-worker-" in p for p in pods), pods
        out = []
        monkeypatch.setattr("builtins.print", lambda *a, **k: out.append(" ".join(map(str, a))))
        assert cli(["list"]) == 0
        (row,) = [line for line in out if line.startswith(name)]
        assert row.split()[2:4] == ["-", "1"], row  # no scheduler, one worker
        assert cli(["cleanup", "--user", user]) == 0
        assert any(line.startswith(f"deleted {name}") for line in out), out
        wait_for(lambda: not pods_of(api, emulated_kubernetes.namespace, cluster_selector(name)), 90,
                 what="the worker pods gone")
        wait_for(lambda: not dask_processes(emulated_kubernetes.pid), 60, what="worker processes gone")
    finally:
        api.api_client.close()
