"""Find a user's clusters by name, and list them: what ``KubeCluster.from_name`` and ``list_clusters`` read.

Works from any process that reaches the Kubernetes API (another kernel, a terminal, a laptop with a
kubeconfig): everything is read from the scheduler pods' labels and annotations and the Services, which is
where the panel, REST and Python clusters all keep it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json

from .lifetimes import parse_lifetime_annotations
from .naming import current_user, is_dns_label, safe_label_value, scheduler_pod_name, service_name
from .objects import (
    LABEL_CLUSTER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_USER,
    MANAGED_BY,
    SCHEDULER_PORT,
    format_timestamp,
    parse_scheduler_annotations,
    user_selector,
)
from .podstatus import is_running, is_terminal, pod_problem
from .runtimes import PodRuntime, make_runtime, resolve_backend
from .tls import ANNOTATION_TLS


class ClusterNotFound(LookupError):
    """No cluster of this user has that name; the message lists the ones there are."""


def check_attachable(name, backend: str | None) -> None:
    """Refuse what cannot name a cluster, before anything connects."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"from_name needs a cluster name (a non-empty string), not {name!r}")
    if resolve_backend(backend) != "kubernetes":
        raise ValueError(
            f"cannot attach to cluster {name!r}: no Kubernetes API is configured (backend local). Clusters of the "
            "local backend live inside the Jupyter server that made them; use the Dask Clusters panel there."
        )


def service_address(svc: dict, namespace: str, tls: bool = False) -> str:
    """The scheduler's address through its Service: the clusterIP, else the Service's DNS name."""
    ip = (svc.get("spec") or {}).get("clusterIP")
    host = ip if ip and ip != "None" else f"{svc['metadata']['name']}.{namespace}"
    return f"{'tls' if tls else 'tcp'}://{host}:{SCHEDULER_PORT}"


def connect_code(name: str, namespace: str) -> str:
    """What a notebook runs to get the cluster object itself (scale, adapt, logs), attached by name; the
    namespace is spelled out because the kernel's default one (its kubeconfig's, or its pod's) may differ."""
    return (
        "from jupyter_dask_kube import KubeCluster\n"
        f"cluster = KubeCluster.from_name({json.dumps(name)}, namespace={json.dumps(namespace)})\n"
        "client = cluster.get_client()\n"
        "client"
    )


def _schedulers(pods: list[dict]) -> list[dict]:
    return [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == "scheduler"]


async def find_cluster(runtime: PodRuntime, name: str, username: str | None = None) -> str:
    """The id of the user's cluster called ``name`` (its id, or the name its card shows)."""
    username = username or current_user()
    mine = safe_label_value(username)
    if is_dns_label(name):
        pod = await runtime.read_pod(scheduler_pod_name(name))
        labels = (pod or {}).get("metadata", {}).get("labels") or {}
        if pod is not None and labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_CLUSTER) == name:
            if labels.get(LABEL_USER) != mine:
                raise PermissionError(f"cluster {name!r} in namespace {runtime.namespace} is not yours")
            if pod["metadata"].get("deletionTimestamp") or is_terminal(pod):
                raise ClusterNotFound(f"cluster {name!r} has ended (its scheduler pod is "
                                      f"{'being deleted' if pod['metadata'].get('deletionTimestamp') else pod['status'].get('phase')})")
            return name
    schedulers = _schedulers(await runtime.list_pods(user_selector(username)))
    by_display = [
        p["metadata"]["labels"][LABEL_CLUSTER] for p in schedulers
        if parse_scheduler_annotations(p["metadata"].get("annotations")).get("display_name") == name
        and not is_terminal(p)
    ]
    if len(by_display) == 1:
        return by_display[0]
    if len(by_display) > 1:
        raise ClusterNotFound(f"{len(by_display)} clusters are called {name!r}: use one of their ids: {', '.join(sorted(by_display))}")
    there = sorted(p["metadata"]["labels"][LABEL_CLUSTER] for p in schedulers if not is_terminal(p))
    raise ClusterNotFound(
        f"no Dask cluster named {name!r} for user {username} in namespace {runtime.namespace}; "
        + (f"yours: {', '.join(there)}" if there else "you have none")
    )


def _status(pod: dict) -> tuple[str, str]:
    if pod["metadata"].get("deletionTimestamp"):
        return "stopping", ""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return "ended", "the scheduler exited"
    problem = pod_problem(pod)
    if problem or phase == "Failed":
        return "failed", problem or "the scheduler failed"
    return ("running" if is_running(pod) else "pending"), ""


async def list_cluster_models(runtime: PodRuntime, username: str | None = None) -> list[dict]:
    """The user's clusters, oldest first, from two list calls (pods and Services)."""
    username = username or current_user()
    pods, services = await asyncio.gather(
        runtime.list_pods(user_selector(username)), runtime.list_services(user_selector(username))
    )
    svcs = {s["metadata"]["name"]: s for s in services}
    out = []
    for sched in _schedulers(pods):
        cid = sched["metadata"]["labels"][LABEL_CLUSTER]
        meta = parse_scheduler_annotations(sched["metadata"].get("annotations"))
        expires, keep = parse_lifetime_annotations(sched["metadata"].get("annotations"))
        status, message = _status(sched)
        workers = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_CLUSTER) == cid
                   and p["metadata"]["labels"].get(LABEL_COMPONENT) == "worker"]
        svc = svcs.get(service_name(cid))
        out.append({
            "name": cid,
            "display_name": meta["display_name"] or cid,
            "template": meta["template"] or "(python)",
            "status": status,
            "message": message,
            "workers": sum(1 for w in workers if is_running(w)),
            "requested_workers": len([w for w in workers if not is_terminal(w)]),
            "scheduler_address": (service_address(svc, runtime.namespace, ANNOTATION_TLS in (sched["metadata"].get("annotations") or {}))
                                  if svc and status == "running" else ""),
            "namespace": runtime.namespace,
            "created": format_timestamp(meta["created"]) if meta["created"] else sched["metadata"].get("creationTimestamp"),
            "expires": format_timestamp(expires) if expires else None,
            "keep": keep,
        })
    out.sort(key=lambda m: m["created"] or "")
    return out


def list_clusters(namespace: str | None = None, backend: str | None = None) -> list[dict]:
    """Your clusters in the namespace: dicts with name, status, workers, scheduler_address, expires, keep...

    Attach to one with ``KubeCluster.from_name(c["name"])``. Blocking; safe to call from a notebook (it runs
    its own event loop in a thread, beside the kernel's).
    """
    if resolve_backend(backend) != "kubernetes":
        raise ValueError("list_clusters needs a Kubernetes API (backend local keeps its clusters inside its Jupyter server)")

    async def run():
        runtime = make_runtime("kubernetes", namespace)
        try:
            return await list_cluster_models(runtime)
        finally:
            await runtime.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
