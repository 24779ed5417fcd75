"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager v1.20.2.

``with RealControlPlane() as cp: ...cp.kubeconfig...`` starts, in a temporary directory,

- etcd (Debian's ``etcd-server``) on two free 127.0.0.1 ports (client and peer), its own data dir;
- kube-apiserver on 127.0.0.1 only: Service clusterIPs in 127.200.0.0/16, static-token authentication, Node and
  RBAC authorization, service-account tokens, a kubelet client certificate so that ``pods/log`` and
  port-forward reach a node agent's HTTPS port at its Node's InternalIP (127.0.0.1);
- kube-controller-manager without the node-lifecycle controller (it would taint and evict a Node with no
  heartbeats): garbage collector, ReplicaSets, namespaces, service-account tokens.

There is no scheduler, kubelet or kube-proxy: a node agent plays them over HTTP (``agent_kubeconfig``).
Kubeconfigs written: ``kubeconfig`` (admin, ``system:masters``), ``user_kubeconfig`` (user ``jdk-user``, no
rights until :meth:`grant` binds ``deploy/rbac.yaml``'s Role), ``agent_kubeconfig``. The binaries are built by
``make kube-binaries`` (see :mod:`.kube_build`); :func:`missing` says why this tier cannot run here.
Every process is started in its own session, stopped by PID, and dies with the thread that started it.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml

from . import kube_build
from .pki import CertificateAuthority, write_rsa_key_pair
from .ports import free_ports

__all__ = ["RealControlPlane", "missing", "RBAC_YAML", "USER", "SERVICE_CIDR"]

USER = "jdk-user"
SERVICE_CIDR = "127.200.0.0/16"
KUBERNETES_SERVICE_IP = "127.200.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
RBAC_YAML = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
_PR_SET_PDEATHSIG = 1


def missing() -> str | None:
    """Why a real control plane cannot start on this machine (what to build or install), or None."""
    return kube_build.missing()


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGKILL when the starting thread ends, so a killed test run leaves no
    # etcd/apiserver behind.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


class PortTaken(ControlPlaneError):
    """A port picked as free was bound by another process before ours could bind it."""


def _listens(pid: int, port: int) -> bool:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


class RealControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 (see the module docstring).

    Attributes once started (as :class:`EmulatedKubernetes`): ``url``, ``kubeconfig`` (admin), ``namespace``,
    ``pid`` (the apiserver's); plus ``user``/``user_kubeconfig``/``user_token``, ``agent_kubeconfig``,
    ``etcd_url``, ``ca`` (a :class:`CertificateAuthority`: the apiserver's serving CA and the kubelet client CA),
    ``kubelet_client_ca`` (path a node agent verifies the apiserver's client certificate with),
    ``workdir``, ``processes`` (a node agent runs real processes for its pods), ``agent`` (the running
    :class:`~.nodeagent.NodeAgent`, with ``node_agent=True``).
    """

    def __init__(self, *, namespace: str = "default", workdir: str | None = None, startup_timeout: float = 120.0,
                 node_agent: bool = False, processes: bool = True, nodes: list | None = None):
        """``node_agent``: also run a :class:`~.nodeagent.NodeAgent` (in a thread with its own event loop) that
        registers ``nodes`` (NodeSpec list; default one node) and runs pods as processes, or, with
        ``processes=False``, only marks them Running."""
        self.namespace = namespace
        self.node_agent = node_agent
        self.processes = processes
        self.nodes = nodes
        self.agent = None
        self._agent_loop = None
        self._agent_thread = None
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="jdk-controlplane-")
        self.url: str | None = None
        self.pid: int | None = None
        self.etcd_url: str | None = None
        self.user = USER
        self.kubeconfig = os.path.join(self.workdir, "admin.kubeconfig")
        self.user_kubeconfig = os.path.join(self.workdir, "user.kubeconfig")
        self.agent_kubeconfig = os.path.join(self.workdir, "agent.kubeconfig")
        self._procs: dict[str, subprocess.Popen] = {}
        self._tokens: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> RealControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> RealControlPlane:
        if self.url is not None:
            return self
        why = missing()
        if why:
            raise ControlPlaneError(why)
        for attempt in range(3):
            try:
                self._write_credentials()
                self._start_etcd()
                self._start_apiserver()
                self._start_controller_manager()
                self._wait_service_account("default")
                if self.namespace != "default":
                    self.create_namespace(self.namespace)
                if self.node_agent:
                    self._start_agent()
                return self
            except PortTaken:
                # Another process took a port between free_ports() and our bind: pick new ones.
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def dead(self) -> list[str]:
        """Why any of the plane's processes is gone (name, exit code, log tail); empty while all run."""
        return [f"{name} exited with {proc.returncode}:\n" + self.log(name)[-2000:]
                for name, proc in self._procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        self._stop_agent()
        # Dependents first: the controller-manager and apiserver would log errors for a vanished etcd.
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.url = None
        self.pid = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_agent(self) -> None:
        import asyncio
        import threading

        from .nodeagent import NodeAgent

        cert, key = self.ca.issue(self._path("pki", "kubelet"), "jdk-node-agent",
                                  server_names=("127.0.0.1", "localhost"))
        self.agent = NodeAgent(self.agent_kubeconfig, self.nodes, run_processes=self.processes,
                               log_dir=self._path("pods"), tls_cert=cert, tls_key=key,
                               client_ca=self.kubelet_client_ca)
        loop = self._agent_loop = asyncio.new_event_loop()
        self._agent_thread = threading.Thread(target=loop.run_forever, name="jdk-node-agent", daemon=True)
        self._agent_thread.start()
        asyncio.run_coroutine_threadsafe(self.agent.start(), loop).result(self.startup_timeout)

    def _stop_agent(self) -> None:
        import asyncio

        loop, self._agent_loop = self._agent_loop, None
        if loop is None:
            return
        try:
            if self.agent is not None:
                asyncio.run_coroutine_threadsafe(self.agent.close(), loop).result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._agent_thread.join(10)
            loop.close()
            self.agent = None

    def component_pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    def log(self, component: str) -> str:
        try:
            return Path(self.workdir, f"{component}.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- set-up -----------------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def _write_credentials(self) -> None:
        os.makedirs(self._path("pki"), exist_ok=True)
        self.ca = CertificateAuthority(self._path("pki", "ca"))
        self.kubelet_client_ca = self.ca.cert_path
        self.serving_cert, self.serving_key = self.ca.issue(
            self._path("pki", "apiserver"), "kube-apiserver",
            server_names=("127.0.0.1", KUBERNETES_SERVICE_IP, "localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))
        # The apiserver presents this to a kubelet (the node agent) for pods/log, exec and port-forward.
        self.kubelet_client_cert, self.kubelet_client_key = self.ca.issue(
            self._path("pki", "apiserver-kubelet-client"), "kube-apiserver-kubelet-client",
            organizations=("system:masters",), client=True)
        self.sa_key, self.sa_pub = write_rsa_key_pair(self._path("pki", "sa"))
        # Static tokens (token,user,uid,"groups"). The node agent plays kubelet, scheduler, kube-proxy and
        # autoscaler at once, which no single built-in role covers: it is a cluster admin.
        users = {"admin": "system:masters", "system:kube-controller-manager": "",
                 "jdk-node-agent": "system:masters", USER: ""}
        lines = []
        for name, groups in users.items():
            token = uuid.uuid4().hex
            self._tokens[name] = token
            lines.append(f'{token},{name},{name},"{groups}"' if groups else f"{token},{name},{name}")
        self.token_file = self._path("pki", "tokens.csv")
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.user_token = self._tokens[USER]

    def _kubeconfig(self, path: str, user: str, namespace: str) -> None:
        doc = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "jdk-real", "cluster": {"server": self.url,
                                                              "certificate-authority": self.ca.cert_path}}],
               "users": [{"name": user, "user": {"token": self._tokens[user]}}],
               "contexts": [{"name": "jdk-real", "context": {"cluster": "jdk-real", "user": user,
                                                             "namespace": namespace}}],
               "current-context": "jdk-real"}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f)

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self._path(f"{name}.log"), "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            out.close()
        self._procs[name] = proc
        return proc

    def _wait(self, name: str, ready, what: str, port: int | None = None) -> None:
        deadline = time.monotonic() + self.startup_timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if port is not None and "address already in use" in self.log(name):
                    raise PortTaken(f"{name}: port {port} was taken by another process")
                raise ControlPlaneError(f"{name} exited with {proc.returncode} before {what}:\n"
                                        + self.log(name)[-4000:])
            try:
                if ready():
                    # The answer may come from another process that holds the port we picked.
                    if port is not None and not _listens(proc.pid, port):
                        raise PortTaken(f"{name}: port {port} answers, but not from {name}")
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise ControlPlaneError(f"{name}: no {what} within {self.startup_timeout:.0f}s:\n" + self.log(name)[-4000:])

    def _start_etcd(self) -> None:
        etcd = shutil.which("etcd")
        client, peer = free_ports(2)
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            etcd, "--name", "jdk", "--data-dir", self._path("etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"jdk=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
            "--enable-v2=false", "--quota-backend-bytes", str(2 << 30)])

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                return json.load(r).get("health") == "true"
        self._wait("etcd", healthy, "healthy /health", port=client)

    def _start_apiserver(self) -> None:
        (port,) = free_ports(1)
        self.url = f"https://127.0.0.1:{port}"
        for user, path in (("admin", self.kubeconfig), (USER, self.user_kubeconfig),
                           ("jdk-node-agent", self.agent_kubeconfig),
                           ("system:kube-controller-manager", self._path("controller-manager.kubeconfig"))):
            self._kubeconfig(path, user, self.namespace)
        self.start_apiserver()

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (etcd and the controller-manager keep running); see :meth:`start_apiserver`."""
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        self.pid = None

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port and flags, and wait until it is ready."""
        port = self.url.rsplit(":", 1)[1]
        p = self._path
        proc = self._spawn("kube-apiserver", [
            str(kube_build.binary("kube-apiserver")),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", port, "--insecure-port", "0", "--cert-dir", p("pki"),
            "--tls-cert-file", self.serving_cert, "--tls-private-key-file", self.serving_key,
            "--client-ca-file", self.ca.cert_path,
            "--service-cluster-ip-range", SERVICE_CIDR, "--endpoint-reconciler-type", "none",
            "--authorization-mode", "Node,RBAC", "--token-auth-file", self.token_file,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", self.sa_pub, "--service-account-signing-key-file", self.sa_key,
            "--allow-privileged=true",
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-client-certificate", self.kubelet_client_cert,
            "--kubelet-client-key", self.kubelet_client_key,
            "--profiling=false", "--logtostderr=true", "--v=1"])
        self.pid = proc.pid
        self._wait("kube-apiserver", lambda: self._get("/readyz") == "ok", "ready /readyz", port=int(port))

    def _start_controller_manager(self) -> None:
        self._spawn("kube-controller-manager", [
            str(kube_build.binary("kube-controller-manager")),
            "--kubeconfig", self._path("controller-manager.kubeconfig"),
            "--bind-address", "127.0.0.1", "--port", "0", "--secure-port", "0",
            "--use-service-account-credentials", "--service-account-private-key-file", self.sa_key,
            "--root-ca-file", self.ca.cert_path,
            # nodelifecycle would taint a Node with no kubelet heartbeats and evict its pods.
            "--controllers", "*,-nodelifecycle", "--leader-elect=false",
            "--profiling=false", "--logtostderr=true", "--v=1"])

    # -- admin helpers ------------------------------------------------------------------------------------
    def _get(self, path: str) -> str:
        ctx = ssl.create_default_context(cafile=self.ca.cert_path)
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self._tokens['admin']}"})
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.read().decode()

    def api_client(self, kubeconfig: str | None = None):
        """A ``kubernetes.client.ApiClient`` (admin unless another kubeconfig is given)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=kubeconfig or self.kubeconfig)

    def api(self, no_faults: bool = False):
        """An admin ``CoreV1Api`` (the real API server has no faults to exempt from)."""
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def _wait_service_account(self, namespace: str) -> None:
        """Pods are refused in a namespace until its default ServiceAccount has a token."""
        def has_token() -> bool:
            sa = json.loads(self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"))
            return bool(sa.get("secrets"))
        self._wait("kube-controller-manager", lambda: _ignore_404(has_token),
                   f"token for the default ServiceAccount of {namespace}")

    def create_namespace(self, name: str) -> str:
        """Create a namespace (admin) and wait until it accepts pods."""
        from kubernetes import client

        with self.api_client() as c:
            try:
                client.CoreV1Api(c).create_namespace({"metadata": {"name": name}})
            except client.ApiException as e:
                if e.status != 409:
                    raise
        self._wait_service_account(name)
        return name

    def delete_namespace(self, name: str, timeout: float = 120.0) -> None:
        """Delete a namespace and wait until it is gone (the namespace controller empties it)."""
        from kubernetes import client

        with self.api_client() as c:
            api = client.CoreV1Api(c)
            try:
                api.delete_namespace(name)
            except client.ApiException as e:
                if e.status != 404:
                    raise
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    api.read_namespace(name)
                except client.ApiException as e:
                    if e.status == 404:
                        return
                    raise
                time.sleep(0.2)
        raise TimeoutError(f"namespace {name} still exists after {timeout}s")

    def grant(self, namespace: str, user: str = USER, rbac_yaml: str | os.PathLike = RBAC_YAML) -> str:
        """Create ``rbac_yaml``'s Role in ``namespace`` and bind it to ``user``; returns the Role's name."""
        from kubernetes import client

        role = next(d for d in yaml.safe_load_all(Path(rbac_yaml).read_text()) if d and d.get("kind") == "Role")
        name = role["metadata"]["name"]
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": f"{name}-{_dns_safe(user)}"},
                   "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}}
        with self.api_client() as c:
            rbac = client.RbacAuthorizationV1Api(c)
            for create, body in ((rbac.create_namespaced_role, dict(role, metadata={"name": name})),
                                 (rbac.create_namespaced_role_binding, binding)):
                try:
                    create(namespace, body)
                except client.ApiException as e:
                    if e.status != 409:
                        raise
        return name

    def revoke(self, namespace: str, user: str = USER, rbac_yaml: str | os.PathLike = RBAC_YAML) -> None:
        """Delete what :meth:`grant` created."""
        from kubernetes import client

        role = next(d for d in yaml.safe_load_all(Path(rbac_yaml).read_text()) if d and d.get("kind") == "Role")
        name = role["metadata"]["name"]
        with self.api_client() as c:
            rbac = client.RbacAuthorizationV1Api(c)
            for delete, obj in ((rbac.delete_namespaced_role_binding, f"{name}-{_dns_safe(user)}"),
                                (rbac.delete_namespaced_role, name)):
                try:
                    delete(obj, namespace)
                except client.ApiException as e:
                    if e.status != 404:
                        raise

    def user_kubeconfig_for(self, namespace: str) -> str:
        """A copy of the user's kubeconfig whose context defaults to ``namespace``."""
        path = self._path(f"user-{namespace}.kubeconfig")
        self._kubeconfig(path, USER, namespace)
        return path

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision (watchers resuming from older resourceVersions get 410 Gone).
        Returns that revision."""
        req = urllib.request.Request(self.etcd_url + "/v3/kv/range", data=json.dumps({"key": "AA=="}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            rev = int(json.load(r)["header"]["revision"])
        req = urllib.request.Request(self.etcd_url + "/v3/kv/compaction",
                                     data=json.dumps({"revision": rev, "physical": True}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        return rev


def count_pods(kubeconfig: str, namespace: str) -> int:
    """How many pods a namespace holds, asked with plain urllib (not the kubernetes client, so benchmarks
    that count the client's requests do not count this): one ``limit=1`` list and its remainingItemCount."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = doc["clusters"][0]["cluster"]
    token = doc["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
    req = urllib.request.Request(f"{cluster['server']}/api/v1/namespaces/{namespace}/pods?limit=1",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        body = json.load(r)
    return len(body.get("items") or []) + int(body.get("metadata", {}).get("remainingItemCount") or 0)


def _ignore_404(fn) -> bool:
    try:
        return fn()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


def _dns_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name.lower()).strip("-.") or "user"


def serve_real(namespace: str = "default", kubeconfig: str | None = None, processes: bool = True) -> int:
    """``python -m jupyter_dask_kube.testing --real``: run a control plane until Ctrl-C / SIGTERM."""
    import sys
    import threading

    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cp = RealControlPlane(namespace=namespace, node_agent=True, processes=processes)
    try:
        cp.start()
    except ControlPlaneError as e:
        print(f"the real control plane did not start: {e}", file=sys.stderr)
        return 1
    try:
        if kubeconfig:
            shutil.copyfile(cp.kubeconfig, kubeconfig)
            os.chmod(kubeconfig, 0o600)
        mode = "pods run as local processes" if processes else "no processes: pods only pretend to run"
        print(f"Real control plane ready: {cp.url} (kube-apiserver {kube_build.KUBE_VERSION}, namespace "
              f"{namespace}; node agent {', '.join(sorted(cp.agent.node_names))}: {mode})", flush=True)
        print(f"Admin kubeconfig written to {kubeconfig or cp.kubeconfig}", flush=True)
        print(f"Unprivileged user ({USER}) kubeconfig: {cp.user_kubeconfig}", flush=True)
        print(f"Node agent kubeconfig: {cp.agent_kubeconfig}", flush=True)
        print(f"export KUBECONFIG={kubeconfig or cp.kubeconfig}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            dead = [n for n, p in cp._procs.items() if p.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping. Log tail:\n{cp.log(dead[0])[-2000:]}", file=sys.stderr)
                return 1
    finally:
        cp.stop()
        print("Real control plane stopped.", flush=True)
    return 0
