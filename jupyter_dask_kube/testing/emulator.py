"""A Kubernetes API emulator: kmock's KubernetesEmulator with the API server behaviour the project needs.

What is kept from kmock, through its public API only (``kmock.KubernetesEmulator`` and its request entry point,
``kmock.ResourceInfo``, ``kmock.KubernetesError``): API discovery of ``/api``, ``/apis`` and ``/version`` (fed
from ``self.resources``), and kmock's own generic store for any resource not listed in
:data:`BUILTIN_RESOURCES` (custom objects work as in kmock). The resource lists of the built-in group versions
are served here.

What is replaced, for the built-in core resources (pods, services, namespaces, nodes, events, configmaps,
secrets) and SelfSubjectAccessReviews, because kmock's generic path cannot do it (see RECIPES.md):
namespaces from the URL, generateName, uid, a real monotonic resourceVersion (objects, lists and watches),
creationTimestamp, kind/apiVersion, 201/409/404/422 Status answers with Kubernetes' wording,
label and field selectors on list/watch/deletecollection, watch resume and 410 Gone, timeoutSeconds,
graceful pod deletion with a kubelet, ownerReference garbage collection, merge / strategic-merge / JSON patch,
PUT, pods/status, pods/log, Service clusterIP allocation, and fault injection (:class:`EmulatorFaults`).
The store is a dict per resource keyed by (namespace, name): O(1) reads and writes, one JSON encoding per
watch event shared by all watchers, no per-version history kept beyond a bounded watch-event window.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import json
import logging
import random
import re
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
import kmock

from ..quantities import parse_quantity
from ..selectors import SelectorError, parse_field_selector, parse_label_selector
from .kubeletserver import CONTROL_HEADER

try:  # orjson is several times faster for the many small JSON documents served here
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover
    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

log = logging.getLogger("jupyter_dask_kube.testing")

#: A request carrying this header (any value) is never given an injected fault: lets a test check the API's
#: state through a second client while faults stay on for the code under test.
NO_FAULTS_HEADER = "X-Emulator-No-Faults"
#: What the kubelet's eviction manager writes on a pod it evicted under memory pressure.
EVICTION_MESSAGE = "The node was low on resource: memory. "

__all__ = ["BUILTIN_RESOURCES", "EVICTION_MESSAGE", "NO_FAULTS_HEADER", "ApiError", "EmulatorFaults", "KubeEmulator"]


# ---------------------------------------------------------------------------------------------------------
# Faults
@dataclasses.dataclass
class EmulatorFaults:
    """Faults injected into API answers. Empty (no fault) by default.

    - ``error_rate``: fraction (0..1) of API requests answered with one of ``error_statuses``.
    - ``latency``: seconds added before every API answer.
    - ``drop_watch_after``: seconds after which every watch connection is cut (no clean end).
    - ``forbidden``: ``{(verb, resource)}`` answered 403 like RBAC does (and reported by SelfSubjectAccessReview);
      resource may carry a subresource (``"pods/log"``); ``"*"`` matches any verb or resource.
    - ``review_denied``: ``{(verb, resource)}`` that SelfSubjectAccessReview reports as not allowed, without
      enforcing it (to test RBAC preflight alone).
    - ``quota``: ``{"pods": 10}`` per namespace; creating beyond it answers 403 "exceeded quota".
    - ``namespaces``: when non-empty, faults apply only to requests in these namespaces.
    - ``watch_error_event``: an HTTP status; every new watch answers 200 with one ``ERROR`` event carrying a
      Status of that code, then ends (as kube-apiserver does on an internal error mid-watch).
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503, 429)
    latency: float = 0.0
    drop_watch_after: float | None = None
    forbidden: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    review_denied: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    quota: dict[str, int] = dataclasses.field(default_factory=dict)
    namespaces: set[str] = dataclasses.field(default_factory=set)
    watch_error_event: int | None = None

    def to_json(self) -> dict:
        return {
            "error_rate": self.error_rate, "error_statuses": list(self.error_statuses), "latency": self.latency,
            "drop_watch_after": self.drop_watch_after, "forbidden": sorted(map(list, self.forbidden)),
            "review_denied": sorted(map(list, self.review_denied)), "quota": dict(self.quota),
            "namespaces": sorted(self.namespaces), "watch_error_event": self.watch_error_event,
        }

    @classmethod
    def from_json(cls, data: dict) -> EmulatorFaults:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "error_statuses" in data:
            data["error_statuses"] = tuple(int(s) for s in data["error_statuses"])
        for key in ("forbidden", "review_denied"):
            if key in data:
                data[key] = {tuple(pair) for pair in data[key]}
        if "namespaces" in data:
            data["namespaces"] = set(data["namespaces"])
        return cls(**data)

    def is_forbidden(self, verb: str, resource: str, pairs: set | None = None) -> bool:
        pairs = self.forbidden if pairs is None else pairs
        if not pairs:
            return False
        base = resource.split("/")[0]
        for v, r in pairs:
            if v in (verb, "*") and r in (resource, base if "/" not in r else resource, "*"):
                return True
        return False


# ---------------------------------------------------------------------------------------------------------
# Errors
@attrs.frozen
class ApiError(kmock.KubernetesError):
    """A Kubernetes Status failure answer."""

    headers: dict | None = None

    def body(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message or "", "reason": self.reason or "", "code": self.status}
        if self.details:
            out["details"] = self.details
        return out


def _kind_ref(plural: str, name: str | None, group: str = "") -> dict:
    d = {"kind": plural}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    return d


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found', _kind_ref(plural, name, group))


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', _kind_ref(plural, name, group))


