"""Serving the emulated cluster: :func:`serve` (in an event loop), :class:`EmulatedKubernetes` (a subprocess or a
thread, for tests and tools) and :func:`write_kubeconfig`."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import aiohttp.web

from .emulator import NO_FAULTS_HEADER, EmulatorFaults, KubeEmulator
from .nodeagent import Autoscaler, NodeAgent, default_image_pull_fail
from .scheduling import NodeSpec, parse_node

log = logging.getLogger("jupyter_dask_kube.testing")

__all__ = ["serve", "EmulatedKubernetes", "ServerInfo", "write_kubeconfig", "READY_MARK"]

READY_MARK = "Emulated Kubernetes API listening on "


def write_kubeconfig(path: str, server: str, namespace: str = "default",
                     name: str = "jupyter-dask-kube-emulator") -> str:
    """A kubeconfig (JSON is valid YAML) with one cluster, a user with no credentials and a current context."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    }
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)  # readers never see half a file
    return path


@dataclasses.dataclass
class ServerInfo:
    url: str
    port: int
    kubeconfig: str | None
    namespace: str
    emulator: KubeEmulator
    agent: NodeAgent


async def serve(*, host: str = "127.0.0.1", port: int = 0, kubeconfig: str | None = None,
                namespace: str = "default", run_processes: bool = True, nodes: list[NodeSpec] | None = None,
                faults: EmulatorFaults | None = None, log_dir: str | None = None, watch_history: int = 2000,
                image_pull_fail: Callable[[str], bool] | None = default_image_pull_fail,
                autoscaler: Autoscaler | None = None,
                ready: Callable[[ServerInfo], None] | None = None, stop: asyncio.Event | None = None,
                parent_pid: int | None = None) -> None:
    """Serve an emulated API server, and a :class:`NodeAgent` that reaches it over HTTP through the kubeconfig
    (as it would a real kube-apiserver), until ``stop`` is set (or the task is cancelled, or ``parent_pid``
    exits); then stop every pod's processes."""
    stop = stop or asyncio.Event()
    emu = KubeEmulator(namespaces=[namespace], faults=faults or EmulatorFaults(), watch_history=watch_history)
    own_dir = None
    if not kubeconfig:
        own_dir = tempfile.mkdtemp(prefix="jdk-emulator-")
        kubeconfig = os.path.join(own_dir, "kubeconfig")
    async with emu:
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(emu, access_log=None), shutdown_timeout=1.0,
                                          handle_signals=False)
        await runner.setup()
        agent = None
        try:
            site = aiohttp.web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            sock = site._server.sockets[0]  # type: ignore[union-attr]
            real_port = sock.getsockname()[1]
            url = f"http://{host}:{real_port}"
            write_kubeconfig(kubeconfig, url, namespace)
            agent = NodeAgent(kubeconfig, nodes, run_processes=run_processes, log_dir=log_dir,
                              image_pull_fail=image_pull_fail, autoscaler=autoscaler,
                              # injected faults are the project's problem, not the node's: they spare the agent
                              headers={NO_FAULTS_HEADER: "1"})
            emu.node_agent_token = agent.control_token
            await agent.start()
            if ready is not None:
                ready(ServerInfo(url, real_port, kubeconfig, namespace, emu, agent))
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if parent_pid and not _alive(parent_pid):
                    log.warning("parent process %s is gone: shutting down", parent_pid)
                    break
        finally:
            if agent is not None:
                await agent.close()
            await runner.cleanup()
            if own_dir:
                shutil.rmtree(own_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmulatedKubernetes:
    """An emulated cluster for tests and tools: ``with EmulatedKubernetes() as k: ...k.kubeconfig...``.

    By default it runs ``python -m jupyter_dask_kube.testing`` in a subprocess (so the blocking
    ``kubernetes`` client never shares an event loop with the server); ``in_process=True`` runs it in a
    thread of this process instead (faster to start; same HTTP interface).

    Attributes once started: ``url``, ``kubeconfig`` (path), ``namespace``, ``pid`` (the server's process).
    """

    def __init__(self, *, processes: bool = True, namespace: str = "default", nodes: list[str] | None = None,
                 in_process: bool = False, faults: EmulatorFaults | None = None, workdir: str | None = None,
                 startup_timeout: float = 60.0, extra_args: list[str] | None = None,
                 autoscale: tuple[str, float] | None = None):
        self.processes = processes
        self.namespace = namespace
        self.nodes = nodes
        self.in_process = in_process
        self.initial_faults = faults
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.autoscale = autoscale  # (node spec, delay in seconds): play cluster-autoscaler with that node
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="jdk-emulator-")
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        self.log_path = os.path.join(self.workdir, "emulator.log")
        self.url: str | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.info: ServerInfo | None = None  # in-process only: direct access to the emulator and node agent

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> EmulatedKubernetes:
        if self.url is not None:
            return self
        if self.in_process:
            self._start_thread()
        else:
            self._start_subprocess()
        if self.initial_faults is not None:
            self.set_faults(self.initial_faults)
        return self

    def _start_subprocess(self) -> None:
        cmd = [sys.executable, "-m", "jupyter_dask_kube.testing", "--port", "0", "--kubeconfig", self.kubeconfig,
               "--namespace", self.namespace, "--log-dir", os.path.join(self.workdir, "pods"),
               "--parent-pid", str(os.getpid())]
        if not self.processes:
            cmd.append("--no-processes")
        for node in self.nodes or []:
            cmd += ["--node", node]
        if self.autoscale:
            cmd += ["--autoscale-node", self.autoscale[0], "--autoscale-delay", str(self.autoscale[1])]
        cmd += self.extra_args
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, cwd=self.workdir)
        self.pid = self._proc.pid
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            text = self._read_log()
            m = re.search(re.escape(READY_MARK) + r"(http://\S+)", text)
            if m and os.path.exists(self.kubeconfig):
                self.url = m.group(1)
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self._proc.returncode}:\n{text}")
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"the emulator was not ready within {self.startup_timeout}s:\n{self._read_log()}")

    def _read_log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def output(self) -> str:
        """What the server process printed so far (subprocess mode)."""
        return self._read_log()

    def _start_thread(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def on_ready(info: ServerInfo) -> None:
            self.info = info
            self.url = info.url
            ready.set()

        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            nodes = [parse_node(n, i + 1) for i, n in enumerate(self.nodes or [])] or None
            autoscaler = None
            if self.autoscale:
                autoscaler = Autoscaler(parse_node(self.autoscale[0]), float(self.autoscale[1]))
                autoscaler.template.name = "autoscaled"
            await serve(kubeconfig=self.kubeconfig, namespace=self.namespace, run_processes=self.processes,
                        nodes=nodes, log_dir=os.path.join(self.workdir, "pods"), ready=on_ready,
                        stop=self._stop_event, autoscaler=autoscaler)

        def run():
            try:
                asyncio.run(main())
            except BaseException as e:  # noqa: BLE001
                failure.append(e)
                ready.set()

        self._thread = threading.Thread(target=run, name="emulated-kubernetes", daemon=True)
        self._thread.start()
        if not ready.wait(self.startup_timeout) or failure:
            raise RuntimeError(f"the in-process emulator failed to start: {failure[:1]}")
        self.pid = os.getpid()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server; every pod's processes are stopped and the pods deleted first."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            if self._loop is not None and self._stop_event is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._stop_event.set)
            thread.join(timeout)
        self.url = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    close = stop

    def __enter__(self) -> EmulatedKubernetes:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> EmulatedKubernetes:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"<EmulatedKubernetes url={self.url} pid={self.pid} processes={self.processes}>"

    # -- control ---------------------------------------------------------------------------------------
    def _private(self, what: str, body: dict | None = None, method: str | None = None) -> dict:
        if self.url is None:
            raise RuntimeError("the emulator is not running")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/{what}", data=data, method=method or
                                     ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def set_faults(self, faults: EmulatorFaults | dict | None = None, **kwargs) -> dict:
        """Replace the server's faults (``EmulatorFaults`` fields); no argument clears them."""
        if isinstance(faults, EmulatorFaults):
            body = faults.to_json()
        else:
            body = dict(faults or {}, **kwargs)
            for key in ("forbidden", "review_denied", "namespaces", "error_statuses"):
                if key in body:
                    body[key] = [list(v) if isinstance(v, tuple) else v for v in body[key]]
        return self._private("faults", body, "POST")

    def clear_faults(self) -> dict:
        return self._private("faults", {}, "POST")

    def compact(self) -> int:
        """Drop the watch history: resuming a watch from an older resourceVersion answers 410 Gone."""
        return self._private("compact", {}, "POST")["compacted"]

    def stats(self) -> dict:
        """Counters: requests, created, deleted, watches; with faults on also faults_injected, faults_<status>,
        faults_on_watch, watches_dropped, watches_resumed (from a resourceVersion), watches_gone_410. The node
        agent's own requests and watches are counted apart (node_agent_requests, node_agent_watches)."""
        return self._private("stats")

    def evict(self, name: str, namespace: str | None = None, message: str | None = None) -> dict:
        """Evict a pod as the kubelet does under node memory pressure: Failed / Evicted, containers killed."""
        return self._private(f"pods/{namespace or self.namespace}/{name}/evict",
                             {"message": message} if message else {}, "POST")

    def oom_kill(self, name: str, namespace: str | None = None, container: str | None = None) -> dict:
        """Kill a pod's container(s) as the kernel's OOM killer does: exit 137, reason OOMKilled."""
        return self._private(f"pods/{namespace or self.namespace}/{name}/oomkill",
                             {"container": container} if container else {}, "POST")

    def api(self, no_faults: bool = False):
        """A ``kubernetes.client.CoreV1Api`` configured from this cluster's kubeconfig; with ``no_faults`` its
        requests are exempt from injected faults (to check the API's state while faults stay on)."""
        from .fixtures import kube_api
        return kube_api(self, no_faults=no_faults)
