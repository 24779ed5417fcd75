"""The local runtime: an in-memory API server for pods and services, pods run as local processes.

Used when there is no Kubernetes (a laptop, CI, a first try): the same templates run on this machine,
each pod on its own loopback address (see :mod:`.localpod`), each Service as a small TCP proxy on its
own ``clusterIP`` (see :mod:`.loopback`). Objects are Kubernetes JSON dicts, as in every runtime.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator

from . import loopback, secretvolumes
from ..objectstore import Gone, ObjectStore
from ..selectors import SelectorError, label_matcher
from .base import PodRuntime, RuntimeAPIError, WatchEvent
from .localpod import LocalPodRunner, now

__all__ = ["LocalPodRunner", "LocalRuntime"]

logger = logging.getLogger(__name__)

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HISTORY = 2000  # events kept for watches resuming from a resourceVersion


def _matcher(label_selector: str):
    """The labels predicate of a selector string; a malformed one is the API's 400."""
    try:
        return label_matcher(label_selector)
    except SelectorError as e:
        raise RuntimeAPIError(400, "BadRequest", str(e)) from None


class LocalRuntime(PodRuntime):
    """Pods and Services kept in memory with API-server semantics; pods run by a :class:`LocalPodRunner`."""

    backend = "local"

    def __init__(self, namespace: str = "default", *, runner: LocalPodRunner | None = None, **runner_kwargs):
        super().__init__(namespace or "default")
        self.runner = runner or LocalPodRunner(**runner_kwargs)
        self.runner.on_status = self._on_status
        # Secrets stay in this process's store; pods that mount one get owner-only copies (secretvolumes.py)
        # under this runtime's own directory in the user's Jupyter runtime dir, removed on close.
        self._files_dir: str | None = None
        self.runner.read_secret = self._read_secret_for_pod
        if self.runner.volume_root is None:  # made when a pod first mounts a Secret
            self.runner.volume_root = lambda: os.path.join(self.files_dir, "pods")
        #: pods and services (keyed by (plural, namespace, name)), their resourceVersions, watch history, owners
        self.store = ObjectStore(_HISTORY, snapshot=True)  # snapshot: stored objects change in place here
        self._proxies: dict[str, loopback.ServiceProxy] = {}
        self._run_tasks: dict[str, asyncio.Task] = {}
        self._deleting: dict[tuple[str, str], asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._closed = False

    # -- helpers ---------------------------------------------------------------------------------
    def _get(self, plural: str, name: str) -> dict | None:
        return self.store.get(plural, self.namespace, name)

    def _select(self, plural: str, label_selector: str = "") -> list[dict]:
        try:
            return self.store.select(plural, self.namespace, labels=label_selector)
        except SelectorError as e:
            raise RuntimeAPIError(400, "BadRequest", str(e)) from None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _new_meta(self, kind: str, manifest: dict) -> dict:
        """A copy of ``manifest`` with its name (generateName) and namespace checked, ready for the store."""
        if self._closed:
            raise RuntimeAPIError(503, "ServiceUnavailable", "the local runtime is closed")
        if not isinstance(manifest, dict):
            raise RuntimeAPIError(400, "BadRequest", f"{kind} manifest must be a mapping")
        obj = copy.deepcopy(manifest)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = self.store.generate_name(kind, self.namespace, meta["generateName"])
        if not name:
            raise RuntimeAPIError(422, "Invalid", f"{kind} is invalid: metadata.name: Required value: "
                                                  "name or generateName is required")
        if len(name) > 253 or not _DNS1123.match(name):
            raise RuntimeAPIError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value: '
                                                  f'"{name}": a lowercase RFC 1123 subdomain must consist of '
                                                  "lower case alphanumeric characters, '-' or '.'")
        if self._get(kind, name) is not None:
            raise RuntimeAPIError(409, "AlreadyExists", f'{kind} "{name}" already exists')
        ns = meta.get("namespace")
        if ns and ns != self.namespace:
            raise RuntimeAPIError(400, "BadRequest", "the namespace of the provided object does not match "
                                                     "the namespace sent on the request")
        meta.update(name=name, namespace=self.namespace)
        return obj

    def _owner_missing(self, obj: dict) -> bool:
        """True when an owner this runtime would store (Pod, Service) does not exist (GC'd at once)."""
        return self.store.owners_gone(obj, ("Pod", "Service"))

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete every object owned by ``owner_uid`` (pods and services in the background)."""
        for plural, _, name in self.store.pop_dependents(owner_uid):
            if plural == "pods":
                self._spawn(self.delete_pod(name))
            elif plural == "services":
                self._spawn(self.delete_service(name))
            elif plural == "secrets":
                self._spawn(self.delete_secret(name))
            elif (obj := self._get(plural, name)) is not None:  # anything else stored here: no process to stop
                self.store.remove(plural, obj)

    # -- pods ------------------------------------------------------------------------------------
    async def create_pod(self, manifest: dict) -> dict:
        pod = self._new_meta("pods", manifest)
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
        self.store.add("pods", pod)
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
        pod = self._get("pods", name)
        if pod is None or self._closed:
            return
        pod["status"] = copy.deepcopy(status)
        self.store.commit("pods", pod)

    async def read_pod(self, name: str) -> dict | None:
        pod = self._get("pods", name)
        return copy.deepcopy(pod) if pod is not None else None

    async def list_pods(self, label_selector: str = "") -> list[dict]:
        return [copy.deepcopy(p) for p in self._select("pods", label_selector)]

    async def annotate_pod(self, name: str, annotations: dict[str, str | None]) -> None:
        pod = self._get("pods", name)
        if pod is None:
            raise RuntimeAPIError(404, "NotFound", f'pods "{name}" not found')
        current = pod["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = str(value)
        self.store.commit("pods", pod)

    async def delete_pod(self, name: str, grace_period_seconds: int | None = None) -> bool:
        if self._get("pods", name) is None:
            return False
        key = ("pod", name)
        task = self._deleting.get(key)
        if task is None:
            task = self._deleting[key] = self._spawn(self._delete_pod(name, grace_period_seconds))
        await asyncio.shield(task)
        return True

    async def _delete_pod(self, name: str, grace: int | None) -> None:
        try:
            pod = self._get("pods", name)
            if pod is None:  # the runtime was closed meanwhile
                return
            if grace is None:
                grace = pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            pod["metadata"]["deletionTimestamp"] = now()
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            self.store.commit("pods", pod)
            run = self._run_tasks.pop(name, None)
            if run is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(run)
            await self.runner.stop(name, grace_period=min(float(grace), 30.0))
            pod = self._get("pods", name)
            if pod is not None and self.store.remove("pods", pod) is not None:
                self._collect_garbage(pod["metadata"]["uid"])
        finally:
            self._deleting.pop(("pod", name), None)

    async def pod_logs(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        if self._get("pods", name) is None:
            raise RuntimeAPIError(404, "NotFound", f'pods "{name}" not found')
        try:
            return self.runner.logs(name, container, tail_lines)
        except KeyError as e:
            raise RuntimeAPIError(400, "BadRequest", str(e.args[0])) from None

    def watch_pods(self, label_selector: str = "", resource_version: str | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(_matcher(label_selector), resource_version)

    async def _watch(self, matches, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        if resource_version in (None, "", "0"):
            backlog = [WatchEvent("ADDED", copy.deepcopy(p)) for p in self._select("pods")
                       if matches(p["metadata"].get("labels"))]
        else:
            try:
                events = self.store.events_since("pods", int(resource_version))
            except Gone as e:
                raise RuntimeAPIError(410, "Expired", str(e)) from None
            backlog = [WatchEvent(ev.type, copy.deepcopy(ev.obj)) for ev in events
                       if matches(ev.obj["metadata"].get("labels"))]
        watcher = self.store.subscribe("pods")
        try:
            for event in backlog:
                yield event
            if resource_version in (None, "", "0"):
                yield WatchEvent("SYNCED", {})
            while True:
                ev = await watcher.queue.get()
                if ev is None:
                    return
                if matches(ev.obj["metadata"].get("labels")):
                    yield WatchEvent(ev.type, copy.deepcopy(ev.obj))
        finally:
            self.store.unsubscribe("pods", watcher)

    # -- services --------------------------------------------------------------------------------
    async def create_service(self, manifest: dict) -> dict:
        svc = self._new_meta("services", manifest)
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
            if self._get("services", name) is not None:  # lost a race with a concurrent create
                await proxy.close()
                loopback.release_address(ip)
                raise RuntimeAPIError(409, "AlreadyExists", f'services "{name}" already exists')
            self._proxies[name] = proxy
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        svc["status"] = {"loadBalancer": {}}
        self.store.add("services", svc)
        if self._owner_missing(svc):
            self._spawn(self.delete_service(name))
        return copy.deepcopy(svc)

    def _resolve(self, service: str, target) -> tuple[str, int] | None:
        return loopback.pick_endpoint(self._get("services", service), self.store.table("pods").values(), target)

    async def read_service(self, name: str) -> dict | None:
        svc = self._get("services", name)
        return copy.deepcopy(svc) if svc is not None else None

    async def list_services(self, label_selector: str = "") -> list[dict]:
        return [copy.deepcopy(s) for s in self._select("services", label_selector)]

    async def delete_service(self, name: str) -> bool:
        svc = self._get("services", name)
        if svc is None or self.store.remove("services", svc) is None:
            return False
        proxy = self._proxies.pop(name, None)
        if proxy is not None:
            await proxy.close()
            loopback.release_address(proxy.cluster_ip)
        self._collect_garbage(svc["metadata"]["uid"])
        return True

    # -- secrets ---------------------------------------------------------------------------------
    @property
    def files_dir(self) -> str:
        """This runtime's directory (0700) in the user's Jupyter runtime dir: Secrets' owner-only files."""
        if self._files_dir is None:
            try:
                from jupyter_core.paths import jupyter_runtime_dir

                base = os.path.join(jupyter_runtime_dir(), "dask-kube")
            except ImportError:  # pragma: no cover (jupyter_server depends on it)
                base = os.path.join(tempfile.gettempdir(), f"dask-kube-{os.getuid()}")
            os.makedirs(base, mode=0o700, exist_ok=True)
            os.chmod(base, 0o700)
            self._files_dir = tempfile.mkdtemp(prefix="rt-", dir=base)  # 0700
        return self._files_dir

    def secret_directory(self, name: str) -> str | None:
        """Where the Secret ``name``'s keys are, as files only this user can read (None: no such Secret).
        What a notebook of the same user on this machine connects with (the local runtime's connect code)."""
        if self._get("secrets", name) is None:
            return None
        return os.path.join(self.files_dir, "secrets", name)

    async def create_secret(self, manifest: dict) -> dict:
        secret = self._new_meta("secrets", manifest)
        secret.setdefault("apiVersion", "v1")
        secret["kind"] = "Secret"
        secret.setdefault("type", "Opaque")
        data = secret.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise RuntimeAPIError(400, "BadRequest", "Secret data must map keys to base64 strings")
        files_dir = os.path.join(self.files_dir, "secrets", secret["metadata"]["name"])
        try:
            secretvolumes.check_data(secret)
        except ValueError as e:
            raise RuntimeAPIError(422, "Invalid", f'Secret "{secret["metadata"]["name"]}" is invalid: {e}') from None
        self.store.add("secrets", secret)  # first: a pod already waiting for it may go on at once
        self.runner.secrets_changed()
        try:
            await asyncio.to_thread(secretvolumes.write_secret, files_dir, secret)
        except (OSError, secretvolumes.MountError) as e:
            self.store.remove("secrets", secret)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(shutil.rmtree, files_dir, True)
            raise RuntimeAPIError(500, "InternalError",
                                  f'Secret "{secret["metadata"]["name"]}" cannot be written to {files_dir}: {e}') from None
        if self.store.owners_gone(secret, ("Pod", "Service")):
            self._spawn(self.delete_secret(secret["metadata"]["name"]))
        return copy.deepcopy(secret)

    async def read_secret(self, name: str) -> dict | None:
        secret = self._get("secrets", name)
        return copy.deepcopy(secret) if secret is not None else None

    async def _read_secret_for_pod(self, namespace: str, name: str) -> dict | None:
        return await self.read_secret(name) if namespace == self.namespace else None

    async def delete_secret(self, name: str) -> bool:
        secret = self._get("secrets", name)
        if secret is None or self.store.remove("secrets", secret) is None:
            return False
        if self._files_dir is not None:
            await asyncio.to_thread(shutil.rmtree, os.path.join(self._files_dir, "secrets", name), True)
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
        self.store.clear()
        self.store.close_watches()
        if self._files_dir is not None:  # every Secret's files, and what pods' volumes left
            await asyncio.to_thread(shutil.rmtree, self._files_dir, True)
