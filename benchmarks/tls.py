"""What TLS per cluster costs: create -> 4 connected workers, with TLS (the default) and without, in one run.

Issue #11 target: "create-to-4-workers with TLS versus without, in the same run (target <= 1.15 x)".

Each run makes ``KubeCluster(pod, n_workers=4, tls=True|False, asynchronous=True)`` on one runtime and times it
from the constructor until a ``Client(cluster)`` sees 4 workers (``wait_for_workers``), then closes the cluster
and times that until its pods are gone. TLS and plain runs alternate (the order flips every pair), after one
untimed warm-up of each, on:

- the local runtime (the embedded default): one ``LocalRuntime`` for the whole run, so its fork server is warm;
- the emulated Kubernetes API with its node agent running the pods as processes (``--skip-emulator`` leaves it
  out): every object goes over HTTP through the official client, and the node agent reads the Secret through
  the API and writes the pod's files (what a kubelet does).

Workers: ``dask-worker --nthreads 1 --no-dashboard --memory-limit 1GB`` with a nanny each (dask's default), as
in ``click_to_workers.py``. With TLS the cluster also makes its CA and two certificates (EC P-256), creates the
Secret after the scheduler pod, and every pod writes it to owner-only files before its containers start.

``--fixed-files`` (local runtime only) separates distributed's own TLS cost from ours: the TLS clusters then
get their credentials as files written once by this script (no Secret, no per-pod copy, no mount), which is
what TLS costs when the machinery around it is free.

Run: ``python benchmarks/tls.py [--runs 5] [--skip-emulator] [--fixed-files]``. Prints a table and a RATIOS line. Every process
started here is stopped here.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp(prefix="jdk-bench-tls-dask-"))
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="jdk-bench-tls-runtime-"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distributed import Client  # noqa: E402

from jupyter_dask_kube import KubeCluster  # noqa: E402
from jupyter_dask_kube.objects import cluster_selector  # noqa: E402

WORKERS = 4
WORKER_ARGS = ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"]
POD = {"kind": "Pod", "spec": {"restartPolicy": "Never", "containers": [
    {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": WORKER_ARGS}]}}


async def once(runtime, tls: bool) -> tuple[float, float]:
    """(create -> 4 workers seen by a Client, close -> every pod gone) in seconds."""
    t0 = time.perf_counter()
    cluster = await KubeCluster(POD, runtime=runtime, n_workers=WORKERS, tls=tls, asynchronous=True)
    async with Client(cluster, asynchronous=True) as client:
        await client.wait_for_workers(WORKERS, timeout=180)
        up = time.perf_counter() - t0
        assert cluster.scheduler_address.startswith("tls://" if tls else "tcp://"), cluster.scheduler_address
    name = cluster.name
    t1 = time.perf_counter()
    await cluster.close()
    while await runtime.list_pods(cluster_selector(name)):
        await asyncio.sleep(0.02)
    return up, time.perf_counter() - t1


async def measure(runtime, runs: int) -> dict[bool, list[tuple[float, float]]]:
    out: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    await once(runtime, True)  # warm-ups: fork server, imports, first connections
    await once(runtime, False)
    for i in range(runs):
        for tls in ((True, False) if i % 2 == 0 else (False, True)):
            out[tls].append(await once(runtime, tls))
            print(f"  run {i + 1} {'tls' if tls else 'tcp'}: up {out[tls][-1][0]:.2f} s, "
                  f"down {out[tls][-1][1]:.2f} s", flush=True)
    return out


def fixed_files() -> None:
    """TLS without our machinery: each cluster's pods point at files written here, no Secret is made."""
    from jupyter_dask_kube import tls as tlsmod
    from jupyter_dask_kube.cluster import KubeCluster as KC

    directory = tempfile.mkdtemp(prefix="jdk-bench-tls-files-")
    mount = tlsmod.mount_credentials

    def scheduler_manifest(self, _orig=KC._scheduler_manifest):
        c = self._credentials  # a new TLS cluster: write its files before its first pod exists
        for name, value in ((tlsmod.CA_FILE, c.ca_cert), (tlsmod.CERT_FILE, c.cert),
                            (tlsmod.KEY_FILE, c.key)) if c is not None else ():
            with open(os.path.join(directory, name), "w") as f:
                f.write(value)
        return _orig(self)

    def fixed(pod, cluster_name):
        pod = mount(pod, cluster_name)
        pod["spec"]["volumes"] = []
        for c in pod["spec"]["containers"]:
            c["volumeMounts"] = []
            for e in c["env"]:
                e["value"] = e["value"].replace(tlsmod.MOUNT_PATH, directory)
        return pod

    async def no_secret(self, scheduler_pod):
        return None

    KC._scheduler_manifest = scheduler_manifest
    KC._create_secret = no_secret
    tlsmod.mount_credentials = fixed


async def local(runs: int):
    from jupyter_dask_kube.runtimes.local import LocalRuntime

    rt = LocalRuntime("default")
    try:
        return await measure(rt, runs)
    finally:
        await rt.close()


async def emulated(emu, runs: int):
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    try:
        return await measure(rt, runs)
    finally:
        await rt.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    parser.add_argument("--skip-emulator", action="store_true")
    parser.add_argument("--fixed-files", action="store_true")
    args = parser.parse_args()
    if args.fixed_files:
        fixed_files()
        args.skip_emulator = True
    results = {}
    print("local runtime", flush=True)
    results["local"] = asyncio.run(local(args.runs))
    if not args.skip_emulator:
        from jupyter_dask_kube.testing.server import EmulatedKubernetes

        print("emulated Kubernetes API + node agent", flush=True)
        with EmulatedKubernetes(processes=True) as emu:
            results["emulator"] = asyncio.run(emulated(emu, args.runs))
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"\n{'runtime':<10} {'tls up':>8} {'tcp up':>8} {'ratio':>6} {'tls down':>9} {'tcp down':>9}"
          f"   (median of {args.runs}, load average {load:.1f})")
    ratios = []
    for where, res in results.items():
        med = {tls: (statistics.median(u for u, _ in v), statistics.median(d for _, d in v)) for tls, v in res.items()}
        ratio = med[True][0] / med[False][0]
        ratios.append(f"{where} {ratio:.2f}x ({'MET' if ratio <= 1.15 else 'MISSED'} <= 1.15x)")
        print(f"{where:<10} {med[True][0]:>7.2f}s {med[False][0]:>7.2f}s {ratio:>5.2f}x "
              f"{med[True][1]:>8.2f}s {med[False][1]:>8.2f}s")
    print("RATIOS create->4 workers, TLS / plain: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
