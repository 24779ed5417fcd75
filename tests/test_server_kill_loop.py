"""Server faults, in a loop: the Jupyter server is SIGKILLed during create, scale and delete.

A real ``python -m jupyter_server`` with the extension (``c.DaskKube.backend = "kubernetes"``, token auth) runs
against an :class:`EmulatedKubernetes` whose pods are real dask processes. Each round sends one REST request
(POST a cluster, PATCH its workers, DELETE it), kills the server with SIGKILL at a random delay of 0-1.5 s
after sending, without waiting for the answer, then starts a new server with the same config and checks:

- every cluster the new server lists is re-adopted and healthy: it runs, and reaches the worker count the
  user last asked for (at once, or after the PATCH the user would send). A cluster whose DELETE was cut off
  is deleted by sending DELETE again;
- every other cluster is fully gone: after a short grace period there is no scheduler pod without its Service,
  no worker pod without a live scheduler, and no pod or Service of a cluster the API does not list
  (nothing half-made);
- at the end, after one more SIGKILL, ``jupyter dask-kube cleanup`` leaves no pod and no Service.

Default: 3 rounds of each kill point. ``--run-slow`` adds a soak of 20 rounds each, which prints its counts
(kills, clusters re-adopted, clusters gone, half-made found, orphans after cleanup).

``test_readopt_deletes_half_made_clusters`` is the deterministic version of what a kill during create or delete
can leave behind (a scheduler pod whose Service was never made or already deleted, workers whose scheduler is
gone): re-adoption must delete those, not list them as failed clusters nor leave their pods running.
"""
from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest

from jupyter_dask_kube.objects import (
    LABEL_CLUSTER,
    LABEL_COMPONENT,
    build_scheduler_pod,
    build_worker_pod,
    user_selector,
)
from jupyter_dask_kube.testing import EmulatedKubernetes
from jupyter_dask_kube.testing.fixtures import kube_api

from helpers import Pending, delete_objects, detached_cluster, limited_pod, tiny_template, wait_for
from jupyter_process import JupyterServer, server_config, server_env

# Generous: this must pass on 2 busy cores, where a dask process takes seconds to start.
SETTLE = 150  # a re-adopted cluster running with the workers asked for
GRACE = 30  # how long leftovers of a cluster that is going away may linger (pod termination, GC)
MAX_KILL_DELAY = 1.5
MAX_CLUSTERS = 2  # kept alive at once, so a round stays short
REQUEST_TIMEOUT = 60

WORKER_POD = limited_pod()
TEMPLATES = {"tiny": tiny_template()}
# the product's own decisions (re-adopted, deleting half-made, worker lost) in the server log
LOG_CONFIG = """import logging
_h = logging.StreamHandler()
_h.setFormatter(logging.Formatter('[%(levelname).1s %(asctime)s %(name)s] %(message)s'))
logging.getLogger('jupyter_dask_kube').addHandler(_h)
logging.getLogger('jupyter_dask_kube').setLevel(logging.INFO)
logging.getLogger('jupyter_dask_kube').propagate = False
"""


# -- harness ----------------------------------------------------------------------------------------------
class KubeView:
    """The user's objects as the Kubernetes API holds them (not through the server)."""

    def __init__(self, emu, user: str):
        self.api = kube_api(emu)
        self.ns = emu.namespace
        self.selector = user_selector(user)

    def snapshot(self) -> dict[str, dict]:
        """cluster -> {"scheduler": (phase, deleting) | None, "workers": {name: deleting}, "service": bool}."""
        out: dict[str, dict] = collections.defaultdict(lambda: {"scheduler": None, "workers": {}, "service": False})
        for p in self.api.list_namespaced_pod(self.ns, label_selector=self.selector).items:
            labels = p.metadata.labels or {}
            c = out[labels.get(LABEL_CLUSTER, "?")]
            deleting = p.metadata.deletion_timestamp is not None
            if labels.get(LABEL_COMPONENT) == "scheduler":
                c["scheduler"] = (p.status.phase, deleting)
            else:
                c["workers"][p.metadata.name] = deleting
        for s in self.api.list_namespaced_service(self.ns, label_selector=self.selector).items:
            out[(s.metadata.labels or {}).get(LABEL_CLUSTER, "?")]["service"] = True
        return dict(out)

    def describe(self) -> str:
        """Every pod and Service of the user, for a failure message."""
        lines = []
        for p in self.api.list_namespaced_pod(self.ns, label_selector=self.selector).items:
            lines.append(f"  pod {p.metadata.name} {p.status.phase} created {p.metadata.creation_timestamp:%H:%M:%S.%f}"
                         f"{' deleting' if p.metadata.deletion_timestamp else ''} "
                         f"owner {[r.name for r in p.metadata.owner_references or []]}")
        for sv in self.api.list_namespaced_service(self.ns, label_selector=self.selector).items:
            lines.append(f"  service {sv.metadata.name} {sv.spec.cluster_ip}")
        return "\n".join(lines) or "  nothing"

    def close(self):
        self.api.api_client.close()


