"""Our templates as the Dask Kubernetes operator's custom resources, and those resources as Cluster models
(pure: no I/O).

A DaskCluster (``kubernetes.dask.org/v1``) holds a worker pod spec + replica count and a scheduler pod spec +
Service spec; the operator turns them into Deployments, a Service and a default DaskWorkerGroup. We build the
pod specs with objects.py (the same labels, tolerations, ``--death-timeout``, ``--nthreads``/``--memory-limit``
from limits as our own pods), so a template means the same thing on both backends.

Ownership is the label ``hub.jupyter.org/username=<safe user>`` on the DaskCluster (naming.safe_label_value):
any DaskCluster carrying it shows in that user's panel, whoever made it (kubectl, dask-kubernetes' KubeCluster).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from .. import naming
from ..dashboard import dashboard_link
from ..objects import (
    ANNOTATION_ADAPT, ANNOTATION_DISPLAY_NAME, ANNOTATION_TEMPLATE, DASHBOARD_PORT, LABEL_CLUSTER, LABEL_COMPONENT,
    LABEL_USER, SCHEDULER_PORT, build_scheduler_pod, build_worker_pod, parse_scheduler_annotations,
    parse_timestamp, scheduler_annotations,
)
from ..podstatus import pod_summary, readable_problem
from ..templates import ClusterTemplate

GROUP = "kubernetes.dask.org"
VERSION = "v1"
CLUSTERS = "daskclusters"
WORKER_GROUPS = "daskworkergroups"
AUTOSCALERS = "daskautoscalers"
CRDS = {f"{plural}.{GROUP}" for plural in (CLUSTERS, WORKER_GROUPS, AUTOSCALERS)}
BACKEND = "operator"

# status.phase the operator writes -> our Cluster status
PHASES = {"Created": "pending", "Pending": "starting", "Running": "running", "Error": "failed"}
# The operator injects this variable (the scheduler Service's DNS name) into workers; its worker name too.
WORKER_NAME_ENV = "$(DASK_WORKER_NAME)"


def user_label_selector(username: str) -> str:
    """What lists a user's DaskClusters: the one documented ownership label."""
    return f"{LABEL_USER}={naming.safe_label_value(username)}"


def owned_by(cr: dict, username: str) -> bool:
    return ((cr.get("metadata") or {}).get("labels") or {}).get(LABEL_USER) == naming.safe_label_value(username)


def _pod_spec(pod: dict) -> tuple[dict, dict]:
    """(metadata for the CR's pod template, pod spec) of a pod objects.py built (name and owner dropped: the
    operator names its pods)."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items() if k in ("labels", "annotations") and v}
    return meta, pod["spec"]


def daskcluster(template: ClusterTemplate, *, name: str, username: str, display_name: str, workers: int,
                adapt: dict | None = None, options: dict | None = None, idle_timeout: float | None = None,
                created: datetime | None = None) -> dict:
    """The DaskCluster for a template (options already applied), named ``name`` and owned by ``username``."""
    # The operator sets DASK_SCHEDULER_ADDRESS (its Service's DNS name) unless the pod already has one:
    # leave it to the operator by building the worker without a scheduler address, then dropping the variable.
    worker = build_worker_pod(template.worker, cluster_name=name, username=username,
                              worker_name=WORKER_NAME_ENV, scheduler_address="")
    for c in worker["spec"].get("containers") or []:
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "DASK_SCHEDULER_ADDRESS"]
        if not c["env"]:
            c.pop("env")
    scheduler = build_scheduler_pod(template.scheduler, template.worker, cluster_name=name, username=username,
                                    idle_timeout=idle_timeout)
    for pod in (worker, scheduler):
        # the operator's Deployments restart their pods; a bare pod's Never is not allowed in a Deployment
        pod["spec"]["restartPolicy"] = "Always"
    wmeta, wspec = _pod_spec(worker)
    smeta, sspec = _pod_spec(scheduler)
    component_labels = {LABEL_COMPONENT, LABEL_CLUSTER}  # the operator sets its own values for these
    for meta in (wmeta, smeta):
        meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k not in component_labels}
    labels = {k: v for k, v in worker["metadata"]["labels"].items() if k not in component_labels}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DaskCluster",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": scheduler_annotations(template.name, display_name, workers, adapt, options, created),
        },
        "spec": {
            "idleTimeout": int(idle_timeout or 0),
            "worker": {"replicas": int(workers), "metadata": wmeta, "spec": wspec},
            "scheduler": {
                "metadata": smeta,
                "spec": sspec,
                "service": {
                    "type": "ClusterIP",
                    "selector": {LABEL_CLUSTER: name, LABEL_COMPONENT: "scheduler"},
                    "ports": [
                        {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                         "targetPort": "http-dashboard"},
                    ],
                },
            },
        },
    }


def autoscaler(cluster: str, minimum: int, maximum: int) -> dict:
    """The DaskAutoscaler for adapt: the operator asks the scheduler and scales the default worker group."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DaskAutoscaler",
        "metadata": {"name": cluster},
        "spec": {"cluster": cluster, "minimum": int(minimum), "maximum": int(maximum)},
    }


