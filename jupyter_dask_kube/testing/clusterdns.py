"""Cluster DNS for the test tiers: Service names (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``)
to their loopback clusterIPs, as kube-dns answers inside a cluster (pure: no I/O).

Pods here are local processes without a cluster resolver: the node agent writes the clusterIP into the
variables and args of the pods it runs (the Dask operator gives workers ``tcp://{cluster}-scheduler.{ns}.svc.
cluster.local:8786``), and ``install_resolver`` lets a process (the operator's controller) resolve those names.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

SUFFIXES = ("", ".svc", ".svc.cluster.local")
_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_BARE_RE = re.compile(rf"(?<![-\w.])(?P<svc>{_NAME}):(?=\d)")
_HOST_RE = re.compile(rf"\b(?P<svc>{_NAME})\.(?P<ns>{_NAME})(?P<suffix>\.svc(\.cluster\.local)?)?(?=[:/\s]|$)")


def service_ips(services: list[dict]) -> dict[tuple[str, str], str]:
    """(namespace, name) -> clusterIP of Services that have one."""
    out = {}
    for svc in services:
        ip = (svc.get("spec") or {}).get("clusterIP")
        meta = svc.get("metadata") or {}
        if ip and ip != "None":
            out[(meta.get("namespace"), meta.get("name"))] = ip
    return out


def resolve(host: str, ips: dict[tuple[str, str], str], namespace: str | None = None) -> str | None:
    """The clusterIP for a Service host name; None when it names no known Service."""
    host = host.rstrip(".")
    for suffix in (".svc.cluster.local", ".svc"):
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    parts = host.split(".")
    if len(parts) == 2:
        return ips.get((parts[1], parts[0]))
    if len(parts) == 1 and namespace is not None:
        return ips.get((namespace, parts[0]))
    return None


def rewrite(text: str, ips: dict[tuple[str, str], str], namespace: str | None = None) -> str:
    """``text`` with every ``svc.ns[.svc[.cluster.local]]`` of a known Service replaced by its clusterIP, and,
    given the pod's ``namespace``, a bare ``svc:port`` of a Service there (the Dask Helm chart's worker args)."""
    def sub(m):
        ip = ips.get((m["ns"], m["svc"]))
        return ip if ip else m.group(0)

    text = _HOST_RE.sub(sub, text)
    if namespace is not None:
        text = _BARE_RE.sub(lambda m: (ips.get((namespace, m["svc"])) or m["svc"]) + ":", text)
    return text


def rewrite_pod(pod: dict, ips: dict[tuple[str, str], str]) -> dict:
    """The pod's containers' env values and args with Service names resolved (the pod is changed in place)."""
    ns = (pod.get("metadata") or {}).get("namespace")
    for c in (pod.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            if isinstance(e.get("value"), str):
                e["value"] = rewrite(e["value"], ips, ns)
        for key in ("args", "command"):
            if c.get(key):
                c[key] = [rewrite(a, ips, ns) if isinstance(a, str) else a for a in c[key]]
    return pod


def install_resolver(list_services: Callable[[], list[dict]], refresh: float = 1.0) -> None:
    """Make this process's ``socket.getaddrinfo`` answer Service names with their clusterIPs (others as
    before); ``list_services()`` is asked again when a name is unknown and the last listing is older than
    ``refresh`` seconds."""
    original = socket.getaddrinfo
    lock = threading.Lock()
    state = {"ips": {}, "at": 0.0}

    def lookup(host: str) -> str | None:
        if not isinstance(host, str) or host.replace(".", "").isdigit() or host in ("localhost",):
            return None
        ip = resolve(host, state["ips"])
        if ip is None and time.monotonic() - state["at"] > refresh and "." in host:
            with lock:
                state["ips"] = service_ips(list_services())
                state["at"] = time.monotonic()
            ip = resolve(host, state["ips"])
        return ip

    def getaddrinfo(host, *args, **kwargs):
        ip = lookup(host)
        return original(ip if ip else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
