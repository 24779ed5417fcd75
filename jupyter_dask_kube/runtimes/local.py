"""The local runtime: an in-memory API server for pods and services, pods run as local processes.

Used when there is no Kubernetes (a laptop, CI, a first try): the same templates run on this machine,
each pod on its own loopback address (see :mod:`.localpod`), each Service as a small TCP proxy on its
own ``clusterIP`` (see :mod:`.loopback`). Objects are Kubernetes JSON dicts, as in every runtime.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import logging
import random
import re
import string
import uuid
from collections.abc import AsyncIterator

from . import loopback
from ..selectors import SelectorError, label_matcher
from .base import PodRuntime, RuntimeAPIError, WatchEvent
from .localpod import LocalPodRunner, now

__all__ = ["LocalPodRunner", "LocalRuntime"]

logger = logging.getLogger(__name__)

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HISTORY = 2000  # events kept for watches resuming from a resourceVersion


def _matcher(label_selector: str):
    try:
        return label_matcher(label_selector)
    except SelectorError as e:
        raise RuntimeAPIError(400, "BadRequest", str(e)) from None


def _suffix(n: int = 5) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


class LocalRuntime(PodRuntime):
    """Pods and Services kept in memory with API-server semantics; pods run by a :class:`LocalPodRunner`."""

    backend = "local"

    def __init__(self, namespace: str = "default", *, runner: LocalPodRunner | None = None, **runner_kwargs):
        super().__init__(namespace or "default")
        self.runner = runner or LocalPodRunner(**runner_kwargs)
        self.runner.on_status = self._on_status
        self._pods: dict[str, dict] = {}
        self._services: dict[str, dict] = {}
        self._proxies: dict[str, loopback.ServiceProxy] = {}
        self._run_tasks: dict[str, asyncio.Task] = {}
        self._deleting: dict[tuple[str, str], asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._watchers: list[tuple[dict, asyncio.Queue]] = []
        self._history: collections.deque = collections.deque(maxlen=_HISTORY)
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._closed = False

    # -- helpers ---------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _emit(self, type_: str, obj: dict) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append((rv, type_, copy.deepcopy(obj)))
        labels = obj["metadata"].get("labels")
        for matches, queue in list(self._watchers):
            if matches(labels):
                queue.put_nowait(WatchEvent(type_, copy.deepcopy(obj)))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _new_meta(self, kind: str, manifest: dict, store: dict) -> dict:
        if self._closed:
            raise RuntimeAPIError(503, "ServiceUnavailable", "the local runtime is closed")
        if not isinstance(manifest, dict):
            raise RuntimeAPIError(400, "BadRequest", f"{kind} manifest must be a mapping")
        obj = copy.deepcopy(manifest)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        name = meta.get("name")
        if not name and meta.get("generateName"):
            for _ in range(20):
                name = meta["generateName"] + _suffix()
                if name not in store:
                    break
        if not name:
            raise RuntimeAPIError(422, "Invalid", f"{kind} is invalid: metadata.name: Required value: "
                                                  "name or generateName is required")
        if len(name) > 253 or not _DNS1123.match(name):
            raise RuntimeAPIError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value: '
                                                  f'"{name}": a lowercase RFC 1123 subdomain must consist of '
                                                  "lower case alphanumeric characters, '-' or '.'")
        if name in store:
            raise RuntimeAPIError(409, "AlreadyExists", f'{kind} "{name}" already exists')
        ns = meta.get("namespace")
        if ns and ns != self.namespace:
            raise RuntimeAPIError(400, "BadRequest", "the namespace of the provided object does not match "
                                                     "the namespace sent on the request")
        meta.update(name=name, namespace=self.namespace, uid=str(uuid.uuid4()),
                    resourceVersion=self._next_rv(), creationTimestamp=now())
        return obj

    def _owner_missing(self, obj: dict) -> bool:
        """True when an owner this runtime would store (Pod, Service) does not exist (GC'd at once)."""
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("kind") in ("Pod", "Service")]
        if not refs:
            return False
        uids = {o["metadata"]["uid"] for o in itertools.chain(self._pods.values(), self._services.values())}
        return all(r.get("uid") not in uids for r in refs)

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete, in the background, every pod and service owned by ``owner_uid``."""
        def owned(obj):
            return any(r.get("uid") == owner_uid for r in obj["metadata"].get("ownerReferences") or [])
        for name, obj in list(self._pods.items()):
            if owned(obj):
                self._spawn(self.delete_pod(name))
        for name, obj in list(self._services.items()):
            if owned(obj):
                self._spawn(self.delete_service(name))

    # -- pods ------------------------------------------------------------------------------------
    async def create_pod(self, manifest: dict) -> dict:
        pod = self._new_meta("pods", manifest, self._pods)
        pod.setdefault("apiVersion", "v1")
        pod["kind"] = "Pod"
        spec = pod.setdefault("spec", {})
        if not spec.get("containers"):
            raise RuntimeAPIError(422, "Invalid", f'Pod "{pod["metadata"]["name"]}" is invalid: '
                                                  "spec.containers: Required value")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("nodeName", "localhost")
        pod["status"] = {"phase": "Pending"}
        name = pod["metadata"]["name"]
        self._pods[name] = pod
        self._emit("ADDED", pod)
        self._run_tasks[name] = self._spawn(self._run(pod))
        if self._owner_missing(pod):
            self._spawn(self.delete_pod(name))
        return copy.deepcopy(pod)

    async def _run(self, pod: dict) -> None:
        try:
            await self.runner.run(pod)
        except Exception as e:  # e.g. no free address: report it the way a kubelet would
            logger.exception("local pod %s failed to start", pod["metadata"]["name"])
            self._on_status(pod["metadata"]["name"], {**pod.get("status", {}), "phase": "Failed",
                                                      "reason": "StartError", "message": str(e)})

    def _on_status(self, name: str, status: dict) -> None:
        pod = self._pods.get(name)
        if pod is None or self._closed:
            return
        pod["status"] = copy.deepcopy(status)
        pod["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("MODIFIED", pod)

    async def read_pod(self, name: str) -> dict | None:
        pod = self._pods.get(name)
        return copy.deepcopy(pod) if pod is not None else None

    async def list_pods(self, label_selector: str = "") -> list[dict]:
        matches = _matcher(label_selector)
        return [copy.deepcopy(p) for p in self._pods.values() if matches(p["metadata"].get("labels"))]

    async def annotate_pod(self, name: str, annotations: dict[str, str | None]) -> None:
        pod = self._pods.get(name)
        if pod is None:
            raise RuntimeAPIError(404, "NotFound", f'pods "{name}" not found')
        current = pod["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = str(value)
        pod["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("MODIFIED", pod)

    async def delete_pod(self, name: str, grace_period_seconds: int | None = None) -> bool:
        if name not in self._pods:
            return False
        key = ("pod", name)
        task = self._deleting.get(key)
        if task is None:
            task = self._deleting[key] = self._spawn(self._delete_pod(name, grace_period_seconds))
        await asyncio.shield(task)
        return True

    async def _delete_pod(self, name: str, grace: int | None) -> None:
        try:
            pod = self._pods[name]
            if grace is None:
                grace = pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            pod["metadata"]["deletionTimestamp"] = now()
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            pod["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("MODIFIED", pod)
            run = self._run_tasks.pop(name, None)
            if run is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(run)
            await self.runner.stop(name, grace_period=min(float(grace), 30.0))
            pod = self._pods.pop(name)
            pod["metadata"]["resourceVersion"] = self._next_rv()
            self._emit("DELETED", pod)
            self._collect_garbage(pod["metadata"]["uid"])
        finally:
            self._deleting.pop(("pod", name), None)

    async def pod_logs(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        if name not in self._pods:
            raise RuntimeAPIError(404, "NotFound", f'pods "{name}" not found')
        try:
            return self.runner.logs(name, container, tail_lines)
        except KeyError as e:
            raise RuntimeAPIError(400, "BadRequest", str(e.args[0])) from None

    def watch_pods(self, label_selector: str = "", resource_version: str | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(_matcher(label_selector), resource_version)

    async def _watch(self, matches, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        queue: asyncio.Queue = asyncio.Queue()
        if resource_version in (None, "", "0"):
            backlog = [WatchEvent("ADDED", copy.deepcopy(p)) for p in self._pods.values()
                       if matches(p["metadata"].get("labels"))]
        else:
            rv = int(resource_version)
            if rv < self._last_rv and (not self._history or self._history[0][0] > rv + 1):
                raise RuntimeAPIError(410, "Expired", f"too old resource version: {rv} ({self._last_rv})")
            backlog = [WatchEvent(t, copy.deepcopy(o)) for r, t, o in self._history
                       if r > rv and o.get("kind") == "Pod" and matches(o["metadata"].get("labels"))]
        watcher = (matches, queue)
        self._watchers.append(watcher)
        try:
            for event in backlog:
                yield event
            if resource_version in (None, "", "0"):
                yield WatchEvent("SYNCED", {})
            while True:
                event = await queue.get()
                if event is None:
                    return
                if event.object.get("kind") == "Pod":
                    yield event
        finally:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)

    # -- services --------------------------------------------------------------------------------
    async def create_service(self, manifest: dict) -> dict:
        svc = self._new_meta("services", manifest, self._services)
        svc.setdefault("apiVersion", "v1")
        svc["kind"] = "Service"
        spec = svc.setdefault("spec", {})
        ports = spec.get("ports") or []
        for p in ports:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        spec.setdefault("type", "ClusterIP")
        name = svc["metadata"]["name"]
        if spec.get("clusterIP") != "None":
            ip = await asyncio.to_thread(loopback.allocate_address, [int(p["port"]) for p in ports])
            proxy = loopback.ServiceProxy(ip, [(int(p["port"]), p["targetPort"]) for p in ports],
                                          lambda target, name=name: self._resolve(name, target))
            try:
                await proxy.start()
            except BaseException:
                loopback.release_address(ip)
                raise
            if name in self._services:  # lost a race with a concurrent create
                await proxy.close()
                loopback.release_address(ip)
                raise RuntimeAPIError(409, "AlreadyExists", f'services "{name}" already exists')
            self._proxies[name] = proxy
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        svc["status"] = {"loadBalancer": {}}
        self._services[name] = svc
        if self._owner_missing(svc):
            self._spawn(self.delete_service(name))
        return copy.deepcopy(svc)

    def _resolve(self, service: str, target) -> tuple[str, int] | None:
        return loopback.pick_endpoint(self._services.get(service), self._pods.values(), target)

    async def read_service(self, name: str) -> dict | None:
        svc = self._services.get(name)
        return copy.deepcopy(svc) if svc is not None else None

    async def list_services(self, label_selector: str = "") -> list[dict]:
        matches = _matcher(label_selector)
        return [copy.deepcopy(s) for s in self._services.values() if matches(s["metadata"].get("labels"))]

    async def delete_service(self, name: str) -> bool:
        svc = self._services.pop(name, None)
        if svc is None:
            return False
        proxy = self._proxies.pop(name, None)
        if proxy is not None:
            await proxy.close()
            loopback.release_address(proxy.cluster_ip)
        self._collect_garbage(svc["metadata"]["uid"])
        return True

    # -- lifecycle -------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop every pod (in parallel) and every service proxy; end all watches."""
        self._closed = True
        for task in list(self._run_tasks.values()):
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)
        self._run_tasks.clear()
        await self.runner.close()
        await asyncio.gather(*(p.close() for p in self._proxies.values()), return_exceptions=True)
        for proxy in self._proxies.values():
            loopback.release_address(proxy.cluster_ip)
        self._proxies.clear()
        pending = [t for t in self._background if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=10)
        self._pods.clear()
        self._services.clear()
        for _, queue in self._watchers:
            queue.put_nowait(None)
