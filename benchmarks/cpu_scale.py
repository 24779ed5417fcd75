"""CPU of this process per worker pod when scaling 0 -> N -> 0, KubeCluster vs the raw client (a profile, not a race).

Wall-clock figures move with the host's load; CPU seconds spent by the process that scales do not (much). This
script runs benchmarks/control_plane.py's two sides against an API server in ANOTHER process (so its CPU is not
counted): ``python -m jupyter_dask_kube.testing --no-processes`` (default), or ``--real`` (kube-apiserver
v1.20.2 with the node agent in no-process mode, ``make kube-binaries`` first). Per run it reports
``time.process_time()`` of this process (every thread) divided by the pod count, for:
- KubeCluster(deploy_mode="local").scale(N) until its pod cache holds N Running pods (the watch's events
  included: they are part of what the product does), then scale(0) until the cache holds none;
- the raw official client: N ``create_namespaced_pod`` (the same manifests, dict bodies, 16 threads) until
  all are answered, then N ``delete_namespaced_pod``.
No polling of the API server runs in this process while CPU is measured. ``--profile FILE`` also writes a
cProfile of every thread (the event loop and the API threads) of the product's scale-up, merged.

Run: ``python benchmarks/cpu_scale.py [--runs 5] [--pods 200] [--real] [--profile /tmp/up.prof]``.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import os
import pstats
import re
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import click_to_workers as ctw  # noqa: E402  (sets DASK_CONFIG; popen / stop_tree of what it starts)
import control_plane as cpb  # noqa: E402

import logging  # noqa: E402


class APIServer:
    """The API server in a subprocess: ``kubeconfig`` and ``namespace`` as control_plane.py's runs use them."""

    def __init__(self, real: bool):
        self.namespace = "default"
        self.log = os.path.join(ctw.WORK, f"cpu-{'real' if real else 'emu'}.log")
        kc = os.path.join(tempfile.mkdtemp(prefix="cpu-scale-"), "kubeconfig")
        cmd = [sys.executable, "-m", "jupyter_dask_kube.testing", "--no-processes"]
        cmd += ["--real"] if real else ["--kubeconfig", kc]
        self.proc = ctw.popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), log=self.log)
        mark = "Press Ctrl-C" if real else "Emulated Kubernetes API listening on "
        deadline = time.monotonic() + 180
        while mark not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        self.kubeconfig = re.search(r"Admin kubeconfig written to (\S+)", self.text()).group(1) if real else kc

    def text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        ctw.stop_tree(self.proc)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads by role (each thread's own CPU clock: no profiler, no overhead)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, TypeError):  # ended meanwhile
            continue
        name = t.name
        role = ("event loop" if name == "MainThread" else "API threads" if name.startswith("k8s-api")
                else "watch thread" if name.startswith("k8s-watch") else "other")
        out[role] = out.get(role, 0.0) + cpu
    return out


def cpu_delta(before: dict, after: dict) -> dict:
    # a thread that ended in between is missing from "after": roles are compared as sums, clamped at 0
    return {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in set(before) | set(after)}


class ThreadProfiles:
    """One cProfile per thread (cProfile sees only the thread that enabled it), merged at the end."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def start_here(self):
        p = cProfile.Profile(time.thread_time)  # CPU, not wall: waits on the network do not count
        with self.lock:
            self.profiles.append(p)
        p.enable()
        threading.current_thread()._cpu_profile = p

    @staticmethod
    def stop_here():
        p = getattr(threading.current_thread(), "_cpu_profile", None)
        if p is not None:
            p.disable()

    def stop_pool(self, pool: concurrent.futures.ThreadPoolExecutor, n: int):
        barrier = threading.Barrier(n, timeout=10)

        def stop():
            self.stop_here()
            try:
                barrier.wait()  # one task per thread: each waits until all n threads hold one
            except threading.BrokenBarrierError:
                pass

        list(pool.map(lambda _: stop(), range(n)))

    def dump(self, path: str):
        stats = None
        for p in self.profiles:
            p.create_stats()
            if stats is None:
                stats = pstats.Stats(p)
            else:
                stats.add(p)
        stats.dump_stats(path)
        return stats


async def product_run(api: APIServer, pods: int, profile: ThreadProfiles | None) -> dict:
    from jupyter_dask_kube.cluster import KubeCluster
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    runtime = KubernetesRuntime(kubeconfig=api.kubeconfig)
    if profile is not None:
        runtime._pool.shutdown()
        runtime._pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="k8s-api",
                                                              initializer=profile.start_here)
    cluster = await KubeCluster(cpb.WORKER_TEMPLATE, name="cpu-{uuid}", deploy_mode="local", runtime=runtime,
                                asynchronous=True, username="bench")
    cache = cluster.pod_cache

    running: set[str] = set()  # kept by a listener: the wait below costs O(1) per event, not O(pods)

    def on_event(etype, pod):
        name = pod["metadata"]["name"]
        if etype != "DELETED" and (pod.get("status") or {}).get("phase") == "Running":
            running.add(name)
        else:
            running.discard(name)

    unsubscribe = cache.subscribe(on_event)

    try:
        if profile is not None:  # every API thread started (and profiling) before the timed part
            list(runtime._pool.map(lambda _: time.sleep(0.05), range(16)))
            profile.start_here()
        c0, t0, th0 = time.process_time(), time.monotonic(), thread_cpu()
        cluster.scale(pods)
        await cache.wait_for(lambda: len(running) == pods and len(cache.pods) == pods, 300)
        up_cpu, up_s, up_threads = time.process_time() - c0, time.monotonic() - t0, cpu_delta(th0, thread_cpu())
        if profile is not None:
            profile.stop_here()
            await asyncio.get_running_loop().run_in_executor(None, profile.stop_pool, runtime._pool, 16)
        await asyncio.sleep(0.3)
        c0, t0, th0 = time.process_time(), time.monotonic(), thread_cpu()
        cluster.scale(0)
        await cache.wait_for(lambda: not cache.pods, 300)
        down_cpu, down_s, down_threads = time.process_time() - c0, time.monotonic() - t0, cpu_delta(th0, thread_cpu())
    finally:
        unsubscribe()
        await cluster.close()
        await runtime.close()
    return {"up_cpu": up_cpu, "down_cpu": down_cpu, "up_s": up_s, "down_s": down_s, "up_threads": up_threads,
            "down_threads": down_threads}


def raw_run(api: APIServer, pods: int, idx: int, threads: int = 16) -> dict:
    from kubernetes import client, config

    from jupyter_dask_kube.objects import build_worker_pod

    cfg = client.Configuration()
    config.load_kube_config(config_file=api.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = threads
    api_client = client.ApiClient(configuration=cfg)
    core = client.CoreV1Api(api_client)
    ns = api.namespace
    names = [f"cpu-raw-{idx}-worker-{i:04d}" for i in range(pods)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: core.list_namespaced_pod(ns, limit=1, _preload_content=False).data, range(threads)))
        c0, t0 = time.process_time(), time.monotonic()
        # the manifests are built inside the timed part, as the product builds its own
        manifests = [build_worker_pod(cpb.WORKER_TEMPLATE, cluster_name=f"cpu-raw-{idx}", username="bench",
                                      worker_name=n, scheduler_address="tcp://127.0.0.1:8786") for n in names]
        list(pool.map(lambda m: core.create_namespaced_pod(ns, m, _preload_content=False).data, manifests))
        up_cpu, up_s = time.process_time() - c0, time.monotonic() - t0
        time.sleep(0.3)
        c0, t0 = time.process_time(), time.monotonic()
        list(pool.map(lambda n: core.delete_namespaced_pod(n, ns, grace_period_seconds=1,
                                                           _preload_content=False).data, names))
        down_cpu, down_s = time.process_time() - c0, time.monotonic() - t0
        # wait (untimed) until the pods are gone, so the next run starts on an empty namespace
        deadline = time.monotonic() + 120
        while core.list_namespaced_pod(ns, limit=1, _preload_content=False).data.find(b'"items":[]') < 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    api_client.close()
    return {"up_cpu": up_cpu, "down_cpu": down_cpu, "up_s": up_s, "down_s": down_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--real", action="store_true", help="the real kube-apiserver v1.20.2 (make kube-binaries)")
    ap.add_argument("--profile", default=None, help="write a cProfile (all threads) of the last product scale-up")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    api = APIServer(real=args.real)
    product, raw = [], []
    try:
        # one untimed warm-up of each side: imports, first connections
        asyncio.run(product_run(api, 10, None))
        raw_run(api, 10, -1)
        for i in range(args.runs):
            prof = ThreadProfiles() if args.profile and i == args.runs - 1 else None
            runs = [lambda: product.append(asyncio.run(product_run(api, args.pods, prof))),
                    lambda: raw.append(raw_run(api, args.pods, i))]
            for run in (runs if i % 2 == 0 else runs[::-1]):
                run()
            p, r = product[-1], raw[-1]
            print(f"run {i + 1}/{args.runs}: CPU ms/pod KubeCluster up {p['up_cpu'] * 1e3 / args.pods:.2f} "
                  f"down {p['down_cpu'] * 1e3 / args.pods:.2f} | raw up {r['up_cpu'] * 1e3 / args.pods:.2f} "
                  f"down {r['down_cpu'] * 1e3 / args.pods:.2f}  (wall up {p['up_s']:.2f}s/{r['up_s']:.2f}s)",
                  file=sys.stderr, flush=True)
            if prof is not None:
                prof.dump(args.profile)
    finally:
        api.stop()

    med = statistics.median
    n = args.pods
    pu, pd = med(x["up_cpu"] for x in product) * 1e3 / n, med(x["down_cpu"] for x in product) * 1e3 / n
    ru, rd = med(x["up_cpu"] for x in raw) * 1e3 / n, med(x["down_cpu"] for x in raw) * 1e3 / n
    print(f"CPU of this process per pod, {'real kube-apiserver' if args.real else 'emulated API'} in another "
          f"process, median of {args.runs}, load average {os.getloadavg()[0]:.1f}")
    print(f"  KubeCluster scale({n}) {pu:.2f} ms/pod (watch events included), raw client {ru:.2f} ms/pod -> {pu / ru:.2f} x")
    print(f"  KubeCluster scale(0)   {pd:.2f} ms/pod (watch events included), raw client {rd:.2f} ms/pod -> {pd / rd:.2f} x")
    for phase in ("up", "down"):
        roles = sorted(set().union(*(x[f"{phase}_threads"] for x in product)))
        print(f"  KubeCluster {phase}, ms/pod by thread (median): " + ", ".join(
            f"{r} {med(x[f'{phase}_threads'].get(r, 0.0) for x in product) * 1e3 / n:.2f}" for r in roles))
    print(f"CPU RATIOS up={pu / ru:.2f} down={pd / rd:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
