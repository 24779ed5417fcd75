"""Service links: a kubelet gives every pod variables for every Service of its namespace. Ours are all named
dask-..., so without enableServiceLinks: false every worker would get DASK_* variables (read by dask as
config) naming every other user's scheduler. The node agent injects them as a kubelet does; on every
Kubernetes target (the emulator, the real kube-apiserver, JDK_TEST_REAL_KUBECONFIG)."""
from __future__ import annotations

import copy
import os
import re
import sys

import cloudpickle

import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import WORKERS_UP, limited_pod

pytestmark = pytest.mark.asyncio
SERVICE_VAR = re.compile(r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT|PORT)(_.*)?$")


def _service_vars() -> dict:
    """Run on the worker (this module is pickled by value: workers cannot import it)."""
    return {k: v for k, v in os.environ.items() if SERVICE_VAR.match(k)}


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _env_name(service: str) -> str:
    return service.upper().replace("-", "_")


async def _worker_service_vars(cluster) -> dict:
    async with Client(cluster, asynchronous=True) as client:
        await client.wait_for_workers(1, timeout=WORKERS_UP)
        found = await client.run(_service_vars)
    (env,) = found.values()
    return env


async def test_workers_get_no_other_clusters_service_variables(kube_target):
    rt = KubernetesRuntime(kube_target.namespace, kubeconfig=kube_target.kubeconfig)
    other = KubeCluster(limited_pod(), runtime=rt, username="other-user", asynchronous=True)
    ours = linked = None
    try:
        await other  # another user's cluster: its Service exists in the namespace before our pods start
        other_var = f"{_env_name(other.name)}_SERVICE_HOST"
        ours = await KubeCluster(limited_pod(), runtime=rt, n_workers=1, asynchronous=True)
        env = await _worker_service_vars(ours)
        assert not [k for k in env if k.startswith("DASK_")], env
        assert other_var not in env, env

        # Control: a template that turns links on gets them, so the agent does inject what a kubelet would.
        pod = copy.deepcopy(limited_pod())
        pod["spec"]["enableServiceLinks"] = True
        linked = await KubeCluster(pod, runtime=rt, n_workers=1, asynchronous=True)
        env = await _worker_service_vars(linked)
        host = other.scheduler_address.split("://", 1)[1].rsplit(":", 1)[0]
        assert env.get(other_var) == host, (other_var, env)
    finally:
        for c in (linked, ours, other):
            if c is not None:
                await c.close()
        await rt.close()
