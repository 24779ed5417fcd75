"""A real JupyterHub: two users, one shared (emulated) Kubernetes cluster, the server extension behind the hub.

A `jupyterhub` process (dummy authenticator, users alice and bob, SimpleLocalProcessSpawner) with
configurable-http-proxy from npm (`npm ci` into tests/hub/node_modules when missing) spawns both users'
single-user servers with the jupyter_dask_kube server extension on the "kubernetes" backend, pointed (KUBECONFIG)
at ONE emulated cluster (same namespace). Everything goes through the hub's public proxy URL with hub API tokens,
as a browser or a notebook would. It proves:

- each user creates a cluster through /user/<name>/dask-kube/api/clusters; it runs with its worker; the pods
  carry the user's name (dask-alice-..., dask-bob-...) and the hub.jupyter.org/username label;
- each user sees only their own cluster; bob guessing alice's id gets 404 on GET, PATCH, DELETE and logs, and
  alice's cluster is untouched;
- alice's dashboard link (/user/alice/proxy/<host>:<port>/status) opens for alice; bob is refused by the hub on
  alice's URL, AND by his own server's jupyter-server-proxy allow-list on /user/bob/proxy/<alice's host:port>
  (the RECIPES trap: the default allow-list would let him in, every pod being on this machine);
- deleting both clusters leaves no pod and no dask process; the hub, the proxy and both single-user servers
  stop (fixture finalizers stop everything on failure too).

Needs `jupyterhub` (pip) and `npm` (Node >= 20). Without them the test is skipped, or fails when CI is set.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from jupyter_dask_kube.objects import LABEL_CLUSTER, LABEL_USER, user_selector
from jupyter_dask_kube.testing import EmulatedKubernetes
from jupyter_dask_kube.testing.fixtures import kube_api

from helpers import tiny_template, wait_for
from jupyter_process import end_process, free_ports

HUB_DIR = Path(__file__).parent / "hub"
HUB_CONFIG = HUB_DIR / "jupyterhub_config.py"
CHP = HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = ("alice", "bob")
USERS_SELECTOR = f"{LABEL_USER} in ({','.join(USERS)})"

TEMPLATES = {
    "tiny": tiny_template(),
    "gpu": tiny_template(display_name="GPU team", default=False, groups=["gpu-team"]),
}
# Default: 1 worker per cluster; the gpu-team group (alice): 3.
LIMITS = {"max_workers": 1, "group_limits": {"gpu-team": {"max_workers": 3}}}


def _missing(why: str):
    """CI must run this test: a missing tool is a failure there, a skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


