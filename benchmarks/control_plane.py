"""Control plane: scale 0 -> 200 -> 0 worker pods on the no-process emulated Kubernetes API.

Issue target: "scale 0 -> 200 -> 0 pods on the no-process emulator, printing API calls made and wall time.
Target: 200 creates, no per-pod polling, under 1 s each way."

What is measured, per run (median of N runs, N = --runs, default 5):
- KubeCluster(deploy_mode="local", runtime=KubernetesRuntime(kubeconfig=<emulator>), asynchronous=True):
  the scheduler runs in this process, worker pods go to the emulator (EmulatedKubernetes(processes=False):
  pods turn Running at once, nothing runs). ``cluster.scale(200)`` is timed until the emulator holds 200
  pods, then ``cluster.scale(0)`` until it holds none. The emulator's pod count is read from its private
  GET /_emulator/stats endpoint over plain urllib (not through the kubernetes client, so it is not counted).
- API requests made by the product during each phase, counted client-side by wrapping
  ``kubernetes.client.rest.RESTClientObject.request`` in this script only, classified by verb
  (create, delete, list, watch, get-per-pod, patch, other).
- The floor, in the same run: the raw official client, 200 ``create_namespaced_pod`` (same manifests as the
  product sends, dict bodies, ``_preload_content=False`` as the product uses) from a 16-thread pool, then
  200 ``delete_namespaced_pod`` (grace 1, as the product) the same way, each timed until the emulator holds
  200 / 0 pods.

Run: ``python benchmarks/control_plane.py [--runs N] [--pods 200]``. Everything started here is stopped here.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

# Importing dask/distributed must not read or write the user's dask config.
os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp(prefix="bench-dask-config-"))
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

import logging  # noqa: E402

from kubernetes.client import rest as k8s_rest  # noqa: E402

from jupyter_dask_kube.testing import EmulatedKubernetes  # noqa: E402

TARGET_S = 1.0
WORKER_TEMPLATE = {
    "kind": "Pod",
    "spec": {
        "restartPolicy": "Never",
        "containers": [{
            "name": "dask",
            "image": "ghcr.io/dask/dask:latest",
            "args": ["dask-worker", "--nthreads", "1", "--memory-limit", "1GB"],
        }],
    },
}

# -- client-side request counting ---------------------------------------------------------------------
_counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()
_last_answer: dict[str, float] = {}  # when the last create / delete was answered (monotonic)
_POD_PATH = re.compile(r"/api/v1/namespaces/[^/]+/pods(/[^/?]+)?(/[^/?]+)?")


def classify(method: str, url: str) -> str:
    path, _, query = url.partition("?")
    m = _POD_PATH.search(path)
    named = bool(m and m.group(1))
    if method == "GET":
        if "watch=true" in query.lower() or "watch=1" in query or "/watch/" in path:
            return "watch"
        return "get-per-pod" if named else ("list" if m else "get-other")
    if method == "POST":
        return "create"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    if method == "PATCH":
        return "patch"
    if method == "PUT":
        return "update"
    return method.lower()


def install_counter() -> None:
    original = k8s_rest.RESTClientObject.request
    if getattr(original, "_bench_wrapped", False):
        return

    def request(self, method, url, *args, **kwargs):
        kind = classify(method, url)
        with _counts_lock:
            _counts[kind] += 1
        resp = original(self, method, url, *args, **kwargs)
        if kind in ("create", "delete"):
            _last_answer[kind] = time.monotonic()
        return resp

    request._bench_wrapped = True
    k8s_rest.RESTClientObject.request = request

    # TCP connections opened to the API: a client that reuses its pool opens ~1 per thread, not per call.
    import urllib3.connectionpool as cp

    # HTTPS pools (a real API server) have their own _new_conn that does not call the HTTP one.
    for pool in (cp.HTTPConnectionPool, cp.HTTPSConnectionPool):
        def counting_new_conn(self, _new_conn=pool._new_conn):
            with _counts_lock:
                _counts["new-connections"] += 1
            return _new_conn(self)

        pool._new_conn = counting_new_conn


def take_counts() -> collections.Counter:
    with _counts_lock:
        out = collections.Counter(_counts)
        _counts.clear()
    return out


# -- emulator pod count ---------------------------------------------------------------------------------
def pod_count(emu: EmulatedKubernetes) -> int:
    """Pods the API server holds, read outside the kubernetes client (so not counted). A real API server
    (benchmarks/real_apiserver.py) brings its own ``count_pods()``."""
    if hasattr(emu, "count_pods"):
        return emu.count_pods()
    with urllib.request.urlopen(f"{emu.url}/_emulator/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    return int(stats.get("objects", {}).get("pods", 0))


async def wait_pods(emu: EmulatedKubernetes, want: int, timeout: float = 120.0, interval: float = 0.005) -> float:
    """Poll (in a thread, off the cluster's loop) until the emulator holds ``want`` pods; monotonic time then."""
    deadline = time.monotonic() + timeout
    while True:
        n = await asyncio.to_thread(pod_count, emu)
        if n == want:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"emulator holds {n} pods, wanted {want}")
        await asyncio.sleep(interval)


