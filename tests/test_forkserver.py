"""The local runtime's fork server: dask containers start as forks of a process that imported distributed,
and still behave as their own processes (environment, config, output, exit codes, dying with the runner)."""
import asyncio
import os
import resource
import signal

import psutil
import pytest
import pytest_asyncio

from jupyter_dask_kube.runtimes.localpod import LocalPodRunner

from helpers import wait_until

pytestmark = pytest.mark.asyncio

WAIT = 60  # s for a forked dask process to reach a state


def scheduler_pod(name, env=(), args=()):
    return {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "containers": [{
        "name": "dask", "image": "ghcr.io/dask/dask:latest", "args": ["dask-scheduler", "--no-dashboard", *args],
        "env": [{"name": k, "value": v} for k, v in env]}]}}


def state(runner, name):
    status = runner.status(name) or {}
    return (status.get("containerStatuses") or [{}])[0].get("state", {})


@pytest_asyncio.fixture
async def runner(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "s3cret-token-value")
    r = LocalPodRunner(log_dir=str(tmp_path), fork_server=True)
    yield r
    await r.close()


async def test_forked_scheduler_runs_with_its_own_env_and_config(runner):
    # the pod's DASK_* variable must reach dask's config in the fork: the scheduler then idles out by itself
    await runner.run(scheduler_pod("idle", env=[("DASK_DISTRIBUTED__SCHEDULER__IDLE_TIMEOUT", "1s"),
                                                 ("MY_POD_VAR", "hello")]))
    [pid] = runner.pids("idle")
    proc = psutil.Process(pid)
    assert proc.ppid() != os.getpid(), "a fork of the fork server, not a child of the runner"
    assert proc.pid == os.getpgid(pid), "its own process group, as a container's leader"
    # what other processes could read of it: none of the runner's secrets
    assert b"s3cret-token-value" not in open(f"/proc/{pid}/environ", "rb").read()
    term = await wait_until(lambda: state(runner, "idle").get("terminated"), WAIT, what="the idle scheduler to exit")
    assert term["exitCode"] == 0 and term["reason"] == "Completed", term
    logs = runner.logs("idle")
    assert logs.count("Scheduler at:") == 1, logs  # one log handler, not the fork server's plus a new one
    assert "idle" in logs.lower()


async def test_exit_codes_and_output_of_a_failing_fork(runner):
    await runner.run(scheduler_pod("bad", args=["--no-such-option"]))
    term = await wait_until(lambda: state(runner, "bad").get("terminated"), WAIT, what="the bad scheduler to exit")
    assert term["exitCode"] == 2 and term["reason"] == "Error", term  # click's usage error
    assert "no-such-option" in runner.logs("bad")


async def test_signals_reach_the_fork_and_stop_is_graceful(runner):
    await runner.run(scheduler_pod("s"))
    await wait_until(lambda: "Scheduler at:" in runner.logs("s"), WAIT, what="the scheduler to start")
    [pid] = runner.pids("s")
    await runner.stop("s", grace_period=10)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with open(os.path.join(runner.log_dir, "s_dask.log")) as f:  # the pod is gone from the runner
        logs = f.read()
    assert "Received signal SIGTERM" in logs and "End scheduler" in logs, logs[-2000:]


async def test_forks_die_with_the_fork_server_and_later_pods_start_directly(runner):
    await runner.run(scheduler_pod("a"))
    await wait_until(lambda: "Scheduler at:" in runner.logs("a"), WAIT, what="the scheduler to start")
    [pid] = runner.pids("a")
    server = psutil.Process(pid).parent()
    server.send_signal(signal.SIGKILL)
    term = await wait_until(lambda: state(runner, "a").get("terminated"), WAIT, what="the fork to be reported gone")
    assert term["exitCode"] != 0
    await wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                     WAIT, what="the fork to die with its server")
    await runner.run(scheduler_pod("b"))
    await wait_until(lambda: "Scheduler at:" in runner.logs("b"), WAIT, what="a direct scheduler to start")
    [pid_b] = runner.pids("b")
    assert psutil.Process(pid_b).ppid() == os.getpid(), "started directly once the fork server is gone"


async def test_fork_server_off_starts_fresh_processes(tmp_path):
    r = LocalPodRunner(log_dir=str(tmp_path), fork_server=False)
    try:
        await r.run(scheduler_pod("plain"))
        [pid] = r.pids("plain")
        assert psutil.Process(pid).ppid() == os.getpid()
        await wait_until(lambda: "Scheduler at:" in r.logs("plain"), WAIT, what="the scheduler to start")
    finally:
        await r.close()


