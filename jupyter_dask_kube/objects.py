"""Manifest builders: worker and scheduler pods, the scheduler Service, labels, annotations.

Pure functions over plain dicts in Kubernetes JSON form, so the Kubernetes runtime can
send them as they are and the local runtime can read them without the client's models.
Only :func:`make_pod_spec` returns a ``V1Pod``, as classic dask-kubernetes did.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import re
from collections import namedtuple
from datetime import datetime, timezone
from typing import Any

from . import naming
from .templates import (  # noqa: F401  (the dask args helpers are part of this module's API)
    container_argv,
    get_arg,
    has_flag,
    is_dask_scheduler,
    is_dask_worker,
    parse_cores,
    parse_memory,
    set_arg,
    set_container_arg,
    worker_container_index,
)

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CLUSTER = "dask.org/cluster-name"
LABEL_COMPONENT = "dask.org/component"
LABEL_USER = "hub.jupyter.org/username"
APP_NAME = "dask"
MANAGED_BY = "jupyter-dask-kube"
COMPONENTS = ("scheduler", "worker")

ANNOTATION_PREFIX = "dask-kube.jupyter.org/"
ANNOTATION_TEMPLATE = ANNOTATION_PREFIX + "template"
ANNOTATION_DISPLAY_NAME = ANNOTATION_PREFIX + "display-name"
ANNOTATION_WORKERS = ANNOTATION_PREFIX + "requested-workers"
ANNOTATION_ADAPT = ANNOTATION_PREFIX + "adapt"
ANNOTATION_CREATED = ANNOTATION_PREFIX + "created"
ANNOTATION_OPTIONS = ANNOTATION_PREFIX + "options"

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
SCHEDULER_PORTS = [
    {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
    {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
]
DEATH_TIMEOUT = "60"
SCHEDULER_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"


def _tolerations(component: str) -> list[dict]:
    # Both keys, as classic dask-kubernetes: GKE node pools do not allow "/" in taint keys.
    return [
        {"key": key, "operator": "Equal", "value": component, "effect": "NoSchedule"}
        for key in ("k8s.dask.org/dedicated", "k8s.dask.org_dedicated")
    ]


DEFAULT_TOLERATIONS = _tolerations("worker")
SCHEDULER_TOLERATIONS = _tolerations("scheduler")


# ------------------------------------------------------------------- labels, selectors

def labels(cluster_name: str, component: str, username: str) -> dict:
    """The labels every object of a cluster carries (what listing and re-adoption select on)."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, not {component!r}")
    if not naming.is_dns_label(cluster_name):
        raise ValueError(f"cluster name {cluster_name!r} is not a DNS-1123 label (see naming.safe_slug)")
    return {
        LABEL_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CLUSTER: cluster_name,
        LABEL_COMPONENT: component,
        LABEL_USER: naming.safe_label_value(username),
    }


def cluster_selector(cluster_name: str) -> str:
    return f"{LABEL_CLUSTER}={cluster_name}"


def component_selector(cluster_name: str, component: str) -> str:
    return f"{LABEL_CLUSTER}={cluster_name},{LABEL_COMPONENT}={component}"


def user_selector(username: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_USER}={naming.safe_label_value(username)}"


# --------------------------------------------------------------------------- annotations

def format_timestamp(when: datetime | None = None) -> str:
    """ISO 8601 UTC with a Z, as Kubernetes writes timestamps (naive means UTC)."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: Any) -> datetime | None:
    """A tz-aware UTC datetime from an ISO 8601 string, None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def scheduler_annotations(
    template: str,
    display_name: str,
    workers: int,
    adapt: dict | None,
    options: dict | None,
    created: datetime | None = None,
) -> dict:
    """What re-adopting a cluster after a server restart needs, kept on the scheduler pod."""
    return {
        ANNOTATION_TEMPLATE: str(template),
        ANNOTATION_DISPLAY_NAME: str(display_name),
        ANNOTATION_WORKERS: str(int(workers)),
        ANNOTATION_ADAPT: json.dumps(
            None if adapt is None else {"minimum": int(adapt["minimum"]), "maximum": int(adapt["maximum"])}
        ),
        ANNOTATION_CREATED: format_timestamp(created),
        ANNOTATION_OPTIONS: json.dumps(options or {}, sort_keys=True, default=str),
    }


