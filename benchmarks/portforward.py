"""What a port-forwarded connection to the scheduler costs against a direct one, measured in the same run.

One cluster (1 worker, nanny) on the real kube-apiserver v1.20.2 (``python -m jupyter_dask_kube.testing --real``,
default) or on the emulator (``--target emulator``), made with ``port_forward="always"``: the same scheduler is
then reachable two ways from this process, directly (the Service's clusterIP, which the node agent proxies as
kube-proxy would) and through the forwarder (its loopback listener -> the official client's pods/portforward WebSocket ->
API server -> the node agent's kubelet port -> the pod). Per run, alternating which route goes first:
- connect: ``Client(address)`` until it is connected (a new forwarded connection is a new WebSocket upgrade);
- round trips: N sequential ``client.submit(inc, i).result()`` (small tasks, latency-bound);
- 50 MB: one task's 50 MB bytes result gathered to the client (through the scheduler, as a client outside the
  cluster must: it cannot reach the worker either).
Prints medians and forwarded/direct ratios. ``python benchmarks/portforward.py [--runs 5] [--tasks 200]
[--megabytes 50] [--target real|emulator]``. Everything started here is stopped here.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import click_to_workers as ctw  # noqa: E402,F401  (sets DASK_CONFIG; stops what it starts)

from distributed import Client  # noqa: E402

from jupyter_dask_kube import KubeCluster  # noqa: E402


def inc(x):
    return x + 1


def blob(n):
    return b"x" * n


async def measure(address: str, tasks: int, nbytes: int) -> dict:
    t0 = time.perf_counter()
    client = await Client(address, asynchronous=True)
    connect = time.perf_counter() - t0
    try:
        await client.submit(inc, -1, pure=False)  # warm: the function is known to the worker
        t0 = time.perf_counter()
        for i in range(tasks):
            assert await client.submit(inc, i, pure=False) == i + 1
        trips = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = await client.submit(blob, nbytes, pure=False)
        move = time.perf_counter() - t0
        assert len(data) == nbytes
    finally:
        await client.close()
    return {"connect": connect, "trips": trips, "move": move}


async def main(args) -> None:
    target = None
    if args.target == "real":
        from real_apiserver import RealAPIServer

        from jupyter_dask_kube.testing.controlplane import missing

        why = missing()
        if why:
            sys.exit(f"the real API server is not available ({why}); run `make kube-binaries` or use --target emulator")
        target = RealAPIServer(processes=True)
        kubeconfig, namespace = target.kubeconfig, target.namespace
    else:
        from jupyter_dask_kube.testing import EmulatedKubernetes

        target = EmulatedKubernetes(processes=True).start()
        kubeconfig, namespace = target.kubeconfig, target.namespace
    os.environ["KUBECONFIG"] = kubeconfig
    pod = {"kind": "Pod", "spec": {"restartPolicy": "Never", "containers": [{
        "name": "dask", "image": "ghcr.io/dask/dask:latest",
        "args": ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GB"]}]}}
    cluster = None
    try:
        cluster = await KubeCluster(pod, n_workers=1, name="bench-pf-{uuid}", namespace=namespace,
                                    port_forward="always", asynchronous=True)
        await cluster.wait_for_workers(1, timeout=180)
        routes = {"direct": cluster.scheduler.address, "forwarded": cluster.scheduler_address}
        print(f"direct {routes['direct']}  forwarded {routes['forwarded']}  ({args.target} API server)", flush=True)
        res = {k: [] for k in routes}
        for i in range(args.runs):
            order = list(routes) if i % 2 == 0 else list(routes)[::-1]
            for name in order:
                res[name].append(await measure(routes[name], args.tasks, args.megabytes * 1_000_000))
            d, f = res["direct"][-1], res["forwarded"][-1]
            print(f"run {i + 1}/{args.runs}: connect {d['connect'] * 1e3:.1f} / {f['connect'] * 1e3:.1f} ms, "
                  f"{args.tasks} round trips {d['trips']:.3f} / {f['trips']:.3f} s, "
                  f"{args.megabytes} MB {d['move']:.3f} / {f['move']:.3f} s (direct / forwarded)", flush=True)
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("connect", "trips", "move")} for k, v in res.items()}
        d, f = med["direct"], med["forwarded"]
        print(f"\nmedian of {args.runs} ({args.target} API server, forwarded / direct):")
        print(f"  Client connect      {d['connect'] * 1e3:8.1f} ms  {f['connect'] * 1e3:8.1f} ms  {f['connect'] / d['connect']:6.2f} x")
        print(f"  one round trip      {d['trips'] / args.tasks * 1e3:8.2f} ms  {f['trips'] / args.tasks * 1e3:8.2f} ms  "
              f"{f['trips'] / d['trips']:6.2f} x")
        print(f"  {args.megabytes} MB result        {d['move']:8.3f} s   {f['move']:8.3f} s   {f['move'] / d['move']:6.2f} x  "
              f"({args.megabytes / d['move']:.0f} vs {args.megabytes / f['move']:.0f} MB/s)")
        print(f"  forwarded connections opened: {cluster.forwarder.connections}")
    finally:
        if cluster is not None:
            await cluster.close()
        target.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--megabytes", type=int, default=50)
    p.add_argument("--target", choices=("real", "emulator"), default="real")
    asyncio.run(main(p.parse_args()))
