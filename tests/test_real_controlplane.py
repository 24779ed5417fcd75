"""The real control plane (etcd + kube-apiserver + kube-controller-manager v1.20.2) itself: loopback only,
token users with RBAC, a clean stop. Skipped when the binaries are not built (`make kube-binaries`), failed
in CI."""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from kubernetes import client

from jupyter_dask_kube.testing import kube_build
from jupyter_dask_kube.testing.controlplane import SERVICE_CIDR, missing

from helpers import wait_for

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def require_binaries():
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def sockets_of(pids):
    """(pid, laddr ip, raddr ip or None, status) of every inet socket of these processes."""
    out = []
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="inet"):
            out.append((pid, c.laddr.ip if c.laddr else None, c.raddr.ip if c.raddr else None, c.status))
    return out


def assert_loopback_only(pids):
    socks = sockets_of(pids)
    assert any(s[3] == psutil.CONN_LISTEN for s in socks), socks
    for pid, local, remote, status in socks:
        if local:
            assert ipaddress.ip_address(local) in LOOPBACK, (pid, local, status)
        if remote:
            assert ipaddress.ip_address(remote) in LOOPBACK, (pid, remote, status)


def test_real_command_runs_on_loopback_only_and_stops_clean(tmp_path):
    """`python -m jupyter_dask_kube.testing --real`: ready, answers the admin kubeconfig, every socket of
    etcd/apiserver/controller-manager on 127.0.0.0/8, and SIGTERM leaves no process and no listening port."""
    require_binaries()
    out = tmp_path / "out.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "jupyter_dask_kube.testing", "--real"], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Press Ctrl-C" in out.read_text() or proc.poll() is not None,
                 180, what="the real control plane to be ready", detail=lambda: out.read_text())
        text = out.read_text()
        assert proc.poll() is None, text
        admin = re.search(r"Admin kubeconfig written to (\S+)", text).group(1)
        user = re.search(r"Unprivileged user \(jdk-user\) kubeconfig: (\S+)", text).group(1)
        url = re.search(r"ready: (https://127\.0\.0\.1:\d+)", text).group(1)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = sorted(os.path.basename(c.exe()) for c in children)
        assert names == ["etcd", "kube-apiserver", "kube-controller-manager"], names
        assert "node agent emulated-node-1" in text
        from kubernetes import config
        with config.new_client_from_config(config_file=admin) as c:
            api = client.CoreV1Api(c)
            svc = api.read_namespaced_service("kubernetes", "default")
            assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(SERVICE_CIDR)
            version = client.VersionApi(c).get_code()
            assert version.git_version == kube_build.KUBE_VERSION
            node = api.read_node("emulated-node-1")
            assert [(a.type, a.address) for a in node.status.addresses if a.type == "InternalIP"] == [
                ("InternalIP", "127.0.0.1")]
        with config.new_client_from_config(config_file=user) as c:
            with pytest.raises(client.ApiException) as e:
                client.CoreV1Api(c).list_namespaced_pod("default")
            assert e.value.status == 403
        # the command's own process runs the node agent: its kubelet HTTPS port, its API connections
        assert_loopback_only([proc.pid] + [c.pid for c in children])
        ports = {s.laddr.port for c in children + [psutil.Process(proc.pid)] for s in c.net_connections(kind="inet")
                 if s.status == psutil.CONN_LISTEN}
        assert int(url.rsplit(":", 1)[1]) in ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, out.read_text()
    assert "Real control plane stopped." in out.read_text()
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
    listening = {s.laddr.port for s in psutil.net_connections(kind="inet") if s.status == psutil.CONN_LISTEN}
    assert ports & listening == set()