def _json(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_scheduler_annotations(annotations: dict | None) -> dict:
    """The inverse of :func:`scheduler_annotations`; never raises (someone may have edited
    the pod): missing or garbled values become defaults. ``created`` is a datetime or None."""
    a = annotations if isinstance(annotations, dict) else {}
    template = a.get(ANNOTATION_TEMPLATE)
    template = template if isinstance(template, str) else ""
    display = a.get(ANNOTATION_DISPLAY_NAME)
    display = display if isinstance(display, str) and display else template
    try:
        workers = max(0, int(str(a.get(ANNOTATION_WORKERS, "0")).strip()))
    except ValueError:
        workers = 0
    adapt = _json(a.get(ANNOTATION_ADAPT))
    if isinstance(adapt, dict):
        lo, hi = _whole(adapt.get("minimum", 0)), _whole(adapt.get("maximum"))
        adapt = {"minimum": lo, "maximum": hi} if lo is not None and hi is not None and lo <= hi else None
    else:
        adapt = None
    options = _json(a.get(ANNOTATION_OPTIONS))
    return {
        "template": template,
        "display_name": display,
        "workers": workers,
        "adapt": adapt,
        "options": options if isinstance(options, dict) else {},
        "created": parse_timestamp(a.get(ANNOTATION_CREATED)),
    }


# ----------------------------------------------------------------------------- helpers

def owner_reference(obj: dict) -> dict:
    """An ownerReference to ``obj`` (the scheduler pod), so deleting it garbage-collects the
    rest. blockOwnerDeletion is False: True needs update permission on the owner's finalizers."""
    metadata = obj.get("metadata") or {}
    if not metadata.get("uid") or not metadata.get("name"):
        raise ValueError("an ownerReference needs the owner's metadata.name and metadata.uid (create it first)")
    return {
        "apiVersion": obj.get("apiVersion") or "v1",
        "kind": obj.get("kind") or "Pod",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def _add_tolerations(spec: dict, defaults: list[dict]) -> None:
    tolerations = list(spec.get("tolerations") or [])
    for t in defaults:
        if t not in tolerations:
            tolerations.append(dict(t))
    spec["tolerations"] = tolerations


def _set_env(container: dict, env: dict) -> None:
    """Our variables first (so the template's values may refer to them as $(NAME)),
    replacing same-named template entries."""
    ours = [{"name": str(k), "value": v if isinstance(v, str) else json.dumps(v) if isinstance(v, bool) else str(v)}
            for k, v in env.items()]
    names = {e["name"] for e in ours}
    container["env"] = ours + [e for e in container.get("env") or [] if e.get("name") not in names]


_SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "selfLink", "managedFields",
                    "generation", "generateName", "deletionTimestamp", "ownerReferences")


def _prepare(template: dict, name: str, pod_labels: dict) -> dict:
    pod = copy.deepcopy(template)
    pod.pop("status", None)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    metadata = pod.get("metadata") or {}
    for key in _SERVER_METADATA:
        metadata.pop(key, None)
    metadata["name"] = name
    metadata["labels"] = {**(metadata.get("labels") or {}), **pod_labels}
    pod["metadata"] = metadata
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Never")
    # A kubelet otherwise gives the pod variables for every Service in the namespace: ours are all named
    # dask-..., so every user's scheduler address would reach every pod as DASK_* config.
    spec.setdefault("enableServiceLinks", False)
    return pod


def _memory_arg(value: str) -> int | None:
    """Bytes of a ``--memory-limit``; None for "auto", 0 and fractions of the host memory."""
    value = value.strip()
    if value in ("auto", "0") or re.fullmatch(r"0?\.\d+|1\.0*|1", value):
        return None
    try:
        return parse_memory(value) or None
    except ValueError:
        return None


# ------------------------------------------------------------------------------ pods

def build_worker_pod(
    template: dict,
    *,
    cluster_name: str,
    username: str,
    worker_name: str,
    scheduler_address: str,
    owner: dict | None = None,
    env: dict | None = None,
) -> dict:
    """A worker pod from the template's worker Pod, with the seed's best practices applied:
    restartPolicy Never, ``--death-timeout 60``, ``--nthreads``/``--memory-limit`` from limits."""
    pod = _prepare(template, worker_name, labels(cluster_name, "worker", username))
    spec = pod["spec"]
    _add_tolerations(spec, DEFAULT_TOLERATIONS)
    extra = {SCHEDULER_ADDRESS_ENV: scheduler_address, **(env or {})}
    for c in spec.get("containers") or []:
        _set_env(c, extra)
    for c in spec.get("containers") or []:
        if not is_dask_worker(c):
            continue
        argv = container_argv(c)
        if not has_flag(argv, "--death-timeout"):
            set_container_arg(c, "--death-timeout", DEATH_TIMEOUT)
        if not has_flag(argv, "--name"):
            set_container_arg(c, "--name", worker_name)
        limits = (c.get("resources") or {}).get("limits") or {}
        if limits.get("cpu") is not None and not has_flag(argv, "--nthreads"):
            set_container_arg(c, "--nthreads", max(1, math.floor(parse_cores(limits["cpu"]))))
        if limits.get("memory") is not None and not has_flag(argv, "--memory-limit"):
            set_container_arg(c, "--memory-limit", parse_memory(limits["memory"]))
        break
    if owner is not None:
        pod["metadata"]["ownerReferences"] = [owner_reference(owner)]
    return pod


class WorkerPodBuilder:
    """:func:`build_worker_pod` for the many workers of one cluster: the pod is built once with a placeholder
    name and kept as JSON; each worker's pod is that text with its own name, parsed. Equal to what
    build_worker_pod gives (tests/test_objects.py checks it) for a third of its CPU: no deep copy of the
    template and no argument edits per pod, which counted when a scale(200) builds 200 of them.

    Every pod it makes differs from the others only in the worker's name (a string), so a runtime may check
    the first one for all (``shape`` of :meth:`PodRuntime.create_worker_pod`)."""

    PLACEHOLDER = "jdk-worker-name-placeholder-0x7f3a9c"
    _SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")  # needs no JSON escaping, so it can replace the placeholder

    def __init__(self, template: dict, finish=None, **kwargs):
        #: What it was built from (build_worker_pod's arguments but the worker name): the cluster compares them.
        #: ``finish``: a pure pod -> pod step after build_worker_pod (the TLS Secret's mount, tls.py).
        self.template, self.kwargs, self.finish = template, kwargs, finish
        self._text: str | None = None
        try:
            if self.PLACEHOLDER not in json.dumps([template, kwargs]):
                built = self._build(self.PLACEHOLDER)
                text = json.dumps(built)
                if json.loads(text) == built:  # not so with non-string keys or tuples: build per pod then
                    self._text = text
        except (TypeError, ValueError):  # not JSON (or an error the call per pod will raise): build per pod
            self._text = None

    def __call__(self, worker_name: str) -> dict:
        if self._text is None or not self._SAFE_NAME.match(worker_name):
            return self._build(worker_name)
        return json.loads(self._text.replace(self.PLACEHOLDER, worker_name))

    def _build(self, worker_name: str) -> dict:
        pod = build_worker_pod(self.template, worker_name=worker_name, **self.kwargs)
        return self.finish(pod) if self.finish else pod


def _nice_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def resource_warnings(pod: dict) -> list[str]:
    """Where a worker's dask args and its container limits disagree (seed best practice 2)."""
    warnings = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        if not is_dask_worker(c):
            continue
        argv = container_argv(c)
        limits = (c.get("resources") or {}).get("limits") or {}
        try:
            processes = int(get_arg(argv, "--nworkers") or get_arg(argv, "--nprocs") or 1)
        except ValueError:
            processes = 1
        processes = max(processes, 1)
        nthreads = get_arg(argv, "--nthreads")
        if nthreads is not None and limits.get("cpu") is not None:
            try:
                threads, cpu = int(nthreads) * processes, parse_cores(limits["cpu"])
            except ValueError:
                threads = cpu = None
            if threads is not None and threads > max(cpu, 1):
                warnings.append(
                    f"container {c.get('name')}: --nthreads {nthreads}"
                    f"{f' x {processes} processes' if processes > 1 else ''} is above the container's cpu "
                    f"limit {limits['cpu']}: workers will be throttled")
        memory_arg = get_arg(argv, "--memory-limit")
        if memory_arg is not None and limits.get("memory") is not None:
            nbytes = _memory_arg(memory_arg)
            try:
                limit = parse_memory(limits["memory"])
            except ValueError:
                limit = None
            if nbytes is not None and limit is not None and nbytes * processes > limit:
                warnings.append(
                    f"container {c.get('name')}: --memory-limit {memory_arg}"
                    f"{f' x {processes} processes' if processes > 1 else ''} is above the container's "
                    f"memory limit {limits['memory']}: Kubernetes may OOM-kill workers")
    return warnings


def scheduler_args(idle_timeout: float | None = None) -> list[str]:
    args = ["dask", "scheduler", "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"]
    if idle_timeout:
        args += ["--idle-timeout", _nice_number(idle_timeout)]
    return args


def build_scheduler_pod(
    template: dict | None,
    worker_template: dict,
    *,
    cluster_name: str,
    username: str,
    annotations: dict | None = None,
    idle_timeout: float | None = None,
    env: dict | None = None,
) -> dict:
    """The scheduler pod: the scheduler template, else the worker pod running ``dask scheduler``
    (as classic dask-kubernetes: same image, environment and resources)."""
    name = naming.scheduler_pod_name(cluster_name)
    pod = _prepare(template if template is not None else worker_template, name,
                   labels(cluster_name, "scheduler", username))
    containers = pod["spec"].get("containers") or []
    if template is None and containers:
        c = containers[worker_container_index(pod)]
        c.pop("command", None)
        c["args"] = scheduler_args(idle_timeout)
        c["ports"] = copy.deepcopy(SCHEDULER_PORTS)
        c.pop("readinessProbe", None)
        c.pop("livenessProbe", None)
    else:
        for c in containers:
            if is_dask_scheduler(c):
                if idle_timeout and not has_flag(container_argv(c), "--idle-timeout"):
                    set_container_arg(c, "--idle-timeout", _nice_number(idle_timeout))
                if not c.get("ports"):
                    c["ports"] = copy.deepcopy(SCHEDULER_PORTS)
                break
    if annotations:
        pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}),
                                          **{k: str(v) for k, v in annotations.items()}}
    _add_tolerations(pod["spec"], SCHEDULER_TOLERATIONS)
    if env:
        for c in containers:
            _set_env(c, env)
    return pod


