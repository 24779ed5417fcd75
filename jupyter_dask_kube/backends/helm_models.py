"""Dask Helm chart releases (github.com/dask/helm-chart, chart ``dask``) as attached Cluster models (pure: no I/O).

The chart makes, per release, a scheduler Deployment + Service named ``{fullname}-scheduler`` and a worker
Deployment ``{fullname}-worker``, labelled (default label style) ``app=dask``, ``release={release}``,
``component=scheduler|worker``, ``heritage=Helm``; classic dask-kubernetes' HelmCluster finds a release by the
same labels. Pods carry ``app``, ``release`` and ``component``. A release missing a part, or whose objects do
not carry those labels, is shown failed with the reason instead of being guessed at.
"""
from __future__ import annotations

from ..dashboard import dashboard_link
from ..objects import parse_timestamp
from ..podstatus import pod_summary, readable_problem
from ..templates import ClusterTemplate

BACKEND = "helm"
ID_PREFIX = "helm."
APP_LABEL, RELEASE_LABEL, COMPONENT_LABEL = "app", "release", "component"
SELECTOR = f"{APP_LABEL}=dask"  # everything the chart makes (deployments, services, pods)


def cluster_id(release: str) -> str:
    return ID_PREFIX + release


def release_of(cluster_id: str) -> str | None:
    """The release a Cluster id names; None when it is not a Helm release's id."""
    if cluster_id.startswith(ID_PREFIX) and len(cluster_id) > len(ID_PREFIX):
        return cluster_id[len(ID_PREFIX):]
    return None


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def releases(deployments: list[dict], services: list[dict]) -> dict[str, dict]:
    """release -> {"scheduler": Deployment|None, "worker": Deployment|None, "service": Service|None,
    "problems": [str]} for every object labelled ``app=dask`` with a ``release``."""
    out: dict[str, dict] = {}

    def entry(release):
        return out.setdefault(release, {"scheduler": None, "worker": None, "service": None, "problems": []})

    for kind, objs in (("Deployment", deployments), ("Service", services)):
        for obj in objs:
            labels = _labels(obj)
            if labels.get(APP_LABEL) != "dask":
                continue
            name = (obj.get("metadata") or {}).get("name", "")
            release = labels.get(RELEASE_LABEL)
            if not release:
                continue  # not the chart's (our own pods' Services carry app.kubernetes.io labels, not these)
            e = entry(release)
            component = labels.get(COMPONENT_LABEL)
            if kind == "Service":
                if component == "scheduler":
                    e["service"] = obj
                continue
            if component in ("scheduler", "worker"):
                if e[component] is not None:
                    e["problems"].append(f"two {component} Deployments in release {release}: "
                                         f"{e[component]['metadata']['name']} and {name}")
                else:
                    e[component] = obj
            else:
                e["problems"].append(f"Deployment {name} of release {release} has label {COMPONENT_LABEL}="
                                     f"{component!r}; the Dask chart labels scheduler and worker")
    for release, e in out.items():
        for part, what in (("scheduler", "scheduler Deployment"), ("worker", "worker Deployment"),
                           ("service", "scheduler Service")):
            if e[part] is None:
                e["problems"].append(f"release {release} has no {what} labelled {APP_LABEL}=dask, "
                                     f"{RELEASE_LABEL}={release}, {COMPONENT_LABEL}={'worker' if part == 'worker' else 'scheduler'}")
    return out


def _ready_pod(pod: dict) -> bool:
    status = pod.get("status") or {}
    return (status.get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []))


def release_pods(release: str, pods: list[dict]) -> list[dict]:
    return [p for p in pods if _labels(p).get(RELEASE_LABEL) == release and _labels(p).get(APP_LABEL) == "dask"]


def _service_ports(svc: dict | None) -> tuple[str, int | None, int | None]:
    if not svc:
        return "", None, None
    spec = svc.get("spec") or {}
    by_target = {str(p.get("targetPort", p.get("port"))): p.get("port") for p in spec.get("ports") or []}
    ip = spec.get("clusterIP") or ""
    return ("" if ip == "None" else ip), by_target.get("8786"), by_target.get("8787")


def cluster_model(release: str, parts: dict, pods: list[dict], *, base_url: str | None = None,
                  env: dict | None = None) -> dict:
    """One release as an attached Cluster model (``template`` is empty: it was deployed by Helm, not by us)."""
    pods = release_pods(release, pods)
    summaries = []
    for p in pods:
        s = dict(pod_summary(p))
        s["role"] = _labels(p).get(COMPONENT_LABEL) or s["role"]
        summaries.append(s)
    summaries.sort(key=lambda p: (p["role"] != "scheduler", p["name"]))
    workers = sum(1 for p in pods if _labels(p).get(COMPONENT_LABEL) == "worker" and _ready_pod(p))
    worker = parts.get("worker")
    requested = int(((worker or {}).get("spec") or {}).get("replicas") or 0)
    ip, port, dash = _service_ports(parts.get("service"))
    sched_ready = any(_labels(p).get(COMPONENT_LABEL) == "scheduler" and _ready_pod(p) for p in pods)
    problems = list(parts.get("problems") or [])
    if problems:
        status, message = "failed", "; ".join(problems)
    elif not sched_ready:
        status = "pending"
        message = next((readable_problem(p) for p in summaries if p["reason"]), "waiting for the scheduler pod")
    else:
        status = "running" if workers >= requested else "starting"
        message = next((readable_problem(p) for p in summaries if p["reason"] and p["phase"] != "Running"), "")
    running = status in ("running", "starting") and bool(ip) and bool(port)
    cores = memory = None
    wspec = (((worker or {}).get("spec") or {}).get("template") or {}).get("spec")
    if wspec:
        try:
            res = ClusterTemplate(name="", display_name="", description="", default=False,
                                  worker={"kind": "Pod", "spec": wspec}).worker_resources()
            cores, memory = res["cores"], res["memory"]
        except (KeyError, IndexError, TypeError, ValueError):
            pass
    created = parse_timestamp(((parts.get("scheduler") or worker or {}).get("metadata") or {}).get("creationTimestamp"))
    return {
        "id": cluster_id(release),
        "name": release,
        "template": "",
        "backend": BACKEND,
        "status": status,
        "message": message,
        "scheduler_address": f"tcp://{ip}:{port}" if running else "",
        "dashboard_link": dashboard_link(ip, dash, base_url=base_url, env=env) if running and dash else "",
        "workers": workers,
        "requested_workers": requested,
        "cores": cores,
        "memory": memory,
        "adapt": None,
        "created": created.isoformat() if created else None,
        "pods": summaries,
        "warnings": ["deployed with Helm: attached, scaled through the worker Deployment"],
        "client_code": f'from distributed import Client\nclient = Client("tcp://{ip}:{port}")' if running else "",
    }


def scale_patch(workers: int) -> dict:
    return {"spec": {"replicas": int(workers)}}
