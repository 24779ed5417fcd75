"""Nanny workers on the local runtime's fork server: the nanny's worker process is a fork of the (already
imported) pod process, through multiprocessing's forkserver, and every nanny feature still works: the memory
limit, restart of a killed worker, clean shutdown; the worker sees the same environment and config as a
worker its nanny spawned as a fresh Python (compared with a runner without the fork server)."""
import asyncio
import os
import signal

import psutil
import pytest
import pytest_asyncio
from distributed import Client

from jupyter_dask_kube.runtimes.localpod import LocalPodRunner

from helpers import wait_until

pytestmark = pytest.mark.asyncio

WAIT = 60


def pod(name, args, env=(), limits=None):
    container = {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": list(args),
                 "env": [{"name": k, "value": v} for k, v in env]}
    if limits:
        container["resources"] = {"limits": limits}
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [container]}}


async def start_cluster(runner, *worker_pods):
    # a task on a worker that died is not run again (the memory-limit tests' task would kill the next one)
    ip = await runner.run(pod("sched", ["dask-scheduler", "--no-dashboard"],
                              [("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")]))
    address = f"tcp://{ip}:8786"
    await wait_until(lambda: "Scheduler at:" in runner.logs("sched"), WAIT, what="the scheduler to start")
    for make in worker_pods:
        await runner.run(make(address))
    client = await Client(address, asynchronous=True)
    await asyncio.wait_for(client.wait_for_workers(len(worker_pods)), WAIT)
    return client


async def workers(client):
    return set((await client.scheduler.identity())["workers"])


def _make_worker_facts():  # nested: pickled by value to workers that cannot import this test module
    def worker_facts(dask_worker):
        import multiprocessing
        import os

        import dask

        return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "environ": dict(os.environ),
                "memory_limit": dask_worker.memory_manager.memory_limit, "nthreads": dask_worker.state.nthreads,
                "method": dask.config.get("distributed.worker.multiprocessing-method"),
                "start_method": multiprocessing.current_process().name}

    return worker_facts


worker_facts = _make_worker_facts()


def nanny_worker(name, env=(), limits=None, memory_limit="300MB"):
    return lambda address: pod(name, ["dask-worker", address, "--nthreads", "2", "--no-dashboard",
                                      "--memory-limit", memory_limit], env, limits)


async def facts(client):
    [(address, out)] = (await client.run(worker_facts)).items()
    return address, out


@pytest_asyncio.fixture
async def runner(tmp_path):
    r = LocalPodRunner(log_dir=str(tmp_path), fork_server=True, memory_poll_interval=0.2)
    yield r
    await r.close()


def group_members(pgid):
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


async def test_nanny_worker_is_forked_and_sees_what_a_spawned_one_sees(runner, tmp_path):
    env = [("MY_POD_VAR", "hello"), ("DASK_DISTRIBUTED__NANNY__ENVIRON__FROM_NANNY_CONFIG", "yes")]
    client = await start_cluster(runner, nanny_worker("w", env))
    try:
        address, forked = await facts(client)
        [leader] = runner.pids("w")
        nanny = psutil.Process(leader)
        assert forked["pid"] != leader
        # worker -> multiprocessing's forkserver (a fork of the nanny's process) -> the nanny, the pod's leader
        assert psutil.Process(forked["ppid"]).ppid() == leader
        assert forked["pgid"] == leader, "in the pod's process group: stopped with the pod"
        assert psutil.Process(forked["pid"]).cmdline() == nanny.cmdline(), "a fork, not a new interpreter"
        assert forked["memory_limit"] == 300_000_000 and forked["nthreads"] == 2
        assert forked["environ"]["MY_POD_VAR"] == "hello"
        assert forked["environ"]["from_nanny_config"] == "yes"  # the nanny's environ config (dask lowercases)
        assert forked["environ"]["MALLOC_TRIM_THRESHOLD_"] == "65536"  # its pre-spawn environ
        assert forked["method"] == "spawn", "dask config as the template left it"
    finally:
        await client.close()
    await runner.stop("w", grace_period=10)

    # the same pod without the fork server: the nanny spawns a fresh Python; the worker must see the same
    fresh_runner = LocalPodRunner(log_dir=str(tmp_path / "fresh"), fork_server=False)
    try:
        client = await start_cluster(fresh_runner, nanny_worker("w", env))
        try:
            _, spawned = await facts(client)
        finally:
            await client.close()
    finally:
        await fresh_runner.close()
    assert forked["environ"]["__DASK_PARENT_PID"] == str(leader)  # distributed.proctitle: the nanny's pid
    assert spawned["environ"]["__DASK_PARENT_PID"] == str(spawned["ppid"]), "the reference was spawned by its nanny"
    volatile = {"POD_IP", "__DASK_PARENT_PID"}  # each pod's own address, each nanny's own pid
    differ = {k for k in set(forked["environ"]) | set(spawned["environ"])
              if k not in volatile and forked["environ"].get(k) != spawned["environ"].get(k)}
    assert not differ, {k: (forked["environ"].get(k), spawned["environ"].get(k)) for k in differ}
    for key in ("memory_limit", "nthreads", "method"):
        assert forked[key] == spawned[key], key


