""""Survives restarts", for real: a Jupyter server run as a subprocess on the emulated Kubernetes API.

The server is killed (SIGKILL) and stopped (SIGTERM) under running clusters; each new server with the same
config must list the same clusters (ids, template, worker counts, adapt bounds), connected and running, with
exactly the same pods in the cluster (nothing lost, nothing duplicated), and must still scale and delete them.
A cluster made from Python (KubeCluster with a remote scheduler, same user) is re-adopted the same way.

Everything is HTTP: the REST API with the server's token, the Kubernetes API through the kubeconfig.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from jupyter_dask_kube.objects import user_selector
from jupyter_dask_kube.testing.fixtures import kube_api

# Generous: the suite must pass on 2 busy cores, where a dask worker process takes seconds to start.
SERVER_START = 90
WORKERS_UP = 120
GONE = 90

WORKER_POD = {
    "kind": "Pod",
    "spec": {
        "containers": [
            {
                "name": "dask",
                "image": "ghcr.io/dask/dask:latest",
                "args": ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"],
                "resources": {"limits": {"cpu": "1", "memory": "1G"}},
            }
        ]
    },
}
TEMPLATES = {
    "tiny": {
        "display_name": "Tiny (1 thread, 1 GB)",
        "description": "for restart tests",
        "default": True,
        "workers": 1,
        "worker": WORKER_POD,
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.25):
    """Poll until predicate() returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last and not isinstance(last, Pending):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


class Pending(str):
    """A falsy-in-spirit value that says why a wait goes on (shown when the wait times out)."""


class JupyterServer:
    """`python -m jupyter_server` in a subprocess, with its own config, runtime dirs and log file."""

    def __init__(self, workdir: str, env: dict, name: str):
        self.workdir = workdir
        self.env = env
        self.name = name
        self.port = free_port()
        self.token = env["JDK_TEST_TOKEN"]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = os.path.join(workdir, f"server-{name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> JupyterServer:
        cmd = [
            sys.executable, "-m", "jupyter_server",
            "--no-browser", "--allow-root",
            f"--port={self.port}", "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.workdir}",
        ]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir
            )
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"server {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                code, _ = self.call("GET", "status")
            except OSError as exc:
                return Pending(str(exc))
            return code == 200 or Pending(f"status {code}")

        try:
            wait_for(up, SERVER_START, f"server {self.name} to answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log()}") from None
        return self

    def log(self, tail: int = 6000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def call(self, method: str, *path: str, body=None, expect: int | None = None):
        """(status, json) of a dask-kube REST call; 4xx/5xx answers are returned, not raised."""
        url = self.url + "dask-kube/api/" + "/".join(path)
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PATCH") else None)
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
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
        code, data = self.call("GET", "clusters", expect=200)
        return {c["id"]: c for c in data["clusters"]}

    def kill(self, sig=signal.SIGKILL, timeout: float = 60) -> int | None:
        """Send sig and wait for the exit; returns the exit code (None if it was not running)."""
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
                raise AssertionError(f"server {self.name} did not exit within {timeout}s of {sig!r}:\n{self.log()}")
        return proc.returncode


@pytest.fixture
def restart_env(emulated_kubernetes, tmp_path):
    """Environment and config of the servers: a unique hub user, everything Jupyter and dask under tmp."""
    user = f"restart-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "jupyter-config"
    cfg.mkdir()
    (cfg / "jupyter_server_config.py").write_text(
        "c.ServerApp.jpserver_extensions = {'jupyter_dask_kube': True}\n"
        "c.DaskKube.backend = 'kubernetes'\n"
        f"c.DaskKube.templates = {TEMPLATES!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_", "KUBE"))}
    env.update(
        KUBECONFIG=emulated_kubernetes.kubeconfig,
        JUPYTERHUB_USER=user,
        DASK_CONFIG=str(tmp_path / "dask"),
        JUPYTER_CONFIG_DIR=str(cfg),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
        PYTHONUNBUFFERED="1",
        JDK_TEST_TOKEN=secrets.token_hex(16),
    )
    return user, env