def half_made(kube: dict[str, dict], listed: dict[str, dict], intended: dict[str, int]) -> list[str]:
    """What breaks "every cluster is re-adopted and healthy, or fully gone"; [] when nothing does."""
    problems = []
    for cid, objs in kube.items():
        sched = objs["scheduler"]
        live_sched = sched is not None and not sched[1] and sched[0] in ("Pending", "Running")
        if cid not in listed:
            problems.append(f"{cid}: objects of a cluster the API does not list: {objs}")
            continue
        if sched is None:
            problems.append(f"{cid}: no scheduler pod: {objs}")
        elif not objs["service"]:
            problems.append(f"{cid}: scheduler pod without a Service: {objs}")
        live_workers = [n for n, deleting in objs["workers"].items() if not deleting]
        if live_workers and not live_sched:
            problems.append(f"{cid}: worker pods without a live scheduler: {objs}")
        if any(objs["workers"].values()):
            problems.append(f"{cid}: worker pods still terminating: {objs}")
        want = intended.get(cid)
        if want is not None and len(live_workers) != want:
            problems.append(f"{cid}: {len(live_workers)} worker pods, the user asked for {want}")
    for cid in listed:
        if cid not in kube:
            problems.append(f"{cid}: listed but has no objects")
    return problems


class KillLoop:
    """One user's server, killed and restarted; the user's last wishes are kept in ``intended``."""

    def __init__(self, emu, tmp_path, seed: int):
        self.emu = emu
        self.rng = random.Random(seed)
        self.seed = seed
        self.user = f"kill-{uuid.uuid4().hex[:8]}"
        self.workdir = str(tmp_path)
        self.env = server_env(tmp_path, config=server_config(TEMPLATES, extra=LOG_CONFIG), user=self.user,
                              kubeconfig=emu.kubeconfig)
        self.kube = KubeView(emu, self.user)
        self.servers: list[JupyterServer] = []
        self.server: JupyterServer | None = None
        self.intended: dict[str, int] = {}  # cluster id -> workers the user last asked for
        self.counts = collections.Counter(kills=0, readopted=0, gone=0, patched=0, deleted_again=0, half_made=0,
                                          half_made_at_kill=0,
                                          orphans_after_cleanup=0)
        self.t0 = time.monotonic()

    def step(self, what: str):
        print(f"[{time.monotonic() - self.t0:7.1f}s] {what}", flush=True)

    def start_server(self) -> JupyterServer:
        s = JupyterServer(self.workdir, self.env, f"{len(self.servers)}", request_timeout=REQUEST_TIMEOUT)
        self.servers.append(s)
        self.server = s.start()
        return s

    def fail(self, message: str):
        self.counts["half_made"] += 1
        self.report()
        raise AssertionError(f"{message}\nseed={self.seed}\n--- objects ---\n{self.kube.describe()}\n"
                             f"--- log of the server before ---\n{self.servers[-2].log(6000) if len(self.servers) > 1 else ''}\n"
                             f"--- server log ---\n{self.server.log()}")

    def report(self):
        c = self.counts
        print(f"kills={c['kills']} readopted={c['readopted']} gone={c['gone']} (re-adopted then patched to the "
              f"workers asked for: {c['patched']}, re-adopted then deleted again: {c['deleted_again']}) "
              f"half_made={c['half_made']} (half-made right after a kill, cleaned by the restart: "
              f"{c['half_made_at_kill']}) orphans_after_cleanup={c['orphans_after_cleanup']} (seed {self.seed})",
              flush=True)

    # -- the user's side ------------------------------------------------------------------------------------
    def wait_healthy(self, cid: str, workers: int):
        def check():
            m = self.server.clusters().get(cid)
            if m is None:
                return Pending("not listed")
            if m["status"] == "failed":
                self.fail(f"{cid} is failed after restart: {m['message']}")
            if m["status"] != "running" or m["workers"] != workers or m["requested_workers"] != workers:
                return Pending(f"{m['status']} {m['workers']}/{m['requested_workers']} want {workers}: {m['message']}")
            return m
        try:
            return wait_for(check, SETTLE, what=f"{cid} running with {workers} workers")
        except AssertionError as exc:
            self.fail(str(exc))

    def new_cluster(self) -> str:
        _, m = self.server.call("POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
        self.intended[m["id"]] = 1
        self.wait_healthy(m["id"], 1)
        return m["id"]

    def pick_cluster(self) -> str:
        live = sorted(self.intended)
        return self.rng.choice(live) if live else self.new_cluster()

    # -- a round ----------------------------------------------------------------------------------------------
    def round(self, point: str):
        if point == "create":
            while len(self.intended) >= MAX_CLUSTERS:
                cid = min(self.intended)
                self.server.call("DELETE", "clusters", cid, expect=204)
                del self.intended[cid]
            request = ("POST", "clusters", {"template": "tiny", "workers": 1})
        elif point == "scale":
            cid = self.pick_cluster()
            n = self.rng.choice([x for x in (0, 1, 2, 3) if x != self.intended[cid]])
            request = ("PATCH", f"clusters/{cid}", {"workers": n})
        else:
            cid = self.pick_cluster()
            request = ("DELETE", f"clusters/{cid}", None)
        before = set(self.kube.snapshot()) | set(self.intended)
        answer: list = []

        def send():
            try:
                method, path, body = request
                answer.append(self.server.call(method, path, body=body, timeout=30))
            except Exception as exc:  # noqa: BLE001 - the server is being killed
                answer.append(("no answer", type(exc).__name__))

        delay = self.rng.uniform(0, MAX_KILL_DELAY)
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        time.sleep(delay)
        self.server.kill(timeout=30)
        self.counts["kills"] += 1
        thread.join(30)
        code = answer[0][0] if answer else "no answer"
        at_kill = self.kube.snapshot()
        # left by the kill itself (the restart must clean these): a scheduler pod without its Service
        self.counts["half_made_at_kill"] += sum(
            1 for o in at_kill.values() if o["scheduler"] and not o["scheduler"][1] and not o["service"])
        self.step(f"{point}: {request[0]} {request[1]} {request[2] or ''} killed after {delay:.2f}s "
                  f"(answer: {code}); objects: {summarize(at_kill)}")

        # What the user wanted, as far as the answer (if any) tells: a create is wanted unless refused.
        if point == "create":
            if code == 201:
                self.intended[answer[0][1]["id"]] = 1
        elif point == "scale":
            self.intended[cid] = request[2]["workers"]
        else:
            self.intended.pop(cid, None)
        delete_again = {cid} if point == "delete" else set()

        self.start_server()
        listed = self.server.clusters()  # answered once re-adoption is over
        involved = before | set(at_kill) | set(listed)
        for new in set(listed) - set(self.intended) - delete_again:
            self.intended[new] = 1  # a create whose answer was lost, re-adopted
        readopted = set(listed)
        for cid_ in sorted(listed):
            if cid_ in delete_again:
                self.server.call("DELETE", "clusters", cid_, expect=204)
                self.counts["deleted_again"] += 1
                continue
            m = listed[cid_]
            want = self.intended[cid_]
            if m["status"] == "failed":
                self.fail(f"{cid_} is failed after restart: {m['message']}")
            if m["requested_workers"] != want:
                # reachable by the PATCH the user would send (a scale cut off before it was recorded)
                self.wait_healthy_or_patch(cid_, want)
                self.counts["patched"] += 1
            self.wait_healthy(cid_, want)
        for cid_ in set(self.intended) - set(listed):
            self.intended.pop(cid_)  # a create that never reached Kubernetes, or a half-made one removed

        def consistent():
            problems = half_made(self.kube.snapshot(), self.server.clusters(), self.intended)
            return Pending("; ".join(problems)) if problems else True

        try:
            wait_for(consistent, GRACE, interval=0.5, what="no half-made cluster")
        except AssertionError as exc:
            self.fail(str(exc))
        gone = involved - readopted
        self.counts["readopted"] += len(readopted)
        self.counts["gone"] += len(gone)
        self.step(f"   restarted: re-adopted {sorted(readopted)}, gone {sorted(gone)}; now {self.intended}")

    def wait_healthy_or_patch(self, cid: str, want: int):
        """The cluster must run; then the user's PATCH gets it to the worker count asked for."""
        def running():
            m = self.server.clusters().get(cid)
            if m and m["status"] == "failed":
                self.fail(f"{cid} is failed after restart: {m['message']}")
            return (m and m["status"] in ("running", "starting") and m["scheduler_address"]) or Pending(repr(m))
        wait_for(running, SETTLE, what=f"{cid} re-adopted")
        self.server.call("PATCH", "clusters", cid, body={"workers": want}, expect=200)

    def cleanup(self):
        """One more SIGKILL, then the admin CLI: nothing of the user may be left."""
        self.server.kill(timeout=30)
        self.counts["kills"] += 1
        out = subprocess.run([sys.executable, "-m", "jupyter_dask_kube.cli", "--backend", "kubernetes", "cleanup",
                              "--user", self.user], env=self.env, capture_output=True, text=True, timeout=120,
                             check=False)
        assert out.returncode == 0, out.stderr
        self.step(f"cleanup: {out.stdout.strip()}")

        def empty():
            left = self.kube.snapshot()
            return Pending(summarize(left)) if left else True
        try:
            wait_for(empty, GRACE, what="cleanup to leave nothing")
        except AssertionError:
            left = self.kube.snapshot()
            self.counts["orphans_after_cleanup"] = sum(
                (o["scheduler"] is not None) + len(o["workers"]) + o["service"] for o in left.values())
        self.report()
        assert self.counts["orphans_after_cleanup"] == 0, summarize(self.kube.snapshot())

    def close(self):
        for s in self.servers:
            s.kill(timeout=30)
        try:
            delete_objects(self.kube.api, self.kube.ns, self.kube.selector)
        except Exception:  # noqa: BLE001, S110 - best effort: the emulator goes away with the module
            pass
        self.kube.close()


def summarize(snapshot: dict[str, dict]) -> str:
    parts = []
    for cid, o in sorted(snapshot.items()):
        s = o["scheduler"]
        sched = "-" if s is None else (s[0] + ("/deleting" if s[1] else ""))
        workers = len(o["workers"])
        dying = sum(o["workers"].values())
        parts.append(f"{cid[-8:]}(sched {sched}, svc {'y' if o['service'] else 'n'}, workers {workers}"
                     f"{f' ({dying} deleting)' if dying else ''})")
    return ", ".join(parts) or "none"


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emu():
    """An emulated cluster of this module only (the cleanup CLI and the counts see nothing of other tests)."""
    real = os.environ.get("JDK_TEST_REAL_KUBECONFIG")
    if real:
        from jupyter_dask_kube.testing.fixtures import RealKubernetes

        yield RealKubernetes(real)
        return
    with EmulatedKubernetes(processes=True) as k:
        yield k


def run_loop(emu, tmp_path, rounds: int):
    seed = int(os.environ.get("JDK_KILL_SEED") or random.SystemRandom().randrange(10**6))
    loop = KillLoop(emu, tmp_path, seed)
    try:
        loop.step(f"seed {seed}, user {loop.user}")
        loop.start_server()
        for i in range(rounds):
            for point in ("create", "scale", "delete"):
                loop.round(point)
        loop.cleanup()
        return loop.counts
    finally:
        loop.close()


# -- tests ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(1200)
def test_server_kill_during_create_scale_delete(emu, tmp_path):
    counts = run_loop(emu, tmp_path, rounds=3)
    assert counts["kills"] == 10
    assert counts["half_made"] == 0 and counts["orphans_after_cleanup"] == 0


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_server_kill_soak(emu, tmp_path):
    counts = run_loop(emu, tmp_path, rounds=20)
    print("SOAK: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    assert counts["half_made"] == 0 and counts["orphans_after_cleanup"] == 0


# -- the deterministic version: what a kill during create or delete leaves behind -----------------------------
@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_readopt_deletes_half_made_clusters(emu, monkeypatch):
    """A scheduler pod without its Service is deleted with its workers on re-adoption (never listed as a failed
    cluster); one whose Service arrives within the grace period (a create still in flight) is adopted."""
    import asyncio

    from jupyter_dask_kube import manager as manager_mod
    from jupyter_dask_kube.cluster import ANNOTATION_WORKER_TEMPLATE
    from jupyter_dask_kube.manager import ClusterManager
    from jupyter_dask_kube.naming import format_cluster_name
    from jupyter_dask_kube.objects import build_service
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

    user = f"half-{uuid.uuid4().hex[:8]}"
    kube = KubeView(emu, user)
    runtime = KubernetesRuntime(kubeconfig=emu.kubeconfig)
    mgr = None
    try:
        # "delete cut short": a running cluster with a worker whose Service was deleted (the delete's first step)
        deleted_svc = await detached_cluster(user, runtime=runtime, pod=WORKER_POD, timeout=SETTLE)
        assert await runtime.delete_service(deleted_svc)

        def scheduler_manifest(name):
            return build_scheduler_pod(None, WORKER_POD, cluster_name=name, username=user,
                                       annotations={ANNOTATION_WORKER_TEMPLATE: json.dumps(WORKER_POD)})

        # "create cut short": a scheduler pod whose Service was never made
        never_svc = format_cluster_name(None, user=user)
        await runtime.create_pod(scheduler_manifest(never_svc))
        # an orphan worker of that cluster too (owned by its scheduler pod, as the product makes them)
        owner = await runtime.read_pod(f"{never_svc}-scheduler")
        await runtime.create_pod(build_worker_pod(WORKER_POD, cluster_name=never_svc, username=user,
                                                  worker_name=f"{never_svc}-worker-x1", owner=owner,
                                                  scheduler_address="tcp://192.0.2.1:8786"))
        # "create in flight elsewhere": a young scheduler pod whose Service comes a moment later
        in_flight = format_cluster_name(None, user=user)
        young = await runtime.create_pod(scheduler_manifest(in_flight))
        monkeypatch.setattr(manager_mod, "HALF_MADE_GRACE", 4.0)
        t_sync = time.monotonic()

        async def late_service():
            await asyncio.sleep(1.0)
            await runtime.create_service(build_service(in_flight, user, young))

        mgr = ClusterManager(runtime=runtime, username=user, templates=[])
        late = asyncio.create_task(late_service())
        await mgr.start()
        await late
        assert set(mgr.records) == {in_flight}, mgr.list()
        assert mgr.records[in_flight].state == "ready", mgr.model(mgr.records[in_flight])
        assert time.monotonic() - t_sync < 60

        def only_in_flight():
            snap = kube.snapshot()
            return (set(snap) == {in_flight} and snap[in_flight]["service"]) or Pending(summarize(snap))

        await asyncio.to_thread(wait_for, only_in_flight, GRACE, what="the half-made clusters to be deleted")
    finally:
        if mgr is not None:
            for cid in list(mgr.records):
                await mgr.delete(cid)
            await mgr.close()
        await runtime.close()
        try:
            delete_objects(kube.api, kube.ns, kube.selector)
        finally:
            kube.close()