def conflict(plural: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    _kind_ref(plural, name))


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason word, detail), e.g. ("spec.containers", "FieldValueRequired", "Required value")."""
    parts = [f"{field}: {detail}" for field, _, detail in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', {
        "name": name, "kind": kind.lower() + "s" if False else kind,
        "causes": [{"reason": r, "message": d, "field": f} for f, r, d in causes]})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(verb: str, resource: str, namespace: str | None, group: str = "") -> ApiError:
    base, _, sub = resource.partition("/")
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    sub_text = f'resource "{base}/{sub}"' if sub else f'resource "{base}"'
    return ApiError(403, "Forbidden",
                    f'{resource} is forbidden: User "system:serviceaccount:default:jupyter" cannot {verb} '
                    f'{sub_text} in API group "{group}"{where}', _kind_ref(base, None, group))


# ---------------------------------------------------------------------------------------------------------
# Validation helpers
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _check_labels(labels: Any, causes: list) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append(("metadata.labels", "FieldValueInvalid", "Invalid value: labels must be a map"))
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not LABEL_NAME.match(name):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           f'Invalid value: "{key}": name part must consist of alphanumeric characters, \'-\', '
                           "'_' or '.', and must start and end with an alphanumeric character"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                           "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           "alphanumeric character" + (" (must be no more than 63 characters)"
                                                       if isinstance(value, str) and len(value) > 63 else "")))


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------------
# Patching
def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


#: list fields merged by a key in strategic merge patch (the ones on pods and services that matter here)
STRATEGIC_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
                  "ports": None, "volumes": "name", "volumeMounts": "mountPath", "conditions": "type",
                  "containerStatuses": "name", "initContainerStatuses": "name", "ownerReferences": "uid",
                  "imagePullSecrets": "name", "tolerations": None, "finalizers": "$set"}


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(patch, list):
        key = STRATEGIC_KEYS.get(field or "")
        if key == "$set" and isinstance(target, list):
            return list(dict.fromkeys([*target, *patch]))
        if field == "ports" and isinstance(target, list):
            key = "containerPort" if any("containerPort" in p for p in patch if isinstance(p, dict)) else "port"
        if not key or not isinstance(target, list) or not all(isinstance(p, dict) for p in patch):
            return [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "delete")]
        out = [dict(t) for t in target]
        for item in patch:
            match = next((i for i, t in enumerate(out) if t.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if match is not None:
                    out.pop(match)
            elif match is None:
                out.append(item)
            else:
                out[match] = strategic_merge_patch(out[match], item)
        return out
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic_merge_patch(out.get(key), value, key)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    doc = loads(dumps(doc))

    def walk(parts):
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    try:
        for op in ops:
            kind, parts = op["op"], _pointer(op["path"])
            if kind in ("add", "replace"):
                parent, last = walk(parts)
                if isinstance(parent, list):
                    idx = len(parent) if last == "-" else int(last)
                    parent.insert(idx, op["value"]) if kind == "add" else parent.__setitem__(idx, op["value"])
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                parent, last = walk(parts)
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind in ("move", "copy"):
                src_parent, src_last = walk(_pointer(op["from"]))
                value = src_parent[int(src_last) if isinstance(src_parent, list) else src_last]
                if kind == "move":
                    del src_parent[int(src_last) if isinstance(src_parent, list) else src_last]
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            elif kind == "test":
                parent, last = walk(parts)
                if parent[int(last) if isinstance(parent, list) else last] != op["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: test operation failed at {op['path']}")
            else:
                raise bad_request(f"unknown JSON patch op {kind!r}")
    except ApiError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e!r}")
    return doc


# ---------------------------------------------------------------------------------------------------------
# Resources
@dataclasses.dataclass(frozen=True)
class Res:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN_RESOURCES: dict[tuple[str, str], Res] = {
    (r.group, r.plural): r for r in [
        Res("", "v1", "pods", "Pod", short=("po",), subresources=("status", "log", "binding")),
        Res("", "v1", "services", "Service", short=("svc",), subresources=("status",)),
        Res("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), subresources=("status",),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
        Res("", "v1", "nodes", "Node", namespaced=False, short=("no",), subresources=("status",)),
        Res("", "v1", "events", "Event", short=("ev",)),
        Res("", "v1", "configmaps", "ConfigMap", short=("cm",)),
        Res("", "v1", "secrets", "Secret"),
        Res("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
            namespaced=False, verbs=("create",)),
    ]
}


class Event:
    """One committed change; its JSON line is encoded once and shared by every watcher."""

    __slots__ = ("rv", "type", "obj", "old", "_line")

    def __init__(self, rv: int, type: str, obj: dict, old: dict | None):
        self.rv, self.type, self.obj, self.old, self._line = rv, type, obj, old, None

    def line(self, type: str | None = None) -> bytes:
        if type is None or type == self.type:
            if self._line is None:
                self._line = b'{"type":"' + self.type.encode() + b'","object":' + dumps(self.obj) + b"}\n"
            return self._line
        return b'{"type":"' + type.encode() + b'","object":' + dumps(self.obj) + b"}\n"


class _Watcher:
    __slots__ = ("namespace", "queue", "name")

    def __init__(self, namespace, name):
        self.namespace, self.name = namespace, name
        self.queue: asyncio.Queue[Event] = asyncio.Queue()


_PATH_RE = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))(?P<rest>(?:/.*)?)$")


@dataclasses.dataclass
class Route:
    res: Res | None
    group: str
    version: str
    plural: str | None
    namespace: str | None
    name: str | None
    sub: str | None
    watch_path: bool = False


def route(path: str) -> Route | None:
    m = _PATH_RE.match(path)
    if not m:
        return None
    group, version = (m.group("g") or "", m.group("cv") or m.group("v"))
    parts = [p for p in m.group("rest").split("/") if p]
    watch_path = False
    if parts and parts[0] == "watch":
        watch_path, parts = True, parts[1:]
    namespace = None
    if len(parts) >= 2 and parts[0] == "namespaces" and (len(parts) > 2):
        namespace, parts = parts[1], parts[2:]
    if not parts:
        return Route(None, group, version, None, namespace, None, None, watch_path)
    plural = parts[0]
    name = parts[1] if len(parts) > 1 else None
    sub = "/".join(parts[2:]) or None
    res = BUILTIN_RESOURCES.get((group, plural))
    if res is not None and res.version != version:
        res = None
    return Route(res, group, version, plural, namespace, name, sub, watch_path)


# ---------------------------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The emulated API server. Serve it with :func:`jupyter_dask_kube.testing.server.serve` or any aiohttp server
    (it is an aiohttp low-level handler: ``aiohttp.web.Server(emu)``); enter it (``async with emu``) first.

    ``namespaces``: namespaces that exist at start ("default" and "kube-system" always do).
    ``watch_history``: how many events per resource are kept for watch resumption (older: 410 Gone).
    ``allocate_ip``: callable giving a Service clusterIP (default: a free loopback address).
    """

    namespaces: list[str] = attrs.field(factory=lambda: ["default"])
    watch_history: int = 2000
    faults: EmulatorFaults = attrs.field(factory=EmulatorFaults)
    allocate_ip: Callable[[], str] | None = None

    _db: dict = attrs.field(factory=lambda: collections.defaultdict(dict), init=False)
    _rv: int = attrs.field(default=0, init=False)
    _history: dict = attrs.field(factory=dict, init=False)
    _compacted: dict = attrs.field(factory=lambda: collections.defaultdict(int), init=False)
    _watchers: dict = attrs.field(factory=lambda: collections.defaultdict(set), init=False)
    _owners: dict = attrs.field(factory=lambda: collections.defaultdict(set), init=False)
    _hooks: list = attrs.field(factory=list, init=False)
    #: the node agent's control token, for the evict/oomkill fault hooks on its kubelet port
    node_agent_token: str | None = attrs.field(default=None)
    _rng: random.Random = attrs.field(factory=random.Random, init=False)
    stats: collections.Counter = attrs.field(factory=collections.Counter, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for res in BUILTIN_RESOURCES.values():
            self.resources[f"{res.api_version}/{res.plural}" if res.group else f"v1/{res.plural}"] = \
                kmock.ResourceInfo(namespaced=res.namespaced, kind=res.kind, singular=res.kind.lower(),
                                   verbs=set(res.verbs), shortnames=set(res.short), subresources=set(res.subresources))
        for ns in dict.fromkeys(["default", "kube-system", *self.namespaces]):
            self._insert("namespaces", {"metadata": {"name": ns}}, BUILTIN_RESOURCES[("", "namespaces")])

    def _resource_list(self, group: str, version: str) -> dict | None:
        """The APIResourceList of a group/version whose resources are all built in (served here, not by kmock:
        its answer for the core group says groupVersion "/v1", and kubectl then finds nothing)."""
        mine = [r for r in BUILTIN_RESOURCES.values() if r.group == group and r.version == version]
        if not mine:
            return None
        resources = []
        for r in mine:
            resources.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": sorted(r.verbs), "shortNames": list(r.short)})
            for sub in r.subresources:
                resources.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                                  "kind": "Binding" if sub == "binding" else r.kind,
                                  "verbs": {"log": ["get"], "binding": ["create"]}.get(sub, ["get", "patch", "update"])})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    # -- public helpers (in-process use: the kubelet and tests) --------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def add_hook(self, hook: Callable[[str, str, dict, dict | None], None]) -> None:
        """``hook(plural, event_type, obj, old)`` is called synchronously after every committed change."""
        self._hooks.append(hook)

    def get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        return self._db[plural].get((namespace, name))

    def list(self, plural: str, namespace: str | None = None) -> list[dict]:
        objs = self._db[plural]
        if namespace is None:
            return list(objs.values())
        return [o for (ns, _), o in objs.items() if ns == namespace]

    def insert(self, plural: str, obj: dict, namespace: str | None = None) -> dict:
        """Create an object as the API would (generateName, uid, ...); raises ApiError."""
        res = self._res(plural)
        if namespace is not None:
            obj.setdefault("metadata", {})["namespace"] = namespace
        return self._insert(plural, obj, res)

    def update(self, plural: str, namespace: str | None, name: str, mutate: Callable[[dict], Any],
               *, copy: bool = True) -> dict | None:
        """Apply ``mutate(obj)`` to a copy of the stored object and commit it (MODIFIED); None when gone."""
        old = self._db[plural].get((namespace, name))
        if old is None:
            return None
        new = loads(dumps(old)) if copy else old
        if mutate(new) is False:
            return old
        return self._commit_update(plural, old, new)

    def remove(self, plural: str, namespace: str | None, name: str) -> dict | None:
        """Remove at once (DELETED), then garbage-collect dependents. None when gone."""
        obj = self._db[plural].get((namespace, name))
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                return self.update(plural, namespace, name,
                                   lambda o: o["metadata"].__setitem__("deletionTimestamp", now_iso()))
            return obj
        return self._remove(plural, obj)

    def compact(self) -> int:
        """Forget all watch history (like etcd compaction): resuming from an older version answers 410."""
        for plural in list(self._history):
            self._history[plural].clear()
            self._compacted[plural] = self._rv
        for plural in BUILTIN_RESOURCES:
            self._compacted[plural[1]] = self._rv
        return self._rv

    def _res(self, plural: str) -> Res:
        for (g, p), r in BUILTIN_RESOURCES.items():
            if p == plural:
                return r
        raise KeyError(plural)

    # -- store internals ---------------------------------------------------------------------------------
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _publish(self, plural: str, etype: str, obj: dict, old: dict | None) -> None:
        ev = Event(self._rv, etype, obj, old)
        hist = self._history.get(plural)
        if hist is None:
            hist = self._history[plural] = collections.deque()
        if len(hist) >= self.watch_history:
            self._compacted[plural] = hist.popleft().rv
        hist.append(ev)
        for w in self._watchers.get(plural, ()):
            w.queue.put_nowait(ev)
        for hook in self._hooks:
            try:
                hook(plural, etype, obj, old)
            except Exception:  # a broken controller must not break the API
                log.exception("hook failed on %s %s", etype, plural)

    def _index_owners(self, plural: str, obj: dict, add: bool) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or ():
            uid = ref.get("uid")
            if uid:
                key = (plural, meta.get("namespace"), meta["name"])
                if add:
                    self._owners[uid].add(key)
                else:
                    s = self._owners.get(uid)
                    if s:
                        s.discard(key)
                        if not s:
                            del self._owners[uid]

    def _insert(self, plural: str, obj: dict, res: Res) -> dict:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = meta.get("namespace") if res.namespaced else None
        if res.namespaced:
            if not ns:
                raise bad_request("the namespace of the object is missing")
            if (None, ns) not in self._db["namespaces"]:
                raise not_found("namespaces", ns)
        else:
            meta.pop("namespace", None)
        table = self._db[plural]
        name = meta.get("name")
        if not name and meta.get("generateName"):
            base = meta["generateName"][:58]
            for _ in range(100):
                name = base + "".join(self._rng.choice(GENERATE_CHARS) for _ in range(5))
                if (ns, name) not in table:
                    break
            meta["name"] = name
        self._validate(res, obj)
        if (ns, name) in table:
            raise already_exists(plural, name, res.group)
        self._defaults(res, obj)
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["resourceVersion"] = str(self._next_rv())
        meta.pop("selfLink", None)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        table[(ns, name)] = obj
        self._index_owners(plural, obj, True)
        self.stats["created"] += 1
        self._publish(plural, "ADDED", obj, None)
        return obj

    def _commit_update(self, plural: str, old: dict, new: dict) -> dict:
        meta = new["metadata"]
        key = (old["metadata"].get("namespace"), old["metadata"]["name"])
        # identity fields are immutable
        for field in ("name", "namespace", "uid", "creationTimestamp", "generateName"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if "deletionTimestamp" in old["metadata"]:
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        new["kind"], new["apiVersion"] = old["kind"], old["apiVersion"]
        meta["resourceVersion"] = str(self._next_rv())
        self._db[plural][key] = new
        if old["metadata"].get("ownerReferences") != meta.get("ownerReferences"):
            self._index_owners(plural, old, False)
            self._index_owners(plural, new, True)
        self._publish(plural, "MODIFIED", new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._held_by_kubelet(plural, new):
            self._remove(plural, new)
        return new

    @staticmethod
    def _held_by_kubelet(plural: str, obj: dict) -> bool:
        """A terminating pod bound to a node stays until its kubelet deletes it again with grace 0."""
        return plural == "pods" and bool((obj.get("spec") or {}).get("nodeName"))

    def _remove(self, plural: str, obj: dict, propagation: str = "Background") -> dict:
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        if self._db[plural].get(key) is not obj:
            return obj
        del self._db[plural][key]
        self._index_owners(plural, obj, False)
        self._next_rv()
        gone = dict(obj, metadata=dict(meta, resourceVersion=str(self._rv)))
        self.stats["deleted"] += 1
        self._publish(plural, "DELETED", gone, obj)
        if plural == "services" and self.allocate_ip is None:
            from ..runtimes.loopback import release_address
            release_address((obj.get("spec") or {}).get("clusterIP"))
        uid = meta.get("uid")
        dependents = self._owners.pop(uid, set()) if uid else set()
        if plural == "namespaces":
            for p, table in self._db.items():
                dependents |= {(p, ns, n) for (ns, n) in table if ns == meta["name"]}
        for dplural, dns, dname in sorted(dependents):
            dep = self._db[dplural].get((dns, dname))
            if dep is None:
                continue
            if propagation == "Orphan":
                self.update(dplural, dns, dname, lambda o, u=uid: o["metadata"].__setitem__(
                    "ownerReferences", [r for r in o["metadata"].get("ownerReferences", []) if r.get("uid") != u])
                    or o["metadata"]["ownerReferences"] or o["metadata"].pop("ownerReferences"))
            else:
                self._delete_object(dplural, dep, None, "Background")
        return gone

    def _delete_object(self, plural: str, obj: dict, grace: int | None, propagation: str | None) -> dict:
        """API deletion semantics: graceful for running pods (the kubelet finishes it), else at once."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        propagation = propagation or "Background"
        # as the real API server: a pod bound to a node and not finished is deleted gracefully (deletionTimestamp
        # set, its kubelet stops it and deletes it again with grace 0); unbound or finished pods go at once
        if plural == "pods" and grace != 0 and (obj.get("spec") or {}).get("nodeName") \
                and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):
                return obj
            if grace is None:
                grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)

            def mark(o):
                o["metadata"]["deletionTimestamp"] = now_iso()
                o["metadata"]["deletionGracePeriodSeconds"] = grace
            return self.update(plural, ns, name, mark)
        if plural == "pods" and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(plural, obj, propagation)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            return self.update(plural, ns, name, lambda o: o["metadata"].__setitem__("deletionTimestamp", now_iso()))
        return self._remove(plural, obj, propagation)

    # -- validation and defaults ---------------------------------------------------------------------------
    def _validate(self, res: Res, obj: dict) -> None:
        meta = obj["metadata"]
        name = meta.get("name") or ""
        causes: list = []
        if not name:
            causes.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
        elif res.plural == "services":
            if len(name) > 63 or not DNS1035_LABEL.match(name):
                causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {DNS1035_MSG}'))
        elif res.plural == "namespaces":
            if len(name) > 63 or not DNS1123_LABEL.match(name):
                causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}'))
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}'))
        _check_labels(meta.get("labels"), causes)
        ann = meta.get("annotations")
        if ann is not None and (not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values())):
            causes.append(("metadata.annotations", "FieldValueInvalid", "Invalid value: annotation values must be strings"))
        if res.plural == "pods":
            spec = obj.get("spec")
            containers = spec.get("containers") if isinstance(spec, dict) else None
            if not containers:
                causes.append(("spec.containers", "FieldValueRequired", "Required value"))
            else:
                seen = set()
                for i, c in enumerate(containers):
                    cname = c.get("name") if isinstance(c, dict) else None
                    if not cname:
                        causes.append((f"spec.containers[{i}].name", "FieldValueRequired", "Required value"))
                    elif len(cname) > 63 or not DNS1123_LABEL.match(cname):
                        causes.append((f"spec.containers[{i}].name", "FieldValueInvalid",
                                       f'Invalid value: "{cname}": {LABEL_MSG}'))
                    elif cname in seen:
                        causes.append((f"spec.containers[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{cname}"'))
                    seen.add(cname)
                    if isinstance(c, dict) and not c.get("image"):
                        causes.append((f"spec.containers[{i}].image", "FieldValueRequired", "Required value"))
                    for j, p in enumerate((c or {}).get("ports") or []):
                        port = p.get("containerPort")
                        if not isinstance(port, int) or not 0 < port < 65536:
                            causes.append((f"spec.containers[{i}].ports[{j}].containerPort", "FieldValueInvalid",
                                           f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
                    for r in ("limits", "requests"):
                        for k, v in (((c or {}).get("resources") or {}).get(r) or {}).items():
                            try:
                                parse_quantity(v)
                            except ValueError:
                                causes.append((f"spec.containers[{i}].resources.{r}[{k}]", "FieldValueInvalid",
                                               f'Invalid value: "{v}": quantities must match the regular '
                                               "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
            if spec and spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
                causes.append(("spec.restartPolicy", "FieldValueNotSupported",
                               f'Unsupported value: "{spec["restartPolicy"]}": supported values: "Always", "Never", "OnFailure"'))
        elif res.plural == "services":
            spec = obj.get("spec") or {}
            if spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None" \
                    and not spec.get("ports"):
                causes.append(("spec.ports", "FieldValueRequired", "Required value"))
            for j, p in enumerate(spec.get("ports") or []):
                port = p.get("port")
                if not isinstance(port, int) or not 0 < port < 65536:
                    causes.append((f"spec.ports[{j}].port", "FieldValueInvalid",
                                   f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
        if causes:
            raise invalid(res.kind, name, causes)

    def _defaults(self, res: Res, obj: dict) -> None:
        if res.plural == "pods":
            spec = obj["spec"]
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("securityContext", {})
            spec.setdefault("priority", 0)
            spec.setdefault("enableServiceLinks", True)
            qos = []
            for c in spec["containers"] + list(spec.get("initContainers") or []):
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                image = c.get("image", "")
                tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
                c.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
                r = c.setdefault("resources", {})
                if r.get("limits"):  # requests default to limits
                    r["requests"] = {**r["limits"], **(r.get("requests") or {})}
                lim, req = r.get("limits") or {}, r.get("requests") or {}
                qos.append("BestEffort" if not lim and not req else
                           "Guaranteed" if all(k in lim and parse_quantity(lim[k]) == parse_quantity(req.get(k))
                                               for k in ("cpu", "memory")) else "Burstable")
            status = obj.setdefault("status", {})
            status.clear()
            status["phase"] = "Pending"
            status["qosClass"] = ("Guaranteed" if all(q == "Guaranteed" for q in qos) else
                                  "BestEffort" if all(q == "BestEffort" for q in qos) else "Burstable")
        elif res.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            if spec.get("clusterIP") != "None":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = self._allocate_ip([p.get("port") for p in spec.get("ports") or []])
                spec["clusterIPs"] = [spec["clusterIP"]]
            obj.setdefault("status", {"loadBalancer": {}})
        elif res.plural == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def _allocate_ip(self, ports: list) -> str:
        if self.allocate_ip is not None:
            return self.allocate_ip()
        from ..runtimes.loopback import allocate_address
        return allocate_address([p for p in ports if isinstance(p, int)])

    # -- the HTTP entry point -----------------------------------------------------------------------------
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            return await self._dispatch(raw)
        except ApiError as e:
            return self._error_response(e)
        except kmock.KubernetesError as e:
            return self._error_response(ApiError(e.status, (e.reason or "").replace(" ", ""), e.message or ""))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("emulator failure on %s %s", raw.method, raw.path_qs)
            return self._error_response(ApiError(500, "InternalError", f"an error on the server ({e!r}) has "
                                                 "prevented the request from succeeding",
                                                 {"causes": [{"message": traceback.format_exc()}]}))

    def _error_response(self, e: ApiError) -> aiohttp.web.Response:
        body = e.body() if isinstance(e, ApiError) else ApiError(e.status, e.reason, e.message).body()
        return aiohttp.web.Response(body=dumps(body), status=e.status, content_type="application/json",
                                    headers=getattr(e, "headers", None) or None)

    async def _dispatch(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw.path
        self.stats["requests"] += 1
        if path.startswith("/_emulator/"):
            return await self._serve_private(raw, path[len("/_emulator/"):])
        r = route(path)
        if r is not None and r.plural is None and r.namespace is None and raw.method == "GET":
            listing = self._resource_list(r.group, r.version)
            if listing is not None:
                return self._json(listing)
        if r is None or r.res is None:
            # anything else (discovery of /api, /apis, /version; custom resources) through kmock's public entry
            return await kmock.KubernetesEmulator.__call__(self, raw)
        faults = self.faults
        ns = r.namespace
        if (faults.latency or faults.error_rate or faults.forbidden or faults.quota) \
                and raw.headers.get(NO_FAULTS_HEADER) is None:
            scoped = not faults.namespaces or ns in faults.namespaces
            if scoped:
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                if faults.error_rate and self._rng.random() < faults.error_rate:
                    status = self._rng.choice(faults.error_statuses or (500,))
                    self.stats["faults_injected"] += 1
                    self.stats[f"faults_{status}"] += 1
                    if r.watch_path or raw.query.get("watch") in ("true", "1", "True"):
                        self.stats["faults_on_watch"] += 1
                    reason = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "InternalError")
                    raise ApiError(status, reason, {429: "Too many requests, please try again later.",
                                                    503: "the server is currently unable to handle the request"}
                                   .get(status, "an error on the server (\"injected fault\") has prevented the "
                                        "request from succeeding"),
                                   {"retryAfterSeconds": 1} if status == 429 else None,
                                   headers={"Retry-After": "1"} if status == 429 else None)
                if faults.forbidden:
                    verb = self._verb(raw, r)
                    resource = r.plural + (f"/{r.sub}" if r.sub else "")
                    if faults.is_forbidden(verb, resource):
                        raise forbidden(verb, resource, ns, r.group)
        return await self._serve_builtin(raw, r)

    @staticmethod
    def _verb(raw: aiohttp.web.BaseRequest, r: Route) -> str:
        m = raw.method
        if m == "GET":
            if r.name is None:
                return "watch" if (r.watch_path or raw.query.get("watch") in ("true", "1", "True")) else "list"
            return "watch" if r.watch_path else "get"
        if m == "POST":
            return "create"
        if m == "PUT":
            return "update"
        if m == "PATCH":
            return "patch"
        if m == "DELETE":
            return "delete" if r.name else "deletecollection"
        return m.lower()

    async def _read_json(self, raw: aiohttp.web.BaseRequest, required: bool = True) -> Any:
        body = await raw.read()
        if not body:
            if required:
                raise bad_request("the request body is empty")
            return None
        try:
            return loads(body)
        except ValueError as e:
            if raw.content_type.endswith("yaml"):
                import yaml
                return yaml.safe_load(body)
            raise bad_request(f"the body of the request was in an unknown format: {e}")

    def _json(self, obj: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=dumps(obj), status=status, content_type="application/json")

    # -- built-in resources ------------------------------------------------------------------------------
    async def _serve_builtin(self, raw: aiohttp.web.BaseRequest, r: Route) -> aiohttp.web.StreamResponse:
        res = r.res
        assert res is not None
        method = raw.method
        q = raw.query
        if res.plural == "selfsubjectaccessreviews":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self._serve_ssar(await self._read_json(raw))
        if res.namespaced and r.namespace is None and method not in ("GET",):
            if not (method == "POST" and r.name is None):
                raise not_found(res.plural, r.name or "")
        if not res.namespaced:
            r.namespace = None
        ns = r.namespace
        table = self._db[res.plural]

        if r.name is None:  # collection
            if method == "GET":
                if r.watch_path or q.get("watch") in ("true", "1", "True"):
                    return await self._serve_watch(raw, r)
                return self._json(self._list_body(res, ns, q))
            if method == "POST":
                obj = await self._read_json(raw)
                if not isinstance(obj, dict):
                    raise bad_request("the body must be a JSON object")
                meta = obj.setdefault("metadata", {})
                if res.namespaced:
                    body_ns = meta.get("namespace")
                    if ns and body_ns and body_ns != ns:
                        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
                    meta["namespace"] = ns or body_ns or "default"
                    if res.plural == "pods" and self.faults.quota and (not self.faults.namespaces or meta["namespace"] in self.faults.namespaces):
                        self._check_quota(meta["namespace"], meta.get("name") or meta.get("generateName", ""))
                if q.get("dryRun"):  # validated as a real create is, and not stored
                    if not meta.get("name") and meta.get("generateName"):
                        meta["name"] = meta["generateName"] + "xxxxx"
                    self._validate(res, obj)
                    return self._json(obj, 201)
                created = self._insert(res.plural, obj, res)
                return self._json(created, 201)
            if method == "DELETE":
                opts = await self._read_json(raw, required=False) or {}
                label_m = self._label_matcher(q)
                field_m = self._field_matcher(q, res.plural)
                grace = self._grace(q, opts)
                victims = [o for (ons, _), o in list(table.items()) if (ns is None or ons == ns)
                           and (label_m is None or label_m(o["metadata"].get("labels")))
                           and (field_m is None or field_m(o))]
                items = [self._delete_object(res.plural, o, grace, opts.get("propagationPolicy") or q.get("propagationPolicy"))
                         for o in victims]
                return self._json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(self._rv)}, "items": items})
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

        key = (ns, r.name)
        if r.sub == "binding" and res.plural == "pods" and method == "POST":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name)
            return self._json(self._bind(obj, await self._read_json(raw)), 201)
        if r.sub == "log" and res.plural == "pods":
            if key not in table:
                raise not_found(res.plural, r.name)
            return await self._serve_log(raw, table[key])
        if r.sub not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name, res.group)
            if r.watch_path:
                return await self._serve_watch(raw, r)
            return self._json(obj)
        if method in ("PATCH", "PUT"):
            body = await self._read_json(raw)
            obj = table.get(key)
            if obj is None:
                if method == "PUT" and r.sub is None and isinstance(body, dict):
                    body.setdefault("metadata", {})["namespace"] = ns
                    return self._json(self._insert(res.plural, body, res), 201)
                raise not_found(res.plural, r.name, res.group)
            return self._json(self._apply_change(res, obj, body, method, raw.content_type, r.sub))
        if method == "DELETE":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name, res.group)
            opts = await self._read_json(raw, required=False) or {}
            pre = (opts.get("preconditions") or {})
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Precondition failed: UID in precondition: {pre["uid"]}, UID in '
                               f'object meta: {obj["metadata"]["uid"]}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, r.name)
            if q.get("dryRun") or opts.get("dryRun"):
                return self._json(obj)
            out = self._delete_object(res.plural, obj, self._grace(q, opts),
                                      opts.get("propagationPolicy") or q.get("propagationPolicy"))
            return self._json(out)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _grace(q, opts: dict) -> int | None:
        g = opts.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        return None if g is None else int(g)

    def _check_quota(self, ns: str, name: str) -> None:
        limit = self.faults.quota.get("pods")
        if limit is None:
            return
        used = sum(1 for (ons, _), p in self._db["pods"].items()
                   if ons == ns and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
        if used + 1 > limit:
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: exceeded quota: compute, requested: '
                           f"pods=1, used: pods={used}, limited: pods={limit}", {"name": name, "kind": "pods"})

    def _apply_change(self, res: Res, obj: dict, body: Any, method: str, ctype: str, sub: str | None) -> dict:
        if method == "PUT":
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, obj["metadata"]["name"])
            new = loads(dumps(body))
            new.setdefault("metadata", {})
        elif "json-patch" in ctype:
            if not isinstance(body, list):
                raise bad_request("json patch must be a list of operations")
            new = json_patch(obj, body)
        elif "apply-patch" in ctype:
            new = strategic_merge_patch(loads(dumps(obj)), body)
        else:
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, obj["metadata"]["name"])
            merge = strategic_merge_patch if "strategic" in ctype else json_merge_patch
            new = merge(loads(dumps(obj)), body)
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        # status is set through /status only; the main resource keeps its status (and vice versa for spec)
        if res.plural in ("pods", "services", "nodes", "namespaces"):
            if sub == "status":
                new = dict(obj, status=new.get("status", obj.get("status")),
                           metadata=dict(obj["metadata"], labels=new["metadata"].get("labels"),
                                         annotations=new["metadata"].get("annotations")))
                for k in ("labels", "annotations"):
                    if new["metadata"][k] is None:
                        new["metadata"].pop(k)
                new = loads(dumps(new))
            else:
                if "status" in obj:
                    new["status"] = obj["status"]
                if res.plural == "services":
                    spec = new.setdefault("spec", {})
                    spec["clusterIP"] = obj["spec"].get("clusterIP")
                    if "clusterIPs" in obj["spec"]:
                        spec["clusterIPs"] = obj["spec"]["clusterIPs"]
        causes: list = []
        _check_labels(new["metadata"].get("labels"), causes)
        if causes:
            raise invalid(res.kind, obj["metadata"]["name"], causes)
        return self._commit_update(res.plural, obj, new)

    def _label_matcher(self, q):
        try:
            return parse_label_selector(q.get("labelSelector"))
        except SelectorError as e:
            raise bad_request(str(e))

    def _field_matcher(self, q, plural):
        try:
            return parse_field_selector(q.get("fieldSelector"), plural)
        except SelectorError as e:
            raise bad_request(str(e))

    def _matching(self, res: Res, ns: str | None, q) -> list[dict]:
        label_m = self._label_matcher(q)
        field_m = self._field_matcher(q, res.plural)
        table = self._db[res.plural]
        out = []
        for (ons, _), o in table.items():
            if ns is not None and ons != ns:
                continue
            if label_m is not None and not label_m(o["metadata"].get("labels")):
                continue
            if field_m is not None and not field_m(o):
                continue
            out.append(o)
        out.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return out

    def _list_body(self, res: Res, ns: str | None, q) -> dict:
        items = self._matching(res, ns, q)
        limit = q.get("limit")
        meta: dict = {"resourceVersion": str(self._rv)}
        cont = q.get("continue")
        if cont:
            try:
                start = int(cont)
            except ValueError:
                raise ApiError(410, "Expired", "The provided continue parameter is too old")
            items = items[start:]
        else:
            start = 0
        if limit and int(limit) > 0 and len(items) > int(limit):
            items = items[: int(limit)]
            meta["continue"] = str(start + int(limit))
            meta["remainingItemCount"] = len(self._matching(res, ns, q)) - start - int(limit)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    # -- watch ------------------------------------------------------------------------------------------
    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, r: Route) -> aiohttp.web.StreamResponse:
        res = r.res
        assert res is not None
        q = raw.query
        ns = r.namespace
        label_m = self._label_matcher(q)
        field_m = self._field_matcher(q, res.plural)
        if r.name is not None:
            name_m = lambda o, n=r.name: o["metadata"]["name"] == n  # noqa: E731
            field_m = name_m if field_m is None else (lambda o, a=field_m, b=name_m: a(o) and b(o))
        timeout = q.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        drop_after = self.faults.drop_watch_after
        drop_at = time.monotonic() + drop_after if drop_after else None

        def matches(o: dict | None) -> bool:
            if o is None:
                return False
            if ns is not None and o["metadata"].get("namespace") != ns:
                return False
            if label_m is not None and not label_m(o["metadata"].get("labels")):
                return False
            return field_m is None or field_m(o)

        def translate(ev: Event) -> bytes | None:
            new_ok = matches(ev.obj)
            if ev.type == "MODIFIED":
                old_ok = matches(ev.old)
                if new_ok and old_ok:
                    return ev.line()
                if new_ok:
                    return ev.line("ADDED")
                if old_ok:
                    return ev.line("DELETED")
                return None
            return ev.line() if new_ok else None

        resp = aiohttp.web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(raw)

        code = self.faults.watch_error_event
        if code and raw.headers.get(NO_FAULTS_HEADER) is None and (not self.faults.namespaces
                                                                   or ns in self.faults.namespaces):
            self.stats["faults_watch_error_event"] += 1
            error = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                 "status": "Failure", "code": int(code), "reason": "InternalError",
                                                 "message": "an error on the server (\"injected watch error\") has "
                                                            "prevented the request from succeeding"}}
            await resp.write(dumps(error) + b"\n")
            await resp.write_eof()
            return resp
        rv_param = q.get("resourceVersion")
        watcher = _Watcher(ns, r.name)
        backlog: list[bytes] = []
        # Register before reading state: nothing happens between (no await), so no event is lost or doubled.
        if rv_param and rv_param != "0":
            try:
                since = int(rv_param)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv_param}")
            self.stats["watches_resumed"] += 1
            if since < self._compacted[res.plural]:
                self.stats["watches_gone_410"] += 1
                error = {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f"too old resource version: {since} ({self._compacted[res.plural] + 1})",
                    "reason": "Expired", "code": 410}}
                await resp.write(dumps(error) + b"\n")
                await resp.write_eof()
                return resp
            for ev in self._history.get(res.plural, ()):
                if ev.rv > since:
                    line = translate(ev)
                    if line:
                        backlog.append(line)
        else:
            for o in self._matching(res, ns, q):
                if field_m is None or field_m(o):
                    backlog.append(b'{"type":"ADDED","object":' + dumps(o) + b"}\n")
        self._watchers[res.plural].add(watcher)
        self.stats["watches"] += 1
        try:
            if backlog:
                await resp.write(b"".join(backlog))
            while True:
                now = time.monotonic()
                limits = [t for t in (deadline, drop_at) if t is not None]
                wait = min(limits) - now if limits else 5.0
                if limits and wait <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), timeout=min(wait, 5.0))
                except asyncio.TimeoutError:
                    transport = raw.transport
                    if transport is None or transport.is_closing():
                        return resp
                    continue
                lines = []
                while True:
                    line = translate(ev)
                    if line:
                        lines.append(line)
                    if watcher.queue.empty():
                        break
                    ev = watcher.queue.get_nowait()
                if lines:
                    await resp.write(b"".join(lines))
            if drop_at is not None and (deadline is None or drop_at < deadline) and time.monotonic() >= drop_at:
                self.stats["watches_dropped"] += 1
                if raw.transport is not None:
                    raw.transport.close()  # an abrupt cut, as a dying connection looks
                return resp
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._watchers[res.plural].discard(watcher)
        return resp

    # -- pods/binding (what a scheduler posts) ------------------------------------------------------------
    def _bind(self, pod: dict, body: Any) -> dict:
        name = pod["metadata"]["name"]
        target = (body or {}).get("target") or {} if isinstance(body, dict) else {}
        if not target.get("name"):
            raise invalid("Binding", name, [("target.name", "FieldValueRequired", "Required value")])
        uid = ((body.get("metadata") or {}).get("uid"))
        if uid and uid != pod["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": '
                           f"the UID in the precondition ({uid}) does not match the UID in record "
                           f'({pod["metadata"]["uid"]}). The object might have been deleted and then recreated')
        if pod["metadata"].get("deletionTimestamp"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} '
                           "is being deleted, cannot be assigned to a host")
        if pod["spec"].get("nodeName"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} '
                           f'is already assigned to node "{pod["spec"]["nodeName"]}"')

        def assign(o):
            o["spec"]["nodeName"] = target["name"]
            status = o.setdefault("status", {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"] \
                + [{"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_iso()}]
        self.update("pods", pod["metadata"]["namespace"], name, assign)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- pods/log ---------------------------------------------------------------------------------------
    async def _serve_log(self, raw: aiohttp.web.BaseRequest, pod: dict) -> aiohttp.web.StreamResponse:
        q = raw.query
        container = q.get("container")
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        if container is None:
            if len(containers) > 1:
                raise bad_request(f'a container name must be specified for pod {pod["metadata"]["name"]}, '
                                  f"choose one of: [{' '.join(containers)}]")
            container = containers[0] if containers else None
        elif container not in containers + [c["name"] for c in pod["spec"].get("initContainers") or []]:
            raise bad_request(f'container {container} is not valid for pod {pod["metadata"]["name"]}')
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        cstatus = next((c for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
                        if c.get("name") == container), {})
        state = cstatus.get("state") or {}
        if "running" not in state and "terminated" not in state and not (cstatus.get("lastState") or {}).get("terminated"):
            reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: trying and '
                                  "failing to pull image")
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        # as the real API server: the text comes from the kubelet's HTTPS port on the pod's node
        tail = q.get("tailLines")
        params = {"tailLines": tail} if tail else None
        text = await self._to_kubelet(pod, "GET", f"/containerLogs/{pod['metadata']['namespace']}/{name}/{container}",
                                      params=params, missing_ok=True)
        return aiohttp.web.Response(text=text or "", content_type="text/plain")

    async def _to_kubelet(self, pod: dict, method: str, path: str, *, params: dict | None = None,
                          json_body: dict | None = None, missing_ok: bool = False) -> Any:
        """A request to the kubelet port of the pod's node (status.addresses InternalIP, daemonEndpoints)."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.get("nodes", None, node_name) if node_name else None
        if node is None:
            raise bad_request(f'pod "{pod["metadata"]["name"]}" is not bound to a node with a kubelet')
        nstatus = node.get("status") or {}
        ip = next((a["address"] for a in nstatus.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not ip or not port:
            raise bad_request(f'node "{node_name}" has no kubelet endpoint')
        headers = {CONTROL_HEADER: self.node_agent_token} if self.node_agent_token else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.request(method, f"https://{ip}:{port}{path}", params=params, json=json_body,
                                    headers=headers, ssl=False) as resp:
                text = await resp.text()
                if resp.status == 404 and missing_ok:
                    return ""
                if resp.status >= 400:
                    try:
                        message = loads(text).get("message", text)
                    except ValueError:
                        message = text
                    raise ApiError(resp.status if resp.status in (400, 403, 404) else 500,
                                   "BadRequest" if resp.status == 400 else "InternalError", message)
                return loads(text) if resp.content_type == "application/json" else text
        except aiohttp.ClientError as e:
            raise ApiError(500, "InternalError", f'Get "https://{ip}:{port}{path}": {e}')

    # -- SelfSubjectAccessReview ---------------------------------------------------------------------------
    def _serve_ssar(self, body: dict) -> aiohttp.web.Response:
        attrs_ = ((body or {}).get("spec") or {}).get("resourceAttributes") or {}
        verb = attrs_.get("verb", "")
        resource = attrs_.get("resource", "") + (f"/{attrs_['subresource']}" if attrs_.get("subresource") else "")
        denied = (self.faults.is_forbidden(verb, resource) or
                  self.faults.is_forbidden(verb, resource, self.faults.review_denied))
        status: dict = {"allowed": not denied}
        if denied:
            status["reason"] = "denied by the emulator's configured RBAC faults"
        else:
            status["reason"] = "emulated cluster allows everything by default"
        out = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": (body or {}).get("spec") or {}, "status": status}
        return self._json(out, 201)

    # -- private control endpoints ---------------------------------------------------------------------------
    async def _serve_private(self, raw: aiohttp.web.BaseRequest, what: str) -> aiohttp.web.Response:
        if what == "healthz":
            return self._json({"ok": True, "resourceVersion": self._rv})
        if what == "faults":
            if raw.method in ("POST", "PUT"):
                try:
                    self.faults = EmulatorFaults.from_json(await self._read_json(raw, required=False) or {})
                except (TypeError, ValueError) as e:
                    raise bad_request(str(e))
            return self._json(self.faults.to_json())
        m = re.fullmatch(r"pods/([^/]+)/([^/]+)/(evict|oomkill)", what)
        if m and raw.method == "POST":
            ns, name, action = m.groups()
            if self.get("pods", ns, name) is None:
                raise not_found("pods", name)
            body = await self._read_json(raw, required=False) or {}
            if action == "evict":
                body = {"message": body.get("message") or EVICTION_MESSAGE}
            pod = await self._to_kubelet(self.get("pods", ns, name), "POST", f"/jdk/{action}/{ns}/{name}",
                                         json_body=body)
            return self._json(pod)
        if what == "compact" and raw.method == "POST":
            return self._json({"compacted": self.compact()})
        if what == "stats":
            return self._json({**self.stats, "resourceVersion": self._rv,
                               "objects": {p: len(t) for p, t in self._db.items()},
                               "watchers": {p: len(w) for p, w in self._watchers.items()}})
        raise ApiError(404, "NotFound", f"unknown emulator endpoint {what!r}")
