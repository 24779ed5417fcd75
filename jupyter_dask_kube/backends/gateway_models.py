"""Dask-Gateway's options and cluster reports as DESIGN.md's Template and Cluster models (pure: no I/O).

The gateway's option fields (``dask_gateway.options``: Integer, Float, Select, Bool, String) become our option
fields with the gateway's own bounds; values are checked by those same field objects, so what the panel accepts
is exactly what ``Gateway.new_cluster(**options)`` would accept. Mapping fields have no form control: they keep
the gateway's default.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from dask_gateway.options import Bool, Field, Float, Integer, Mapping, Options, Select, String

from ..bodies import ApiError
from ..templates import TemplateError, parse_memory

TEMPLATE_NAME = "gateway"

# dask_gateway.client.ClusterStatus names -> our Cluster status
STATUS = {"PENDING": "pending", "RUNNING": "running", "STOPPING": "stopping", "STOPPED": "stopping", "FAILED": "failed"}

# Option names dask-gateway's shipped ClusterConfig traits use for the worker size (for the template card).
WORKER_CORES = ("worker_cores", "worker_cores_limit")
WORKER_MEMORY = ("worker_memory", "worker_memory_limit")
IMAGE = ("image", "worker_image")
GIB_BELOW = 1024  # a bare memory number this small is in GiB (daskhub's and the gateway docs' options), else bytes


def memory_bytes(value) -> int | None:
    """A worker-memory option value in bytes: "4G", 4 (GiB), 4294967296 (bytes); None when it is not memory."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value * 2**30) if value < GIB_BELOW else int(value)
    try:
        return parse_memory(value)
    except (TemplateError, ValueError, TypeError):
        return None


def option_field(f: Field) -> dict | None:
    """One gateway option field as our option model; None for a kind we cannot show (Mapping)."""
    out = {"name": f.field, "label": f.label or f.field, "default": f.value}
    if isinstance(f, Bool):
        out["type"] = "bool"
    elif isinstance(f, Integer):
        out["type"] = "integer"
    elif isinstance(f, Float):
        out["type"] = "float"
    elif isinstance(f, Select):
        out["type"] = "select"
        out["choices"] = list(f.options)
    elif isinstance(f, String):
        out["type"] = "string"
    else:  # Mapping, or a field type registered by a deployment
        return None
    if isinstance(f, (Integer, Float)):
        if f.min is not None:
            out["min"] = f.min
        if f.max is not None:
            out["max"] = f.max
    return out


def template(options: Options, address: str) -> dict:
    """The gateway's cluster options as one Template."""
    fields = list(options._fields.values())  # dask_gateway keeps its Field objects here, in the gateway's order
    values = {f.field: f.value for f in fields}

    def first(names):
        return next((values[n] for n in names if n in values), None)

    return {
        "name": TEMPLATE_NAME,
        "display_name": "Dask Gateway",
        "description": f"A cluster from the Dask Gateway at {address}, with the options it offers.",
        "default": True,
        "backend": "gateway",
        "worker": {
            "cores": first(WORKER_CORES),
            "memory": memory_bytes(first(WORKER_MEMORY)),
            "image": first(IMAGE),
        },
        "options": [o for o in map(option_field, fields) if o is not None],
    }


def apply_options(options: Options, values: dict) -> dict:
    """Check the user's values with the gateway's own fields; the options to submit. ApiError(400) when refused."""
    if not isinstance(values, dict):
        raise ApiError(400, "options must be an object of option name to value")
    shown = {f.field: f for f in options._fields.values() if option_field(f) is not None}
    for key, value in values.items():
        if key not in shown:
            known = ", ".join(shown) or "none"
            raise ApiError(400, f"unknown option {key!r} (the gateway offers: {known})")
        try:
            options[key] = value
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"option {key}: {exc}") from None
    return dict(options)


def connect_code(name: str) -> str:
    """What a notebook runs to use the cluster: the gateway's own client, which brings the cluster's TLS."""
    return (
        "from dask_gateway import Gateway\n"
        f"cluster = Gateway().connect({json.dumps(name)})\n"
        "client = cluster.get_client()\n"
        "client"
    )


def _created(start_time) -> str | None:
    if isinstance(start_time, datetime):
        # dask_gateway reports naive local times (datetime.fromtimestamp)
        return start_time.astimezone(timezone.utc).isoformat()
    return None


def cluster_model(
    report,
    *,
    workers: dict | None,
    requested: int | None,
    adapt: dict | None,
    display_name: str | None = None,
    message: str = "",
    warnings: list | None = None,
) -> dict:
    """A Cluster model from a ``dask_gateway.client.ClusterReport`` and the scheduler's worker table (or None
    before we are connected to it)."""
    status = STATUS.get(report.status.name, "pending")
    if status == "running":
        # running for the gateway; "starting" for us until we see the scheduler and the workers asked for
        target = adapt["minimum"] if adapt else requested
        if workers is None or (target is not None and len(workers) < target):
            status = "starting"
    workers = workers or {}
    connected = len(workers)
    return {
        "id": report.name,
        "name": display_name or report.name,
        "template": TEMPLATE_NAME,
        "backend": "gateway",
        "status": status,
        "message": message,
        "scheduler_address": report.scheduler_address or "",
        "dashboard_link": report.dashboard_link or "",
        "workers": connected,
        "requested_workers": connected if requested is None else requested,
        "cores": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory": sum(w.get("memory_limit", 0) or 0 for w in workers.values()),
        "adapt": dict(adapt) if adapt else None,
        "created": _created(report.start_time),
        "pods": [],
        "warnings": list(warnings or []),
        "options": dict(report.options or {}),
        "connect_code": connect_code(report.name),
    }