def test_user_has_no_rights_until_the_role_is_bound(real_control_plane):
    """The unprivileged user is refused by RBAC; deploy/rbac.yaml's Role bound in one namespace grants
    exactly that namespace; revoking takes it back."""
    cp = real_control_plane
    ns = cp.create_namespace(f"rbac-{uuid.uuid4().hex[:8]}")
    try:
        with cp.api_client(cp.user_kubeconfig_for(ns)) as c:
            api = client.CoreV1Api(c)
            with pytest.raises(client.ApiException) as e:
                api.list_namespaced_pod(ns)
            assert e.value.status == 403 and "jdk-user" in e.value.body
            cp.grant(ns)
            wait_for(lambda: _allowed(lambda: api.list_namespaced_pod(ns)), 30, what="the Role to take effect")
            with pytest.raises(client.ApiException) as e:
                api.list_namespaced_pod("default")
            assert e.value.status == 403
            with pytest.raises(client.ApiException) as e:  # the Role grants no Secrets
                api.list_namespaced_secret(ns)
            assert e.value.status == 403
            cp.revoke(ns)
            wait_for(lambda: not _allowed(lambda: api.list_namespaced_pod(ns)), 30, what="the revocation")
    finally:
        cp.delete_namespace(ns)


def _allowed(call) -> bool:
    try:
        call()
        return True
    except client.ApiException as e:
        if e.status == 403:
            return False
        raise


def test_agent_binds_pods_and_the_garbage_collector_deletes_dependents(real_control_plane):
    """The node agent binds a pod to its Node and runs it; the controller-manager's garbage collector deletes
    a pod whose owner was deleted, and the agent finishes that deletion."""
    cp = real_control_plane
    api = cp.api()
    ns = cp.create_namespace(f"gc-{uuid.uuid4().hex[:8]}")
    try:
        spec = {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "python:3", "command": ["python", "-c", "import time; time.sleep(600)"]}]}
        owner = api.create_namespaced_pod(ns, {"metadata": {"name": "owner"}, "spec": spec})
        api.create_namespaced_pod(ns, {"metadata": {"name": "dependent", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid}]}, "spec": spec})
        wait_for(lambda: all(p.status.phase == "Running" and p.spec.node_name in cp.agent.node_names
                             for p in api.list_namespaced_pod(ns).items), 120, what="both pods bound and Running")
        api.delete_namespaced_pod("owner", ns, grace_period_seconds=0)
        wait_for(lambda: [p.metadata.name for p in api.list_namespaced_pod(ns).items] == [], 120,
                 what="the garbage collector to delete the dependent pod")
    finally:
        cp.delete_namespace(ns)


def run_pytest_on_tier(tmp_path, **env):
    """This tier's RBAC test in a child pytest with an empty binary cache: (exit code, output)."""
    child_env = {k: v for k, v in os.environ.items() if k != "CI"}
    child_env.update(JDK_KUBE_CACHE=str(tmp_path / "empty-cache"), **env)
    test = os.path.join(os.path.dirname(__file__), "test_real_controlplane.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts=",
                        f"{test}::test_user_has_no_rights_until_the_role_is_bound"],
                       capture_output=True, text=True, env=child_env, cwd=os.path.dirname(test), timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_missing_binaries_skip_with_the_build_command_locally_and_fail_in_ci(tmp_path):
    code, out = run_pytest_on_tier(tmp_path)
    assert code == 0 and "1 skipped" in out, out
    assert "make kube-binaries" in out and "etcd-server" in out, out
    code, out = run_pytest_on_tier(tmp_path, CI="1")
    assert code == 1 and ("1 error" in out or "1 failed" in out), out
    assert "CI is set" in out and "make kube-binaries" in out, out
    assert "Traceback" not in out, out


def test_build_check_names_what_to_run_without_a_traceback(tmp_path):
    env = dict(os.environ, JDK_KUBE_CACHE=str(tmp_path / "empty-cache"))
    r = subprocess.run([sys.executable, "-m", "jupyter_dask_kube.testing.kube_build", "--check"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "make kube-binaries" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert str(tmp_path / "empty-cache" / "kubernetes-v1.20.2" / "bin") in r.stdout
    r = subprocess.run([sys.executable, "-m", "jupyter_dask_kube.testing", "--real"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "make kube-binaries" in r.stderr and "Traceback" not in r.stderr