def build_service(cluster_name: str, username: str, scheduler_pod: dict) -> dict:
    """The ClusterIP Service workers and clients reach the scheduler through."""
    metadata = {"name": naming.service_name(cluster_name), "labels": labels(cluster_name, "scheduler", username)}
    if (scheduler_pod.get("metadata") or {}).get("uid"):
        metadata["ownerReferences"] = [owner_reference(scheduler_pod)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_CLUSTER: cluster_name, LABEL_COMPONENT: "scheduler"},
            "ports": [
                {"name": p["name"], "port": p["containerPort"], "targetPort": p["containerPort"], "protocol": "TCP"}
                for p in SCHEDULER_PORTS
            ],
        },
    }


# ------------------------------------------------------------------------ network policy

#: Who may connect to a cluster's pods besides the cluster itself: the owner's notebook pod, selected by the
#: labels zero-to-jupyterhub's kubespawner gives user pods. In values, ``{username}`` is the username as
#: kubespawner >= 7 (z2jh >= 4) labels it, ``{escaped_username}`` as kubespawner < 7 (z2jh 3.x) did.
DEFAULT_CLIENT_SELECTOR = {"matchLabels": {"component": "singleuser-server", LABEL_USER: "{username}"}}


def client_selector(template: dict | None, username: str) -> dict:
    """The client LabelSelector for one user: ``{username}`` / ``{escaped_username}`` filled in every value."""
    template = DEFAULT_CLIENT_SELECTOR if template is None else template
    if not isinstance(template, dict):
        raise ValueError(f"network policy client selector must be a LabelSelector object, not {template!r}")

    def fill(value):
        if not isinstance(value, str):
            return value
        return value.replace("{username}", naming.kubespawner_username_label(username)).replace(
            "{escaped_username}", naming.kubespawner_escaped_username(username))

    out = {}
    if "matchLabels" in template:
        out["matchLabels"] = {k: fill(v) for k, v in (template.get("matchLabels") or {}).items()}
    if "matchExpressions" in template:
        out["matchExpressions"] = [
            {**e, **({"values": [fill(v) for v in e["values"]]} if e.get("values") else {})}
            for e in template.get("matchExpressions") or []
        ]
    return out


