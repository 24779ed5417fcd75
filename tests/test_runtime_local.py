"""The local runtime: real processes (and real dask) as pods on loopback addresses."""
from __future__ import annotations

import asyncio
import sys
import time
import urllib.request

import psutil
import pytest
import pytest_asyncio

from jupyter_dask_kube.runtimes import RuntimeAPIError
from jupyter_dask_kube.runtimes.local import LocalPodRunner, LocalRuntime
from jupyter_dask_kube.runtimes.localpod import container_argv

from helpers import wait_until

pytestmark = pytest.mark.asyncio

PY = sys.executable


@pytest_asyncio.fixture
async def rt():
    runtime = LocalRuntime(backoff_initial=0.05, backoff_max=0.2, memory_poll_interval=0.1)
    try:
        yield runtime
    finally:
        await runtime.close()
        assert runtime.runner.names() == []


def pod(name, args=None, command=None, env=None, labels=None, restart="Never", **container):
    c = {"name": container.pop("cname", "main"), "image": container.pop("image", "python:3.11"), **container}
    if args is not None:
        c["args"] = args
    if command is not None:
        c["command"] = command
    if env is not None:
        c["env"] = env
    meta = {"labels": labels or {}}
    meta["generateName" if name.endswith("-") else "name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"restartPolicy": restart, "containers": [c]}}


async def phase(rt, name, *phases, timeout=30):
    async def check():
        p = await rt.read_pod(name)
        return p if p and p["status"].get("phase") in phases else None
    return await wait_until(check, timeout, what=f"pod {name} phase in {phases}")


def state(p, key=None):
    s = p["status"]["containerStatuses"][0]
    return s if key is None else s["state"].get(key)


def tree(pid):
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listen_addresses(pid):
    addrs = set()
    for proc in tree(pid):
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    addrs.add((conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            pass
    return addrs


def http_status(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


def alive(pids):
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


# -- real dask ---------------------------------------------------------------------------------------
async def test_dask_cluster_pods_and_service(rt):
    from distributed import Client

    labels = {"dask.org/cluster-name": "c1"}
    sched = pod("c1-scheduler", args=["dask-scheduler", "--port", "8786", "--dashboard-address", ":8787"],
                labels={**labels, "dask.org/component": "scheduler"}, restart="Always",
                ports=[{"name": "tcp-comm", "containerPort": 8786}, {"name": "http-dashboard", "containerPort": 8787}])
    t0 = time.monotonic()
    s = await rt.create_pod(sched)
    running = await phase(rt, "c1-scheduler", "Running")
    ip = running["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1"
    assert running["status"]["podIPs"] == [{"ip": ip}]
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": "c1-scheduler", "uid": s["metadata"]["uid"]}]
    for i in range(2):
        w = pod(f"c1-worker-{i}", labels={**labels, "dask.org/component": "worker"},
                args=["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB",
                      "--death-timeout", "60"],
                env=[{"name": "DASK_SCHEDULER_ADDRESS", "value": f"tcp://{ip}:8786"}])
        w["metadata"]["ownerReferences"] = owner
        await rt.create_pod(w)

    async with Client(f"tcp://{ip}:8786", asynchronous=True, timeout="60s") as client:
        t_sched = time.monotonic() - t0
        await asyncio.wait_for(client.wait_for_workers(2), 60)
        t_workers = time.monotonic() - t0
        futures = client.map(lambda x: x * x, range(100))
        total = await client.submit(sum, futures)
        assert total == sum(x * x for x in range(100))
        workers = await client.nthreads()
        worker_ips = {a.split("://")[1].rsplit(":", 1)[0] for a in workers}
        pod_ips = {(await rt.read_pod(f"c1-worker-{i}"))["status"]["podIP"] for i in range(2)}
        assert worker_ips == pod_ips
    print(f"scheduler reachable {t_sched:.2f}s, 2 workers {t_workers:.2f}s after create")

    assert await asyncio.to_thread(http_status, f"http://{ip}:8787/status") == 200

    # every listener of every pod is on the pod's own address, nothing on 0.0.0.0 / 127.0.0.1 / ::
    for name in ("c1-scheduler", "c1-worker-0", "c1-worker-1"):
        p = await rt.read_pod(name)
        pids = rt.runner.pids(name)
        assert pids
        addrs = set().union(*(listen_addresses(pid) for pid in pids))
        assert addrs, name
        assert {a for a, _ in addrs} == {p["status"]["podIP"]}, (name, addrs)
    sched_addrs = listen_addresses(rt.runner.pids("c1-scheduler")[0])
    assert (ip, 8786) in sched_addrs and (ip, 8787) in sched_addrs

    # a Service in front of the scheduler: clients and the dashboard through its clusterIP
    svc = await rt.create_service({
        "metadata": {"name": "c1", "labels": labels, "ownerReferences": owner},
        "spec": {"selector": {**labels, "dask.org/component": "scheduler"},
                 "ports": [{"name": "tcp-comm", "port": 8786, "targetPort": "tcp-comm"},
                           {"name": "http-dashboard", "port": 8787, "targetPort": 8787}]}})
    cip = svc["spec"]["clusterIP"]
    assert cip != ip and cip.startswith("127.")
    async with Client(f"tcp://{cip}:8786", asynchronous=True, timeout="60s") as client:
        assert await client.submit(lambda: 42) == 42
        assert len(await client.nthreads()) == 2
    assert await asyncio.to_thread(http_status, f"http://{cip}:8787/status") == 200
    assert (await rt.list_services())[0]["spec"]["clusterIP"] == cip

    # deleting the scheduler garbage-collects its workers and the service
    all_pids = [q.pid for n in rt.runner.names() for pid in rt.runner.pids(n) for q in tree(pid)]
    assert await rt.delete_pod("c1-scheduler", grace_period_seconds=5)
    await wait_until(lambda: not rt.store.table("pods") and not rt.store.table("services"), 30,
                     what="garbage collection")
    await wait_until(lambda: not alive(all_pids), 15, what="processes gone")


# -- command lines and environment -------------------------------------------------------------------
def test_container_argv_translation():
    env = {"DASK_SCHEDULER_ADDRESS": "tcp://127.64.0.9:8786"}
    w = container_argv({"args": ["dask-worker", "$(DASK_SCHEDULER_ADDRESS)", "--nthreads", "2"]}, env, "127.64.1.2")
    assert w[:3] == [PY, "-m", "distributed.cli.dask_worker"]
    assert "tcp://127.64.0.9:8786" in w
    assert w[w.index("--host") + 1] == "127.64.1.2"
    assert w[w.index("--dashboard-address") + 1] == "127.64.1.2:0"
    s = container_argv({"command": ["dask", "scheduler"], "args": ["--dashboard-address=:8788", "--host", "0.0.0.0"]},
                       {}, "127.64.1.3")
    assert s[:3] == [PY, "-m", "distributed.cli.dask_scheduler"]
    assert s[s.index("--host") + 1] == "127.64.1.3" and "0.0.0.0" not in s
    assert s[s.index("--dashboard-address") + 1] == "127.64.1.3:8788"
    # --no-dashboard still serves /health and /metrics: bound to the pod address too
    n = container_argv({"args": ["dask-worker", "--no-dashboard"]}, {}, "127.64.1.4")
    assert n[n.index("--dashboard-address") + 1] == "127.64.1.4:0"
    assert container_argv({"command": ["python", "-c", "pass"]}, {}, "x")[0] == PY
    assert container_argv({"args": ["echo", "$(A)", "$(B)", "$$(A)"]}, {"A": "1"}, "x") == ["echo", "1", "$(B)", "$(A)"]
    shell = container_argv({"command": ["sh", "-c"], "args": ["dask-worker tcp://1.2.3.4:8786 --nthreads 1"]}, {}, "127.64.1.5")
    assert shell[:3] == [PY, "-m", "distributed.cli.dask_worker"] and "127.64.1.5" in shell


async def test_env_passthrough_secrets_and_field_refs(rt, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-secret")
    monkeypatch.setenv("MY_PASSWORD_X", "pw")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("JDK_PLAIN", "plain-value")
    monkeypatch.setenv("DASK_INTERNAL_INHERIT_CONFIG", "xxx")
    code = ("import os; keys = ['GREETING', 'MY_IP', 'POD_IP', 'HOSTNAME', 'MY_NAME', 'MY_NS', 'JDK_PLAIN', "
            "'JUPYTERHUB_API_TOKEN', 'MY_PASSWORD_X', 'OPENAI_API_KEY', 'DASK_INTERNAL_INHERIT_CONFIG', 'COMBO', "
            "'PYTHONUNBUFFERED']; print(';'.join(f'{k}={os.environ.get(k)}' for k in keys))")
    await rt.create_pod(pod("envpod", command=["python", "-c", code], env=[
        {"name": "GREETING", "value": "hello"},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "COMBO", "value": "$(GREETING)-world"},
    ]))
    p = await phase(rt, "envpod", "Succeeded")
    ip = p["status"]["podIP"]
    logs = await rt.pod_logs("envpod")
    values = dict(kv.split("=", 1) for kv in logs.strip().split(";"))
    assert values == {"GREETING": "hello", "MY_IP": ip, "POD_IP": ip, "HOSTNAME": "envpod", "MY_NAME": "envpod",
                      "MY_NS": "default", "JDK_PLAIN": "plain-value", "JUPYTERHUB_API_TOKEN": "None",
                      "MY_PASSWORD_X": "None", "OPENAI_API_KEY": "None", "DASK_INTERNAL_INHERIT_CONFIG": "None",
                      "COMBO": "hello-world", "PYTHONUNBUFFERED": "1"}
    assert (await rt.pod_logs("envpod", tail_lines=1)).strip() == logs.strip()
    with pytest.raises(RuntimeAPIError) as e:
        await rt.pod_logs("nope")
    assert e.value.status == 404


# -- exit states -------------------------------------------------------------------------------------
async def test_exit_states(rt):
    await rt.create_pod(pod("notfound", command=["no-such-binary-xyz", "--flag"]))
    await rt.create_pod(pod("exit3", command=["python", "-c", "import sys; print('bye'); sys.exit(3)"]))
    await rt.create_pod(pod("exit0", command=["python", "-c", "print('ok')"]))
    await rt.create_pod(pod("crash", command=["python", "-c", "import sys; sys.exit(2)"], restart="Always"))

    p = await phase(rt, "notfound", "Failed")
    t = state(p, "terminated")
    assert t["reason"] == "StartError" and t["exitCode"] == 128
    assert t["message"] == 'exec: "no-such-binary-xyz": executable file not found in $PATH'

    p = await phase(rt, "exit3", "Failed")
    t = state(p, "terminated")
    assert (t["reason"], t["exitCode"]) == ("Error", 3)
    assert "bye" in await rt.pod_logs("exit3")
    assert {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "False"

    p = await phase(rt, "exit0", "Succeeded")
    assert state(p, "terminated")["reason"] == "Completed"

    async def crash_looping():
        p = await rt.read_pod("crash")
        s = state(p)
        w = s["state"].get("waiting") or {}
        return p if w.get("reason") == "CrashLoopBackOff" and s["restartCount"] >= 2 else None
    p = await wait_until(crash_looping, 30, interval=0.05, what="CrashLoopBackOff")
    s = state(p)
    assert p["status"]["phase"] == "Running"
    assert s["lastState"]["terminated"]["exitCode"] == 2
    assert s["state"]["waiting"]["message"].startswith("back-off ")
    assert "restarting failed container=main pod=crash" in s["state"]["waiting"]["message"]


async def test_oom_killed(rt):
    code = ("import time\nblocks = []\nfor _ in range(100):\n    blocks.append(bytearray(20 * 2**20))\n"
            "    time.sleep(0.02)\ntime.sleep(30)\n")
    await rt.create_pod(pod("oom", command=["python", "-c", code], resources={"limits": {"memory": "100Mi"}}))
    p = await phase(rt, "oom", "Failed", timeout=30)
    t = state(p, "terminated")
    assert (t["reason"], t["exitCode"]) == ("OOMKilled", 137)


async def test_image_pull_backoff():
    runtime = LocalRuntime(image_pull_fail=lambda image: "missing" in image, backoff_initial=0.05, backoff_max=0.2)
    try:
        await runtime.create_pod(pod("pull", command=["python", "-c", "pass"], image="example.org/missing:1"))

        async def backoff():
            p = await runtime.read_pod("pull")
            w = (p["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("waiting") or {}
            return p if w.get("reason") == "ImagePullBackOff" else None
        p = await wait_until(backoff, 10, interval=0.05, what="ImagePullBackOff")
        assert p["status"]["phase"] == "Pending"
        assert state(p, "waiting")["message"] == 'Back-off pulling image "example.org/missing:1"'
        assert runtime.runner.pids("pull") == []
    finally:
        await runtime.close()


# -- API-server behaviour -------------------------------------------------------------------------------
async def test_names_duplicates_selectors(rt):
    sleeper = ["python", "-c", "import time; time.sleep(60)"]
    a = await rt.create_pod(pod("gen-", command=sleeper, labels={"app": "x", "role": "a"}))
    name = a["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5
    assert a["metadata"]["namespace"] == "default" and a["metadata"]["uid"] and a["metadata"]["creationTimestamp"]
    assert a["status"]["phase"] == "Pending"
    await rt.create_pod(pod("fixed", command=sleeper, labels={"app": "x", "role": "b"}))
    with pytest.raises(RuntimeAPIError) as e:
        await rt.create_pod(pod("fixed", command=sleeper))
    assert (e.value.status, e.value.reason, e.value.message) == (409, "AlreadyExists", 'pods "fixed" already exists')
    with pytest.raises(RuntimeAPIError) as e:
        await rt.create_pod({"metadata": {}, "spec": {"containers": [{"name": "c"}]}})
    assert e.value.status == 422

    assert {p["metadata"]["name"] for p in await rt.list_pods("app=x")} == {name, "fixed"}
    assert [p["metadata"]["name"] for p in await rt.list_pods("app=x,role=b")] == ["fixed"]
    assert await rt.list_pods("app==y") == []
    # returned objects are copies
    got = await rt.read_pod("fixed")
    got["metadata"]["labels"]["app"] = "changed"
    assert (await rt.read_pod("fixed"))["metadata"]["labels"]["app"] == "x"
    assert await rt.read_pod("missing") is None
    assert await rt.delete_pod("missing") is False
    rvs = [int(p["metadata"]["resourceVersion"]) for p in await rt.list_pods()]
    assert all(rv > 0 for rv in rvs)
    assert await rt.delete_pods("app=x") == 2
    assert await rt.list_pods() == []


async def test_watch_order_and_delete_kills_tree(rt):
    events = []
    seen_existing = asyncio.Event()
    await rt.create_pod(pod("before", command=["python", "-c", "import time; time.sleep(60)"], labels={"w": "1"}))

    async def watch():
        async for ev in rt.watch_pods("w=1"):
            if ev.type == "SYNCED":  # marks the end of the initial listing
                assert ev.object == {} and [e[0] for e in events] == ["ADDED"]
                continue
            events.append((ev.type, ev.object["metadata"]["name"], ev.object["status"].get("phase"),
                           ev.object["metadata"]["resourceVersion"]))
            seen_existing.set()
            if ev.type == "DELETED" and ev.object["metadata"]["name"] == "tree":
                return
    task = asyncio.create_task(watch())
    second = rt.watch_pods("w=1")  # a second, concurrent watcher
    first_of_second = await asyncio.wait_for(second.__anext__(), 5)
    assert first_of_second.type == "ADDED"
    await asyncio.wait_for(seen_existing.wait(), 5)
    assert events[0][:2] == ("ADDED", "before")

    # a process that starts a child that ignores SIGTERM: delete must take down the whole group
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
            "time.sleep(120)\n")
    await rt.create_pod(pod("tree", command=["python", "-c", code], labels={"w": "1"}))
    await rt.create_pod(pod("other", command=["python", "-c", "pass"], labels={"w": "2"}))
    await phase(rt, "tree", "Running")
    leader = rt.runner.pids("tree")[0]
    pids = await wait_until(lambda: [p.pid for p in tree(leader)] if len(tree(leader)) >= 2 else None, 15,
                            what="child process")
    t0 = time.monotonic()
    assert await rt.delete_pod("tree", grace_period_seconds=1)
    assert time.monotonic() - t0 < 10
    assert alive(pids) == []
    assert await rt.read_pod("tree") is None
    await asyncio.wait_for(task, 10)
    mine = [e for e in events if e[1] == "tree"]
    assert mine[0][0] == "ADDED" and mine[-1][0] == "DELETED"
    assert all(e[0] == "MODIFIED" for e in mine[1:-1]) and any(e[2] == "Running" for e in mine)
    assert not any(e[1] == "other" for e in events)
    await second.aclose()
    await wait_until(lambda: not any(rt.store.watchers.values()), 5, what="watchers unsubscribed")

    # resuming from a resourceVersion replays what came after it
    resumed = rt.watch_pods("w=1", resource_version=events[-1][3])  # after tree's DELETED
    await rt.delete_pod("before", grace_period_seconds=1)
    ev = await asyncio.wait_for(resumed.__anext__(), 5)
    assert ev.type in ("MODIFIED", "DELETED") and ev.object["metadata"]["name"] == "before"
    await resumed.aclose()


async def test_owner_reference_gc_and_close_leaves_nothing():
    # Session fixtures (e.g. the emulated cluster) may already run as children of pytest: not ours.
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    runtime = LocalRuntime()
    try:
        sleeper = ["python", "-c", "import time; time.sleep(60)"]
        owner = await runtime.create_pod(pod("owner", command=sleeper))
        ref = [{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner["metadata"]["uid"]}]
        for i in range(2):
            m = pod(f"dep-{i}", command=sleeper)
            m["metadata"]["ownerReferences"] = ref
            await runtime.create_pod(m)
        await runtime.create_service({"metadata": {"name": "dep-svc", "ownerReferences": ref},
                                      "spec": {"selector": {"x": "y"}, "ports": [{"port": 8786}]}})
        await runtime.create_pod(pod("free", command=sleeper))
        for n in ("owner", "dep-0", "dep-1", "free"):
            await phase(runtime, n, "Running")
        assert await runtime.delete_pod("owner", grace_period_seconds=1)
        await wait_until(lambda: {n for _, n in runtime.store.table("pods")} == {"free"}
                         and not runtime.store.table("services"), 15, what="GC")
        # a dependent whose owner is gone is collected too
        late = pod("late", command=sleeper)
        late["metadata"]["ownerReferences"] = ref
        await runtime.create_pod(late)
        await wait_until(lambda: runtime.store.get("pods", "default", "late") is None, 15, what="orphan GC")

        await runtime.create_service({"metadata": {"name": "svc"}, "spec": {"selector": {"x": "y"},
                                                                             "ports": [{"port": 8786}]}})
        with pytest.raises(RuntimeAPIError) as e:
            await runtime.create_service({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 1}]}})
        assert e.value.status == 409
        pids = [q.pid for pid in runtime.runner.pids("free") for q in tree(pid)]
        assert pids
    finally:
        await runtime.close()
    assert alive(pids) == []
    assert runtime.runner.names() == [] and runtime._proxies == {}
    me = psutil.Process()
    assert [c.pid for c in me.children(recursive=True) if c.pid not in before and c.status() != psutil.STATUS_ZOMBIE] == []


async def test_no_process_mode_many_pods():
    statuses = {}
    before = {c.pid for c in psutil.Process().children()}  # session fixtures are not ours
    runtime = LocalRuntime(run_processes=False)
    try:
        manifests = [pod(f"load-{i}", args=["dask-worker"], labels={"load": "1"}) for i in range(200)]
        await asyncio.gather(*(runtime.create_pod(m) for m in manifests))

        async def all_running():
            pods = await runtime.list_pods("load=1")
            return len(pods) == 200 and all(p["status"]["phase"] == "Running" for p in pods)
        await wait_until(all_running, 30, what="200 pods running")
        pods = await runtime.list_pods("load=1")
        assert len({p["status"]["podIP"] for p in pods}) == 200
        assert [c for c in psutil.Process().children() if c.pid not in before] == []
        statuses = {p["metadata"]["name"]: p["status"] for p in pods}
    finally:
        await runtime.close()
    assert len(statuses) == 200


async def test_runner_log_dir_and_stop_idempotent(tmp_path):
    seen = []
    runner = LocalPodRunner(lambda name, st: seen.append(st["phase"]), log_dir=str(tmp_path))
    try:
        ip = await runner.run(pod("r1", command=["python", "-c", "import time; print('hi', flush=True); time.sleep(60)"]))
        assert ip.startswith("127.")
        await wait_until(lambda: "hi" in runner.logs("r1"), 15, what="log line")
        assert (tmp_path / "r1_main.log").read_text().startswith("hi")
        assert seen[0] == "Pending" and "Running" in seen
        pids = runner.pids("r1")
        await asyncio.gather(runner.stop("r1", 2), runner.stop("r1", 2))
        await runner.stop("r1")
        assert alive(pids) == [] and runner.names() == [] and runner.status("r1") is None
    finally:
        await runner.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
async def test_pods_die_with_the_process_that_runs_them():
    script = (
        "import asyncio, sys\n"
        "from jupyter_dask_kube.runtimes.local import LocalRuntime\n"
        "async def main():\n"
        "    rt = LocalRuntime()\n"
        "    await rt.create_pod({'metadata': {'name': 'orphan'}, 'spec': {'containers': [{'name': 'c',\n"
        "        'command': ['python', '-c', 'import time; time.sleep(120)']}]}})\n"
        "    while not rt.runner.pids('orphan'):\n"
        "        await asyncio.sleep(0.02)\n"
        "    print(rt.runner.pids('orphan')[0], flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "asyncio.run(main())\n")
    parent = await asyncio.create_subprocess_exec(PY, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 30)
        pod_pid = int(line)
        assert alive([pod_pid]) == [pod_pid]
    finally:
        parent.kill()
        await parent.wait()
    await wait_until(lambda: not alive([pod_pid]), 10, what="pod process to die with its parent")