@pytest.fixture
def servers(restart_env, tmp_path, emulated_kubernetes):
    """A factory of JupyterServer subprocesses; every one is killed at the end, and the user's pods deleted."""
    user, env = restart_env
    made: list[JupyterServer] = []

    def start(name: str) -> JupyterServer:
        s = JupyterServer(str(tmp_path), env, name)
        made.append(s)
        return s.start()

    yield start
    for s in made:
        try:
            s.kill(signal.SIGKILL, timeout=20)
        except Exception:
            pass
    api = kube_api(emulated_kubernetes)
    try:
        api.delete_collection_namespaced_pod(emulated_kubernetes.namespace, label_selector=user_selector(user),
                                             grace_period_seconds=0)
        for svc in api.list_namespaced_service(emulated_kubernetes.namespace,
                                               label_selector=user_selector(user)).items:
            api.delete_namespaced_service(svc.metadata.name, emulated_kubernetes.namespace)
    except Exception:
        pass
    finally:
        api.api_client.close()


@pytest.fixture
def kube(emulated_kubernetes):
    api = kube_api(emulated_kubernetes)
    yield api
    api.api_client.close()


def user_pods(kube, namespace: str, user: str) -> dict[str, tuple]:
    """name -> (uid, phase, deleting) of every pod of the user."""
    pods = kube.list_namespaced_pod(namespace, label_selector=user_selector(user)).items
    return {p.metadata.name: (p.metadata.uid, p.status.phase, bool(p.metadata.deletion_timestamp)) for p in pods}


def user_services(kube, namespace: str, user: str) -> list[str]:
    return [s.metadata.name for s in kube.list_namespaced_service(namespace, label_selector=user_selector(user)).items]


def expect_clusters(server: JupyterServer, expected: dict[str, dict], timeout=WORKERS_UP) -> dict[str, dict]:
    """Wait until the server lists exactly these clusters, each running with its workers connected.

    expected: id -> {"template", "workers" (connected), "requested_workers", "adapt"}.
    """
    def check():
        got = server.clusters()
        if set(got) != set(expected):
            return Pending(f"ids {sorted(got)} != {sorted(expected)}")
        for cid, want in expected.items():
            m = got[cid]
            for key, value in want.items():
                if m.get(key) != value:
                    return Pending(f"{cid}: {key}={m.get(key)!r}, want {value!r} (status {m['status']}: {m['message']})")
            if m["status"] != "running":
                return Pending(f"{cid}: status {m['status']}: {m['message']}")
            if not m["scheduler_address"].startswith("tcp://"):
                return Pending(f"{cid}: no scheduler address")
        return got

    try:
        return wait_for(check, timeout, f"server {server.name} to list {sorted(expected)} running")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- server log ---\n{server.log()}") from None


def stable_pods(kube, ns, user, count, timeout=WORKERS_UP):
    """The user's pods once there are `count` of them, all Running and none being deleted."""
    def check():
        pods = user_pods(kube, ns, user)
        if len(pods) == count and all(phase == "Running" and not deleting for _, phase, deleting in pods.values()):
            return pods
        return Pending(repr(pods))

    return wait_for(check, timeout, f"{count} running pods")


async def make_python_cluster(kubeconfig: str, user: str) -> str:
    """A cluster made from Python with a remote scheduler and one worker, left running (the kernel went away)."""
    from jupyter_dask_kube import KubeCluster
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    runtime = KubernetesRuntime(kubeconfig=kubeconfig)
    try:
        cluster = KubeCluster(WORKER_POD, runtime=runtime, username=user, asynchronous=True, n_workers=1)
        await cluster
        try:
            await cluster._wait_for_workers(1, timeout=WORKERS_UP)
        except BaseException:
            await cluster.close()
            raise
        name = cluster.name
        assert cluster.deploy_mode == "remote"
        await cluster.detach()  # keep the pods: what a notebook kernel that is gone leaves behind
        return name
    finally:
        await runtime.close()