def build_network_policy(cluster_name: str, username: str, scheduler_pod: dict, client: dict,
                         client_namespace: str | None = None, namespace: str | None = None) -> dict:
    """Ingress to the cluster's pods (scheduler and workers) only from the cluster's own pods and from the
    ``client`` pods (a LabelSelector: the owner's notebook pod), owned by the scheduler pod.

    The client may use every port: workers listen on ports distributed picks at random (direct gathers and the
    workers' dashboards need them), and the scheduler's comm and dashboard ports are among them. A client in
    another namespace (a namespace per user) is selected there by its ``kubernetes.io/metadata.name`` label.
    Egress is left alone: workers read data from wherever the user's code says."""
    own = {"matchLabels": {LABEL_CLUSTER: cluster_name}}
    client_peer: dict = {"podSelector": client}
    policy_ns = namespace or (scheduler_pod.get("metadata") or {}).get("namespace")
    if client_namespace and client_namespace != policy_ns:
        client_peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": client_namespace}}
    metadata = {"name": naming.network_policy_name(cluster_name),
                "labels": labels(cluster_name, "scheduler", username)}
    if namespace:
        metadata["namespace"] = namespace
    if (scheduler_pod.get("metadata") or {}).get("uid"):
        metadata["ownerReferences"] = [owner_reference(scheduler_pod)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": own,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": own}]}, {"from": [client_peer]}],
        },
    }


