"""Click to workers: POST a 4-worker cluster on the local runtime until 4 workers are connected, against peers.

Issue target: "time from POST (template with 4 workers) to 4 connected workers on the local runtime, against
dask-labextension's PUT /dask/clusters + 4 workers with LocalCluster and against the floor (a `dask scheduler`
and 4 `dask worker` processes started by hand), in one run, printed as ratios. Targets: <= 0.5 x
dask-labextension, <= 1.2 x the floor; DELETE to all processes gone < 1 s. GET clusters latency with
50 clusters: p50 < 5 ms."

Measured in one run, median of N (``--runs``, default 5), after one untimed warm-up of each server:
(a) ours: a real ``jupyter server`` (token auth, 127.0.0.1, free port) with c.DaskKube.backend="local" and two
    templates of 4 workers ``dask-worker --nthreads 1 --memory-limit 1GB``: "nanny" (dask's default, a nanny
    process per worker) and "nonanny" (``--no-nanny``). Timed from sending POST dask-kube/api/clusters until
    GET clusters/{id} (polled every 50 ms) says "workers": 4. Then DELETE is timed until every process the
    cluster added under the server (psutil, the server's process tree) is gone.
(b) dask-labextension 7.0.0 in its own ``jupyter server``: labextension.factory = LocalCluster(n_workers=0,
    threads_per_worker=1, memory_limit="1GB", host 127.0.0.1), labextension.default.workers = 4, so one
    PUT /dask/clusters creates the cluster and scales it to 4 (its manager calls cluster.scale(4)). Timed
    until its GET /dask/clusters/{id} (polled every 50 ms) says "workers": 4; DELETE timed the same way.
    LocalCluster with processes runs a nanny per worker: it is compared with our "nanny" variant.
(c) the floor: ``python -m distributed.cli.dask_scheduler`` and 4 ``python -m distributed.cli.dask_worker``
    processes (same worker flags; with and without ``--no-nanny``) all started at once by this script,
    timed until the scheduler's identity (polled every 50 ms) lists 4 workers.
(d) GET dask-kube/api/clusters latency with ``--clusters`` (default 50) clusters of 0 workers on the local
    runtime (50 scheduler processes), measured on our server once they all run: ``--gets`` (default 200)
    sequential GETs on one keep-alive connection, p50 and p99.

Run: ``python benchmarks/click_to_workers.py [--runs N] [--clusters 50] [--gets 200] [--skip-labextension]``.
Every process started here (servers, their clusters, floor processes) is stopped here, by pid.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

WORK = tempfile.mkdtemp(prefix="bench-click-")
# This process and every child: dask config in a temp folder (importing dask_labextension writes there).
os.environ["DASK_CONFIG"] = os.path.join(WORK, "dask-config-self")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import psutil  # noqa: E402
import requests  # noqa: E402

POLL = 0.05
WORKER_ARGS = ["dask-worker", "--nthreads", "1", "--memory-limit", "1GB"]
_started: list[subprocess.Popen] = []


# -- process helpers ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def cluster_processes(server_pid: int, before: set[int]) -> set[int]:
    """Processes that appeared under the server since ``before``, except multiprocessing's resource
    tracker: the first LocalCluster starts one that lives as long as the server, not the cluster."""
    out = set()
    for pid in descendants(server_pid) - before:
        try:
            if "resource_tracker" in " ".join(psutil.Process(pid).cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        out.add(pid)
    return out


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: set[int], timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while alive(pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes still alive: {sorted(alive(pids))}")
        time.sleep(0.01)
    return time.monotonic()


def stop_tree(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process, wait, then SIGKILL whatever of its tree (by pid) is left."""
    if proc.poll() is not None:
        return
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    deadline = time.monotonic() + 5
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive(tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _cleanup() -> None:
    for proc in reversed(_started):
        try:
            stop_tree(proc)
        except Exception:
            pass
    shutil.rmtree(WORK, ignore_errors=True)


atexit.register(_cleanup)


def popen(cmd: list[str], env: dict | None = None, log: str | None = None, cwd: str | None = None) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
    _started.append(proc)
    return proc


# -- jupyter servers -----------------------------------------------------------------------------------------
class Server:
    """A real ``jupyter server`` subprocess with token auth on 127.0.0.1."""

    def __init__(self, label: str, config_py: str, dask_config: dict[str, str]):
        self.label = label
        self.dir = os.path.join(WORK, label)
        os.makedirs(self.dir)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}/"
        cfg = os.path.join(self.dir, "jupyter_server_config.py")
        with open(cfg, "w") as f:
            f.write(config_py)
        dask_dir = os.path.join(self.dir, "dask-config")
        os.makedirs(dask_dir)
        for name, text in dask_config.items():
            with open(os.path.join(dask_dir, name), "w") as f:
                f.write(text)
        env = dict(os.environ, DASK_CONFIG=dask_dir, JUPYTER_RUNTIME_DIR=os.path.join(self.dir, "runtime"),
                   JUPYTERHUB_USER="bench", PYTHONUNBUFFERED="1")
        env.pop("KUBECONFIG", None)
        cmd = [sys.executable, "-m", "jupyter_server", f"--config={cfg}", "--no-browser", "--allow-root",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.dir}"]
        self.log = os.path.join(self.dir, "server.log")
        self.proc = popen(cmd, env=env, log=self.log, cwd=self.dir)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.session.get(self.base + "api/status", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label} server did not start:\n{open(self.log).read()[-3000:]}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body=None, expect=(200,)):
        r = self.session.request(method, self.base + path, data=None if body is None else json.dumps(body),
                                 timeout=60)
        if r.status_code not in expect:
            raise RuntimeError(f"{self.label}: {method} {path} -> {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def stop(self):
        stop_tree(self.proc)


OURS_CONFIG = """
c.ServerApp.jpserver_extensions = {"jupyter_dask_kube": True, "dask_labextension": False}
c.DaskKube.backend = "local"
c.DaskKube.templates = %s
""" % json.dumps({
    "nanny": {"display_name": "bench, nanny", "workers": 4,
              "worker": {"kind": "Pod", "spec": {"containers": [
                  {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": WORKER_ARGS}]}}},
    "nonanny": {"display_name": "bench, no nanny", "workers": 4,
                "worker": {"kind": "Pod", "spec": {"containers": [
                    {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": WORKER_ARGS + ["--no-nanny"]}]}}},
})

LABEXT_CONFIG = """
c.ServerApp.jpserver_extensions = {"jupyter_dask_kube": False, "dask_labextension": True}
"""
# Written as labextension.yaml so dask_labextension's ensure_file() keeps it.
LABEXT_DASK_YAML = """
labextension:
  factory:
    module: 'dask.distributed'
    class: 'LocalCluster'
    args: []
    kwargs: {n_workers: 0, threads_per_worker: 1, memory_limit: 1GB, host: 127.0.0.1, dashboard_address: '127.0.0.1:0'}
  default:
    workers: 4
    adapt: null
  initial: []
"""


# -- (a) ours ------------------------------------------------------------------------------------------------
def ours_once(srv: Server, template: str) -> tuple[float, float]:
    before = descendants(srv.proc.pid)
    t0 = time.monotonic()
    model = srv.request("POST", "dask-kube/api/clusters", {"template": template, "workers": 4}, expect=(201,))
    cid = model["id"]
    deadline = t0 + 120
    while True:
        m = srv.request("GET", f"dask-kube/api/clusters/{cid}")
        if m["workers"] >= 4:
            break
        if m["status"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"ours {template}: {m['status']}: {m['message']}")
        time.sleep(POLL)
    up = time.monotonic() - t0
    mine = cluster_processes(srv.proc.pid, before)
    t0 = time.monotonic()
    srv.request("DELETE", f"dask-kube/api/clusters/{cid}", expect=(204,))
    answered = time.monotonic() - t0
    down = wait_gone(mine) - t0
    return up, down, answered


# -- (b) dask-labextension -----------------------------------------------------------------------------------
def labext_once(srv: Server) -> tuple[float, float]:
    before = descendants(srv.proc.pid)
    t0 = time.monotonic()
    model = srv.request("PUT", "dask/clusters", {})
    cid = model["id"]
    deadline = t0 + 180
    while model["workers"] < 4:
        time.sleep(POLL)
        model = srv.request("GET", f"dask/clusters/{cid}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dask-labextension: {model}")
    up = time.monotonic() - t0
    mine = cluster_processes(srv.proc.pid, before)
    t0 = time.monotonic()
    srv.request("DELETE", f"dask/clusters/{cid}", expect=(204,))
    answered = time.monotonic() - t0
    down = wait_gone(mine) - t0
    return up, down, answered


# -- (c) the floor ---------------------------------------------------------------------------------------------
async def _n_workers(addr: str) -> int:
    from distributed.core import rpc

    async with rpc(addr, timeout=1) as r:
        ident = await r.identity()
    return len(ident.get("workers", {}))


def floor_once(nanny: bool) -> tuple[float, float]:
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    py = sys.executable
    worker_flags = ["--nthreads", "1", "--memory-limit", "1GB", "--host", "127.0.0.1"] + ([] if nanny else ["--no-nanny"])
    t0 = time.monotonic()
    procs = [popen([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)])]
    procs += [popen([py, "-m", "distributed.cli.dask_worker", addr, *worker_flags]) for _ in range(4)]

    async def wait():
        while True:
            try:
                if await _n_workers(addr) >= 4:
                    return time.monotonic()
            except (OSError, EnvironmentError, asyncio.TimeoutError):
                pass  # not listening yet
            if time.monotonic() - t0 > 120:
                raise TimeoutError("floor: 4 workers not seen in 120 s")
            await asyncio.sleep(POLL)

    try:
        up = asyncio.run(wait()) - t0
    finally:
        t1 = time.monotonic()
        pids = set()
        for p in procs:
            pids |= descendants(p.pid) | {p.pid}
        # workers first, then the scheduler (a --no-nanny worker whose scheduler vanished first can
        # take a minute to exit on SIGTERM); whatever is left after 5 s is killed
        for p in procs[1:] + procs[:1]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(max(0.1, t1 + 5 - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for pid in alive(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        down = wait_gone(pids) - t1
        for p in procs:
            _started.remove(p)
    return up, down, down


# -- (d) GET latency with many clusters ------------------------------------------------------------------------
def get_latency(srv: Server, clusters: int, gets: int) -> dict:
    import concurrent.futures

    before = descendants(srv.proc.pid)
    t0 = time.monotonic()
    ids = [srv.request("POST", "dask-kube/api/clusters", {"template": "nanny", "workers": 0}, expect=(201,))["id"]
           for _ in range(clusters)]
    deadline = t0 + 600
    while True:
        models = srv.request("GET", "dask-kube/api/clusters")["clusters"]
        running = sum(m["status"] == "running" for m in models if m["id"] in ids)
        failed = [m for m in models if m["id"] in ids and m["status"] == "failed"]
        if failed:
            raise RuntimeError(f"cluster failed: {failed[0]['message']}")
        if running == clusters:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {running}/{clusters} clusters running")
        time.sleep(0.5)
    all_up = time.monotonic() - t0
    time.sleep(2)  # let start-up work settle
    lat = []
    for _ in range(gets):
        t = time.perf_counter()
        r = srv.session.get(srv.base + "dask-kube/api/clusters", timeout=30)
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200 and len(r.json()["clusters"]) == clusters
    size = len(r.content)
    lat.sort()
    mine = cluster_processes(srv.proc.pid, before)
    mem = 0
    for pid in mine:
        try:
            mem += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: srv.request("DELETE", f"dask-kube/api/clusters/{cid}", expect=(204,)), ids))
    down = wait_gone(mine) - t0
    return {"p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "max": lat[-1],
            "all_up": all_up, "down": down, "procs": len(mine), "rss": mem, "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--gets", type=int, default=200)
    ap.add_argument("--skip-labextension", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    res: dict[str, list] = {k: [] for k in ("ours-nanny", "ours-nonanny", "labext", "floor-nanny", "floor-nonanny")}
    ours = Server("ours", OURS_CONFIG, {})
    labext = None if args.skip_labextension else Server(
        "labext", LABEXT_CONFIG, {"labextension.yaml": LABEXT_DASK_YAML})
    try:
        say("warm-up (untimed): one cluster on each server")
        ours_once(ours, "nanny")
        if labext:
            labext_once(labext)
        for i in range(args.runs):
            res["ours-nanny"].append(ours_once(ours, "nanny"))
            res["ours-nonanny"].append(ours_once(ours, "nonanny"))
            if labext:
                res["labext"].append(labext_once(labext))
            res["floor-nanny"].append(floor_once(True))
            res["floor-nonanny"].append(floor_once(False))
            say(f"run {i + 1}/{args.runs}: " + "  ".join(
                f"{k} {v[-1][0]:.2f}s/{v[-1][1]:.2f}s" for k, v in res.items() if v))
        if labext:
            labext.stop()
        lat = None
        if not args.skip_latency:
            say(f"GET latency: creating {args.clusters} clusters of 0 workers")
            lat = get_latency(ours, args.clusters, args.gets)
    finally:
        ours.stop()
        if labext:
            labext.stop()

    med = statistics.median
    up = {k: med(x[0] for x in v) for k, v in res.items() if v}
    down = {k: med(x[1] for x in v) for k, v in res.items() if v}
    answer = {k: med(x[2] for x in v) for k, v in res.items() if v}
    names = {
        "ours-nanny": "ours POST -> 4 workers (nanny)",
        "ours-nonanny": "ours POST -> 4 workers (--no-nanny)",
        "labext": "dask-labextension PUT -> 4 (nanny)",
        "floor-nanny": "floor: scheduler + 4 workers (nanny)",
        "floor-nonanny": "floor: scheduler + 4 (--no-nanny)",
    }
    print()
    print(f"click to workers, local processes, median of {args.runs} (2 cores)")
    print(f"machine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f} (other work on the host "
          "skews every figure alike; compare the ratios)")
    print(f"{'what':<40}{'to 4 workers s':>15}{'DELETE answer s':>16}{'delete->gone s':>16}")
    for k in res:
        if k in up:
            a = f"{answer[k]:>16.2f}" if not k.startswith("floor") else f"{'(SIGTERM)':>16}"
            print(f"{names[k]:<40}{up[k]:>15.2f}{a}{down[k]:>16.2f}")
    if lat:
        print(f"GET dask-kube/api/clusters with {args.clusters} clusters ({lat['procs']} processes, "
              f"{lat['rss'] / 2**30:.1f} GiB RSS, {lat['bytes'] / 1024:.0f} KiB answer), {args.gets} GETs: "
              f"p50 {lat['p50'] * 1000:.2f} ms  p99 {lat['p99'] * 1000:.2f} ms  max {lat['max'] * 1000:.2f} ms "
              f"(all {args.clusters} running after {lat['all_up']:.1f}s; deleted, processes gone in {lat['down']:.2f}s)")
    ratios = []
    verdict = []
    if "labext" in up:
        r = up["ours-nanny"] / up["labext"]
        ratios.append(f"ours/labextension(nanny)={r:.2f}")
        verdict.append(f"<=0.5x labextension {'MET' if r <= 0.5 else 'MISSED'}")
    for v in ("nanny", "nonanny"):
        r = up[f"ours-{v}"] / up[f"floor-{v}"]
        ratios.append(f"ours/floor({v})={r:.2f}")
        verdict.append(f"<=1.2x floor ({v}) {'MET' if r <= 1.2 else 'MISSED'}")
    d = max(down["ours-nanny"], down["ours-nonanny"])
    ratios.append(f"DELETE->gone={d:.2f}s (/1s={d:.2f})")
    verdict.append(f"DELETE < 1 s {'MET' if d < 1 else 'MISSED'}")
    if lat:
        ratios.append(f"GET p50={lat['p50'] * 1000:.2f}ms (/5ms={lat['p50'] * 1000 / 5:.2f})")
        verdict.append(f"p50 < 5 ms {'MET' if lat['p50'] < 0.005 else 'MISSED'}")
    print("targets: " + "; ".join(verdict))
    print("RATIOS " + " ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
