"""The pod watch under interruptions, on the emulator (fast, everywhere); test_watch_real.py runs the same
bodies on a real kube-apiserver. What must hold afterwards: one stream per watcher, no event delivered
twice, the watch's and the PodCache's views equal to the API's pods, and back-off between failures."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import pytest_asyncio

from jupyter_dask_kube.podcache import PodCache
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import wait_until
from watch_checks import WatchLog, assert_one_stream, bare_pod, interrupted_watch_body, min_backoff


@pytest.fixture
def emu(emulated_kubernetes_noproc):
    emulated_kubernetes_noproc.clear_faults()
    yield emulated_kubernetes_noproc
    emulated_kubernetes_noproc.clear_faults()


@pytest_asyncio.fixture
async def runtime(emu):
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    rt.watch_timeout = 1  # streams end every second: reconnections happen within the test
    yield rt
    await rt.close()


@pytest.mark.asyncio
async def test_watch_410_after_compaction_one_stream_no_duplicates(emu, runtime):
    api = emu.api(no_faults=True)
    ns = emu.namespace

    async def compact(during):
        await asyncio.to_thread(during)
        before = runtime.watch_stats["error_events"]
        # A change the watchers do not see, then compaction: their last resourceVersion is now too old.
        other = f"other-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(api.create_namespaced_pod, ns, bare_pod(other, {"other": "yes"}))
        await asyncio.to_thread(api.patch_namespaced_pod, other, ns, {"metadata": {"labels": {"n": "2"}}})
        emu.compact()
        await wait_until(lambda: runtime.watch_stats["error_events"] >= before + 2, 30, what="410 on both watchers")
        await asyncio.to_thread(api.delete_namespaced_pod, other, ns, grace_period_seconds=0)

    stats = await interrupted_watch_body(api, ns, runtime, compact, expect_410=True)
    assert emu.stats()["watches_gone_410"] >= 2
    print(f"\n[410 after compaction] watch counters: {stats}")


@pytest.mark.asyncio
async def test_watch_survives_api_outage_one_stream_no_duplicates(emu, runtime):
    """Every request refused (503) for a while, changes and a compaction meanwhile: the watch backs off,
    resumes (relisting on 410), and ends with one stream and the API's pods."""
    api = emu.api(no_faults=True)
    ns = emu.namespace

    async def outage(during):
        before = runtime.watch_stats["errors"]
        emu.set_faults(error_rate=1.0, error_statuses=[503])
        await wait_until(lambda: runtime.watch_stats["errors"] >= before + 2, 30, what="both watches refused")
        await asyncio.to_thread(during)
        emu.compact()
        await wait_until(lambda: runtime.watch_stats["errors"] >= before + 6, 30, what="more refusals")
        emu.clear_faults()

    stats = await interrupted_watch_body(api, ns, runtime, outage, expect_410=True)
    print(f"\n[API outage] watch counters: {stats}")


@pytest.mark.asyncio
async def test_watch_backs_off_while_refused(emu, runtime):
    """Consecutive refused reconnections are spaced by the back-off, not retried in a tight loop."""
    label = f"b{uuid.uuid4().hex[:8]}"
    log = await WatchLog(runtime, f"watch-test={label}").start()
    try:
        emu.set_faults(error_rate=1.0, error_statuses=[500])
        await wait_until(lambda: runtime.watch_stats["errors"] >= 1, 30, what="first refusal")
        t = time.monotonic()
        await wait_until(lambda: runtime.watch_stats["errors"] >= 5, 60, what="five refusals")
        elapsed = time.monotonic() - t
        assert elapsed >= 0.9 * min_backoff(5), (elapsed, dict(runtime.watch_stats))
        emu.clear_faults()
        api = emu.api(no_faults=True)
        await asyncio.to_thread(api.create_namespaced_pod, emu.namespace, bare_pod(f"{label}-0", {"watch-test": label}))
        await wait_until(lambda: f"{label}-0" in log.state, 30, what="the watch resumed")
        assert_one_stream(runtime, 1, log)
        await asyncio.to_thread(api.delete_namespaced_pod, f"{label}-0", emu.namespace, grace_period_seconds=0)
        print(f"\n[refused watch] 4 back-offs took {elapsed:.2f}s (floor {min_backoff(5):.2f}s)")
    finally:
        emu.clear_faults()
        await log.stop()


@pytest.mark.asyncio
async def test_pod_cache_retries_first_listing_after_forbidden(emu):
    """The first listing is refused (403): start() raises the API's words; once allowed, the next start()
    syncs without a new PodCache (no restart), and the cache follows the API."""
    rt = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    label = f"f{uuid.uuid4().hex[:8]}"
    cache = PodCache(rt, f"watch-test={label}")
    api = emu.api(no_faults=True)
    try:
        emu.set_faults(forbidden=[("list", "pods"), ("watch", "pods")])
        for _ in range(2):  # every start while forbidden reports the 403 again, from a new attempt
            with pytest.raises(Exception) as info:
                await cache.start(timeout=20)
            assert getattr(info.value, "status", None) == 403, info.value
            assert "forbidden" in str(info.value)
        attempts = cache.attempts
        assert attempts >= 2 and not cache.synced
        await asyncio.to_thread(api.create_namespaced_pod, emu.namespace, bare_pod(f"{label}-0", {"watch-test": label}))
        emu.clear_faults()
        await cache.start(timeout=20)
        assert cache.synced and cache.error is None and f"{label}-0" in cache.pods
        await asyncio.to_thread(api.delete_namespaced_pod, f"{label}-0", emu.namespace, grace_period_seconds=0)
        await cache.wait_for(lambda: f"{label}-0" not in cache.pods, 30)
    finally:
        emu.clear_faults()
        await cache.close()
        await rt.close()


@pytest.mark.asyncio
async def test_watch_backs_off_on_error_events(emu, runtime):
    """Every new watch answers one ERROR event (500) then ends, as kube-apiserver does on internal errors: the
    watch reconnects with back-off, and the ended streams' late "end" starts no second stream."""
    label = f"e{uuid.uuid4().hex[:8]}"
    log = await WatchLog(runtime, f"watch-test={label}").start()
    try:
        emu.set_faults(watch_error_event=500)
        await wait_until(lambda: runtime.watch_stats["error_events"] >= 1, 30, what="first ERROR event")
        t = time.monotonic()
        await wait_until(lambda: runtime.watch_stats["error_events"] >= 5, 60, what="five ERROR events")
        elapsed = time.monotonic() - t
        assert elapsed >= 0.9 * min_backoff(5), (elapsed, dict(runtime.watch_stats))
        assert emu.stats()["faults_watch_error_event"] >= 5
        emu.clear_faults()
        api = emu.api(no_faults=True)
        await asyncio.to_thread(api.create_namespaced_pod, emu.namespace, bare_pod(f"{label}-0", {"watch-test": label}))
        await wait_until(lambda: f"{label}-0" in log.state, 30, what="the watch resumed")
        assert_one_stream(runtime, 1, log)
        await asyncio.to_thread(api.delete_namespaced_pod, f"{label}-0", emu.namespace, grace_period_seconds=0)
        print(f"\n[ERROR events] 4 back-offs took {elapsed:.2f}s (floor {min_backoff(5):.2f}s); {dict(runtime.watch_stats)}")
    finally:
        emu.clear_faults()
        await log.stop()