# -------------------------------------------------------------------- classic helper

_FakeResponse = namedtuple("_FakeResponse", ["data"])
_api = None


def _api_client():
    global _api
    if _api is None:
        from kubernetes.client import ApiClient

        _api = ApiClient()
    return _api


def to_model(manifest: dict, klass: str = "V1Pod"):
    """A kubernetes client model (e.g. ``V1Pod``) from a manifest dict.

    Recent clients deserialize response text (with a content type), older ones a response
    object with ``.data``.
    """
    api = _api_client()
    text = json.dumps(manifest)
    if "content_type" in inspect.signature(api.deserialize).parameters:
        return api.deserialize(text, klass, "application/json")
    return api.deserialize(_FakeResponse(text), klass)


def to_manifest(model: Any) -> Any:
    """The manifest dict (Kubernetes JSON form) of a client model."""
    return _api_client().sanitize_for_serialization(model)


def _merge(current: Any, extra: Any) -> Any:
    """Classic dask-kubernetes' merge of extra config: dicts deep-merged, lists appended."""
    if isinstance(current, dict) and isinstance(extra, dict):
        out = dict(current)
        for k, v in extra.items():
            out[k] = _merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    if isinstance(current, list) and isinstance(extra, list):
        return current + copy.deepcopy(extra)
    return copy.deepcopy(extra)


def _merge_attributes(target: dict, extra: dict | None, klass) -> None:
    allowed = set(klass.attribute_map.values())
    for key, value in (extra or {}).items():
        if key not in allowed:
            raise ValueError(f"{key!r} is not a {klass.__name__} attribute; use one of: {', '.join(sorted(allowed))}")
        target[key] = _merge(target[key], value) if key in target else copy.deepcopy(value)


def make_pod_spec(
    image,
    labels=None,
    threads_per_worker=1,
    env=None,
    extra_container_config=None,
    extra_pod_config=None,
    memory_limit=None,
    memory_request=None,
    cpu_limit=None,
    cpu_request=None,
    gpu_limit=None,
    annotations=None,
):
    """A worker ``V1Pod`` as classic dask-kubernetes' ``make_pod_spec`` made it.

    >>> make_pod_spec(image="ghcr.io/dask/dask:latest", memory_limit="4G", cpu_limit=1)  # doctest: +SKIP
    """
    from kubernetes.client import V1Container, V1PodSpec

    args = ["dask-worker", "$(DASK_SCHEDULER_ADDRESS)", "--nthreads", str(threads_per_worker),
            "--death-timeout", DEATH_TIMEOUT]
    if memory_limit:
        args += ["--memory-limit", str(memory_limit)]
    limits, requests = {}, {}
    for target, key, value in ((requests, "cpu", cpu_request), (requests, "memory", memory_request),
                               (limits, "cpu", cpu_limit), (limits, "nvidia.com/gpu", gpu_limit),
                               (limits, "memory", memory_limit)):
        if value:
            target[key] = _nice_number(value) if isinstance(value, float) else str(value)
    container = {
        "name": "dask-worker",
        "image": image,
        "args": args,
        "env": [{"name": str(k), "value": str(v)} for k, v in (env or {}).items()],
        "resources": {"limits": limits, "requests": requests},
    }
    _merge_attributes(container, extra_container_config, V1Container)
    spec = {"restartPolicy": "Never", "containers": [container], "tolerations": copy.deepcopy(DEFAULT_TOLERATIONS)}
    _merge_attributes(spec, extra_pod_config, V1PodSpec)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": spec,
    }
    return to_model(pod, "V1Pod")
