"""The pod runtime interface the cluster logic is written against.

A runtime stores and runs Kubernetes-shaped objects. Every object crossing this interface is a plain
dict in the Kubernetes JSON form (camelCase keys, as ``kubectl get -o json`` prints it), never a client
model: the Kubernetes runtime passes the API's JSON through, the local runtime keeps its own store of
such dicts. So the cluster code reads ``pod["status"]["phase"]`` the same way on both.

Failures are raised as :class:`RuntimeAPIError` carrying the HTTP-like status and the API's message, so
a 403 from RBAC or a quota reaches the user as the API worded it.
"""
from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass


class RuntimeAPIError(Exception):
    """An API call failed. ``status`` follows HTTP (403 forbidden/quota, 404, 409, 422, 5xx, 0 = unreachable)."""

    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason  # machine word, e.g. "Forbidden", "AlreadyExists", "Unreachable"
        self.message = message  # human text, e.g. 'pods "x" is forbidden: exceeded quota: ...'
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")

    @property
    def retriable(self) -> bool:
        return self.status in (0, 429, 500, 502, 503, 504)


def readable_error(exc: BaseException) -> str:
    """An API refusal in Kubernetes' words ("Forbidden: pods is forbidden: ..."), else the exception's text."""
    if isinstance(exc, RuntimeAPIError):
        return f"{exc.reason}: {exc.message}" if exc.status else exc.message
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class WatchEvent:
    """One change. ``SYNCED`` (object ``{}``) follows the initial ADDED burst, so a cache knows its
    first listing is complete and later events are live."""

    type: str  # "ADDED" | "MODIFIED" | "DELETED" | "SYNCED"
    object: dict


class PodRuntime(abc.ABC):
    """Create, list, watch and delete pods and services in one namespace."""

    #: "kubernetes" or "local": shown to users as the cluster's backend.
    backend: str = ""

    def __init__(self, namespace: str = "default"):
        self.namespace = namespace

    # -- pods ------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_pod(self, manifest: dict) -> dict:
        """Create a pod; return the stored object (name filled in when generateName was used)."""

    async def create_worker_pod(self, manifest: dict, shape: object = None) -> None:
        """Create a pod whose stored object the caller does not need (a worker: the watch reports it).

        ``shape``: a hashable token shared by manifests that differ only in string values (their names, as
        objects.WorkerPodBuilder makes them), so a runtime may check the first one for all of them."""
        await self.create_pod(manifest)

    @abc.abstractmethod
    async def read_pod(self, name: str) -> dict | None:
        """The pod, or None when it does not exist."""

    @abc.abstractmethod
    async def list_pods(self, label_selector: str = "") -> list[dict]:
        """Pods matching a Kubernetes label selector (``a=b,c=d`` equality terms)."""

    @abc.abstractmethod
    async def delete_pod(self, name: str, grace_period_seconds: int | None = None) -> bool:
        """Delete a pod; False when it was already gone."""

    async def annotate_pod(self, name: str, annotations: dict[str, str | None]) -> None:
        """Merge annotations into a pod (None removes a key): where re-adoption state is kept."""
        raise NotImplementedError

    @abc.abstractmethod
    async def pod_logs(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        """Text the pod's container printed (stdout and stderr)."""

    @abc.abstractmethod
    def watch_pods(self, label_selector: str = "", resource_version: str | None = None) -> AsyncIterator[WatchEvent]:
        """Pod events, forever, until the iterator is closed.

        Starts with ADDED for every existing pod then one SYNCED (or, given ``resource_version``,
        resumes after it, with no SYNCED). A dropped connection is resumed by the runtime itself;
        callers see one unbroken stream.
        """

    # -- services --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_service(self, manifest: dict) -> dict:
        """Create a Service; the returned object has ``spec.clusterIP`` set."""

    @abc.abstractmethod
    async def read_service(self, name: str) -> dict | None:
        ...

    @abc.abstractmethod
    async def list_services(self, label_selector: str = "") -> list[dict]:
        ...

    @abc.abstractmethod
    async def delete_service(self, name: str) -> bool:
        ...

    # -- network policies ------------------------------------------------------------------------
    #: Whether this runtime keeps NetworkPolicies. Kubernetes: yes (the network plugin enforces them). The local
    #: runtime: no, and it ignores them rather than store them: its pods are processes on loopback, which any
    #: local process can reach, so a stored policy would be a promise nothing keeps.
    network_policies: bool = False

    async def create_network_policy(self, manifest: dict) -> dict:
        raise NotImplementedError(f"the {self.backend} runtime keeps no NetworkPolicies")

    async def read_network_policy(self, name: str) -> dict | None:
        return None

    async def delete_network_policy(self, name: str) -> bool:
        """Delete a NetworkPolicy; False when it was already gone (or the runtime keeps none)."""
        return False

    # -- secrets (a cluster's TLS credentials, tls.py) ------------------------------------------
    async def create_secret(self, manifest: dict) -> dict:
        """Create a Secret; return the stored object."""
        raise NotImplementedError

    async def read_secret(self, name: str) -> dict | None:
        """The Secret, or None when it does not exist."""
        raise NotImplementedError

    async def delete_secret(self, name: str) -> bool:
        """Delete a Secret; False when it was already gone."""
        raise NotImplementedError

    # -- bulk and lifecycle ----------------------------------------------------------------------
    async def delete_pods(self, label_selector: str, grace_period_seconds: int | None = None) -> int:
        """Delete every pod matching the selector, all at once; how many were deleted."""
        pods = await self.list_pods(label_selector)
        done = await asyncio.gather(
            *(self.delete_pod(p["metadata"]["name"], grace_period_seconds) for p in pods), return_exceptions=True
        )
        return sum(1 for d in done if d is True)

    async def close(self) -> None:
        """Release connections, threads and (local runtime) processes started by this object."""

    def __repr__(self):
        return f"<{type(self).__name__} backend={self.backend} namespace={self.namespace}>"

