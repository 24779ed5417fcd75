"""The real kube-apiserver: the control-plane and click-to-workers figures again, on Kubernetes v1.20.2.

Issue 10 targets: "scale 0 -> 200 -> 0 worker pods on the real API server, with the agent in no-process mode;
the ratio to the raw client from 16 threads in the same run (target <= 1.3x)" and "create-to-4-workers on the
real API server with processes; the ratio to the local runtime in the same run".

Two parts, each against its own ``python -m jupyter_dask_kube.testing --real`` subprocess (etcd, kube-apiserver,
kube-controller-manager on 127.0.0.1 and the node agent, which binds pods, posts their status and finishes
their deletion, as kubelet and scheduler do):
(1) ``--no-processes``: benchmarks/control_plane.py's two runs, reused as they are: KubeCluster(deploy_mode=
    "local").scale(200) then scale(0) timed until the API server holds 200 / 0 pods, against the raw official
    client creating then deleting the same 200 manifests from 16 threads; API calls counted client-side. The
    pod count is read with one ``limit=1`` list (its remainingItemCount) over plain urllib, not counted. A
    deleted pod counts until the agent's final delete, as on a real cluster.
(2) pods as processes: two Jupyter servers started as benchmarks/click_to_workers.py starts them, one with
    c.DaskKube.backend="kubernetes" (KUBECONFIG = the real API server's admin kubeconfig), one with "local";
    POST a 4-worker cluster (nanny template) timed until GET says 4 workers, DELETE timed until every
    process of the cluster is gone (under the node agent's process, or the Jupyter server's).

Run: ``make bench-real`` or ``python benchmarks/real_apiserver.py [--runs N] [--pods 200] [--skip-scale]
[--skip-click]``. Needs the binaries (``make kube-binaries``). Everything started here is stopped here.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import click_to_workers as ctw  # noqa: E402  (sets DASK_CONFIG, cleanup of everything it starts)
import control_plane as cpb  # noqa: E402

from jupyter_dask_kube.testing.controlplane import count_pods, missing  # noqa: E402

RAW_RATIO_TARGET = 1.3


class RealAPIServer:
    """``python -m jupyter_dask_kube.testing --real`` in a subprocess: the attributes the control_plane.py runs
    use (``kubeconfig``, ``namespace``, ``url``, ``count_pods()``) and the process the pods run under."""

    def __init__(self, processes: bool):
        self.namespace = "default"
        self.log = os.path.join(ctw.WORK, f"real-{'proc' if processes else 'noproc'}.log")
        cmd = [sys.executable, "-m", "jupyter_dask_kube.testing", "--real"] + ([] if processes else ["--no-processes"])
        self.proc = ctw.popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), log=self.log)
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the real control plane did not start:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        self.kubeconfig = re.search(r"Admin kubeconfig written to (\S+)", self.text()).group(1)
        self.url = re.search(r"ready: (\S+)", self.text()).group(1)

    def text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def count_pods(self) -> int:
        return count_pods(self.kubeconfig, self.namespace)

    def stop(self) -> None:
        ctw.stop_tree(self.proc)


def scale_part(runs: int, pods: int, say) -> dict:
    cpb.install_counter()
    real = RealAPIServer(processes=False)
    product, raw = [], []
    try:
        for i in range(runs):
            # alternate the order so neither side always runs on a warmer API server
            order = [("product", lambda: asyncio.run(cpb.product_run(real, pods, i))),
                     ("raw", lambda: cpb.raw_run(real, pods, i))]
            for name, run in (order if i % 2 == 0 else order[::-1]):
                (product if name == "product" else raw).append(run())
            p, r = product[-1], raw[-1]
            say(f"scale run {i + 1}/{runs}: KubeCluster up {p['up_s']:.3f}s (answered {p['up_answered']:.3f}s) "
                f"down {p['down_s']:.3f}s ({p['down_answered']:.3f}s) | raw up {r['up_s']:.3f}s "
                f"({r['up_answered']:.3f}s) down {r['down_s']:.3f}s ({r['down_answered']:.3f}s)")
    finally:
        real.stop()
    med = statistics.median
    return {"p_up": med(x["up_s"] for x in product), "p_down": med(x["down_s"] for x in product),
            "r_up": med(x["up_s"] for x in raw), "r_down": med(x["down_s"] for x in raw),
            **{f"{side}_{ph}_answered": med(x[f"{ph}_answered"] for x in runs_)
               for side, runs_ in (("p", product), ("r", raw)) for ph in ("up", "down")},
            "p_counts": (product[-1]["up"], product[-1]["down"]), "r_counts": (raw[-1]["up"], raw[-1]["down"]),
            "max_gets": max(r[ph].get("get-per-pod", 0) for r in product for ph in ("up", "down"))}


def click_part(runs: int, launcher: str, say) -> dict:
    kube_config = ctw.OURS_CONFIG.replace('c.DaskKube.backend = "local"', 'c.DaskKube.backend = "kubernetes"')
    assert kube_config != ctw.OURS_CONFIG
    real = RealAPIServer(processes=True)
    kube = local = None
    res = {"kubernetes": [], "local": []}
    try:
        kube = ctw.JupyterServer("ours-real-kube", launcher, kube_config, {}, absent="dask/clusters",
                                 kubeconfig=real.kubeconfig)
        local = ctw.JupyterServer("ours-local", launcher, ctw.OURS_CONFIG, {}, absent="dask/clusters")
        say("warm-up (untimed): one cluster on each server")
        ctw.ours_once(kube, "nanny", tree_pid=real.proc.pid)
        ctw.ours_once(local, "nanny")
        for i in range(runs):
            order = [("kubernetes", lambda: ctw.ours_once(kube, "nanny", tree_pid=real.proc.pid)),
                     ("local", lambda: ctw.ours_once(local, "nanny"))]
            for name, run in (order if i % 2 == 0 else order[::-1]):
                res[name].append(run())
            say(f"click run {i + 1}/{runs}: " + "  ".join(f"{k} {v[-1][0]:.2f}s/{v[-1][1]:.2f}s"
                                                           for k, v in res.items()))
    finally:
        for srv in (kube, local):
            if srv:
                srv.stop()
        real.stop()
    med = statistics.median
    return {k: {"up": med(x[0] for x in v), "answer": med(x[2] for x in v), "down": med(x[1] for x in v),
                "procs": max(x[3] for x in v)} for k, v in res.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--launcher", choices=sorted(ctw.LAUNCHERS), default="lab")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-click", action="store_true")
    args = ap.parse_args()
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 1
    import logging
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    # Each part prints as soon as it is measured: a failure in the second keeps the first's figures.
    print(f"real kube-apiserver v1.20.2 (etcd 3.4, 127.0.0.1), node agent; median of {args.runs}; "
          f"machine: {os.cpu_count()} cores (other work on the host skews every figure alike; compare the ratios)")
    ratios, verdict = [], []
    if not args.skip_scale:
        s = scale_part(args.runs, args.pods, say)
        print(f"(1) scale 0 -> {args.pods} -> 0 pods, agent without processes; load average now "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'what':<30}{'wall s':>9}{'answered s':>12}  API calls")
        for label, key, counts in (
                (f"KubeCluster scale({args.pods})", "p_up", s["p_counts"][0]),
                ("KubeCluster scale(0)", "p_down", s["p_counts"][1]),
                ("raw client, 16 threads, up", "r_up", s["r_counts"][0]),
                ("raw client, 16 threads, down", "r_down", s["r_counts"][1])):
            print(f"{label:<30}{s[key]:>9.3f}{s[key + '_answered']:>12.3f}  {cpb.fmt_counts(counts)}")
        print("(answered: the last create / delete answered; wall: until the API server holds that many pods, "
              "a deleted pod counting until the agent's final delete)")
        up, down = s["p_up"] / s["r_up"], s["p_down"] / s["r_down"]
        ratios.append(f"KubeCluster/raw up={up:.2f} down={down:.2f}")
        verdict.append(f"<= {RAW_RATIO_TARGET}x raw client up {'MET' if up <= RAW_RATIO_TARGET else 'MISSED'}, "
                       f"down {'MET' if down <= RAW_RATIO_TARGET else 'MISSED'}")
        verdict.append(f"no per-pod polling {'MET' if s['max_gets'] == 0 else 'MISSED'}")
        print(f"RATIOS {ratios[-1]}", flush=True)
    if not args.skip_click:
        click = click_part(args.runs, args.launcher, say)
        print(f"(2) POST a 4-worker cluster (nanny) -> 4 workers, pods as processes; load average now "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'what':<40}{'to 4 workers s':>15}{'DELETE answer s':>16}{'delete->gone s':>16}{'processes':>10}")
        for k, label in (("kubernetes", "ours, real kube-apiserver + node agent"), ("local", "ours, local runtime")):
            c = click[k]
            print(f"{label:<40}{c['up']:>15.2f}{c['answer']:>16.2f}{c['down']:>16.2f}{c['procs']:>10}")
        ratios.append(f"real-apiserver/local up={click['kubernetes']['up'] / click['local']['up']:.2f} "
                      f"down={click['kubernetes']['down'] / click['local']['down']:.2f}")
    if verdict:
        print("targets: " + "; ".join(verdict))
    print("RATIOS " + " ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