# -- one product run ----------------------------------------------------------------------------------------
async def product_run(emu: EmulatedKubernetes, pods: int, idx: int) -> dict:
    from jupyter_dask_kube.cluster import KubeCluster
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    runtime = KubernetesRuntime(kubeconfig=emu.kubeconfig)
    cluster = await KubeCluster(
        WORKER_TEMPLATE, name="bench-cp-{uuid}", deploy_mode="local", runtime=runtime, asynchronous=True,
        username="bench",
    )
    try:
        assert pod_count(emu) == 0
        take_counts()  # startup (initial list + watch) is not part of the scale phases
        t0 = time.monotonic()
        cluster.scale(pods)
        t1 = await wait_pods(emu, pods)
        up = take_counts()
        up_s = t1 - t0
        up_answered = _last_answer["create"] - t0
        await asyncio.sleep(0.3)  # let watch events settle; nothing below counts them
        take_counts()
        t0 = time.monotonic()
        cluster.scale(0)
        t1 = await wait_pods(emu, 0)
        down = take_counts()
        down_s = t1 - t0
        down_answered = _last_answer["delete"] - t0
    finally:
        await cluster.close()
        await runtime.close()
    # *_answered: when the last create / delete got its answer (the rest is the API server's and node's part)
    return {"up_s": up_s, "down_s": down_s, "up": up, "down": down, "up_answered": up_answered,
            "down_answered": down_answered}


