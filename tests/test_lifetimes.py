"""Lifetimes: clusters follow the notebook pod that owns them (ownerReference garbage collection), "keep"
clusters do not, and every cluster ends by its expiry time or after a while with no client, enforced by
its scheduler (the Jupyter side only cleans up after it). Pure rules first, then the emulated Kubernetes
API with real dask processes."""
import asyncio
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from distributed import Client

from jupyter_dask_kube.bodies import ApiError, CreateRequest, parse_create
from jupyter_dask_kube.lifetime_preload import LifetimePlugin
from jupyter_dask_kube.lifetimes import (
    DEADLINE_GRACE,
    ENV_EXPIRES,
    ENV_NO_CLIENT_TIMEOUT,
    LifetimePolicy,
    apply_lifetime,
    lifetime_annotations,
    parse_lifetime_annotations,
    scheduler_container,
)
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.objects import build_scheduler_pod, cluster_selector
from jupyter_dask_kube.ownerpod import OwnerPodError, find_owner_pod, owner_pod_name
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_template

from jupyter_dask_kube.testing.fixtures import kube_target_for

from helpers import small_pod, wait_until

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


# -- pure rules ---------------------------------------------------------------------------------------------
def test_expiry_is_the_shortest_bound_that_applies():
    p = LifetimePolicy(max_lifetime=3600, max_detached_lifetime=600)
    assert p.expires(T0, keep=False) == T0 + timedelta(hours=1)
    assert p.expires(T0, keep=True) == T0 + timedelta(minutes=10)
    assert LifetimePolicy(max_detached_lifetime=600).expires(T0, keep=False) is None
    assert LifetimePolicy(max_detached_lifetime=600).expires(T0, keep=True) == T0 + timedelta(minutes=10)
    assert LifetimePolicy(max_lifetime=60, max_detached_lifetime=600).expires(T0, keep=True) == T0 + timedelta(minutes=1)
    assert LifetimePolicy().expires(T0, keep=True) is None


def test_annotations_round_trip_and_garbage():
    assert parse_lifetime_annotations(lifetime_annotations(T0, True)) == (T0, True)
    assert parse_lifetime_annotations(lifetime_annotations(None, False)) == (None, False)
    assert parse_lifetime_annotations({"dask-kube.jupyter.org/expires": "soon", "dask-kube.jupyter.org/keep": 1}) == (None, False)
    assert parse_lifetime_annotations(None) == (None, False)


def scheduler_pod():
    return build_scheduler_pod(None, small_pod(), cluster_name="dask-a-1", username="a")


def test_apply_lifetime_sets_owner_deadline_env_and_preload():
    owner = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-a", "uid": "u-1"}}
    pod = apply_lifetime(scheduler_pod(), expires=T0 + timedelta(seconds=100), no_client_timeout=30, owner=owner,
                         now=T0)
    (ref,) = pod["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Pod", "jupyter-a", "u-1", False)
    assert pod["spec"]["activeDeadlineSeconds"] == 100 + DEADLINE_GRACE
    c = scheduler_container(pod)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env[ENV_EXPIRES] == f"{(T0 + timedelta(seconds=100)).timestamp():.0f}" and env[ENV_NO_CLIENT_TIMEOUT] == "30"
    i = c["args"].index("--preload")
    assert "def dask_setup(scheduler)" in c["args"][i + 1] and " " in c["args"][i + 1]  # the text, run by distributed
    # applied twice (a retried create): one preload, one owner
    again = apply_lifetime(pod, expires=T0 + timedelta(seconds=100), no_client_timeout=30, owner=owner, now=T0)
    assert again["spec"]["containers"][0]["args"].count("--preload") == 1 and len(again["metadata"]["ownerReferences"]) == 1


def test_apply_lifetime_without_rules_changes_nothing_and_keeps_a_shorter_deadline():
    pod = scheduler_pod()
    assert apply_lifetime(scheduler_pod()) == pod
    pod["spec"]["activeDeadlineSeconds"] = 5
    assert apply_lifetime(pod, expires=T0 + timedelta(hours=1), now=T0)["spec"]["activeDeadlineSeconds"] == 5


