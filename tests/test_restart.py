""""Survives restarts", for real: a Jupyter server run as a subprocess on the emulated Kubernetes API.

The server is killed (SIGKILL) and stopped (SIGTERM) under running clusters; each new server with the same
config must list the same clusters (ids, template, worker counts, adapt bounds), connected and running, with
exactly the same pods in the cluster (nothing lost, nothing duplicated), and must still scale and delete them.
A cluster made from Python (KubeCluster with a remote scheduler, same user) is re-adopted the same way.

Everything is HTTP: the REST API with the server's token, the Kubernetes API through the kubeconfig.
"""
from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from jupyter_dask_kube.objects import user_selector
from jupyter_dask_kube.testing.fixtures import kube_api

from helpers import (
    WORKERS_UP,
    Pending,
    delete_objects,
    detached_cluster,
    limited_pod,
    pods_of,
    services_of,
    tiny_template,
    wait_for,
)
from jupyter_process import JupyterServer, server_config, server_env

GONE = 90

TEMPLATES = {"tiny": tiny_template(description="for restart tests")}


@pytest.fixture
def restart_env(kube_target, tmp_path):
    """Environment and config of the servers: a unique hub user, everything Jupyter and dask under tmp."""
    user = f"restart-{uuid.uuid4().hex[:8]}"
    env = server_env(tmp_path, config=server_config(TEMPLATES), user=user, kubeconfig=kube_target.kubeconfig)
    return user, env


@pytest.fixture
def servers(restart_env, tmp_path, kube_target):
    """A factory of JupyterServer subprocesses; every one is killed at the end, and the user's pods deleted."""
    user, env = restart_env
    made: list[JupyterServer] = []

    def start(name: str) -> JupyterServer:
        s = JupyterServer(tmp_path, env, name)
        made.append(s)
        return s.start()

    yield start
    for s in made:
        try:
            s.kill(signal.SIGKILL, timeout=20)
        except Exception:
            pass
    api = kube_api(kube_target)
    try:
        delete_objects(api, kube_target.namespace, user_selector(user))
    except Exception:
        pass
    finally:
        api.api_client.close()


@pytest.fixture
def kube(kube_target):
    api = kube_api(kube_target)
    yield api
    api.api_client.close()


def user_pods(kube, namespace: str, user: str) -> dict[str, tuple]:
    """name -> (uid, phase, deleting) of every pod of the user."""
    return pods_of(kube, namespace, user_selector(user))


def user_services(kube, namespace: str, user: str) -> list[str]:
    return services_of(kube, namespace, user_selector(user))


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
            if not m["scheduler_address"].startswith(("tcp://", "tls://")):
                return Pending(f"{cid}: no scheduler address")
        return got

    try:
        return wait_for(check, timeout, what=f"server {server.name} to list {sorted(expected)} running")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- server log ---\n{server.log()}") from None


def stable_pods(kube, ns, user, count, timeout=WORKERS_UP):
    """The user's pods once there are `count` of them, all Running and none being deleted."""
    def check():
        pods = user_pods(kube, ns, user)
        if len(pods) == count and all(phase == "Running" and not deleting for _, phase, deleting in pods.values()):
            return pods
        return Pending(repr(pods))

    return wait_for(check, timeout, what=f"{count} running pods")


@pytest.mark.timeout(900)
def test_clusters_survive_server_kill_and_stop(servers, restart_env, kube_target, kube):
    user, env = restart_env
    ns = kube_target.namespace
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
    py_id = asyncio.run(detached_cluster(user, kubeconfig=kube_target.kubeconfig, pod=limited_pod()))
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
             what="every pod of the user to be gone")
    wait_for(lambda: not user_services(kube, ns, user) or Pending(repr(user_services(kube, ns, user))), GONE,
             what="every service of the user to be gone")
    # and a server started now finds nothing to adopt
    step("all gone; start server D")
    c.kill(signal.SIGKILL)
    d = servers("D")
    assert d.clusters() == {}
    step("done")