requests = pytest.importorskip("requests")  # a dependency of jupyterhub


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- configurable-http-proxy from npm ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chp_command() -> str:
    """configurable-http-proxy, installed by `npm ci` from tests/hub/package-lock.json when not there yet (~10 s)
    or when the lock file changed since."""
    installed = HUB_DIR / "node_modules" / ".package-lock.json"  # written by npm ci
    lock = HUB_DIR / "package-lock.json"
    if not CHP.exists() or not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm is needed to install configurable-http-proxy for the JupyterHub test")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HUB_DIR, capture_output=True, text=True, timeout=600, check=False,
        )
        if proc.returncode != 0 or not CHP.exists():
            pytest.fail(f"`npm ci` in {HUB_DIR} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return str(CHP)


# -- the hub -----------------------------------------------------------------------------------------------------
class Hub:
    """A `jupyterhub` subprocess and what it started; :meth:`stop` ends all of it and reports any survivor."""

    def __init__(self, chp: str, emu, workdir: str, *, dask_kube: dict | None = None, dask_config: dict | None = None,
                 hub_settings: dict | None = None):
        """``dask_kube``: the servers' c.DaskKube config instead of the kubernetes one on ``emu``; ``dask_config``:
        files for the servers' DASK_CONFIG folder; ``hub_settings``: more for jupyterhub_config.py (services...)."""
        self.chp = chp
        self.emu = emu
        self.dask_kube = dask_kube or {"backend": "kubernetes", "namespace": emu.namespace, "templates": TEMPLATES,
                                       **LIMITS}
        self.dask_config = dask_config or {}
        self.hub_settings = hub_settings or {}
        self.dir = workdir
        self.log_path = os.path.join(workdir, "jupyterhub.log")
        self.proc: subprocess.Popen | None = None
        self.admin_token = secrets.token_hex(16)
        self.tokens: dict[str, str] = {}
        self.tracked: dict[int, tuple[float, str]] = {}  # pid -> (create_time, what)
        # chosen now so that services the servers use (a dask-gateway) can be pointed at the hub before it starts
        self.ports: list[int] = free_ports(3)
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.api_url = f"http://127.0.0.1:{self.ports[1]}/hub/api"

    # -- start ---------------------------------------------------------------------------------------------------
    def start(self):
        proxy_port, hub_port, api_port = self.ports
        jupyter_config = os.path.join(self.dir, "jupyter-config")
        os.makedirs(jupyter_config)
        with open(os.path.join(jupyter_config, "jupyter_server_config.json"), "w") as f:
            json.dump(
                {
                    "ServerApp": {
                        "jpserver_extensions": {
                            "jupyter_dask_kube": True,
                            "jupyter_server_proxy": True,
                            # not under test, and slow to load on busy machines
                            "dask_labextension": False,
                            "jupyter_lsp": False,
                            "jupyterlab": False,
                            "notebook_shim": False,
                            "jupyter_server_terminals": False,
                        }
                    },
                    "DaskKube": self.dask_kube,
                    "FileContentsManager": {"delete_to_trash": False},
                },
                f,
            )
        os.makedirs(os.path.join(self.dir, "dask"))
        for name, text in self.dask_config.items():
            with open(os.path.join(self.dir, "dask", name), "w") as f:
                f.write(text)
        settings = {
            **self.hub_settings,
            "dir": self.dir,
            "proxy_port": proxy_port,
            "hub_port": hub_port,
            "proxy_api_port": api_port,
            "chp": self.chp,
            "admin_token": self.admin_token,
            "environment": {
                **({"KUBECONFIG": self.emu.kubeconfig} if self.emu is not None else {}),
                "DASK_CONFIG": os.path.join(self.dir, "dask"),
                "JUPYTER_CONFIG_DIR": jupyter_config,
            },
        }
        settings_path = os.path.join(self.dir, "settings.json")
        with open(settings_path, "w") as f:
            json.dump(settings, f)
        env = dict(os.environ, JDK_HUB_TEST_SETTINGS=settings_path, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
        self._track(self.proc.pid, "jupyterhub")

        def hub_up():
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                return requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        t0 = time.monotonic()
        wait_for(hub_up, 60, what="the hub behind its proxy", detail=self.log_tail)
        print(f"hub up in {time.monotonic() - t0:.1f}s")
        self._track_children()

        for user in USERS:
            r = self.admin("POST", f"users/{user}")  # allowed users normally exist already: 409 then
            assert r.status_code in (201, 409), (r.status_code, r.text)
            r = self.admin("POST", f"users/{user}/tokens", {"note": "jupyter-dask-kube hub test", "expires_in": 3600})
            assert r.status_code in (200, 201), (r.status_code, r.text)
            self.tokens[user] = r.json()["token"]
        for user in USERS:  # both spawns run at once
            r = self.admin("POST", f"users/{user}/server")
            assert r.status_code in (201, 202), (r.status_code, r.text)
        for user in USERS:
            wait_for(lambda user=user: self._ready(user), 150, interval=0.5, what=f"{user}'s single-user server",
                     detail=self.log_tail)
        print(f"hub and both single-user servers up in {time.monotonic() - t0:.1f}s")
        self._track_children()

    def _ready(self, user: str) -> bool:
        r = self.admin("GET", f"users/{user}")
        server = (r.json().get("servers") or {}).get("") if r.status_code == 200 else None
        return bool(server and server.get("ready"))

    # -- requests ------------------------------------------------------------------------------------------------
    def admin(self, method: str, path: str, body=None):
        return requests.request(
            method, f"{self.url}/hub/api/{path}", json=body, timeout=30,
            headers={"Authorization": f"token {self.admin_token}"},
        )

    def session(self, user: str) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"token {self.tokens[user]}"
        return s

    # -- processes -----------------------------------------------------------------------------------------------
    def _track(self, pid: int, what: str):
        try:
            p = psutil.Process(pid)
            self.tracked.setdefault(pid, (p.create_time(), what))
        except psutil.Error:
            pass

    def _track_children(self, proc: subprocess.Popen | None = None):
        """Remember the proxy and the single-user servers (descendants of the hub) to check they end."""
        try:
            for child in psutil.Process((proc or self.proc).pid).children(recursive=True):
                try:
                    self._track(child.pid, " ".join(child.cmdline()[:4]))
                except psutil.Error:
                    pass
        except psutil.Error:
            pass

    def _alive(self) -> list[psutil.Process]:
        out = []
        for pid, (created, what) in self.tracked.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def log_tail(self, n: int = 80) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return "(no hub log)"
        return "--- last lines of the hub log ---\n" + "\n".join(lines[-n:])

    # -- stop ----------------------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the servers (hub API), then the hub (which stops the proxy). Kill survivors; return what survived
        the clean shutdown (pids, commands and ports still listening), empty when everything ended by itself."""
        proc, self.proc = self.proc, None
        if proc is None:
            return []
        try:
            if proc.poll() is None:
                self._track_children(proc)
                for user in USERS:
                    with contextlib.suppress(requests.RequestException):
                        self.admin("DELETE", f"users/{user}/server")
        finally:  # the hub's stop of its children may take a moment after the hub itself is gone
            left = end_process(proc, self._alive())
        survivors = [f"pid {p.pid}: {self.tracked[p.pid][1]}" for p in left]
        survivors += [f"port {port} still listening" for port in self.ports if _port_open(port)]
        return survivors


@pytest.fixture(scope="module")
def hub(request):
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        _missing("jupyterhub is not installed (pip install jupyterhub)")
    if os.environ.get("JDK_TEST_REAL_KUBECONFIG"):
        pytest.skip("dashboards are proxied to local dask processes: emulated cluster only")
    chp = request.getfixturevalue("chp_command")
    emulated_kubernetes = request.getfixturevalue("emulated_kubernetes")
    assert isinstance(emulated_kubernetes, EmulatedKubernetes)
    workdir = tempfile.mkdtemp(prefix="jdk-hub-")
    h = Hub(chp, emulated_kubernetes, workdir)
    try:
        h.start()
        yield h
    finally:
        survivors = h.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        left = _remove_pods(emulated_kubernetes)  # after a failure: the session's cluster is shared with other tests
        assert not survivors, f"still running after the hub stopped (now killed): {survivors}"
        assert not left, f"pods left behind by the hub test (now deleted): {left}"


def _remove_pods(emu) -> list[str]:
    """Delete alice's and bob's pods (their kubelet stops their processes); return their names."""
    core = kube_api(emu)
    pods = _pods(core, emu.namespace, USERS_SELECTOR)
    for p in pods:
        with contextlib.suppress(Exception):  # gone already
            core.delete_namespaced_pod(p.metadata.name, emu.namespace, grace_period_seconds=0)
    if pods:
        try:
            wait_for(lambda: not _pods(core, emu.namespace, USERS_SELECTOR), 30,
                     what="the hub users' pods to be deleted")
        except AssertionError:
            pass
    return [p.metadata.name for p in pods]


# -- helpers on the user side ------------------------------------------------------------------------------------
class User:
    """A user's view: their token, through the hub's public proxy URL."""

    def __init__(self, hub: Hub, name: str):
        self.hub = hub
        self.name = name
        self.http = hub.session(name)

    def api(self, method: str, path: str, body=None, owner: str | None = None):
        """(status, json) of /user/<owner>/dask-kube/api/<path>; owner defaults to this user."""
        url = f"{self.hub.url}/user/{owner or self.name}/dask-kube/api/{path}"
        r = self.http.request(method, url, json=body, timeout=30, allow_redirects=False)
        try:
            data = r.json() if r.content else None
        except ValueError:
            data = r.text
        return r.status_code, data

    def get(self, path: str):
        return self.http.get(f"{self.hub.url}{path}", timeout=30, allow_redirects=False)

    def wait_cluster(self, cid: str, predicate, what: str, timeout: float = 90) -> dict:
        last = {}

        def check():
            code, model = self.api("GET", f"clusters/{cid}")
            last["seen"] = (code, model)
            return model if code == 200 and predicate(model) else None

        def detail():
            code, logs = self.api("GET", f"clusters/{cid}/logs")
            return f"last: {last.get('seen')}\nlogs ({code}): " + (
                "\n".join(f"--- {pod} ---\n{text[-3000:]}" for pod, text in logs["logs"].items())
                if code == 200 else str(logs))

        return wait_for(check, timeout, interval=0.3, what=f"{self.name}'s {what}", detail=detail)


def _pods(core, namespace: str, selector: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=selector).items


def _dask_processes(pod_ips: set[str]) -> list[str]:
    """Processes on this machine listening on these pods' own loopback addresses. (Pod processes may be forks
    of a fork server, whose /proc environ is the server's, so HOSTNAME cannot find them.)"""
    found = set()
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in pod_ips and c.pid:
            found.add(f"{c.pid} {c.laddr.ip}:{c.laddr.port}")
    return sorted(found)


# -- the test ----------------------------------------------------------------------------------------------------
def test_two_users_behind_a_real_hub(hub):
    try:
        _two_users(hub, hub.emu)
    except BaseException:
        print(hub.log_tail(150))  # shown with the failure (captured stdout of the call)
        raise


def _two_users(hub: Hub, emu):
    started = time.monotonic()
    core = kube_api(emu)
    ns = emu.namespace
    alice, bob = User(hub, "alice"), User(hub, "bob")

    # Both servers run the extension, on the one emulated cluster, in the same namespace.
    for u in (alice, bob):
        code, status = u.api("GET", "status")
        assert code == 200, (u.name, code, status)
        assert status["backend"] == "kubernetes" and status["namespace"] == ns, status
        assert status["problems"] == [], status

    # -- groups from the hub: alice (gpu-team) sees the gpu template and may have 3 workers; bob neither -----------
    code, data = alice.api("GET", "templates")
    assert code == 200 and [t["name"] for t in data["templates"]] == ["tiny", "gpu"], data
    code, data = bob.api("GET", "templates")
    assert code == 200 and [t["name"] for t in data["templates"]] == ["tiny"], data
    code, data = bob.api("POST", "clusters", {"template": "gpu"})
    assert code == 403 and data["message"] == (
        "template 'gpu' is only for group gpu-team, and you are not among them"), (code, data)
    code, data = bob.api("POST", "clusters", {"template": "tiny", "workers": 2})
    assert code == 403 and "above the limit of 1 workers per cluster" in data["message"], (code, data)
    assert not _pods(core, ns, user_selector("bob"))  # refused: nothing made

    # -- each creates a cluster through the hub; both reach running with their worker ----------------------------
    code, a = alice.api("POST", "clusters", {"template": "tiny", "name": "alice's analysis"})
    assert code == 201, (code, a)
    code, b = bob.api("POST", "clusters", {"template": "tiny"})
    assert code == 201, (code, b)
    a_id, b_id = a["id"], b["id"]
    assert a_id.startswith("dask-alice-") and b_id.startswith("dask-bob-"), (a_id, b_id)
    running = lambda m: m["status"] == "running" and m["workers"] == 1
    a = alice.wait_cluster(a_id, running, "cluster running with 1 worker")
    b = bob.wait_cluster(b_id, running, "cluster running with 1 worker")
    print(f"both clusters running {time.monotonic() - started:.1f}s after the servers were up")

    for user, cid in (("alice", a_id), ("bob", b_id)):
        pods = _pods(core, ns, f"{LABEL_CLUSTER}={cid}")
        roles = sorted(p.metadata.labels.get("dask.org/component") for p in pods)
        assert roles == ["scheduler", "worker"], [p.metadata.name for p in pods]
        for p in pods:
            assert p.metadata.name.startswith(f"dask-{user}-"), p.metadata.name
            assert p.metadata.labels[LABEL_USER] == user, p.metadata.labels
            assert p.status.phase == "Running", (p.metadata.name, p.status.phase)
        assert {p.metadata.name for p in _pods(core, ns, user_selector(user))} == {p.metadata.name for p in pods}

    # -- each sees only their own cluster; bob guessing alice's id gets 404 everywhere ---------------------------
    code, data = alice.api("GET", "clusters")
    assert code == 200 and [c["id"] for c in data["clusters"]] == [a_id], data
    code, data = bob.api("GET", "clusters")
    assert code == 200 and [c["id"] for c in data["clusters"]] == [b_id], data
    for method, path, body in (
        ("GET", f"clusters/{a_id}", None),
        ("PATCH", f"clusters/{a_id}", {"workers": 3}),
        ("PATCH", f"clusters/{a_id}", {"adapt": {"minimum": 0, "maximum": 3}}),
        ("GET", f"clusters/{a_id}/logs", None),
        ("DELETE", f"clusters/{a_id}", None),
    ):
        code, data = bob.api(method, path, body)
        assert code == 404, (method, path, code, data)
        assert isinstance(data, dict) and "message" in data, data
    code, model = alice.api("GET", f"clusters/{a_id}")
    assert code == 200 and model["status"] == "running", (code, model)
    assert model["requested_workers"] == 1 and model["adapt"] is None, model
    # alice's group allows 3 workers per cluster (bob was refused 2 above); she stays at 1 for what follows
    code, data = alice.api("PATCH", f"clusters/{a_id}", {"workers": 4})
    assert code == 403 and "above the limit of 3 workers per cluster" in data["message"], (code, data)
    assert len(_pods(core, ns, f"{LABEL_CLUSTER}={a_id}")) == 2
    code, logs = alice.api("GET", f"clusters/{a_id}/logs")  # alice herself may read them
    assert code == 200 and f"{a_id}-scheduler" in logs["logs"], (code, logs)

    # -- dashboards through the hub: alice's opens for alice only ------------------------------------------------
    link = a["dashboard_link"]
    assert link.startswith("/user/alice/proxy/") and link.endswith("/status"), link
    r = alice.get(link)
    assert r.status_code == 200 and "Dask" in r.text, (r.status_code, r.text[:300])
    # Bob on alice's URL: the hub's auth on alice's server refuses his token.
    r = bob.get(link)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    # Bob through his OWN server's proxy to alice's scheduler (same machine, so the default jupyter-server-proxy
    # allow-list would let him in): refused by the allow-list of his own schedulers' hosts.
    host_port = link[len("/user/alice/proxy/"):-len("/status")]
    r = bob.get(f"/user/bob/proxy/{host_port}/status")
    assert r.status_code == 403 and "is not allowed" in r.text, (r.status_code, r.text[:300])
    # ... while his own dashboard opens for him (the refusal above is about the host, not the proxy).
    assert b["dashboard_link"].startswith("/user/bob/proxy/"), b["dashboard_link"]
    r = bob.get(b["dashboard_link"])
    assert r.status_code == 200 and "Dask" in r.text, (r.status_code, r.text[:300])

    # -- both delete their clusters: no pod, no dask process remains --------------------------------------------
    pod_ips = {p.status.pod_ip for p in _pods(core, ns, USERS_SELECTOR) if p.status.pod_ip}
    assert len(_dask_processes(pod_ips)) >= 4, "each pod's dask process should be listening before deletion"
    for u, cid in ((alice, a_id), (bob, b_id)):
        code, data = u.api("DELETE", f"clusters/{cid}")
        assert code == 204, (u.name, code, data)
    for u in (alice, bob):
        code, data = u.api("GET", "clusters")
        assert code == 200 and data["clusters"] == [], data
    wait_for(lambda: not _pods(core, ns, USERS_SELECTOR), 60, what="alice's and bob's pods to be gone",
             detail=lambda: [p.metadata.name for p in _pods(core, ns, USERS_SELECTOR)])
    wait_for(lambda: not _dask_processes(pod_ips), 30, what="the clusters' dask processes to end",
             detail=lambda: _dask_processes(pod_ips))

    # -- the hub, its proxy and both single-user servers stop cleanly --------------------------------------------
    survivors = hub.stop()
    assert not survivors, survivors
    assert not _pods(core, ns, USERS_SELECTOR)
    print(f"hub test body took {time.monotonic() - started:.1f}s")
