"""Test bodies for the pod watch under interruptions, shared by the emulator and the real API server tiers.

Each body drives a real watch (KubernetesRuntime.watch_pods and a PodCache) through the official client,
interrupts it with the target's own means (compaction, a killed API server, refused requests), and then
checks what must hold: at most one watch stream open at any time, no event delivered twice, and the
watcher's view equal to the API's pods.
"""
from __future__ import annotations

import asyncio
import collections
import time
import uuid

from jupyter_dask_kube.podcache import PodCache
from jupyter_dask_kube.runtimes.kubernetes import WATCH_RETRY_DELAYS, KubernetesRuntime

from helpers import wait_until


def bare_pod(name: str, labels: dict) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "ghcr.io/dask/dask:latest", "args": ["sleep", "3600"]}],
                 "terminationGracePeriodSeconds": 0},
    }


class WatchLog:
    """Consumes one ``watch_pods`` stream in a task: the event log and the state it implies."""

    def __init__(self, runtime: KubernetesRuntime, selector: str):
        self.runtime = runtime
        self.selector = selector
        self.events: list[tuple[str, str, str]] = []  # (type, name, resourceVersion)
        self.state: dict[str, str] = {}  # name -> resourceVersion
        self.synced = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self):
        self.task = asyncio.create_task(self._consume())
        await asyncio.wait_for(self.synced.wait(), 30)
        return self

    async def _consume(self):
        async for ev in self.runtime.watch_pods(self.selector):
            if ev.type == "SYNCED":
                self.synced.set()
                continue
            meta = ev.object["metadata"]
            self.events.append((ev.type, meta["name"], meta.get("resourceVersion")))
            if ev.type == "DELETED":
                self.state.pop(meta["name"], None)
            else:
                self.state[meta["name"]] = meta.get("resourceVersion")

    def duplicates(self) -> list:
        counts = collections.Counter(self.events)
        return [ev for ev, n in counts.items() if n > 1]

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


def api_pods(api, namespace: str, selector: str) -> dict[str, str]:
    """What the API holds: name -> resourceVersion (pods being deleted included, as a watch sees them)."""
    return {p.metadata.name: p.metadata.resource_version
            for p in api.list_namespaced_pod(namespace, label_selector=selector).items}


async def wait_views_equal(api, namespace, selector, log: WatchLog, cache: PodCache, timeout=60):
    def check():
        want = api_pods(api, namespace, selector)
        have_cache = {n: p["metadata"].get("resourceVersion") for n, p in cache.pods.items()}
        return want == log.state == have_cache and want

    async def acheck():
        return await asyncio.to_thread(check)

    deadline = time.monotonic() + timeout
    while True:
        result = await acheck()
        if result is not False and result:
            return result
        if time.monotonic() > deadline:
            want = await asyncio.to_thread(api_pods, api, namespace, selector)
            raise AssertionError(f"views differ: api={want} watch={log.state} cache="
                                 f"{ {n: p['metadata'].get('resourceVersion') for n, p in cache.pods.items()} }")
        await asyncio.sleep(0.1)


def assert_one_stream(runtime: KubernetesRuntime, watchers: int, log: WatchLog):
    stats = runtime.watch_stats
    assert stats["peak"] <= watchers, f"{stats['peak']} watch streams were open at once for {watchers} watchers: {dict(stats)}"
    assert stats["open"] == watchers, dict(stats)
    assert not log.duplicates(), f"events delivered twice: {log.duplicates()}"


async def interrupted_watch_body(api, namespace: str, runtime: KubernetesRuntime, interrupt, *, expect_410: bool,
                                 timeout: float = 90):
    """A watch (WatchLog) and a PodCache on one runtime; pods change before, during and after ``interrupt()``
    (an async callable). Afterwards: at most one stream per watcher at any time, no duplicate events, both
    views equal to the API's pods. Returns the runtime's watch counters."""
    label = f"w{uuid.uuid4().hex[:8]}"
    selector = f"watch-test={label}"
    labels = {"watch-test": label}
    log = await WatchLog(runtime, selector).start()
    cache = PodCache(runtime, selector)
    await cache.start()
    names = [f"{label}-{i}" for i in range(4)]
    try:
        await asyncio.to_thread(api.create_namespaced_pod, namespace, bare_pod(names[0], labels))
        await asyncio.to_thread(api.create_namespaced_pod, namespace, bare_pod(names[1], labels))
        await wait_views_equal(api, namespace, selector, log, cache, timeout)
        before = dict(runtime.watch_stats)

        await interrupt(during=lambda: changes_during(api, namespace, names, labels))

        # After the interruption: more changes reach both views.
        await asyncio.to_thread(api.create_namespaced_pod, namespace, bare_pod(names[3], labels))
        await wait_views_equal(api, namespace, selector, log, cache, timeout)
        after = dict(runtime.watch_stats)
        if expect_410:
            assert after.get("relists", 0) > before.get("relists", 0), (before, after)
        assert after["started"] > before["started"], (before, after)  # the watches did reconnect
        assert_one_stream(runtime, 2, log)
        assert names[0] not in log.state and names[2] in log.state and names[3] in log.state
        return after
    finally:
        await log.stop()
        await cache.close()
        await asyncio.to_thread(
            api.delete_collection_namespaced_pod, namespace, label_selector=selector, grace_period_seconds=0)


def changes_during(api, namespace, names, labels):
    """Changes made while the watch is interrupted: a delete, a create and a label change."""
    api.delete_namespaced_pod(names[0], namespace, grace_period_seconds=0)
    api.create_namespaced_pod(namespace, bare_pod(names[2], labels))
    api.patch_namespaced_pod(names[1], namespace, {"metadata": {"annotations": {"touched": "yes"}}})


def min_backoff(failures: int) -> float:
    """The least time ``failures`` consecutive watch failures must take with the runtime's back-off."""
    return sum(WATCH_RETRY_DELAYS[min(i, len(WATCH_RETRY_DELAYS)) - 1] for i in range(1, failures))