def test_preload_reasons():
    p = LifetimePlugin(expires=time.time() + 1000, no_client_timeout=10)
    p.no_client_since = 100.0
    assert p.reason(105.0) is None
    assert p.reason(110.0) == "no client connected for 10s"
    p.add_client(None, "Client-1")
    p.add_client(None, "fire-and-forget")  # distributed's own placeholder is not a client
    assert p.reason(500.0) is None
    p.remove_client(None, "Client-1")
    assert p.no_client_since is not None and p.reason(p.no_client_since + 9) is None
    assert p.reason(p.expires) == "its lifetime ended"


def test_preload_text_runs_in_a_real_scheduler_and_exits_0(tmp_path):
    """The preload as the pod passes it: `dask scheduler --preload <text>`; no client for 2 s -> exit 0."""
    pod = apply_lifetime(scheduler_pod(), no_client_timeout=2)
    text = pod["spec"]["containers"][0]["args"][-1]
    env = {"DASK_KUBE_NO_CLIENT_TIMEOUT": "2", "PATH": "/usr/bin:/bin", "DASK_CONFIG": str(tmp_path)}
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.61", "--port", "0",
                           "--no-dashboard", "--preload", text], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Scheduler closing: no client connected for 2s" in proc.stderr
    assert time.monotonic() - t >= 2


def test_keep_in_the_create_body():
    assert parse_create({"keep": True}).keep is True and parse_create({}).keep is False
    with pytest.raises(ApiError) as err:
        parse_create({"keep": "yes"})
    assert err.value.status == 400 and "keep must be true or false" in err.value.message


def test_owner_pod_name_from_the_environment():
    assert owner_pod_name("auto", {"POD_NAME": "jupyter-a", "HOSTNAME": "h"}) == "jupyter-a"
    assert owner_pod_name("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "jupyter-b"}) == "jupyter-b"
    assert owner_pod_name("auto", {"HOSTNAME": "laptop"}) is None  # not in a pod
    assert owner_pod_name("", {"POD_NAME": "jupyter-a"}) is None
    assert owner_pod_name("nb-pod", {}) == "nb-pod"


# -- on the emulated Kubernetes API ------------------------------------------------------------------------
@pytest.fixture
def emu(emulated_kubernetes):
    emulated_kubernetes.clear_faults()
    return emulated_kubernetes


@pytest.fixture
def runtime(emu):
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    yield rt
    loop = asyncio.new_event_loop()
    loop.run_until_complete(rt.close())
    loop.close()


def user():
    return f"lt{uuid.uuid4().hex[:8]}"


TEMPLATE = load_template({"workers": 1, "worker": small_pod()}, name="one")


def notebook_pod(name, username):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"component": "singleuser-server", "hub.jupyter.org/username": username}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "notebook", "image": "jupyter", "command": ["sleep", "600"]}]}}


async def objects(runtime, cid):
    pods = await runtime.list_pods(cluster_selector(cid))
    svc = await runtime.read_service(cid)
    return len(pods) + (svc is not None)


async def running(manager, cid, workers=1):
    rec = manager.records[cid]
    await wait_until(lambda: manager.model(rec)["status"] == "running" and manager.model(rec)["workers"] == workers,
                     120, interval=0.2, what=f"{cid} running")
    return manager.model(rec)


@pytest.fixture(params=["emulator", "real"])
def target_runtime(request):
    """A runtime on the emulator, and on the real kube-apiserver + controller-manager (whose garbage collector
    removes the dependents) with the node agent running the pods."""
    target = kube_target_for(request, request.param)
    rt = KubernetesRuntime(target.namespace, kubeconfig=target.kubeconfig)
    yield rt
    loop = asyncio.new_event_loop()
    loop.run_until_complete(rt.close())
    loop.close()


