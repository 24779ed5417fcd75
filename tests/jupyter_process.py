"""A real ``python -m jupyter_server`` with the extension, in a subprocess, for the tests that need the whole
program (restarts, SIGKILL, schemathesis over HTTP) rather than pytest-jupyter's in-process server.

- :func:`server_config` / :func:`server_env`: the server's config file and an environment with nothing of the
  developer's (no JUPYTERHUB_*, JUPYTER_*, KUBE* variables): its own Jupyter, IPython and dask folders,
  ``JUPYTERHUB_USER``, and ``KUBECONFIG`` only when given;
- :class:`JupyterServer`: start on a free port of 127.0.0.1 with a token and wait for ``/api/status``, REST calls,
  the log (shown in failures), :meth:`~JupyterServer.kill` (a signal: the event under test) and
  :meth:`~JupyterServer.stop` (teardown, reporting the processes left behind);
- :func:`free_ports`, :func:`end_process`: also used by the JupyterHub test.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from jupyter_dask_kube.testing.ports import free_port, free_ports  # noqa: F401 (used by tests)

from helpers import Pending, wait_for

SERVER_START = 90  # s to answer /api/status: generous, the suite must pass on 2 busy cores
# Jupyter's start-up chatter, left out of the log a failure shows.
BORING = ("extension was successfully", "LabApp]", "took 0.", "Serving notebooks", "Jupyter Server 2", "?token=",
          "Control-C", "Skipped non-installed", "_jupyter_server_extension_")


def server_config(templates: dict, *, backend: str = "kubernetes", extensions: dict | None = None, extra: str = "",
                  **dask_kube) -> str:
    """A ``jupyter_server_config.py``: the extension on (plus ``extensions``), ``c.DaskKube.backend``,
    ``.templates`` and any other ``c.DaskKube.<name>`` given; ``extra`` lines at the end."""
    lines = [f"c.ServerApp.jpserver_extensions = {({'jupyter_dask_kube': True, **(extensions or {})})!r}",
             f"c.DaskKube.backend = {backend!r}", f"c.DaskKube.templates = {templates!r}"]
    lines += [f"c.DaskKube.{name} = {value!r}" for name, value in dask_kube.items()]
    return "\n".join(lines) + "\n" + extra


def server_env(folder, *, config: str, user: str, kubeconfig: str | None = None) -> dict:
    """The servers' environment: ``config`` is the jupyter_server_config.py of their JUPYTER_CONFIG_DIR; every
    Jupyter, IPython and dask folder is under ``folder``."""
    folder = Path(folder)
    cfg = folder / "jupyter-config"
    cfg.mkdir(exist_ok=True)
    (cfg / "jupyter_server_config.py").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_", "KUBE"))}
    env.update(
        JUPYTERHUB_USER=user,
        DASK_CONFIG=str(folder / "dask"),
        JUPYTER_CONFIG_DIR=str(cfg),
        JUPYTER_DATA_DIR=str(folder / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(folder / "jupyter-runtime"),
        IPYTHONDIR=str(folder / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return env


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def end_process(proc: subprocess.Popen, family: list[psutil.Process] = (), timeout: float = 30,
                grace: float = 15) -> list[psutil.Process]:
    """SIGTERM ``proc`` (SIGKILL after ``timeout`` s); give ``family`` (what it started, as seen before) ``grace``
    s to end too, then SIGKILL what is left and return it: empty when everything ended by itself."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    deadline = time.monotonic() + grace
    while _running(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _running(family)
    for p in left:
        try:
            p.kill()
            p.wait(5)
        except psutil.Error:
            pass
    return left


class JupyterServer:
    """``python -m jupyter_server`` on 127.0.0.1 with token auth; its output goes to ``server-<name>.log``."""

    def __init__(self, workdir, env: dict, name: str = "server", *, base_url: str = "/",
                 request_timeout: float = 30, new_session: bool = False):
        self.workdir = str(workdir)
        self.env = env
        self.name = name
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}{base_url}"
        self.base_url = base_url
        self.request_timeout = request_timeout
        self.new_session = new_session
        self.log_path = os.path.join(self.workdir, f"server-{name}.log")
        self.proc: subprocess.Popen | None = None

    def api_url(self, *path: str) -> str:
        return self.url + "dask-kube/api/" + "/".join(path)

    def start(self, timeout: float = SERVER_START) -> JupyterServer:
        """Start, and wait until ``/dask-kube/api/status`` answers 200 (fails with the log if it never does)."""
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={self.port}",
               "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--ServerApp.base_url={self.base_url}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.workdir}"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir, start_new_session=self.new_session)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"server {self.name} exited with {self.proc.returncode}")
            try:
                code, _ = self.call("GET", "status")
            except OSError as exc:
                return Pending(str(exc))
            return code == 200 or Pending(f"status {code}")

        try:
            wait_for(up, timeout, what=f"server {self.name} to answer")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None
        return self

    def log(self, tail: int = 12000) -> str:
        """The end of the server's log, without Jupyter's start-up chatter."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        return "\n".join(line for line in lines if not any(b in line for b in BORING))[-tail:]

    def call(self, method: str, *path: str, body=None, expect: int | None = None, timeout: float | None = None):
        """(status, json) of a dask-kube REST call; 4xx/5xx answers are returned, not raised (``expect``: assert
        the status, with the server log in the failure)."""
        url = self.api_url(*path)
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PATCH") else None)
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.request_timeout) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        if expect is not None:
            assert code == expect, f"{method} {url}: {code} {payload}\n--- server log ---\n{self.log()}"
        return code, payload

    def clusters(self) -> dict[str, dict]:
        """id -> model of every cluster the server lists."""
        _, data = self.call("GET", "clusters", expect=200)
        return {c["id"]: c for c in data["clusters"]}

    def kill(self, sig=signal.SIGKILL, timeout: float = 60) -> int | None:
        """Send ``sig`` and wait for the exit; the exit code (None if never started). Fails if it does not exit
        within ``timeout`` s (then it is SIGKILLed)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise AssertionError(
                    f"server {self.name} did not exit within {timeout}s of {sig!r}:\n{self.log()}") from None
        return proc.returncode

    def stop(self) -> list[psutil.Process]:
        """SIGTERM (SIGKILL after 30 s); the processes it started that are still alive 15 s later (now killed)."""
        if self.proc is None:
            return []
        try:
            leader = psutil.Process(self.proc.pid)
            family = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        return end_process(self.proc, family)