@pytest.mark.timeout(900)
def test_clusters_survive_server_kill_and_stop(servers, restart_env, emulated_kubernetes, kube):
    user, env = restart_env
    ns = emulated_kubernetes.namespace
    t0 = time.monotonic()

    def step(what):  # shown with -s, and in the captured output of a failure
        print(f"[{time.monotonic() - t0:6.1f}s] {what}", flush=True)

    # -- server A: two clusters from the template, one switched to adapt ------------------------------
    step("start server A")
    a = servers("A")
    _, c1 = a.call("POST", "clusters", body={"template": "tiny", "workers": 2, "name": "first"}, expect=201)
    _, c2 = a.call("POST", "clusters", body={"template": "tiny", "workers": 1, "name": "second"}, expect=201)
    id1, id2 = c1["id"], c2["id"]
    assert id1 != id2
    expect_clusters(a, {
        id1: {"template": "tiny", "workers": 2, "requested_workers": 2, "adapt": None},
        id2: {"template": "tiny", "workers": 1, "requested_workers": 1, "adapt": None},
    })
    step("both clusters running")
    _, m2 = a.call("PATCH", "clusters", id2, body={"adapt": {"minimum": 1, "maximum": 3}}, expect=200)
    assert m2["adapt"] == {"minimum": 1, "maximum": 3}

    # -- a cluster made from Python by the same user (remote scheduler, 1 worker) ---------------------
    step("make a cluster from Python")
    py_id = asyncio.run(make_python_cluster(emulated_kubernetes.kubeconfig, user))
    assert py_id not in (id1, id2)

    # 3 schedulers + 2 + 1 + 1 workers; adapt {1, 3} with no work keeps its one worker
    step("wait for 7 running pods")
    before = stable_pods(kube, ns, user, 7)
    time.sleep(3)  # a few adaptive intervals: nothing may change on its own
    assert user_pods(kube, ns, user) == before
    services_before = sorted(user_services(kube, ns, user))
    assert len(services_before) == 3
    want = {
        id1: {"name": "first", "template": "tiny", "workers": 2, "requested_workers": 2, "adapt": None},
        id2: {"name": "second", "template": "tiny", "workers": 1, "adapt": {"minimum": 1, "maximum": 3}},
        py_id: {"template": "(python)", "workers": 1, "requested_workers": 1, "adapt": None},
    }

    # -- SIGKILL: no chance to clean up or to detach --------------------------------------------------
    step("SIGKILL server A")
    assert a.kill(signal.SIGKILL) == -signal.SIGKILL
    assert user_pods(kube, ns, user) == before, "killing the server changed the pods"

    step("start server B")
    b = servers("B")
    step("server B up; waiting for the re-adopted clusters")
    listed = expect_clusters(b, want)
    assert listed[id1]["scheduler_address"] and listed[id1]["dashboard_link"]
    assert sorted(p["role"] for p in listed[id1]["pods"]) == ["scheduler", "worker", "worker"]
    # Re-adoption made nothing new and deleted nothing; give it a few seconds to misbehave.
    time.sleep(3)
    assert user_pods(kube, ns, user) == before, "re-adoption after SIGKILL changed the pods"
    assert sorted(user_services(kube, ns, user)) == services_before
    expect_clusters(b, want, timeout=10)

    # -- SIGTERM: a graceful stop on the kubernetes backend detaches, leaving the clusters running ------
    step("SIGTERM server B")
    code = b.kill(signal.SIGTERM, timeout=60)
    assert code is not None and code in (0, -signal.SIGTERM), f"server B exit code {code}:\n{b.log()}"
    time.sleep(2)
    assert user_pods(kube, ns, user) == before, "a graceful server stop changed the pods"
    assert sorted(user_services(kube, ns, user)) == services_before

    step("start server C")
    c = servers("C")
    step("server C up; waiting for the re-adopted clusters")
    expect_clusters(c, want)
    time.sleep(3)
    assert user_pods(kube, ns, user) == before, "re-adoption after SIGTERM changed the pods"

    # -- the adopted clusters are fully managed: scale, then delete all three ------------------------
    step("scale the first cluster to 3")
    _, m1 = c.call("PATCH", "clusters", id1, body={"workers": 3}, expect=200)
    assert m1["requested_workers"] == 3 and m1["adapt"] is None
    want[id1].update(workers=3, requested_workers=3)
    expect_clusters(c, want)
    after_scale = user_pods(kube, ns, user)
    assert set(before) < set(after_scale) and len(after_scale) == len(before) + 1
    assert all(after_scale[n][0] == before[n][0] for n in before), "scaling replaced existing pods"

    step("delete the three clusters")
    for cid in (id1, id2, py_id):
        code, _ = c.call("DELETE", "clusters", cid)
        assert code == 204, (cid, code, c.log())
    assert c.clusters() == {}
    wait_for(lambda: not user_pods(kube, ns, user) or Pending(repr(user_pods(kube, ns, user))), GONE,
             "every pod of the user to be gone")
    wait_for(lambda: not user_services(kube, ns, user) or Pending(repr(user_services(kube, ns, user))), GONE,
             "every service of the user to be gone")
    # and a server started now finds nothing to adopt
    step("all gone; start server D")
    c.kill(signal.SIGKILL)
    d = servers("D")
    assert d.clusters() == {}
    step("done")
