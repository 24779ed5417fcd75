"""Load: a Jupyter server with 20 clusters x 10 workers, hit by 50 concurrent REST clients.

Issue "Prove it": the server stays responsive under many clusters and many clients, costs little memory per
cluster, and makes no Kubernetes API call while idle (only its pod watch is open).

Setup, all started and stopped here:
- ``EmulatedKubernetes(processes=False)``: pods turn Running at once and nothing runs in them, so 200 worker pods
  cost nothing. Worker pods therefore never connect: every cluster stays "starting" with 0/10 workers connected
  and 10 requested.
- Schedulers are real: one helper process (``load.py --serve-schedulers``) runs one ``distributed.Scheduler``
  per cluster, bound to that cluster's Service clusterIP:8786 as soon as the Service appears. So the Jupyter
  server runs exactly its production code path (``deploy_mode="remote"``: scheduler pod + Service, an RPC
  connection and a worker-status stream to a real scheduler, ``retire_workers`` on scale down) and nothing
  else. ``deploy_mode="local"`` was rejected: it would run 20 schedulers inside the Jupyter server process,
  so its RSS and event loop would measure dask's scheduler, not this project's control plane.
- A real ``python -m jupyter_server`` with the extension (``c.DaskKube.backend = "kubernetes"``, token auth),
  its KUBECONFIG pointing at the emulator.

Measured:
- latency of ``GET clusters``, ``GET clusters/{id}`` and ``PATCH clusters/{id}`` (workers 9 or 10) from 50
  concurrent clients (aiohttp, one event loop) for ``--duration`` seconds: p50 / p99 / max, and errors
  (anything but 200, or no answer; must be 0);
- RSS of the Jupyter server process: with the extension started and no cluster, then with the 20 clusters,
  as MiB per cluster;
- Kubernetes API calls made while idle, from the emulator's own counters (``GET /_emulator/stats``: every
  request, and watch requests): requests - watch requests - the stats request itself, over ``--idle``
  seconds, before and after the load, extrapolated to a minute (must be 0).

Run: ``python benchmarks/load.py [--clusters 20] [--workers 10] [--clients 50] [--duration 20] [--idle 20]``.
tests/test_load.py runs :func:`run` with smaller windows and asserts the correctness parts only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

WORKER_POD = {
    "kind": "Pod",
    "spec": {
        "containers": [{
            "name": "dask",
            "image": "ghcr.io/dask/dask:latest",
            "args": ["dask-worker", "--nthreads", "1", "--memory-limit", "1GB"],
            "resources": {"limits": {"cpu": "1", "memory": "1G"}},
        }],
    },
}


# -- the scheduler host: real schedulers at the Services' addresses ---------------------------------------------
def serve_schedulers() -> None:
    """Read clusterIPs on stdin; start a Scheduler on each ip:8786; answer "ok <ip>" or "error <ip> <why>"."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    from distributed import Scheduler

    async def main():
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        schedulers = []
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                break
            try:
                s = Scheduler(host=line, port=8786, dashboard=False, validate=False)
                await s
                schedulers.append(s)
                print(f"ok {line}", flush=True)
            except Exception as exc:  # noqa: BLE001 - reported to the driver
                print(f"error {line} {exc!r}", flush=True)
        for s in schedulers:
            await s.close()

    asyncio.run(main())


