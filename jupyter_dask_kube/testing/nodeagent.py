"""The node agent: scheduler, kubelet and kube-proxy for any Kubernetes API server, over HTTP only.

It reaches the API server through a kubeconfig, as a real kubelet does (:mod:`.kubeapi`): it registers its Nodes,
lists and watches pods and Services (resourceVersion, relist on 410), binds pending pods that fit
(``pods/{name}/binding``) and marks the others Unschedulable in the default scheduler's words, runs bound pods'
containers as local processes on their own loopback IPs (:class:`~..runtimes.localpod.LocalPodRunner`), posts
their status through ``pods/{name}/status``, finishes graceful deletion (SIGTERM, grace period, SIGKILL, then the
final delete with ``gracePeriodSeconds=0``), serves container logs on its HTTPS kubelet port (the API server
proxies ``pods/log`` there: :mod:`.kubeletserver`), injects Service environment variables, mounts ``secret``
volumes (it reads each Secret through the API and writes owner-only files per pod; a missing one keeps the pod in
ContainerCreating with FailedMount's words: :mod:`..runtimes.secretvolumes`), and proxies Service
clusterIPs to ready pods found by selector (real Endpoints refuse loopback IPs). Optionally it plays a cluster
autoscaler that adds a Node after a delay. The same agent drives the emulator and a real kube-apiserver.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import itertools
import logging
import os
import signal
import tempfile
import uuid
from collections.abc import Callable

from ..runtimes import loopback
from ..runtimes.localpod import LocalPodRunner
from . import clusterdns
from .kubeapi import KubeAPI, KubeAPIError
from .scheduling import NodeSpec, choose_node, fits_empty, now_iso, pod_requests, ready_condition, \
    service_environment

log = logging.getLogger("jupyter_dask_kube.testing.nodeagent")

__all__ = ["Autoscaler", "NodeAgent", "default_image_pull_fail"]

Key = tuple[str, str]
TERMINAL = ("Succeeded", "Failed")
#: What the kubelet's eviction manager writes on a pod it evicted under memory pressure.
EVICTION_MESSAGE = "The node was low on resource: memory. "


def default_image_pull_fail(image: str) -> bool:
    return "doesnotexist" in image or "unpullable" in image


@dataclasses.dataclass
class Autoscaler:
    """Play cluster-autoscaler: a pod that fits on no Node but would fit on a new ``template`` Node triggers
    a scale-up (event TriggeredScaleUp) and that Node is added after ``delay`` seconds; a pod that would not
    fit even there gets NotTriggerScaleUp. At most ``max_nodes`` added."""

    template: NodeSpec = dataclasses.field(default_factory=lambda: NodeSpec(name="autoscaled"))
    delay: float = 5.0
    max_nodes: int = 3


class NodeAgent:
    """``agent = NodeAgent(kubeconfig); await agent.start(); ...; await agent.close()`` (or ``async with``)."""

    HEARTBEAT = 10.0

    def __init__(self, kubeconfig: str, nodes: list[NodeSpec] | None = None, *, run_processes: bool = True,
                 image_pull_fail: Callable[[str], bool] | None = default_image_pull_fail,
                 log_dir: str | None = None, enforce_memory_limits: bool = True, events: bool = True,
                 autoscaler: Autoscaler | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 client_ca: str | None = None, control_token: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, context: str | None = None, headers: dict | None = None):
        self.api = KubeAPI(kubeconfig, context=context, headers=headers)
        self.nodes = list(nodes or [NodeSpec()])
        self.run_processes = run_processes
        self.image_pull_fail = image_pull_fail
        self.log_dir = log_dir
        self.enforce_memory_limits = enforce_memory_limits
        self.events = events
        #: per-pod routine events (Scheduled, Killing) cost the no-process mode's load benchmarks a request each
        self.routine_events = events and run_processes
        self.autoscaler = autoscaler
        self.tls_cert, self.tls_key, self.client_ca = tls_cert, tls_key, client_ca
        self.control_token = control_token or uuid.uuid4().hex
        self.host, self.port = host, port
        self.pods: dict[Key, dict] = {}            # every pod the API has, from list+watch
        self.services: dict[Key, dict] = {}
        self._runners: dict[str, LocalPodRunner] = {}
        self._running: set[Key] = set()           # handed to a runner
        self._binding: dict[Key, tuple[str, float, float]] = {}  # bound by us, not yet seen bound in a watch
        self._unschedulable: dict[Key, str] = {}   # pod -> message posted
        self._scale_told: set[Key] = set()
        self._scaling_up = False
        self._added_nodes = 0
        self._stopping: dict[Key, asyncio.Task] = {}
        self._evicted: dict[Key, dict] = {}
        self._desired: dict[Key, dict] = {}        # status to post
        self._posting: dict[Key, asyncio.Task] = {}
        self._posted: dict[Key, dict] = {}
        self._proxies: dict[Key, loopback.ServiceProxy] = {}
        self._ips = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._pass = asyncio.Event()
        self._server = None
        self._tmp: str | None = None
        self.synced = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------------
    async def __aenter__(self) -> NodeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> NodeAgent:
        from .kubeletserver import KubeletServer

        if not self.tls_cert:
            from .pki import CertificateAuthority

            self._tmp = tempfile.mkdtemp(prefix="jdk-node-agent-")
            ca = CertificateAuthority(os.path.join(self._tmp, "ca"), "jdk-node-agent-ca")
            self.tls_cert, self.tls_key = ca.issue(os.path.join(self._tmp, "kubelet"), "jdk-node-agent",
                                                   server_names=("127.0.0.1", "localhost"))
        self._server = KubeletServer(self, self.host, self.port, self.tls_cert, self.tls_key, self.client_ca)
        self.port = await self._server.start()
        for node in self.nodes:
            await self._register(node)
        pods_synced, services_synced = asyncio.Event(), asyncio.Event()

        async def on_pods(items):
            await self._resync("pods", items)
            pods_synced.set()

        async def on_services(items):
            await self._resync("services", items)
            services_synced.set()

        self._spawn(self.api.list_watch("/api/v1/services", self._on_service, on_synced=on_services, stop=self._stop))
        self._spawn(self.api.list_watch("/api/v1/pods", self._on_pod, on_synced=on_pods, stop=self._stop))
        self._spawn(self._scheduler_loop())
        self._spawn(self._heartbeat_loop())
        await asyncio.wait_for(asyncio.gather(pods_synced.wait(), services_synced.wait()), 60)
        self.synced.set()
        return self

    async def close(self) -> None:
        """Stop every pod's processes and every Service proxy; the Nodes and pods stay in the API."""
        self._stop.set()
        await asyncio.gather(*(r.close() for r in self._runners.values()), return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self._proxies.values()), return_exceptions=True)
        self._proxies.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.close()
        await self.api.close()
        if self._tmp:
            import shutil
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node agent task failed", exc_info=task.exception())

    def pids(self) -> list[int]:
        return [pid for (ns, name) in self._running if ns in self._runners for pid in self._runners[ns].pids(name)]

    @property
    def node_names(self) -> set[str]:
        return {n.name for n in self.nodes}

    # -- nodes ----------------------------------------------------------------------------------------
    async def _register(self, node: NodeSpec) -> None:
        manifest = node.manifest(self.port)
        try:
            await self.api.post("/api/v1/nodes", manifest)
        except KubeAPIError as e:
            if e.status != 409:
                raise
        # a Node made by an earlier agent keeps its name: take it over with this agent's port and capacity
        await self.api.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": manifest["status"]})

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.HEARTBEAT)
                return
            except asyncio.TimeoutError:
                pass
            for node in list(self.nodes):
                try:
                    current = await self.api.get(f"/api/v1/nodes/{node.name}")
                    old = next((c for c in current.get("status", {}).get("conditions") or []
                                if c.get("type") == "Ready"), {})
                    cond = ready_condition()
                    if old.get("status") == "True":
                        cond["lastTransitionTime"] = old.get("lastTransitionTime", cond["lastTransitionTime"])
                    await self.api.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": {"conditions": [cond]}})
                except KubeAPIError as e:
                    if e.status == 404:  # someone deleted our Node: register again, as a kubelet does
                        await self._register(node)
                except Exception as e:  # noqa: BLE001 (the next beat tries again)
                    log.info("heartbeat of %s failed: %r", node.name, e)

    async def _event(self, pod: dict, type_: str, reason: str, message: str, component: str) -> None:
        if not self.events or (reason in ("Scheduled", "Killing") and not self.routine_events):
            return
        meta = pod["metadata"]
        now = now_iso()
        try:
            await self.api.post(f"/api/v1/namespaces/{meta['namespace']}/events", {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                                   "uid": meta.get("uid"), "apiVersion": "v1",
                                   "resourceVersion": meta.get("resourceVersion")},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "source": {"component": component}, "reportingComponent": component,
                "firstTimestamp": now, "lastTimestamp": now})
        except (KubeAPIError, OSError, asyncio.TimeoutError) as e:
            log.info("event %s for %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], e)

    # -- watches --------------------------------------------------------------------------------------
    async def _resync(self, what: str, items: list[dict]) -> None:
        store = self.pods if what == "pods" else self.services
        handler = self._on_pod if what == "pods" else self._on_service
        seen = set()
        for obj in items:
            seen.add((obj["metadata"].get("namespace"), obj["metadata"]["name"]))
            await handler("ADDED", obj)
        for key in [k for k in store if k not in seen]:
            await handler("DELETED", store[key])

    async def _on_pod(self, etype: str, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if etype == "DELETED":
            self.pods.pop(key, None)
            self._forget(key)
            if key in self._running and key not in self._stopping:
                # deleted with grace 0 (or by someone else's final delete): kill at once
                self._stopping[key] = self._spawn(self._terminate(key, 0.0, final_delete=False))
            self._pass.set()
            return
        self.pods[key] = pod
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            if spec.get("schedulerName", "default-scheduler") == "default-scheduler" and key not in self._binding:
                self._pass.set()
            return
        self._binding.pop(key, None)
        if node not in self.node_names:
            return
        if meta.get("deletionTimestamp"):
            if key not in self._stopping:
                grace = meta.get("deletionGracePeriodSeconds")
                self._stopping[key] = self._spawn(self._terminate(key, 30.0 if grace is None else float(grace)))
            return
        if (pod.get("status") or {}).get("phase") in TERMINAL:
            self._pass.set()  # its resources are free again
            return
        if key not in self._running:
            self._running.add(key)
            self._spawn(self._run(key, pod))

    def _forget(self, key: Key) -> None:
        self._binding.pop(key, None)
        self._unschedulable.pop(key, None)
        self._scale_told.discard(key)
        self._evicted.pop(key, None)
        self._desired.pop(key, None)
        self._posted.pop(key, None)

    # -- scheduling -----------------------------------------------------------------------------------
    def _used(self) -> dict[str, tuple[float, float, int]]:
        used: dict[str, list] = {n: [0.0, 0.0, 0] for n in self.node_names}
        bound = [(p["spec"]["nodeName"], *pod_requests(p)) for p in self.pods.values()
                 if (p.get("spec") or {}).get("nodeName") in used
                 and (p.get("status") or {}).get("phase") not in TERMINAL]
        for node, cpu, mem in bound + list(self._binding.values()):
            u = used[node]
            u[0] += cpu
            u[1] += mem
            u[2] += 1
        return {n: tuple(u) for n, u in used.items()}

    async def _scheduler_loop(self) -> None:
        while not self._stop.is_set():
            await self._pass.wait()
            self._pass.clear()
            try:
                await self._schedule_pass()
            except Exception:  # noqa: BLE001
                log.exception("scheduling pass failed")
                await asyncio.sleep(0.5)
                self._pass.set()

    async def _schedule_pass(self) -> None:
        pending = sorted((p for k, p in self.pods.items() if not (p.get("spec") or {}).get("nodeName")
                          and k not in self._binding and not p["metadata"].get("deletionTimestamp")
                          and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"
                          and (p.get("status") or {}).get("phase") not in TERMINAL),
                         key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if not pending:
            return
        used = self._used()
        binds = []
        for pod in pending:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            node, message = choose_node(pod, self.nodes, used)
            if node is None:
                if self._unschedulable.get(key) != message:
                    self._unschedulable[key] = message
                    binds.append(self._mark_unschedulable(key, pod, message))
                if self.autoscaler is not None and key not in self._scale_told:
                    self._scale_told.add(key)
                    binds.append(self._consider_scale_up(pod))
                continue
            cpu, mem = pod_requests(pod)
            u = used[node.name]
            used[node.name] = (u[0] + cpu, u[1] + mem, u[2] + 1)
            self._binding[key] = (node.name, cpu, mem)
            self._unschedulable.pop(key, None)
            binds.append(self._bind(key, pod, node.name))
        await asyncio.gather(*binds)

    async def _bind(self, key: Key, pod: dict, node: str) -> None:
        ns, name = key
        try:
            await self.api.post(f"/api/v1/namespaces/{ns}/pods/{name}/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns,
                                                                    "uid": pod["metadata"].get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        except KubeAPIError as e:
            self._binding.pop(key, None)
            if e.status not in (404, 409):
                log.warning("binding %s/%s to %s failed: %s", ns, name, node, e)
                self._pass.set()
            return
        await self._event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                          "default-scheduler")

    async def _mark_unschedulable(self, key: Key, pod: dict, message: str) -> None:
        ns, name = key
        cond = {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                "lastTransitionTime": now_iso(), "reason": "Unschedulable", "message": message}
        try:
            await self.api.merge_patch(f"/api/v1/namespaces/{ns}/pods/{name}/status",
                                       {"status": {"conditions": [cond]}})
        except KubeAPIError as e:
            if e.status != 404:
                log.warning("marking %s/%s unschedulable failed: %s", ns, name, e)
            return
        await self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")

    async def _consider_scale_up(self, pod: dict) -> None:
        a = self.autoscaler
        assert a is not None
        misfits = fits_empty(pod, a.template)
        if misfits:
            await self._event(pod, "Normal", "NotTriggerScaleUp",
                              "pod didn't trigger scale-up (it wouldn't fit if a new node is added): "
                              + ", ".join(f"1 {m}" for m in misfits), "cluster-autoscaler")
            return
        if self._added_nodes >= a.max_nodes and not self._scaling_up:
            await self._event(pod, "Normal", "NotTriggerScaleUp",
                              "pod didn't trigger scale-up: 1 max node group size reached", "cluster-autoscaler")
            return
        group = a.template.name
        await self._event(pod, "Normal", "TriggeredScaleUp",
                          f"pod triggered scale-up: [{{{group} {self._added_nodes}->{self._added_nodes + 1} "
                          f"(max: {a.max_nodes})}}]", "cluster-autoscaler")
        if not self._scaling_up:
            self._scaling_up = True
            self._spawn(self._add_node_later())

    async def _add_node_later(self) -> None:
        a = self.autoscaler
        assert a is not None
        try:
            await asyncio.wait_for(self._stop.wait(), a.delay)
            return
        except asyncio.TimeoutError:
            pass
        self._added_nodes += 1
        node = dataclasses.replace(a.template, name=f"{a.template.name}-{self._added_nodes}",
                                   labels=dict(a.template.labels))
        await self._register(node)
        self.nodes.append(node)
        self._scaling_up = False
        self._scale_told.clear()  # pods still left over may trigger the next one
        self._pass.set()

    # -- running pods -------------------------------------------------------------------------------
    def _runner(self, namespace: str) -> LocalPodRunner:
        runner = self._runners.get(namespace)
        if runner is None:
            log_dir = os.path.join(self.log_dir, namespace) if self.log_dir else None
            runner = LocalPodRunner(lambda name, status, ns=namespace: self._on_status((ns, name), status),
                                    run_processes=self.run_processes, log_dir=log_dir,
                                    enforce_memory_limits=self.enforce_memory_limits,
                                    image_pull_fail=self.image_pull_fail, read_secret=self._read_secret,
                                    volume_root=self._volume_root())
            self._runners[namespace] = runner
        return runner

    def _volume_root(self) -> str:
        """Where the Secrets of pods' secret volumes are written (per pod, owner-only; runtimes/secretvolumes.py)."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="jdk-node-agent-")
        return os.path.join(self._tmp, "volumes")

    async def _read_secret(self, namespace: str, name: str) -> dict | None:
        """A Secret a pod mounts, read through the API with the agent's own credentials, as a kubelet does."""
        try:
            return await self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except KubeAPIError as e:
            if e.status == 404:
                return None
            raise

    def _with_service_env(self, pod: dict) -> dict:
        """A copy of the pod whose containers list the Service variables first (their own ``env`` wins)."""
        spec = pod.get("spec") or {}
        env = service_environment(list(self.services.values()), pod["metadata"]["namespace"],
                                  spec.get("enableServiceLinks", True) is not False)
        pod = copy.deepcopy(pod)
        for c in pod["spec"].get("containers") or []:
            c["env"] = env + list(c.get("env") or [])
        # no cluster resolver here: Service names in variables and args become their clusterIPs
        return clusterdns.rewrite_pod(pod, clusterdns.service_ips(list(self.services.values())))

    async def _run(self, key: Key, pod: dict) -> None:
        ip = None
        if not self.run_processes:  # no sockets are bound: any address will do, no bind check needed
            n = next(self._ips)
            ip = f"127.244.{n // 250 % 250}.{n % 250 + 1}"
        try:
            for attempt in range(6):
                try:
                    await self._runner(key[0]).run(self._with_service_env(pod), ip=ip)
                    break
                except RuntimeError as e:  # no free pod address (a wildcard listener took the port): retry,
                    if attempt == 5 or key not in self.pods:  # as a kubelet retries a pod sandbox
                        raise
                    log.warning("pod %s/%s: %s; retrying", *key, e)
                    await self._event(pod, "Warning", "FailedCreatePodSandBox", str(e), "kubelet")
                    await asyncio.sleep(2 ** attempt)
        except Exception as e:  # noqa: BLE001 (reported on the pod, as a kubelet does)
            log.exception("pod %s/%s failed to start", *key)
            self._on_status(key, {"phase": "Failed", "reason": "StartError", "message": str(e)})

    def _on_status(self, key: Key, status: dict) -> None:
        if self._stop.is_set() or key not in self.pods:
            return
        self._desired[key] = status
        if key not in self._posting:
            self._posting[key] = self._spawn(self._post_status(key))

    def _full_status(self, key: Key, status: dict) -> dict:
        pod = self.pods.get(key) or {}
        old = pod.get("status") or {}
        new = dict(status)
        new.update(self._evicted.get(key, {}))  # an evicted pod stays Failed/Evicted whatever follows
        if "qosClass" in old:
            new["qosClass"] = old["qosClass"]  # decided by the API server at creation
        else:
            new.pop("qosClass", None)
        sched = next((c for c in old.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if sched is not None and "conditions" in new:
            new["conditions"] = [c for c in new["conditions"] if c.get("type") != "PodScheduled"] + [sched]
        return new

    async def _post_status(self, key: Key) -> None:
        ns, name = key
        try:
            while key in self._desired and not self._stop.is_set():
                status = self._full_status(key, self._desired.pop(key))
                before = self._posted.get(key) or (self.pods.get(key) or {}).get("status") or {}
                patch = {**status, **{k: None for k in before if k not in status}}
                try:
                    await self.api.merge_patch(f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": patch})
                    self._posted[key] = status
                except KubeAPIError as e:
                    if e.status == 404:
                        return
                    log.warning("status of %s/%s not posted: %s", ns, name, e)
                    self._desired.setdefault(key, status)
                    await asyncio.sleep(0.5)
                except (OSError, asyncio.TimeoutError) as e:
                    log.info("status of %s/%s not posted: %r", ns, name, e)
                    self._desired.setdefault(key, status)
                    await asyncio.sleep(0.5)
        finally:
            self._posting.pop(key, None)

    async def _terminate(self, key: Key, grace: float, final_delete: bool = True) -> None:
        """Graceful deletion: SIGTERM, up to ``grace`` seconds, SIGKILL; then the final delete (grace 0)."""
        ns, name = key
        try:
            runner = self._runners.get(ns)
            if runner is not None and key in self._running:
                pod = self.pods.get(key)
                if pod is not None and grace > 0:
                    for c in pod["spec"].get("containers") or []:
                        await self._event(pod, "Normal", "Killing", f"Stopping container {c['name']}", "kubelet")
                await runner.stop(name, grace_period=grace)
            self._running.discard(key)
            posting = self._posting.get(key)
            if posting is not None:
                await asyncio.wait([posting], timeout=5)
            if final_delete:
                uid = (self.pods.get(key) or {}).get("metadata", {}).get("uid")
                body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
                if uid:
                    body["preconditions"] = {"uid": uid}
                try:
                    await self.api.delete(f"/api/v1/namespaces/{ns}/pods/{name}", body)
                except KubeAPIError as e:
                    if e.status != 409:  # 409: a new pod of that name already: not ours to delete
                        log.warning("final delete of %s/%s failed: %s", ns, name, e)
        finally:
            self._running.discard(key)
            self._stopping.pop(key, None)

    # -- faults (the emulator's /_emulator/pods/{ns}/{name}/evict and /oomkill, through the kubelet port) -----
    async def evict(self, ns: str, name: str, message: str = EVICTION_MESSAGE) -> dict:
        """The kubelet's eviction manager under node pressure: Failed / Evicted (the pod stays in the API until
        someone deletes it), its containers killed at once."""
        key = (ns, name)
        pod = self.pods.get(key)
        if pod is None:
            raise KeyError(name)
        fields = {"phase": "Failed", "reason": "Evicted", "message": message}
        self._evicted[key] = fields
        status = copy.deepcopy(pod.get("status") or {})
        status.update(fields)
        for cs in status.get("containerStatuses") or []:
            if "running" in (cs.get("state") or {}) or "waiting" in (cs.get("state") or {}):
                cs["ready"] = False
                cs["state"] = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                              "message": "The container could not be located when the pod "
                                                         "was terminated", "finishedAt": now_iso()}}
        for cond in status.get("conditions") or []:
            if cond.get("type") in ("Ready", "ContainersReady"):
                cond.update(status="False", reason="PodFailed", lastTransitionTime=now_iso())
        self._desired[key] = status
        if key not in self._posting:
            self._posting[key] = self._spawn(self._post_status(key))
        await self._event(pod, "Warning", "Evicted", message, "kubelet")
        runner = self._runners.get(ns)
        if runner is not None and key in self._running:
            await runner.stop(name, grace_period=0.0)
            self._running.discard(key)
        posting = self._posting.get(key)
        if posting is not None:
            await asyncio.wait([posting], timeout=5)
        return await self._read_pod(key, dict(pod, status=status))

    async def oom_kill(self, ns: str, name: str, container: str | None = None) -> dict:
        """The kernel's OOM killer on one container (default: all): SIGKILL, reported as OOMKilled / 137; the
        pod's restartPolicy decides what follows, as for any container exit."""
        from ..runtimes.localpod import _killpg

        runner = self._runners.get(ns)
        p = runner._pods.get(name) if runner is not None else None  # noqa: SLF001 (the runner's own pod record)
        if p is None or (ns, name) not in self._running:
            raise ValueError(f'pod "{name}" has no running containers to kill')
        killed = []
        for c in p.containers:
            if (container is None or c.name == container) and c.proc is not None and c.proc.returncode is None:
                c.oom = True
                _killpg(c.proc.pid, signal.SIGKILL)
                killed.append(c)
        if not killed:
            raise ValueError(f'pod "{name}" has no running container {container or ""}'.strip())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline and (any("running" in c.state for c in killed) or (ns, name) in self._desired
                                          or (ns, name) in self._posting):
            await asyncio.sleep(0.02)
        return await self._read_pod((ns, name), self.pods.get((ns, name)) or {})

    async def _read_pod(self, key: Key, last: dict) -> dict:
        """The pod as the API has it now; the last one seen when someone deleted it meanwhile."""
        try:
            return await self.api.get(f"/api/v1/namespaces/{key[0]}/pods/{key[1]}")
        except KubeAPIError as e:
            if e.status == 404:
                return last
            raise

    def logs(self, ns: str, name: str, container: str | None, tail_lines: int | None) -> str:
        runner = self._runners.get(ns)
        if runner is None or name not in runner.names():
            raise KeyError(f'pod "{name}" is not running on this node')
        return runner.logs(name, container, tail_lines)

    def pod_address(self, ns: str, name: str) -> str:
        """The IP of a pod running here (what port-forward dials)."""
        runner = self._runners.get(ns)
        status = runner.status(name) if runner is not None else None
        if not status or not status.get("podIP") or status.get("phase") != "Running":
            raise KeyError(f'pod "{name}" is not running on this node')
        return status["podIP"]

    # -- Services: kube-proxy ------------------------------------------------------------------------------
    async def _on_service(self, etype: str, svc: dict) -> None:
        meta = svc["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.services.get(key)
        if etype == "DELETED":
            self.services.pop(key, None)
            await self._stop_proxy(key)
            return
        self.services[key] = svc
        if old is not None and (old.get("spec") or {}).get("ports") == (svc.get("spec") or {}).get("ports") \
                and (old.get("spec") or {}).get("clusterIP") == (svc.get("spec") or {}).get("clusterIP") \
                and key in self._proxies:
            return
        await self._stop_proxy(key)
        await self._start_proxy(key, svc)

    async def _start_proxy(self, key: Key, svc: dict) -> None:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not self.run_processes:
            return
        try:
            if not ipaddress.ip_address(ip).is_loopback:
                return  # nothing may leave 127.0.0.0/8: a routable clusterIP is some other cluster's business
        except ValueError:
            return
        ports = [(p["port"], p.get("targetPort", p["port"])) for p in spec.get("ports") or []
                 if p.get("protocol", "TCP") == "TCP"]
        ns = key[0]

        def resolve(target_port):
            pods = [p for (pns, _), p in self.pods.items() if pns == ns]
            return loopback.pick_endpoint(self.services.get(key), pods, target_port)

        proxy = loopback.ServiceProxy(ip, ports, resolve)
        try:
            await proxy.start()
        except OSError as e:
            log.warning("service %s/%s: cannot listen on %s: %s", *key, ip, e)
            return
        self._proxies[key] = proxy

    async def _stop_proxy(self, key: Key) -> None:
        proxy = self._proxies.pop(key, None)
        if proxy is not None:
            await proxy.close()
