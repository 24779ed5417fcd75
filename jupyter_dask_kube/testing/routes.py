"""The built-in resources the emulator serves itself, and how a request path maps onto them."""
from __future__ import annotations

import dataclasses
import re

from .. import objectstore
from .wire import dumps

__all__ = ["BUILTIN_RESOURCES", "Event", "Res", "Route", "route"]


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
        Res("", "v1", "pods", "Pod", short=("po",), subresources=("status", "log", "binding", "portforward")),
        Res("", "v1", "services", "Service", short=("svc",), subresources=("status",)),
        Res("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), subresources=("status",),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
        Res("", "v1", "nodes", "Node", namespaced=False, short=("no",), subresources=("status",)),
        Res("", "v1", "events", "Event", short=("ev",)),
        Res("", "v1", "configmaps", "ConfigMap", short=("cm",)),
        Res("", "v1", "secrets", "Secret"),
        Res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
        Res("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
            namespaced=False, verbs=("create",)),
    ]
}


class Event(objectstore.Event):
    """One committed change; its JSON line is encoded once and shared by every watcher."""

    __slots__ = ("_line",)

    def __init__(self, rv: int, type: str, obj: dict, old: dict | None):
        super().__init__(rv, type, obj, old)
        self._line = None

    def line(self, type: str | None = None) -> bytes:
        if type is None or type == self.type:
            if self._line is None:
                self._line = b'{"type":"' + self.type.encode() + b'","object":' + dumps(self.obj) + b"}\n"
            return self._line
        return b'{"type":"' + type.encode() + b'","object":' + dumps(self.obj) + b"}\n"


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