class SchedulerHost:
    def __init__(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1", DASK_LOGGING__DISTRIBUTED="error")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-schedulers"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.served: set[str] = set()

    def serve(self, ip: str) -> None:
        self.proc.stdin.write(ip + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != f"ok {ip}":
            raise RuntimeError(f"scheduler host: {answer or 'exited'}")
        self.served.add(ip)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(20)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(5)


# -- the Jupyter server ---------------------------------------------------------------------------------------
from jupyter_dask_kube.testing.ports import free_port  # noqa: E402


class Server:
    def __init__(self, workdir: str, kubeconfig: str, user: str, workers: int):
        self.workdir = workdir
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}/dask-kube/api/"
        cfg = os.path.join(workdir, "jupyter-config")
        os.makedirs(cfg, exist_ok=True)
        templates = {"load": {"display_name": "Load", "default": True, "workers": workers, "worker": WORKER_POD}}
        with open(os.path.join(cfg, "jupyter_server_config.py"), "w") as f:
            f.write("c.ServerApp.jpserver_extensions = {'jupyter_dask_kube': True}\n"
                    "c.DaskKube.backend = 'kubernetes'\n"
                    # the stand-in schedulers of the no-process emulator (above) listen on plain TCP
                    "c.DaskKube.tls = False\n"
                    f"c.DaskKube.templates = {templates!r}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_", "KUBE"))}
        env.update(KUBECONFIG=kubeconfig, JUPYTERHUB_USER=user, DASK_CONFIG=os.path.join(workdir, "dask"),
                   JUPYTER_CONFIG_DIR=cfg, JUPYTER_DATA_DIR=os.path.join(workdir, "data"),
                   JUPYTER_RUNTIME_DIR=os.path.join(workdir, "runtime"), IPYTHONDIR=os.path.join(workdir, "ipython"),
                   PYTHONUNBUFFERED="1")
        self.env = env
        self.log_path = os.path.join(workdir, "server.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> Server:
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={self.port}",
               "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.workdir}"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.call("GET", "clusters")[0] == 200:  # the manager is started once this answers
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer within {timeout}s:\n{self.log()}")
            time.sleep(0.25)

    def log(self, tail: int = 6000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def call(self, method: str, path: str, body=None, timeout: float = 60):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, raw = exc.code, exc.read()
        return code, (json.loads(raw) if raw else None)

    def clusters(self) -> dict[str, dict]:
        code, data = self.call("GET", "clusters")
        if code != 200:
            raise RuntimeError(f"GET clusters: {code} {data}")
        return {c["id"]: c for c in data["clusters"]}

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # the pods are the emulator's: nothing to detach
            self.proc.wait(30)


# -- measuring --------------------------------------------------------------------------------------------------
def api_stats(emu) -> dict:
    return emu.stats()


def idle_calls(emu, seconds: float) -> dict:
    """Kubernetes API requests the server made in ``seconds`` of idleness, from the emulator's counters."""
    s0 = api_stats(emu)
    time.sleep(seconds)
    s1 = api_stats(emu)
    requests = s1.get("requests", 0) - s0.get("requests", 0) - 1  # minus the second stats request itself
    watches = s1.get("watches", 0) - s0.get("watches", 0)
    return {"seconds": seconds, "requests": requests, "watch_requests": watches,
            "non_watch": requests - watches, "non_watch_per_minute": (requests - watches) * 60.0 / seconds}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


async def hammer(server: Server, ids: list[str], clients: int, duration: float, patch_share: float,
                 seed: int) -> dict:
    """``clients`` concurrent clients, each sending one request after the other for ``duration`` seconds."""
    import aiohttp

    rng = random.Random(seed)
    lat: dict[str, list[float]] = {"list": [], "get": [], "patch": []}
    errors: list[str] = []
    headers = {"Authorization": f"token {server.token}", "Content-Type": "application/json"}
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        async def client(i: int):
            while time.monotonic() < deadline:
                r = rng.random()
                cid = rng.choice(ids)
                if r < patch_share:
                    kind, method, path, body = "patch", "PATCH", f"clusters/{cid}", {"workers": rng.choice([9, 10])}
                elif r < 0.6:
                    kind, method, path, body = "list", "GET", "clusters", None
                else:
                    kind, method, path, body = "get", "GET", f"clusters/{cid}", None
                t = time.perf_counter()
                try:
                    async with session.request(method, server.base + path,
                                               data=json.dumps(body) if body is not None else None) as resp:
                        payload = await resp.read()
                        status = resp.status
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    errors.append(f"{method} {path}: {exc!r}")
                    continue
                lat[kind].append(time.perf_counter() - t)
                if status != 200:
                    errors.append(f"{method} {path}: {status} {payload[:200]!r}")

        await asyncio.gather(*(client(i) for i in range(clients)))
    every = lat["list"] + lat["get"] + lat["patch"]
    out = {"requests": len(every) + len(errors), "errors": len(errors), "error_samples": errors[:5],
           "throughput_per_s": len(every) / duration}
    for kind, values in [("all", every), *lat.items()]:
        out[kind] = {"n": len(values), "p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000,
                     "max_ms": (max(values) if values else float("nan")) * 1000}
    return out


def run(*, clusters: int = 20, workers: int = 10, clients: int = 50, duration: float = 20.0,
        idle: float = 20.0, idle_before: bool = True, patch_share: float = 0.05, seed: int = 0,
        log=print) -> dict:
    """Set everything up, measure, tear everything down; the figures as a dict."""
    from jupyter_dask_kube.objects import LABEL_CLUSTER, LABEL_COMPONENT, user_selector
    from jupyter_dask_kube.testing import EmulatedKubernetes
    from jupyter_dask_kube.testing.fixtures import kube_api

    t0 = time.monotonic()

    def step(what):
        log(f"[{time.monotonic() - t0:6.1f}s] {what}")

    workdir = tempfile.mkdtemp(prefix="jdk-load-")
    user = f"load-{uuid.uuid4().hex[:6]}"
    # one roomy node: 200 workers x 1 cpu must all be scheduled (the default node has 64 cpus, 500 pods)
    emu = EmulatedKubernetes(processes=False, nodes=["cpu=1000,memory=4Ti,pods=2000"])
    host = server = api = None
    result: dict = {"clusters": clusters, "workers_per_cluster": workers, "clients": clients}
    try:
        emu.start()
        api = kube_api(emu)
        host = SchedulerHost()
        server = Server(workdir, emu.kubeconfig, user, workers).start()
        step(f"server up (pid {server.proc.pid}); emulator {emu.url}")
        time.sleep(2)
        rss0 = server.rss()

        # -- create the clusters; give each its scheduler as soon as its Service exists ------------------------
        ids = []
        for i in range(clusters):
            code, m = server.call("POST", "clusters", {"template": "load", "workers": workers, "name": f"load-{i}"})
            if code != 201:
                raise RuntimeError(f"POST clusters: {code} {m}")
            ids.append(m["id"])
        deadline = time.monotonic() + 120 + 5 * clusters
        while True:
            for svc in api.list_namespaced_service(emu.namespace, label_selector=user_selector(user)).items:
                ip = svc.spec.cluster_ip
                if ip and ip not in host.served:
                    host.serve(ip)
            listed = server.clusters()
            ready = [c for c in listed.values() if c["scheduler_address"] and c["requested_workers"] == workers]
            failed = [c for c in listed.values() if c["status"] == "failed"]
            if failed:
                raise RuntimeError(f"failed clusters: {[(c['id'], c['message']) for c in failed]}")
            if len(ready) == clusters:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ready)}/{clusters} clusters ready")
            time.sleep(0.2)
        pods = api.list_namespaced_pod(emu.namespace, label_selector=user_selector(user)).items
        step(f"{clusters} clusters ready ({len(pods)} pods, {len(host.served)} schedulers)")
        time.sleep(3)
        rss1 = server.rss()
        result["rss_mib_no_clusters"] = rss0 / 2**20
        result["rss_mib_with_clusters"] = rss1 / 2**20
        result["rss_mib_per_cluster"] = (rss1 - rss0) / 2**20 / clusters

        if idle_before:
            step(f"idle window {idle:g}s (before load)")
            result["idle_before"] = idle_calls(emu, idle)

        step(f"{clients} clients for {duration:g}s")
        # service time without queueing: one client, one request after the other
        solo = {"list": [], "get": []}
        for i in range(60):
            kind = "list" if i % 2 else "get"
            t = time.perf_counter()
            code, _ = server.call("GET", "clusters" if kind == "list" else f"clusters/{ids[i % len(ids)]}")
            solo[kind].append(time.perf_counter() - t)
            if code != 200:
                raise RuntimeError(f"GET: {code}")
        result["one_client"] = {k: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000}
                                for k, v in solo.items()}
        cpu0, load0 = server.cpu_seconds(), os.getloadavg()[0]
        result["load"] = asyncio.run(hammer(server, ids, clients, duration, patch_share, seed))
        cpu = server.cpu_seconds() - cpu0
        served = result["load"]["requests"] - result["load"]["errors"]
        result["load"].update(server_cpu_s=cpu, server_cpu_ms_per_request=cpu * 1000 / max(served, 1),
                              loadavg=(load0, os.getloadavg()[0]), cpus=os.cpu_count())
        result["rss_mib_after_load"] = server.rss() / 2**20

        # -- back to 10 workers everywhere; everything listed as asked ---------------------------------------------
        for cid in ids:
            code, m = server.call("PATCH", f"clusters/{cid}", {"workers": workers})
            if code != 200:
                raise RuntimeError(f"PATCH {cid}: {code} {m}")
        deadline = time.monotonic() + 60

        def settled():
            listed = server.clusters()
            pods = api.list_namespaced_pod(emu.namespace, label_selector=user_selector(user)).items
            per: dict[str, int] = {}
            for p in pods:
                if (p.metadata.labels or {}).get(LABEL_COMPONENT) == "worker" and not p.metadata.deletion_timestamp:
                    c = p.metadata.labels[LABEL_CLUSTER]
                    per[c] = per.get(c, 0) + 1
            ok = (set(listed) == set(ids) and all(listed[c]["requested_workers"] == workers for c in ids)
                  and all(per.get(c) == workers for c in ids) and len(pods) == clusters * (workers + 1))
            return ok, listed, per, len(pods)

        while True:
            ok, listed, per, npods = settled()
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        result["final"] = {
            "listed": len(listed), "all_requested": all(listed.get(c, {}).get("requested_workers") == workers for c in ids),
            "statuses": sorted({c["status"] for c in listed.values()}), "worker_pods": per, "pods": npods,
            "consistent": ok,
        }
        step(f"settled: {result['final']['listed']} listed, {npods} pods, consistent={ok}")

        step(f"idle window {idle:g}s (after load)")
        result["idle_after"] = idle_calls(emu, idle)
        result["server_log_tail"] = server.log(3000)
        return result
    finally:
        if server is not None:
            server.stop()
        if host is not None:
            host.stop()
        if api is not None:
            api.api_client.close()
        emu.stop()