def default_worker_group(cluster: str) -> str:
    """The DaskWorkerGroup the operator makes for a DaskCluster's spec.worker (the one its autoscaler scales)."""
    return f"{cluster}-default"


def scale_patch(workers: int) -> dict:
    return {"spec": {"worker": {"replicas": int(workers)}}}


def adapt_annotation_patch(adapt: dict | None) -> dict:
    return {"metadata": {"annotations": {ANNOTATION_ADAPT: json.dumps(adapt)}}}


def service_address(svc: dict | None) -> tuple[str, int | None, int | None]:
    """(clusterIP, scheduler port, dashboard port) of the scheduler Service; ("", None, None) before it exists."""
    if not svc:
        return "", None, None
    spec = svc.get("spec") or {}
    ports = {p.get("name"): p.get("port") for p in spec.get("ports") or []}
    ip = spec.get("clusterIP") or ""
    if ip == "None":
        ip = ""
    return ip, ports.get("tcp-comm", SCHEDULER_PORT), ports.get("http-dashboard", DASHBOARD_PORT)


def _ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def cluster_model(cr: dict, *, pods: list[dict], service: dict | None, autoscaler_cr: dict | None = None,
                  worker_group: dict | None = None, now: datetime | None = None, start_timeout: float = 600, base_url: str | None = None,
                  env: dict | None = None) -> dict:
    """One DaskCluster (+ its pods, scheduler Service, default DaskWorkerGroup and DaskAutoscaler) as a Cluster
    model."""
    meta = cr.get("metadata") or {}
    spec = cr.get("spec") or {}
    name = meta.get("name", "")
    ann = parse_scheduler_annotations(meta.get("annotations"))
    annotations = meta.get("annotations") or {}
    created = parse_timestamp(meta.get("creationTimestamp")) or parse_timestamp(ann.get("created"))
    now = now or datetime.now(timezone.utc)
    phase = (cr.get("status") or {}).get("phase")
    summaries = sorted((pod_summary(p) for p in pods), key=lambda p: (p["role"] != "scheduler", p["name"]))
    workers = sum(1 for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPONENT) == "worker"
                  and _ready(p))
    # The default worker group holds the live count: the operator's autoscaler scales it, not the DaskCluster.
    source = (worker_group or {}).get("spec") or spec
    requested = int(((source.get("worker") or {}).get("replicas")) or 0)
    status = PHASES.get(phase, "pending")
    message = ""
    if meta.get("deletionTimestamp"):
        status = "stopping"
    elif phase is None:
        waited = (now - created).total_seconds() if created else 0
        if waited > start_timeout:
            status = "failed"
            message = (f"the Dask operator has not acted on this DaskCluster in {waited:.0f}s: is the operator "
                       f"(dask-kubernetes' controller) running and watching namespace {meta.get('namespace')}?")
        else:
            message = "waiting for the Dask operator to pick up the DaskCluster"
    elif phase == "Error":
        message = "the Dask operator reports an error for this DaskCluster (see the operator's log)"
    ip, port, dash = service_address(service)
    if status in ("starting", "running"):
        # The pods are the truth: the operator marks a cluster Running when it sees its Service's status change,
        # which a ClusterIP Service may never do; and a Running cluster may have lost its scheduler since.
        sched_ready = any(_ready(p) for p in pods
                          if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPONENT) == "scheduler")
        status = "running" if sched_ready and ip and workers >= requested else "starting"
    if status in ("pending", "starting", "running") and not message:
        message = next((readable_problem(p) for p in summaries if p["reason"] and p["phase"] != "Running"), "")
    running = status in ("running", "starting") and bool(ip)
    adapt = None
    if autoscaler_cr is not None:
        a = autoscaler_cr.get("spec") or {}
        adapt = {"minimum": int(a.get("minimum", 0)), "maximum": int(a.get("maximum", 0))}
    worker_spec = (spec.get("worker") or {}).get("spec") or {}
    cores = memory = None
    try:
        t = ClusterTemplate(name="", display_name="", description="", default=False,
                            worker={"kind": "Pod", "spec": worker_spec})
        res = t.worker_resources()
        cores, memory = res["cores"], res["memory"]
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return {
        "id": name,
        "name": annotations.get(ANNOTATION_DISPLAY_NAME) or name,
        "template": annotations.get(ANNOTATION_TEMPLATE) or "",
        "backend": BACKEND,
        "status": status,
        "message": message,
        "scheduler_address": f"tcp://{ip}:{port}" if running else "",
        "dashboard_link": dashboard_link(ip, dash, base_url=base_url, env=env) if running else "",
        "workers": workers,
        "requested_workers": requested,
        "cores": cores,
        "memory": memory,
        "adapt": adapt,
        "created": created.isoformat() if created else None,
        "pods": summaries,
        "warnings": [],
        "client_code": (f'from distributed import Client\nclient = Client("tcp://{ip}:{port}")' if running else ""),
    }