async def test_nanny_restarts_a_killed_forked_worker(runner):
    client = await start_cluster(runner, nanny_worker("w"))
    try:
        address, first = await facts(client)
        [leader] = runner.pids("w")
        os.kill(first["pid"], signal.SIGKILL)

        async def restarted():
            now = await workers(client)
            if len(now) != 1 or address in now:
                return None
            return (await facts(client))[1]

        second = await wait_until(restarted, WAIT, what="the nanny to start a new worker")
        assert second["pid"] != first["pid"]
        assert psutil.Process(second["ppid"]).ppid() == leader, "forked again, by the same nanny"
        assert runner.pids("w") == [leader], "the pod (the nanny) kept running"
        assert (await client.submit(lambda: 21 * 2, pure=False)) == 42
    finally:
        await client.close()


async def test_nanny_memory_limit_restarts_a_forked_worker(runner):
    # --memory-limit 300MB: the nanny terminates the worker at 95 % and starts a new one (the pod runs on)
    client = await start_cluster(runner, nanny_worker("w"))
    try:
        address, first = await facts(client)
        [leader] = runner.pids("w")

        def hog():
            import time
            data = b"x" * 600_000_000  # noqa: F841 (held while sleeping)
            time.sleep(60)

        fut = client.submit(hog, pure=False)
        async def replaced():
            now = await workers(client)
            return len(now) == 1 and address not in now

        await wait_until(replaced, WAIT, what="the nanny to replace the worker over its memory limit")
        _, second = await facts(client)
        assert second["pid"] != first["pid"] and psutil.Process(second["ppid"]).ppid() == leader
        assert not psutil.pid_exists(first["pid"]) or psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
        assert runner.pids("w") == [leader]
        logs = runner.logs("w")
        assert "exceeded 95% memory budget" in logs, logs[-3000:]
        assert fut.status == "error"  # KilledWorker: not run again
    finally:
        await client.close()


async def test_pod_memory_limit_counts_the_forked_worker(runner):
    # the container limit (what Kubernetes enforces on the whole pod) sees the forked worker's memory too
    # (no dask memory limit: the nanny would stop its worker first)
    client = await start_cluster(runner, nanny_worker("w", limits={"memory": "400M"}, memory_limit="0"))
    try:
        def hog():
            import time
            data = b"x" * 600_000_000  # noqa: F841
            time.sleep(60)

        client.submit(hog, pure=False)
        state = await wait_until(lambda: (runner.status("w")["containerStatuses"][0]["state"]).get("terminated"),
                                 WAIT, what="the pod to be OOMKilled")
        assert state["reason"] == "OOMKilled" and state["exitCode"] == 137, state
    finally:
        await client.close()


async def test_stopping_the_pod_leaves_no_process(runner):
    client = await start_cluster(runner, nanny_worker("w"))
    try:
        _, worker = await facts(client)
    finally:
        await client.close()
    [leader] = runner.pids("w")
    tree = [leader, *(p.pid for p in psutil.Process(leader).children(recursive=True))]
    assert worker["pid"] in tree and len(tree) >= 3, tree  # nanny, its forkserver, worker (+ resource tracker)
    assert sorted(group_members(leader)) == sorted(tree)
    await runner.stop("w", grace_period=10)
    await wait_until(lambda: not group_members(leader), WAIT, what="every process of the pod to be gone")
    gone = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not gone, gone
    with open(os.path.join(runner.log_dir, "w_dask.log")) as f:
        logs = f.read()
    assert "Traceback" not in logs, logs[-3000:]


async def test_no_nanny_and_an_explicit_method_are_left_alone(runner):
    client = await start_cluster(
        runner, lambda a: pod("plain", ["dask-worker", a, "--no-nanny", "--no-dashboard"]),
        nanny_worker("spawned", env=[("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD", "spawn")]))
    try:
        out = await client.run(worker_facts)
        by_pid = {f["pid"]: f for f in out.values()}
        [plain] = runner.pids("plain")
        [nanny] = runner.pids("spawned")
        assert plain in by_pid, "--no-nanny: the pod's own process is the worker"
        [spawned] = [f for f in out.values() if f["pid"] != plain]
        assert spawned["ppid"] == nanny, "asked for spawn: the nanny's own child"
        assert psutil.Process(spawned["pid"]).cmdline() != psutil.Process(nanny).cmdline()
    finally:
        await client.close()


async def test_pages_shared_by_forks_count_once_against_the_pod_limit(runner):
    # nanny, its forkserver and resource tracker and the worker each map the fork server's ~100 MB of imports:
    # their RSS adds up past the pod's limit, yet those pages are there once (a cgroup charges them once)
    limit = 250_000_000
    client = await start_cluster(runner, nanny_worker("w", limits={"memory": str(limit)}, memory_limit="0"))
    try:
        [leader] = runner.pids("w")
        members = [psutil.Process(leader), *psutil.Process(leader).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in members)
        assert rss > limit, f"the pods' RSS ({rss}) must exceed the limit for this test to mean anything"
        checks, pss_checks = runner.memory_checks, runner.pss_checks
        await wait_until(lambda: runner.pss_checks >= pss_checks + 5 and runner.memory_checks >= checks + 5, WAIT,
                         what="5 more memory checks that had to look at PSS")
        state = runner.status("w")["containerStatuses"][0]["state"]
        assert "running" in state, state
        assert (await client.submit(lambda: 6 * 7, pure=False)) == 42
    finally:
        await client.close()