def report(r: dict) -> str:
    lines = [f"{r['clusters']} clusters x {r['workers_per_cluster']} workers, {r['clients']} clients"]
    ld = r["load"]
    lines.append(f"requests: {ld['requests']} in the load window ({ld['throughput_per_s']:.0f}/s), errors: {ld['errors']}; "
                 f"server CPU {ld['server_cpu_s']:.1f} s = {ld['server_cpu_ms_per_request']:.1f} ms per request; "
                 f"machine load average {ld['loadavg'][0]:.1f} -> {ld['loadavg'][1]:.1f} on {ld['cpus']} cpus")
    for kind in ("all", "list", "get", "patch"):
        k = ld[kind]
        lines.append(f"  {kind:5s} n={k['n']:6d}  p50 {k['p50_ms']:7.1f} ms  p99 {k['p99_ms']:7.1f} ms  max {k['max_ms']:7.1f} ms")
    if "one_client" in r:
        o = r["one_client"]
        lines.append(f"  one client, sequential: list p50 {o['list']['p50_ms']:.1f} ms (p99 {o['list']['p99_ms']:.1f}), "
                     f"get p50 {o['get']['p50_ms']:.1f} ms (p99 {o['get']['p99_ms']:.1f})")
    if ld["error_samples"]:
        lines.append(f"  error samples: {ld['error_samples']}")
    lines.append(f"server RSS: {r['rss_mib_no_clusters']:.1f} MiB with no cluster, {r['rss_mib_with_clusters']:.1f} MiB "
                 f"with {r['clusters']} -> {r['rss_mib_per_cluster']:.2f} MiB per cluster "
                 f"({r['rss_mib_after_load']:.1f} MiB after the load)")
    for key in ("idle_before", "idle_after"):
        if key in r:
            i = r[key]
            lines.append(f"idle {key[5:]:6s} load: {i['non_watch']} non-watch API calls in {i['seconds']:g}s "
                         f"({i['non_watch_per_minute']:.1f}/min); {i['watch_requests']} watch requests")
    f = r["final"]
    lines.append(f"final: {f['listed']} clusters listed, all with {r['workers_per_cluster']} requested: {f['all_requested']}, "
                 f"{f['pods']} pods, statuses {f['statuses']}, consistent: {f['consistent']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve-schedulers", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    p.add_argument("--idle", type=float, default=20.0, help="seconds of each idle window")
    p.add_argument("--patch-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = p.parse_args(argv)
    if args.serve_schedulers:
        serve_schedulers()
        return 0
    os.environ.setdefault("DASK_CONFIG", tempfile.mkdtemp(prefix="bench-dask-config-"))
    r = run(clusters=args.clusters, workers=args.workers, clients=args.clients, duration=args.duration,
            idle=args.idle, patch_share=args.patch_share, seed=args.seed, log=lambda s: print(s, file=sys.stderr))
    print(report(r))
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "server_log_tail"}, indent=1))
    bad = r["load"]["errors"] or r["idle_after"]["non_watch"] or r.get("idle_before", {}).get("non_watch") \
        or not r["final"]["consistent"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
