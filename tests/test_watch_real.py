"""The pod watch on a real kube-apiserver v1.20.2 (jupyter_dask_kube.testing.controlplane): a real 410 Gone
after etcd compaction, and the apiserver SIGKILLed and restarted mid-watch. The bodies are those of
test_watch.py (watch_checks.py); afterwards one stream per watcher, no duplicate events, and the watch's and
the PodCache's views equal to the API's pods.

This module runs its own control plane, so killing its apiserver disturbs no other test; with the watch
cache off for the compaction test (a watch then resumes from etcd itself, which answers 410 once compacted),
and on (the default) for the restart test (the new apiserver's watch cache starts at the current revision).
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest
import pytest_asyncio

from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from watch_checks import bare_pod, interrupted_watch_body

NAMESPACE = "watch-real"


@pytest.fixture(scope="module")
def control_plane():
    from jupyter_dask_kube.testing.controlplane import RealControlPlane, missing

    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the real control plane cannot start: {why}", pytrace=False)
        pytest.skip(why)

    class Plane(RealControlPlane):
        watch_cache = True

        def _spawn(self, name, cmd):
            if name == "kube-apiserver" and not self.watch_cache:
                cmd = [*cmd, "--watch-cache=false"]
            return super()._spawn(name, cmd)

        def restart_apiserver(self, watch_cache: bool):
            # From the test's own thread: the apiserver dies with the thread that started it.
            self.kill_apiserver()
            etcd = self._procs.get("etcd")
            assert etcd is not None and etcd.poll() is None, (
                f"etcd is gone (exit code {etcd and etcd.returncode}); its log ends:\n{self.log('etcd')[-3000:]}")
            self.watch_cache = watch_cache
            self.start_apiserver()

    with Plane(namespace=NAMESPACE) as cp:
        yield cp


@pytest_asyncio.fixture
async def runtime(control_plane):
    rt = KubernetesRuntime(NAMESPACE, kubeconfig=control_plane.kubeconfig)
    rt.watch_timeout = 1  # streams end every second, so they resume (from their resourceVersion) within the test
    yield rt
    await rt.close()


@pytest.mark.asyncio
async def test_real_410_after_etcd_compaction(control_plane, runtime):
    cp = control_plane
    cp.restart_apiserver(watch_cache=False)
    api = cp.api()

    async def compact(during):
        before = runtime.watch_stats["error_events"] + runtime.watch_stats["errors"]
        await asyncio.to_thread(during)
        # Two changes the watchers do not see, then compaction: their last resourceVersion is now too old
        # (a watch from the revision just before the compacted one would still be allowed).
        await asyncio.to_thread(api.create_namespaced_pod, NAMESPACE, bare_pod("unwatched", {"other": "yes"}))
        await asyncio.to_thread(api.patch_namespaced_pod, "unwatched", NAMESPACE, {"metadata": {"labels": {"n": "2"}}})
        revision = cp.compact_etcd()
        deadline = time.monotonic() + 60
        while runtime.watch_stats["error_events"] + runtime.watch_stats["errors"] < before + 2:
            assert time.monotonic() < deadline, f"no 410 after compaction at {revision}: {dict(runtime.watch_stats)}"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(api.delete_namespaced_pod, "unwatched", NAMESPACE, grace_period_seconds=0)

    try:
        stats = await interrupted_watch_body(api, NAMESPACE, runtime, compact, expect_410=True)
    finally:
        cp.restart_apiserver(watch_cache=True)
    print(f"\n[real 410 after etcd compaction] watch counters: {stats}")


@pytest.mark.asyncio
async def test_apiserver_sigkilled_and_restarted_mid_watch(control_plane, runtime):
    cp = control_plane
    api = cp.api()

    async def restart(during):
        before = runtime.watch_stats["errors"]
        cp.kill_apiserver()
        deadline = time.monotonic() + 60
        while runtime.watch_stats["errors"] < before + 2:  # both watches saw it go
            assert time.monotonic() < deadline, dict(runtime.watch_stats)
            await asyncio.sleep(0.1)
        t = time.monotonic()
        cp.start_apiserver()  # blocks this loop until ready (~5 s): the watches' errors wait in their queue
        print(f"\n[apiserver restart] ready after {time.monotonic() - t:.1f}s")
        await asyncio.to_thread(during)  # changes right after the restart, while the watches reconnect

    stats = await interrupted_watch_body(api, NAMESPACE, runtime, restart, expect_410=False)
    assert stats["errors"] >= 2
    print(f"[apiserver SIGKILL + restart] watch counters: {stats}")
