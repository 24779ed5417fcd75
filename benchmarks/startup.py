"""Start-up and memory: the fork server started with the extension, the first cluster after a start, and the
memory (PSS) of a 4-worker local cluster against dask-labextension's LocalCluster, all in one run.

Issue #15 targets: "The fork server starts when the extension loads, in the background. The server's own
start-up time stays within 5 % of what it is now. The first cluster after a start takes <= 1.2 x a warm one."
"Memory: the PSS (shared pages counted once) of a 4-worker local cluster is <= that of dask-labextension's
LocalCluster with the same workers, measured in the same run."

Servers, templates and launcher are those of ``click_to_workers.py`` (imported): real ``jupyter lab --no-browser``
servers on 127.0.0.1 with token auth, 4 workers ``dask-worker --nthreads 1 --no-dashboard --memory-limit 1GB``,
each with a nanny (template "nanny"; LocalCluster runs a nanny per worker too).

(a) Server start-up, ``--runs`` times, alternating: our server with ``kubernetes.local.fork-server-at-start``
    true (now) and false (as before: the first pod started the fork server). Timed from starting the process
    until GET api/status answers 200 (polled every 20 ms).
(b) First cluster after a start: on each "at start" server, POST (template "nanny", 4 workers) as soon as
    api/status answers, timed until GET clusters/{id} says "workers": 4 (polled every 50 ms); then DELETE, and
    two more clusters on the same server: the second of those is the warm one. The "at start: false" servers'
    first cluster is timed the same way, for comparison (what a first cluster cost before).
(c) Memory, once (``--mem-runs``, default 3, median): on one server each, ours (at start) and dask-labextension
    (PUT /dask/clusters, ``labextension.default.workers: 4``), a 4-worker cluster is started and, once its 4
    workers are connected and 2 s have passed, PSS is summed over the server and every process under it (so
    pages shared by forks count once), minus the PSS of the server process alone before its first cluster
    (taken 3 s after it answered). So ours includes the whole fork server (started before the cluster) and
    every process of the cluster; dask-labextension includes its scheduler (inside the Jupyter server) and its
    nannies and workers. psutil ``memory_full_info().pss``.

Run: ``python benchmarks/startup.py [--runs 5] [--mem-runs 3] [--launcher lab|server-module]
[--skip-labextension] [--post-delay S]``. Prints a table and a RATIOS line. Every process started here is stopped here.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import click_to_workers as ctw  # noqa: E402  (servers, templates, cleanup: one place)

import psutil  # noqa: E402
import requests  # noqa: E402

READY_POLL = 0.02


class TimedServer(ctw.JupyterServer):
    """click_to_workers' Jupyter server, timed from process start to the first 200 of api/status."""

    def start(self, cmd, env, ready_url, timeout=180):
        t0 = time.monotonic()
        self.proc = ctw.popen(cmd, env=env, log=self.log, cwd=self.dir)
        while True:
            try:
                if self.session.get(ready_url, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.label} did not start:\n{self.log_tail()}")
            time.sleep(READY_POLL)
        self.started_in = time.monotonic() - t0
        self.baseline_pss = None


def our_server(launcher: str, at_start: bool) -> TimedServer:
    saved = os.environ.get("DASK_KUBERNETES__LOCAL__FORK_SERVER_AT_START")
    os.environ["DASK_KUBERNETES__LOCAL__FORK_SERVER_AT_START"] = "true" if at_start else "false"
    try:
        return TimedServer(f"ours-{'start' if at_start else 'lazy'}-{time.monotonic_ns()}", launcher,
                           ctw.OURS_CONFIG, {}, absent="dask/clusters")
    finally:
        if saved is None:
            os.environ.pop("DASK_KUBERNETES__LOCAL__FORK_SERVER_AT_START")
        else:
            os.environ["DASK_KUBERNETES__LOCAL__FORK_SERVER_AT_START"] = saved


def pss(pids) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_full_info().pss
    return total


def tree(pid: int) -> set[int]:
    return {pid} | ctw.descendants(pid)


def cluster_pss(srv: TimedServer, create, n_workers, shutdown, settle: float = 2.0) -> tuple[int, int]:
    """(PSS of the server's tree with a 4-worker cluster up minus the server's own baseline, processes)."""
    handle = create()
    try:
        t0 = time.monotonic()
        while n_workers(handle) < ctw.WORKERS:
            if time.monotonic() - t0 > 180:
                raise TimeoutError(f"{srv.label}: 4 workers not seen in 180 s")
            time.sleep(ctw.POLL)
        time.sleep(settle)
        pids = tree(srv.proc.pid)
        return pss(pids) - srv.baseline_pss, len(pids) - 1
    finally:
        shutdown(handle)