async def test_many_forks_at_once_each_get_their_own_pid_and_output(runner):
    names = [f"p{i}" for i in range(6)]
    await asyncio.gather(*(runner.run(scheduler_pod(n)) for n in names))
    pids = {n: runner.pids(n)[0] for n in names}
    assert len(set(pids.values())) == len(names)
    for n in names:
        await wait_until(lambda n=n: "Scheduler at:" in runner.logs(n), WAIT, what=f"{n} to start")
    ips = {n: runner.status(n)["podIP"] for n in names}
    for n in names:  # each log is its own process's: it names its own pod address
        assert f"tcp://{ips[n]}:8786" in runner.logs(n)


async def test_a_burst_of_forks_fills_the_socket_and_all_are_still_forked(runner):
    # 150 requests at once (each carries the pod's environment) fill the socket while the server forks:
    # they wait for room, none falls back to a fresh process, and each ran its own command
    names = [f"v{i}" for i in range(150)]
    pod = lambda n: {"metadata": {"name": n}, "spec": {"restartPolicy": "Never", "containers": [{
        "name": "dask", "image": "ghcr.io/dask/dask:latest", "args": ["dask-worker", "--version"],
        "env": [{"name": "PADDING", "value": "x" * 4000}]}]}}
    await asyncio.gather(*(runner.run(pod(n)) for n in names))
    for n in names:
        term = await wait_until(lambda n=n: state(runner, n).get("terminated"), WAIT, what=f"{n} to exit")
        assert term["exitCode"] == 0, (n, term, runner.logs(n))
        assert "version" in runner.logs(n), runner.logs(n)
    assert runner.fork_server.broken is None
    assert runner.fork_server.forked == len(names)


async def test_background_start_imports_at_low_priority_and_pods_run_at_normal_priority(tmp_path):
    r = LocalPodRunner(log_dir=str(tmp_path), fork_server=True)
    try:
        assert r.start_fork_server()
        server = psutil.Process(r.fork_server._popen.pid)

        def niced_threads():  # nice of each thread (Linux: per thread), field 19 of /proc/<pid>/task/<tid>/stat
            out = []
            for tid in os.listdir(f"/proc/{server.pid}/task"):
                try:
                    with open(f"/proc/{server.pid}/task/{tid}/stat") as f:
                        out.append(int(f.read().rsplit(")", 1)[1].split()[16]))
                except (OSError, IndexError):
                    pass
            return [n for n in out if n > 0]

        seen = await wait_until(niced_threads, WAIT, interval=0.01, what="the importing thread, niced")
        assert seen == [10] and server.nice() == 0, (seen, server.nice())
        await r.run(scheduler_pod("s"))
        await wait_until(lambda: "Scheduler at:" in r.logs("s"), WAIT, what="the scheduler to start")
        [pid] = r.pids("s")
        assert psutil.Process(pid).ppid() == server.pid and psutil.Process(pid).nice() == 0
        assert niced_threads() == [] and server.num_threads() == 1, "the importing thread has ended"
    finally:
        await r.close()


async def test_forks_start_with_the_imported_objects_frozen(runner, tmp_path):
    # gc.freeze() in the fork server: a collection in a pod then skips what was imported before the fork
    # (~110 ms of CPU and most of the shared pages copied per full collection, in every pod process otherwise)
    preload = tmp_path / "report_frozen.py"
    preload.write_text("import gc\nprint('FROZEN', gc.get_freeze_count(), flush=True)\n")
    await runner.run(scheduler_pod("frozen", args=["--preload", str(preload)]))
    line = await wait_until(lambda: next((ln for ln in runner.logs("frozen").splitlines() if "FROZEN" in ln), None),
                            WAIT, what="the preload's report")
    assert int(line.split()[-1]) > 10000, line


def thread_nices(pid):
    """{tid: nice} of a process's threads (Linux: nice is per thread; field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
        except (OSError, IndexError):
            pass
    return out


@pytest.mark.skipif(os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_NICE)[0] < 20,
                    reason="lowering a nice value needs root, CAP_SYS_NICE or RLIMIT_NICE >= 20")
async def test_a_pod_request_gives_the_importing_thread_full_priority(tmp_path):
    r = LocalPodRunner(log_dir=str(tmp_path), fork_server=True)
    try:
        assert r.start_fork_server()
        pid = r.fork_server._popen.pid
        niced = await wait_until(lambda: [t for t, n in thread_nices(pid).items() if n == 10], WAIT, interval=0.005,
                                 what="the importing thread, niced")
        # a pod asked for while the imports run (~1 s of CPU): they go on at the process's own priority
        run = asyncio.ensure_future(r.run(scheduler_pod("s")))
        await wait_until(lambda: thread_nices(pid).get(niced[0]) == 0, 10, interval=0.002,
                         what="the importing thread at nice 0")
        await run
        await wait_until(lambda: "Scheduler at:" in r.logs("s"), WAIT, what="the scheduler to start")
        assert psutil.Process(r.pids("s")[0]).ppid() == pid and psutil.Process(r.pids("s")[0]).nice() == 0
    finally:
        await r.close()
