"""Small pieces several test files share (pytest puts tests/ on sys.path: `from helpers import ...`).

The real `jupyter server` subprocess harness is in jupyter_process.py.
"""
import asyncio
import copy
import inspect
import json
import time
from collections import namedtuple

WORKER_ARGS = ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB", "--death-timeout", "60"]
LIMITS_1CPU_1G = {"limits": {"cpu": "1", "memory": "1G"}}
WORKERS_UP = 120  # s for a dask worker process to start and connect: generous, the suite runs on 2 busy cores


# -- pods and templates --------------------------------------------------------------------------------
def small_pod(**container):
    """A one-container worker pod template: 1 thread, 1 GB; keyword arguments replace container fields."""
    c = {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": list(WORKER_ARGS)}
    c.update(container)
    return {"kind": "Pod", "spec": {"restartPolicy": "Never", "containers": [c]}}


def limited_pod(**container):
    """:func:`small_pod` whose container has limits of 1 CPU and 1G: what the cores/memory options of a
    template change, and what the emulated scheduler places pods by."""
    return small_pod(**{"resources": copy.deepcopy(LIMITS_1CPU_1G), **container})


def tiny_template(**fields):
    """The default template "tiny" of the server tests: one :func:`limited_pod` worker; keyword arguments
    replace template fields."""
    return {"display_name": "Tiny (1 thread, 1 GB)", "default": True, "workers": 1, "worker": limited_pod(), **fields}


# -- waiting -------------------------------------------------------------------------------------------
class Pending(str):
    """A predicate's answer that says why a wait goes on (shown when the wait times out); never counts as done."""


def _done(value) -> bool:
    return bool(value) and not isinstance(value, Pending)


def _timed_out(timeout, what, last, detail=None) -> AssertionError:
    message = f"timed out after {timeout}s waiting for {what}; last seen: {last!r}"
    return AssertionError(message + (f"\n{detail()}" if detail else ""))


async def wait_until(predicate, timeout=60, *, interval=0.1, what="condition"):
    """Poll ``predicate`` (sync or async) until truthy and not :class:`Pending`, its value; fail the test
    after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if _done(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, value)
        await asyncio.sleep(interval)


def wait_for(predicate, timeout=60, *, interval=0.25, what="condition", detail=None):
    """:func:`wait_until` for plain (blocking) code; ``detail()``, when given, is added to the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if _done(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, value, detail)
        time.sleep(interval)


# -- the REST API through pytest-jupyter's jp_fetch ---------------------------------------------------------
async def rest_call(jp_fetch, method, *path, body=None, expect=None):
    """(status, json) of a dask-kube API call: 4xx/5xx answers are returned, not raised. ``body``: a dict
    (sent as JSON) or str/bytes (sent as is)."""
    kwargs = {"method": method, "raise_error": False}
    if body is not None:
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
    elif method in ("POST", "PATCH", "PUT"):
        kwargs["body"] = ""
    resp = await jp_fetch("dask-kube", "api", *path, **kwargs)
    data = json.loads(resp.body) if resp.body else None
    if expect is not None:
        assert resp.code == expect, (resp.code, data)
    return resp.code, data


async def wait_model(jp_fetch, cid, predicate, timeout=120, *, interval=0.2, what="cluster state"):
    """The cluster's REST model once ``predicate(model)`` holds."""
    async def check():
        code, model = await rest_call(jp_fetch, "GET", "clusters", cid)
        return model if code == 200 and predicate(model) else Pending(f"{code} {model}")

    return await wait_until(check, timeout, interval=interval, what=what)


# -- Kubernetes objects of a user or cluster --------------------------------------------------------------------
async def no_pods(runtime, selector) -> bool:
    """Whether the runtime (jupyter_dask_kube.runtimes) lists no pod for the selector."""
    return not await runtime.list_pods(selector)


def pods_of(api, namespace, selector) -> dict:
    """name -> (uid, phase, deleting) of every pod the label selector matches (``api``: a kubernetes CoreV1Api)."""
    return {
        p.metadata.name: (p.metadata.uid, p.status.phase, bool(p.metadata.deletion_timestamp))
        for p in api.list_namespaced_pod(namespace, label_selector=selector).items
    }


def services_of(api, namespace, selector) -> list:
    return [s.metadata.name for s in api.list_namespaced_service(namespace, label_selector=selector).items]


def delete_objects(api, namespace, selector):
    """Delete (at once) every pod and Service the label selector matches."""
    api.delete_collection_namespaced_pod(namespace, label_selector=selector, grace_period_seconds=0)
    for name in services_of(api, namespace, selector):
        api.delete_namespaced_service(name, namespace)


async def detached_cluster(user, *, kubeconfig=None, runtime=None, pod=None, workers=1, timeout=WORKERS_UP):
    """A cluster made from Python with a remote scheduler, left running once its ``workers`` are connected
    (what a notebook kernel that is gone leaves behind); its name. On ``runtime``, else on a
    KubernetesRuntime of ``kubeconfig`` made and closed here."""
    from jupyter_dask_kube import KubeCluster
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    own = runtime is None
    if own:
        runtime = KubernetesRuntime(kubeconfig=kubeconfig)
    try:
        cluster = KubeCluster(pod or small_pod(), runtime=runtime, username=user, asynchronous=True,
                              n_workers=workers)
        await cluster
        try:
            await cluster._wait_for_workers(workers, timeout=timeout)
        except BaseException:
            await cluster.close()
            raise
        assert cluster.deploy_mode == "remote"
        await cluster.detach()  # keep the pods
        return cluster.name
    finally:
        if own:
            await runtime.close()


# -- the official kubernetes client's (de)serialization -----------------------------------------------------
_Response = namedtuple("_Response", ["data"])


def deserialize(manifest, klass):
    """The official client's own deserialization, as the API response path does it."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    text = json.dumps(manifest)
    if "content_type" in inspect.signature(api.deserialize).parameters:  # kubernetes >= 35
        return api.deserialize(text, klass, "application/json")
    return api.deserialize(_Response(text), klass)


def assert_round_trips(manifest, klass="V1Pod"):
    from kubernetes.client import ApiClient

    model = deserialize(manifest, klass)
    assert type(model).__name__ == klass
    assert ApiClient().sanitize_for_serialization(model) == manifest
    return model