@pytest.mark.asyncio
async def test_clusters_go_with_the_notebook_pod_unless_kept(target_runtime):
    runtime = target_runtime
    name = user()
    nb = await runtime.create_pod(notebook_pod(f"jupyter-{name}", name))
    manager = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE], owner_pod=nb["metadata"]["name"],
                             lifetimes=LifetimePolicy(max_lifetime=3600, max_detached_lifetime=1800))
    try:
        owned, kept = await asyncio.gather(manager.create(CreateRequest(template="one")),
                                           manager.create(CreateRequest(template="one", keep=True)))
        assert owned["keep"] is False and kept["keep"] is True
        c_owned, c_kept = datetime.fromisoformat(owned["created"]), datetime.fromisoformat(kept["created"])
        assert abs(datetime.fromisoformat(owned["expires"]) - (c_owned + timedelta(hours=1))) < timedelta(seconds=1)
        assert abs(datetime.fromisoformat(kept["expires"]) - (c_kept + timedelta(minutes=30))) < timedelta(seconds=1)
        await running(manager, owned["id"])
        await running(manager, kept["id"])
        sched = await runtime.read_pod(f"{owned['id']}-scheduler")
        assert [(r["name"], r["uid"]) for r in sched["metadata"]["ownerReferences"]] == [(nb["metadata"]["name"], nb["metadata"]["uid"])]
        assert 3600 < sched["spec"]["activeDeadlineSeconds"] <= 3600 + DEADLINE_GRACE
        assert not (await runtime.read_pod(f"{kept['id']}-scheduler"))["metadata"].get("ownerReferences")

        # the Jupyter server restarts inside the same pod: it re-adopts both, owner and expiry unchanged
        await manager.close(detach=True)
        manager = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE], owner_pod=nb["metadata"]["name"],
                                 lifetimes=LifetimePolicy(max_lifetime=3600, max_detached_lifetime=1800))
        await manager.start()
        for before in (owned, kept):
            model = await running(manager, before["id"])
            assert (model["keep"], model["expires"]) == (before["keep"], before["expires"])
        sched = await runtime.read_pod(f"{owned['id']}-scheduler")
        assert [r["uid"] for r in sched["metadata"]["ownerReferences"]] == [nb["metadata"]["uid"]]

        # the hub stops the server: its pod is deleted; Kubernetes' garbage collector does the rest
        await manager.close(detach=True)  # the server process goes first (it would be killed with its pod)
        t = time.monotonic()
        await runtime.delete_pod(nb["metadata"]["name"], grace_period_seconds=0)
        await wait_until(lambda: _zero(runtime, owned["id"]), 60,
                         interval=0.2, what="the owned cluster garbage-collected")
        gone_after = time.monotonic() - t
        assert await objects(runtime, kept["id"]) == 3  # scheduler, worker, Service: kept
        print(f"\n[lifetimes] owned cluster gone {gone_after:.1f}s after its notebook pod")

        # a new server (a new pod) re-adopts the kept cluster, with its expiry
        again = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE], owner_pod=None)
        await again.start()
        model = await running(again, kept["id"])
        assert model["keep"] is True and model["expires"] == kept["expires"]
        assert [m["id"] for m in again.list()] == [kept["id"]]
        await again.delete(kept["id"])
        await again.close(detach=False)
    finally:
        await manager.close(detach=False)
        await runtime.delete_pods(f"hub.jupyter.org/username={name}", grace_period_seconds=0)


async def _zero(runtime, cid):
    return await objects(runtime, cid) == 0


@pytest.mark.asyncio
async def test_no_owner_pod_no_cluster(runtime, emu):
    name = user()
    manager = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE], owner_pod=f"jupyter-{name}")
    try:
        with pytest.raises(ApiError) as err:
            await manager.create(CreateRequest(template="one"))
        assert err.value.status == 409
        assert f"your server's pod jupyter-{name} was not found in namespace {emu.namespace}" in err.value.message
        assert manager.list() == [] and await runtime.list_pods(f"hub.jupyter.org/username={name}") == []
        status = await manager.status()
        assert any("clusters cannot follow your server" in p for p in status["problems"])
        with pytest.raises(OwnerPodError, match="cannot cross namespaces"):
            await find_owner_pod(runtime, "jupyter-x", namespace="elsewhere")
        # keep: not tied to the server, so it needs no owner pod
        model = await manager.create(CreateRequest(template="one", keep=True))
        assert model["keep"] is True and model["expires"] is None
        await manager.delete(model["id"])
    finally:
        await manager.close(detach=False)


