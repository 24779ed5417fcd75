"""KubeCluster.get_logs() in Python, remote scheduler: each pod's logs by pod name, the scheduler first, read
through the runtime as the REST logs are (one implementation: jupyter_dask_kube.podlogs). On the local
runtime and on the emulated Kubernetes API (pods/log served by the emulator's kubelet)."""
import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster

from helpers import WORKERS_UP, small_pod
from test_cluster import backend, make_runtime, target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.asyncio


async def test_get_logs_has_every_pod_scheduler_first(make_runtime):  # noqa: F811
    rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, n_workers=2, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=WORKERS_UP)
        workers = sorted(cluster.worker_spec)
        logs = await cluster.get_logs()
        assert list(logs) == [f"{cluster.name}-scheduler", *workers], list(logs)
        assert "Scheduler at" in logs[f"{cluster.name}-scheduler"]
        for w in workers:
            assert "Start worker" in logs[w] and cluster.scheduler_address.split("://")[1].split(":")[0] in logs[w]
        # the notebook display of distributed's Logs works on them
        assert f"{cluster.name}-scheduler" in logs._repr_html_()

        only_workers = await cluster.get_logs(scheduler=False)
        assert list(only_workers) == workers
        only_scheduler = await cluster.get_logs(workers=False)
        assert list(only_scheduler) == [f"{cluster.name}-scheduler"]
