"""The emulated cluster's control loop: a scheduler, a kubelet and a Service proxy controller.

They run in the emulator's process and event loop, react to committed changes through
:meth:`KubeEmulator.add_hook` and write back through the emulator's store (never HTTP: it is fast and
there is no network hop to fail). Pods run as local processes with
:class:`jupyter_dask_kube.runtimes.localpod.LocalPodRunner` (one runner per namespace, as the runner keys
pods by name); in no-process mode pods turn Running with a podIP at once and nothing runs.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import uuid
from collections.abc import Callable

from .emulator import ApiError, KubeEmulator, bad_request, now_iso, parse_quantity

log = logging.getLogger("jupyter_dask_kube.testing.kubelet")

__all__ = ["Kubelet", "NodeSpec", "default_image_pull_fail", "parse_node"]


def default_image_pull_fail(image: str) -> bool:
    return "doesnotexist" in image or "unpullable" in image


@dataclasses.dataclass
class NodeSpec:
    name: str = "emulated-node-1"
    cpu: str = "64"
    memory: str = "256Gi"
    pods: int = 500
    labels: dict = dataclasses.field(default_factory=dict)

    @property
    def cpu_cores(self) -> float:
        return parse_quantity(self.cpu)

    @property
    def memory_bytes(self) -> float:
        return parse_quantity(self.memory)

    def manifest(self) -> dict:
        capacity = {"cpu": str(self.cpu), "memory": str(self.memory), "pods": str(self.pods),
                    "ephemeral-storage": "100Gi"}
        return {
            "metadata": {"name": self.name, "labels": {
                "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                **self.labels}},
            "spec": {},
            "status": {
                "capacity": capacity, "allocatable": dict(capacity),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status", "lastHeartbeatTime": now_iso(),
                                "lastTransitionTime": now_iso()}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": "v1.32.0-emulated", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "local-processes://1"},
            },
        }


def parse_node(text: str, index: int = 1) -> NodeSpec:
    """``"cpu=64,memory=256Gi,pods=500,name=n1,label.zone=a"`` -> NodeSpec."""
    node = NodeSpec(name=f"emulated-node-{index}")
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key == "cpu":
            node.cpu = value
        elif key == "memory":
            node.memory = value
        elif key == "pods":
            node.pods = int(value)
        elif key == "name":
            node.name = value
        elif key.startswith("label."):
            node.labels[key[6:]] = value
        else:
            raise ValueError(f"unknown node field {key!r} in {text!r}")
    return node


def pod_requests(pod: dict) -> tuple[float, float]:
    """(cpu cores, memory bytes) the scheduler accounts for: sum over containers, max with init containers."""
    spec = pod.get("spec") or {}

    def req(c):
        r = (c.get("resources") or {})
        vals = {**(r.get("limits") or {}), **(r.get("requests") or {})}
        return parse_quantity(vals.get("cpu")), parse_quantity(vals.get("memory"))

    cpu = mem = 0.0
    for c in spec.get("containers") or []:
        a, b = req(c)
        cpu, mem = cpu + a, mem + b
    for c in spec.get("initContainers") or []:
        a, b = req(c)
        cpu, mem = max(cpu, a), max(mem, b)
    return cpu, mem


class Kubelet:
    """Scheduler + kubelet + service controller for a :class:`KubeEmulator`.

    ``run_processes=False`` is the no-process mode. ``image_pull_fail(image) -> bool`` decides which images
    fail to pull (ImagePullBackOff). ``default_grace`` is the stop grace period when a delete gives none.
    """

    def __init__(self, emu: KubeEmulator, nodes: list[NodeSpec] | None = None, *, run_processes: bool = True,
                 image_pull_fail: Callable[[str], bool] | None = default_image_pull_fail,
                 log_dir: str | None = None, enforce_memory_limits: bool = True, default_grace: float = 5.0,
                 events: bool = True):
        self.emu = emu
        self.nodes = nodes or [NodeSpec()]
        self.run_processes = run_processes
        self.image_pull_fail = image_pull_fail
        self.log_dir = log_dir
        self.enforce_memory_limits = enforce_memory_limits
        self.default_grace = default_grace
        self.events = events and run_processes
        self._runners: dict[str, object] = {}
        self._running: set[tuple[str, str]] = set()      # pods handed to a runner, not yet stopped
        self._stopping: set[tuple[str, str]] = set()     # graceful deletion in progress
        self._bound: dict[tuple[str, str], tuple[str, float, float]] = {}  # pod -> (node, cpu, memory)
        self._pending: dict[tuple[str, str], None] = {}  # waiting for a scheduling pass (FIFO)
        self._unschedulable: dict[tuple[str, str], None] = {}
        self._proxies: dict[tuple[str, str], object] = {}
        self._evicted: dict[tuple[str, str], dict] = {}  # pod -> the status fields its eviction set
        self._tasks: set[asyncio.Task] = set()
        self._pass_scheduled = False
        self._ips = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        for node in self.nodes:
            if emu.get("nodes", None, node.name) is None:
                emu.insert("nodes", node.manifest())
        emu.kubelet = self
        emu.add_hook(self._on_change)

    # -- hooks from the emulator -----------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kubelet task failed", exc_info=task.exception())

    def _on_change(self, plural: str, etype: str, obj: dict, old: dict | None) -> None:
        if self._closed:
            return
        if plural == "pods":
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            if etype == "ADDED":
                if obj["spec"].get("nodeName"):
                    self._bind_existing(key, obj)
                else:
                    self._pending[key] = None
                    self._schedule_pass()
            elif etype == "DELETED":
                self._evicted.pop(key, None)
                self._pending.pop(key, None)
                self._unschedulable.pop(key, None)
                self._release(key)
                if key in self._running and key not in self._stopping:
                    grace = meta.get("deletionGracePeriodSeconds")
                    self._spawn(self._stop(key, 0.0 if grace == 0 else self.default_grace, remove=False))
            elif etype == "MODIFIED":
                phase = (obj.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed") and key in self._bound:
                    self._release(key)
        elif plural == "services":
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            if etype == "ADDED":
                self._spawn(self._start_proxy(key, obj))
            elif etype == "DELETED":
                self._spawn(self._stop_proxy(key, (obj.get("spec") or {}).get("clusterIP")))
            elif etype == "MODIFIED" and old is not None and (
                    old.get("spec", {}).get("ports") != obj.get("spec", {}).get("ports")):
                self._spawn(self._restart_proxy(key, obj))

    # called by the emulator while deleting a pod
    def wants_graceful(self, pod: dict, grace: int | None) -> bool:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self._stopping:
            return True
        if grace == 0 or key not in self._running:
            return False
        return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def is_stopping(self, pod: dict) -> bool:
        meta = pod["metadata"]
        return (meta["namespace"], meta["name"]) in self._stopping

    def begin_stop(self, pod: dict, grace: int | None) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        self._stopping.add(key)
        self._spawn(self._stop(key, self.default_grace if grace is None else float(grace), remove=True))

    def force(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        self._stopping.discard(key)
        if key in self._running:
            self._spawn(self._stop(key, 0.0, remove=False))

    async def logs(self, pod: dict, container: str | None, tail_lines: int | None) -> str | ApiError:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if not self.run_processes:
            return ""
        runner = self._runners.get(key[0])
        if key not in self._running or runner is None:
            waiting = next((s.get("state", {}).get("waiting") for s in
                            (pod.get("status") or {}).get("containerStatuses") or []
                            if s.get("name") == container), None)
            reason = (waiting or {}).get("reason") or "ContainerCreating"
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                return bad_request(f'container "{container}" in pod "{key[1]}" is waiting to start: trying and '
                                   "failing to pull image")
            if (pod.get("status") or {}).get("phase") in ("Pending", None):
                return bad_request(f'container "{container}" in pod "{key[1]}" is waiting to start: {reason}')
            return ""
        try:
            return runner.logs(key[1], container, tail_lines)
        except KeyError as e:
            return bad_request(str(e).strip("'\""))

    # -- scheduling -----------------------------------------------------------------------------------
    def _schedule_pass(self) -> None:
        if not self._pass_scheduled:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_schedule_pass)

    def _used(self) -> dict[str, list[float]]:
        used = {n.name: [0.0, 0.0, 0] for n in self.nodes}
        for node, cpu, mem in self._bound.values():
            u = used.setdefault(node, [0.0, 0.0, 0])
            u[0] += cpu
            u[1] += mem
            u[2] += 1
        return used

    def _run_schedule_pass(self) -> None:
        self._pass_scheduled = False
        if self._closed:
            return
        pending, self._pending = self._pending, {}
        used = self._used()
        for key in pending:
            pod = self.emu.get("pods", *key)
            if pod is None or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            cpu, mem = pod_requests(pod)
            selector = pod["spec"].get("nodeSelector") or {}
            reasons: dict[str, int] = {}
            chosen = None
            for node in self.nodes:
                u = used[node.name]
                labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                          "kubernetes.io/arch": "amd64", **node.labels}
                if any(labels.get(k) != v for k, v in selector.items()):
                    reasons["node(s) didn't match Pod's node affinity/selector"] = \
                        reasons.get("node(s) didn't match Pod's node affinity/selector", 0) + 1
                    continue
                fails = []
                if u[2] + 1 > node.pods:
                    fails.append("Too many pods")
                if u[0] + cpu > node.cpu_cores + 1e-9:
                    fails.append("Insufficient cpu")
                if u[1] + mem > node.memory_bytes:
                    fails.append("Insufficient memory")
                if fails:
                    for f in fails:
                        reasons[f] = reasons.get(f, 0) + 1
                    continue
                chosen = node
                break
            if chosen is None:
                detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
                message = f"0/{len(self.nodes)} nodes are available: {detail}."
                self._unschedulable[key] = None
                self._mark_unschedulable(key, message)
                continue
            self._unschedulable.pop(key, None)
            u = used[chosen.name]
            u[0] += cpu
            u[1] += mem
            u[2] += 1
            self._bound[key] = (chosen.name, cpu, mem)
            self._bind(key, chosen.name)

    def _mark_unschedulable(self, key, message: str) -> None:
        def mutate(pod):
            status = pod.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
            if old and old.get("message") == message and old.get("status") == "False":
                return False
            conds.append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                          "lastTransitionTime": now_iso(), "reason": "Unschedulable", "message": message})
            status["conditions"] = conds
            status["phase"] = "Pending"
        if self.emu.update("pods", *key, mutate) is not None and self.events:
            pod = self.emu.get("pods", *key)
            if pod is not None:
                self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")

    def _release(self, key) -> None:
        if self._bound.pop(key, None) is not None and self._unschedulable:
            for k in self._unschedulable:
                self._pending[k] = None
            self._unschedulable.clear()
            self._schedule_pass()

    def _bind_existing(self, key, pod: dict) -> None:
        cpu, mem = pod_requests(pod)
        self._bound[key] = (pod["spec"]["nodeName"], cpu, mem)
        self._bind(key, pod["spec"]["nodeName"], already=True)

    def _bind(self, key, node: str, already: bool = False) -> None:
        now = now_iso()
        scheduled = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        if not self.run_processes:
            ip = f"127.244.{(n := next(self._ips)) // 250 % 250}.{n % 250 + 1}"
            image_fail = self.image_pull_fail or (lambda image: False)

            def run_now(pod):
                pod["spec"]["nodeName"] = node
                status = pod.setdefault("status", {})
                cstats, all_ok = [], True
                for c in pod["spec"]["containers"]:
                    cs = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "restartCount": 0,
                          "containerID": f"emulated://{uuid.uuid4().hex[:12]}"}
                    if image_fail(c.get("image", "")):
                        all_ok = False
                        cs.update(ready=False, started=False, state={"waiting": {
                            "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{c.get("image")}"'}})
                        cs.pop("containerID")
                    else:
                        cs.update(ready=True, started=True, state={"running": {"startedAt": now}})
                    cstats.append(cs)
                ready = "True" if all_ok else "False"
                status.update(phase="Running" if all_ok else "Pending", podIP=ip, podIPs=[{"ip": ip}],
                              hostIP="127.0.0.1", hostIPs=[{"ip": "127.0.0.1"}], startTime=now,
                              containerStatuses=cstats, conditions=[
                                  {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
                                  {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
                                  {"type": "Ready", "status": ready, "lastProbeTime": None, "lastTransitionTime": now},
                                  {"type": "ContainersReady", "status": ready, "lastProbeTime": None, "lastTransitionTime": now},
                                  scheduled])
            self.emu.update("pods", *key, run_now)
            return

        def bind(pod):
            pod["spec"]["nodeName"] = node
            status = pod.setdefault("status", {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"] \
                + [scheduled]
        pod = self.emu.update("pods", *key, bind) if not already else self.emu.get("pods", *key)
        if pod is None:
            return
        if self.events:
            self._event(pod, "Normal", "Scheduled", f"Successfully assigned {key[0]}/{key[1]} to {node}",
                        "default-scheduler")
        self._running.add(key)
        self._spawn(self._run(key, pod))

    # -- running --------------------------------------------------------------------------------------
    def _runner(self, namespace: str):
        runner = self._runners.get(namespace)
        if runner is None:
            try:
                from ..runtimes.localpod import LocalPodRunner
            except ImportError:  # pragma: no cover
                from ..runtimes.local import LocalPodRunner
            log_dir = None
            if self.log_dir:
                import os
                log_dir = os.path.join(self.log_dir, namespace)
            runner = LocalPodRunner(lambda name, status, ns=namespace: self._on_status(ns, name, status),
                                    run_processes=True, log_dir=log_dir,
                                    enforce_memory_limits=self.enforce_memory_limits,
                                    image_pull_fail=self.image_pull_fail)
            self._runners[namespace] = runner
        return runner

    async def _run(self, key, pod: dict) -> None:
        try:
            await self._runner(key[0]).run(pod)
        except Exception as e:
            log.exception("pod %s/%s failed to start", *key)
            self._on_status(key[0], key[1], {"phase": "Failed", "reason": "StartError", "message": str(e)})

    def _on_status(self, namespace: str, name: str, status: dict) -> None:
        key = (namespace, name)
        if self._closed or self.emu.get("pods", *key) is None:
            return

        def mutate(pod):
            old = pod.get("status") or {}
            new = dict(status)
            new.update(self._evicted.get(key, {}))  # an evicted pod stays Failed/Evicted whatever follows
            new["qosClass"] = old.get("qosClass", new.get("qosClass"))
            sched = next((c for c in old.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
            if sched is not None and "conditions" in new:
                new["conditions"] = [c for c in new["conditions"] if c.get("type") != "PodScheduled"] + [sched]
            if new == old:
                return False
            pod["status"] = new
        self.emu.update("pods", *key, mutate)

    async def _stop(self, key, grace: float, remove: bool) -> None:
        try:
            runner = self._runners.get(key[0])
            if runner is not None and key in self._running:
                if self.events and remove:
                    pod = self.emu.get("pods", *key)
                    if pod is not None:
                        self._event(pod, "Normal", "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}",
                                    "kubelet")
                await runner.stop(key[1], grace_period=grace)
        finally:
            self._running.discard(key)
            self._stopping.discard(key)
            if remove:
                pod = self.emu.get("pods", *key)
                if pod is not None:
                    self.emu.remove("pods", *key)

    # -- node-pressure faults (the emulator's /_emulator/pods/{ns}/{name}/evict and /oomkill) ---------------
    async def evict(self, namespace: str, name: str, message: str = "The node was low on resource: memory. ") -> dict:
        """What the kubelet's eviction manager does under node pressure: the pod turns Failed with reason
        Evicted (it stays in the API, as real evicted pods do, until someone deletes it) and its containers
        are killed at once."""
        key = (namespace, name)
        fields = {"phase": "Failed", "reason": "Evicted", "message": message}
        self._evicted[key] = fields

        def mutate(pod):
            status = pod.setdefault("status", {})
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
        pod = self.emu.update("pods", *key, mutate)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        if self.events:
            self._event(pod, "Warning", "Evicted", message, "kubelet")
        self._release(key)
        if key in self._running:
            await self._stop(key, 0.0, remove=False)
        return self.emu.get("pods", *key) or pod

    async def oom_kill(self, namespace: str, name: str, container: str | None = None) -> dict:
        """The kernel's OOM killer on one container (default: all): SIGKILL, reported as OOMKilled / 137;
        the pod's restartPolicy decides what follows, as for any container exit."""
        import signal
        from ..runtimes.localpod import _killpg

        key = (namespace, name)
        runner = self._runners.get(namespace)
        p = getattr(runner, "_pods", {}).get(name) if runner is not None else None
        if p is None or key not in self._running:
            raise bad_request(f'pod "{name}" has no running containers to kill')
        killed = []
        for c in p.containers:
            if (container is None or c.name == container) and c.proc is not None and c.proc.returncode is None:
                c.oom = True
                _killpg(c.proc.pid, signal.SIGKILL)
                killed.append(c)
        if not killed:
            raise bad_request(f'pod "{name}" has no running container {container or ""}'.strip())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline and any("running" in c.state for c in killed):
            await asyncio.sleep(0.02)
        return self.emu.get("pods", *key) or {}

    def _event(self, pod: dict, type_: str, reason: str, message: str, component: str) -> None:
        meta = pod["metadata"]
        try:
            self.emu.insert("events", {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                                   "uid": meta.get("uid"), "apiVersion": "v1"},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "source": {"component": component}, "reportingComponent": component,
                "firstTimestamp": now_iso(), "lastTimestamp": now_iso()})
        except ApiError:
            pass

    # -- services -------------------------------------------------------------------------------------
    def _resolver(self, key):
        def resolve(target_port):
            svc = self.emu.get("services", *key)
            if svc is None:
                return None
            selector = (svc.get("spec") or {}).get("selector") or {}
            if not selector:
                return None
            candidates = []
            for pod in self.emu.list("pods", key[0]):
                labels = pod["metadata"].get("labels") or {}
                st = pod.get("status") or {}
                if st.get("phase") != "Running" or not st.get("podIP") or pod["metadata"].get("deletionTimestamp"):
                    continue
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                ready = next((c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"), "True")
                if ready != "True":
                    continue
                candidates.append(pod)
            if not candidates:
                return None
            pod = random.choice(candidates)
            port = target_port
            if isinstance(port, str) and not port.isdigit():
                port = next((p.get("containerPort") for c in pod["spec"]["containers"] for p in c.get("ports") or []
                             if p.get("name") == target_port), None)
                if port is None:
                    return None
            return pod["status"]["podIP"], int(port)
        return resolve

    async def _start_proxy(self, key, svc: dict) -> None:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not self.run_processes:
            return
        from ..runtimes.loopback import ServiceProxy
        ports = [(p["port"], p.get("targetPort", p["port"])) for p in spec.get("ports") or []]
        proxy = ServiceProxy(ip, ports, self._resolver(key))
        try:
            await proxy.start()
        except OSError as e:
            log.warning("service %s/%s: cannot listen on %s: %s", *key, ip, e)
            return
        if self.emu.get("services", *key) is None or self._closed:
            await proxy.close()
            return
        old = self._proxies.pop(key, None)
        self._proxies[key] = proxy
        if old is not None:
            await old.close()

    async def _stop_proxy(self, key, cluster_ip: str | None = None) -> None:
        proxy = self._proxies.pop(key, None)
        if proxy is not None:
            await proxy.close()
        if cluster_ip and cluster_ip != "None":
            from ..runtimes.loopback import release_address
            release_address(cluster_ip)

    async def _restart_proxy(self, key, svc: dict) -> None:
        await self._stop_proxy(key)
        await self._start_proxy(key, svc)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def close(self, delete_pods: bool = True) -> None:
        """Stop every pod process and Service proxy; with ``delete_pods`` also remove the pods from the API."""
        self._closed = True
        runners = list(self._runners.values())
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self._proxies.values()), return_exceptions=True)
        self._proxies.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if delete_pods:
            for pod in list(self.emu.list("pods")):
                self.emu._remove("pods", pod)
        self._running.clear()
        self._stopping.clear()

    def pids(self) -> list[int]:
        out = []
        for (ns, name) in self._running:
            runner = self._runners.get(ns)
            if runner is not None:
                out += runner.pids(name)
        return out