@pytest.mark.asyncio
async def test_scheduler_ends_the_cluster_with_no_client_and_at_expiry(runtime):
    """Both rules are the scheduler's: the manager detaches (as a stopped server would) and the scheduler
    pods still end; a client holds the no-client one open while connected."""
    name = user()
    manager = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE],
                             lifetimes=LifetimePolicy(no_client_timeout=4))
    short = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE],
                           lifetimes=LifetimePolicy(max_lifetime=12))
    try:
        idle = await manager.create(CreateRequest(template="one"))
        model = await running(manager, idle["id"])
        security = manager.records[idle["id"]].cluster.security  # the owner's TLS credentials
        async with Client(model["scheduler_address"], security=security, asynchronous=True) as client:
            held_from = time.monotonic()
            assert await client.submit(lambda: 1) == 1
            await asyncio.sleep(5)  # longer than the timeout: the client holds the cluster open
            sched = await runtime.read_pod(f"{idle['id']}-scheduler")
            assert sched["status"]["phase"] == "Running"
        released = time.monotonic()
        await manager.close(detach=True)  # the Jupyter server is gone from here on

        expiring = await short.create(CreateRequest(template="one"))
        assert expiring["expires"]
        await running(short, expiring["id"])
        await short.close(detach=True)

        def phase(cid):
            async def get():
                pod = await runtime.read_pod(f"{cid}-scheduler")
                return pod and pod["status"].get("phase") == "Succeeded"
            return get

        await wait_until(phase(idle["id"]), 60, interval=0.2, what="the idle cluster's scheduler ends")
        ended = time.monotonic()
        assert ended - released >= 4 - 0.5 and ended - held_from > 9
        logs = await runtime.pod_logs(f"{idle['id']}-scheduler")
        assert "Scheduler closing: no client connected for 4s" in logs

        await wait_until(phase(expiring["id"]), 60, interval=0.2, what="the expiring cluster's scheduler ends")
        assert datetime.now(timezone.utc) >= datetime.fromisoformat(expiring["expires"]) - timedelta(seconds=1)
        assert "Scheduler closing: its lifetime ended" in await runtime.pod_logs(f"{expiring['id']}-scheduler")
        # workers lose their scheduler and exit by themselves
        for cid in (idle["id"], expiring["id"]):
            async def workers_done(cid=cid):
                pods = await runtime.list_pods(f"{cluster_selector(cid)},dask.org/component=worker")
                return pods and all(p["status"].get("phase") in ("Succeeded", "Failed") for p in pods)
            await wait_until(workers_done, 90, interval=0.5, what=f"{cid} workers exited")

        # a server that comes back removes what is left of ended clusters
        back = ClusterManager(runtime=runtime, username=name, templates=[TEMPLATE])
        await back.start()
        await wait_until(lambda: _zero(runtime, idle["id"]), 60, interval=0.2, what="ended cluster cleaned up")
        assert back.list() == []
        await back.close(detach=False)
    finally:
        await manager.close(detach=False)
        await short.close(detach=False)
        await runtime.delete_pods(f"hub.jupyter.org/username={name}", grace_period_seconds=0)


@pytest.mark.asyncio
async def test_local_runtime_runs_the_same_rules():
    """On the local runtime the scheduler process runs the same preload (there is no activeDeadlineSeconds and no
    owner pod): a cluster with no client ends by itself and the manager removes what is left."""
    from jupyter_dask_kube.runtimes.local import LocalRuntime

    rt = LocalRuntime()
    manager = ClusterManager(runtime=rt, username=user(), templates=[TEMPLATE], lifetimes=LifetimePolicy(no_client_timeout=3))
    try:
        model = await manager.create(CreateRequest(template="one"))
        cid = model["id"]
        await running(manager, cid)
        t = time.monotonic()
        await wait_until(lambda: cid not in manager.records, 60, interval=0.2, what="the idle local cluster removed")
        assert time.monotonic() - t >= 1  # not at once: the scheduler waited for its timeout
        await wait_until(lambda: no_pods(rt, cluster_selector(cid)), 30, interval=0.2, what="its pods deleted")
    finally:
        await manager.close(detach=False)
        await rt.close()


async def no_pods(rt, selector):
    return not await rt.list_pods(selector)