# -- one raw-client run -------------------------------------------------------------------------------------
def raw_run(emu: EmulatedKubernetes, pods: int, idx: int, threads: int = 16) -> dict:
    from kubernetes import client, config

    from jupyter_dask_kube.objects import build_worker_pod

    cfg = client.Configuration()
    config.load_kube_config(config_file=emu.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = threads
    api_client = client.ApiClient(configuration=cfg)
    core = client.CoreV1Api(api_client)
    ns = emu.namespace
    names = [f"raw-{idx}-worker-{i:04d}" for i in range(pods)]
    manifests = [build_worker_pod(WORKER_TEMPLATE, cluster_name=f"raw-{idx}", username="bench", worker_name=n,
                                  scheduler_address="tcp://127.0.0.1:8786") for n in names]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        # warm the connection pool (the product's runtime is warm too: it listed and watched first)
        list(pool.map(lambda _: core.list_namespaced_pod(ns, limit=1, _preload_content=False).data, range(threads)))
        take_counts()
        t0 = time.monotonic()
        # the body is read in the calling thread, so the connection goes back to the pool at once
        list(pool.map(lambda m: core.create_namespaced_pod(ns, m, _preload_content=False).data, manifests))
        up_answered = time.monotonic() - t0
        while pod_count(emu) != pods:
            time.sleep(0.005)
        up_s = time.monotonic() - t0
        up = take_counts()
        t0 = time.monotonic()
        list(pool.map(lambda n: core.delete_namespaced_pod(n, ns, grace_period_seconds=1,
                                                           _preload_content=False).data, names))
        down_answered = time.monotonic() - t0
        while pod_count(emu) != 0:
            time.sleep(0.005)
        down_s = time.monotonic() - t0
        down = take_counts()
    api_client.close()
    return {"up_s": up_s, "down_s": down_s, "up": up, "down": down, "up_answered": up_answered,
            "down_answered": down_answered}


def fmt_counts(c: collections.Counter) -> str:
    keys = ["create", "delete", "list", "watch", "get-per-pod", "patch", "deletecollection", "get-other", "update"]
    out = " ".join(f"{k}={c.get(k, 0)}" for k in keys if c.get(k, 0) or k in ("create", "delete", "list", "watch", "get-per-pod"))
    return out + f" | TCP connects={c.get('new-connections', 0)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    ap.add_argument("--pods", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    # "Connection pool is full, discarding connection" is counted (TCP connects column), not printed
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    install_counter()

    emu = EmulatedKubernetes(processes=False)
    emu.start()
    product, raw = [], []
    try:
        for i in range(args.runs):
            # alternate the order so neither side always runs on a warmer emulator
            if i % 2 == 0:
                product.append(asyncio.run(product_run(emu, args.pods, i)))
                raw.append(raw_run(emu, args.pods, i))
            else:
                raw.append(raw_run(emu, args.pods, i))
                product.append(asyncio.run(product_run(emu, args.pods, i)))
            p, r = product[-1], raw[-1]
            print(f"run {i + 1}/{args.runs}: KubeCluster up {p['up_s']:.3f}s down {p['down_s']:.3f}s | "
                  f"raw up {r['up_s']:.3f}s down {r['down_s']:.3f}s", file=sys.stderr, flush=True)
    finally:
        emu.stop()

    med = statistics.median
    p_up, p_down = med(x["up_s"] for x in product), med(x["down_s"] for x in product)
    r_up, r_down = med(x["up_s"] for x in raw), med(x["down_s"] for x in raw)
    # API calls: the same in every run for a correct product; show the median per verb and the max seen
    def med_counts(runs, phase):
        keys = set().union(*(r[phase].keys() for r in runs))
        return collections.Counter({k: int(med(r[phase].get(k, 0) for r in runs)) for k in keys})

    pu, pd, ru, rd = med_counts(product, "up"), med_counts(product, "down"), med_counts(raw, "up"), med_counts(raw, "down")
    max_gets = max(r[ph].get("get-per-pod", 0) for r in product for ph in ("up", "down"))

    print()
    print(f"control plane: scale 0 -> {args.pods} -> 0 pods, no-process emulated Kubernetes, median of {args.runs}")
    print(f"machine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f} (other work on the host "
          "skews every figure alike; compare the ratios)")
    print(f"{'what':<28}{'wall s':>9}{'/ 1 s':>8}  API calls (median per verb)")
    print(f"{'KubeCluster scale(' + str(args.pods) + ')':<28}{p_up:>9.3f}{p_up / TARGET_S:>8.2f}  {fmt_counts(pu)}")
    print(f"{'KubeCluster scale(0)':<28}{p_down:>9.3f}{p_down / TARGET_S:>8.2f}  {fmt_counts(pd)}")
    print(f"{'raw client, 16 threads, up':<28}{r_up:>9.3f}{r_up / TARGET_S:>8.2f}  {fmt_counts(ru)}")
    print(f"{'raw client, 16 threads, down':<28}{r_down:>9.3f}{r_down / TARGET_S:>8.2f}  {fmt_counts(rd)}")
    print(f"per-pod GETs by KubeCluster (max over runs, both ways): {max_gets}")
    ok_up = p_up < TARGET_S and pu.get("create", 0) == args.pods
    ok_down = p_down < TARGET_S
    print(f"targets: up < 1 s {'MET' if ok_up else 'MISSED'}; down < 1 s {'MET' if ok_down else 'MISSED'}; "
          f"{args.pods} creates {'MET' if pu.get('create', 0) == args.pods else 'MISSED'}; "
          f"no per-pod polling {'MET' if max_gets == 0 else 'MISSED'}")
    print(f"RATIOS up/1s={p_up / TARGET_S:.2f} down/1s={p_down / TARGET_S:.2f} "
          f"KubeCluster/raw up={p_up / r_up:.2f} down={p_down / r_down:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