def baseline(srv: TimedServer) -> None:
    time.sleep(3)
    srv.baseline_pss = pss([srv.proc.pid])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--mem-runs", type=int, default=3)
    ap.add_argument("--launcher", choices=sorted(ctw.LAUNCHERS), default="lab")
    ap.add_argument("--skip-labextension", action="store_true")
    ap.add_argument("--post-delay", type=float, default=0.0,
                    help="seconds between the server's first answer and the first POST (0: at once; a user's "
                         "browser needs some seconds to load Lab before anyone can click)")
    args = ap.parse_args()

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    start = {True: [], False: []}
    first = {True: [], False: []}
    warm = []
    for i in range(args.runs):
        for at_start in (True, False) if i % 2 == 0 else (False, True):
            srv = our_server(args.launcher, at_start)
            try:
                start[at_start].append(srv.started_in)
                time.sleep(args.post_delay)
                first[at_start].append(ctw.ours_once(srv, "nanny")[0])
                if at_start:
                    ctw.ours_once(srv, "nanny")
                    warm.append(ctw.ours_once(srv, "nanny")[0])
            finally:
                srv.stop()
        say(f"run {i + 1}/{args.runs}: start-up at-start {start[True][-1]:.2f}s lazy {start[False][-1]:.2f}s; "
            f"first cluster at-start {first[True][-1]:.2f}s lazy {first[False][-1]:.2f}s; warm {warm[-1]:.2f}s")

    mem = {"ours": [], "labext": []}
    procs = {}
    ours = labext = None
    try:
        ours = our_server(args.launcher, True)
        baseline(ours)
        if not args.skip_labextension:
            labext = TimedServer("labext-mem", args.launcher, ctw.LABEXT_CONFIG,
                                 {"labextension.yaml": ctw.LABEXT_DASK_YAML}, absent="dask-kube/api/clusters")
            baseline(labext)
        for i in range(args.mem_runs):
            m, procs["ours"] = cluster_pss(
                ours,
                lambda: ours.request("POST", "dask-kube/api/clusters", {"template": "nanny", "workers": ctw.WORKERS},
                                     expect=(201,))["id"],
                lambda cid: ours.request("GET", f"dask-kube/api/clusters/{cid}")["workers"],
                lambda cid: ours.request("DELETE", f"dask-kube/api/clusters/{cid}", expect=(204,)))
            mem["ours"].append(m)
            if labext:
                m, procs["labext"] = cluster_pss(
                    labext, lambda: labext.request("PUT", "dask/clusters", {})["id"],
                    lambda cid: labext.request("GET", f"dask/clusters/{cid}")["workers"],
                    lambda cid: labext.request("DELETE", f"dask/clusters/{cid}", expect=(204,)))
                mem["labext"].append(m)
            time.sleep(2)
            say(f"memory run {i + 1}/{args.mem_runs}: " + "  ".join(
                f"{k} {v[-1] / 2**20:.0f} MiB" for k, v in mem.items() if v))
    finally:
        for srv in (ours, labext):
            if srv:
                srv.stop()

    med = statistics.median
    s_on, s_off = med(start[True]), med(start[False])
    f_on, f_off, w = med(first[True]), med(first[False]), med(warm)
    print()
    print(f"start-up and memory, local runtime, {args.runs} servers of each kind (median); launcher {args.launcher}")
    print(f"machine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}")
    print(f"{'what':<66}{'seconds / MiB':>14}")
    print(f"{'server start -> api/status 200, fork server at start':<66}{s_on:>14.2f}")
    print(f"{'server start -> api/status 200, fork server with the first pod':<66}{s_off:>14.2f}")
    when = "at once" if not args.post_delay else f"after {args.post_delay:g} s"
    print(f"{f'first cluster (POST {when}) -> 4 nanny workers, fork server at start':<66}{f_on:>14.2f}")
    print(f"{'first cluster -> 4 nanny workers, fork server with the first pod':<66}{f_off:>14.2f}")
    print(f"{'warm cluster (3rd on the same server) -> 4 nanny workers':<66}{w:>14.2f}")
    for k, label in (("ours", "ours: PSS of a 4-worker cluster (+ fork server)"),
                     ("labext", "dask-labextension LocalCluster, 4 workers: PSS")):
        if mem[k]:
            print(f"{label + f' ({procs[k]} processes)':<66}{med(mem[k]) / 2**20:>14.0f}")
    ratios = [f"start-up(at-start/lazy)={s_on / s_off:.3f}", f"first/warm={f_on / w:.2f}",
              f"first-before/warm={f_off / w:.2f}"]
    verdict = [f"start-up within 5 % {'MET' if s_on / s_off <= 1.05 else 'MISSED'}",
               f"first <= 1.2 x warm {'MET' if f_on / w <= 1.2 else 'MISSED'}"]
    if mem["labext"]:
        r = med(mem["ours"]) / med(mem["labext"])
        ratios.append(f"PSS(ours/labextension)={r:.2f}")
        verdict.append(f"PSS <= dask-labextension {'MET' if r <= 1 else 'MISSED'}")
    print("targets: " + "; ".join(verdict))
    print("RATIOS " + " ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
