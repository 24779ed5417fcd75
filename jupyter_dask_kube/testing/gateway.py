"""A real dask-gateway-server (local backend, bundled proxy) on 127.0.0.1, for tests and benchmarks.

``LocalGateway(auth="simple", password=...)`` or ``LocalGateway(auth="jupyterhub", hub_api_url=..., api_token=...)``
writes a ``dask_gateway_config.py`` in its folder and runs ``dask-gateway-server -f`` on it. Clusters are local
processes (UnsafeLocalBackend) running ``dask scheduler`` / ``dask worker`` (distributed 2026.8 has no
dask-scheduler script). ``extra_config`` lines go at the end (limits: ``c.ClusterConfig.cluster_max_workers = 2``).
:meth:`stop` ends the server and every process it started, by pid (its clusters run in their own sessions and
would outlive it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.log_level = "INFO"
c.Proxy.address = "127.0.0.1:{proxy_port}"
c.LocalBackend.clusters_directory = {clusters!r}
c.LocalBackend.inherited_environment = [
    "PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "DASK_CONFIG", "DASK_LOGGING__DISTRIBUTED"]
c.LocalClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.LocalClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.LocalClusterConfig.worker_cores = 1
c.LocalClusterConfig.worker_threads = 1
c.LocalClusterConfig.worker_memory = 1_000_000_000
"""

SIMPLE_AUTH = """
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
"""

JUPYTERHUB_AUTH = """
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
c.JupyterHubAuthenticator.jupyterhub_api_url = {hub_api_url!r}
c.JupyterHubAuthenticator.jupyterhub_api_token = {api_token!r}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else (shutil.which(name) or name)


class LocalGateway:
    def __init__(self, *, auth: str = "simple", password: str = "", hub_api_url: str = "", api_token: str = "",
                 extra_config: str = "", workdir: str | None = None):
        self.dir = workdir or tempfile.mkdtemp(prefix="jdk-gateway-")
        os.makedirs(self.dir, exist_ok=True)
        port, api_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{port}"  # API and scheduler proxy share the proxy's port
        self.proxy_address = f"gateway://127.0.0.1:{port}"
        self.password = password
        text = CONFIG.format(api_port=api_port, proxy_port=port, clusters=os.path.join(self.dir, "clusters"),
                             dask=_script("dask"))
        if auth == "simple":
            text += SIMPLE_AUTH.format(password=password)
        elif auth == "jupyterhub":
            text += JUPYTERHUB_AUTH.format(hub_api_url=hub_api_url, api_token=api_token)
        else:
            raise ValueError(f"auth must be simple or jupyterhub, not {auth!r}")
        self.config = os.path.join(self.dir, "dask_gateway_config.py")
        with open(self.config, "w") as f:
            f.write(text + extra_config)
        self.log = os.path.join(self.dir, "gateway.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "LocalGateway":
        env = dict(os.environ, DASK_CONFIG=os.path.join(self.dir, "dask-config"))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [_script("dask-gateway-server"), "-f", self.config], cwd=self.dir, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.address + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dask-gateway-server did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-n:]

    def processes(self) -> list[psutil.Process]:
        """The server's descendants: its proxy and every scheduler and worker it started."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def dask_processes(self) -> list[psutil.Process]:
        out = []
        for p in self.processes():
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if any(a in ("scheduler", "worker") for a in cmd[1:3]) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        return out

    def stop(self, timeout: float = 20):
        if self.proc is None:
            return
        tree = self.processes()  # read first: the clusters run in their own sessions
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the gateway stops its clusters on shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        gone, alive = psutil.wait_procs(tree, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
