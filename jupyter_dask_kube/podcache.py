"""A pod cache kept current by one watch (an informer): the only way cluster code learns pod states.

Readers never poll the API: they read ``pods`` or await ``wait_for`` and wake on the next change.

The first listing can fail (no rights yet, API down): the cache keeps retrying it with back-off, as the
watch retries once running, and ``start`` reports the latest failure. A caller of ``start`` while the
cache is not synced asks for a new attempt at once, so a Role applied after the server started takes
effect on the next create, without a restart.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .runtimes.base import PodRuntime

logger = logging.getLogger(__name__)

Listener = Callable[[str, dict], None]

#: Seconds between attempts at the first listing (and at restarting a watch that ended in an error).
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class PodCache:
    def __init__(self, runtime: PodRuntime, label_selector: str = ""):
        self.runtime = runtime
        self.label_selector = label_selector
        self.pods: dict[str, dict] = {}
        #: Bumped on every change of ``pods``: readers can cache what they derive from it.
        self.generation = 0
        #: Watches started (1 unless a watch failed and was started again) and listings that failed.
        self.attempts = 0
        self.failures = 0
        #: The last failure of the first listing (None once synced).
        self.error: BaseException | None = None
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._failed: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def start(self, timeout: float = 30) -> PodCache:
        """Until the first listing is in; raises the listing's error if this attempt fails."""
        loop = asyncio.get_running_loop()
        if self._failed is None or self._failed.done():
            self._failed = loop.create_future()
        failed = self._failed
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"pod-cache[{self.label_selector}]")
        if self._synced.is_set():
            return self
        self._retry_now.set()  # someone waits: try again now rather than after the back-off
        synced = asyncio.ensure_future(self._synced.wait())
        try:
            await asyncio.wait([synced, failed, self._task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
        if self._synced.is_set():
            return self
        if failed.done():
            raise failed.result()
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            raise self._task.exception()
        raise TimeoutError(f"pod list for {self.label_selector!r} did not arrive within {timeout}s")

    async def _run(self):
        failures = 0
        while True:
            self.attempts += 1
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the listing failed (403, unreachable...), or the watch died
                failures += 1
                self.failures += 1
                if not self._synced.is_set():
                    self.error = exc
                    if self._failed is not None and not self._failed.done():
                        self._failed.set_result(exc)
                logger.warning("pod cache %r: %s; retrying", self.label_selector, exc)
            delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1] if failures else RETRY_DELAYS[0]
            self._retry_now.clear()
            try:
                await asyncio.wait_for(self._retry_now.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _watch(self):
        """One watch from a fresh listing. After a restart, pods the new listing lacks were deleted meanwhile."""
        watch = self.runtime.watch_pods(self.label_selector)
        listed: set[str] | None = set()
        try:
            async for ev in watch:
                if ev.type == "SYNCED":
                    for name in [n for n in self.pods if n not in listed]:
                        self._apply("DELETED", self.pods[name])
                    listed = None
                    self.error = None
                    self._synced.set()
                    continue
                if listed is not None:
                    name = ev.object["metadata"]["name"]
                    listed.add(name)
                    old = self.pods.get(name)
                    if old is not None and old["metadata"].get("resourceVersion") == ev.object["metadata"].get("resourceVersion"):
                        continue  # a restarted watch lists what the cache already holds: no change
                self._apply(ev.type, ev.object)
        finally:
            await watch.aclose()

    def _apply(self, etype: str, pod: dict):
        name = pod["metadata"]["name"]
        if etype == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = pod
        self.generation += 1
        for listener in list(self._listeners):
            try:
                listener(etype, pod)
            except Exception:  # one bad listener must not stop the cache
                logger.exception("pod listener failed")
        self._changed.set()
        self._changed = asyncio.Event()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_for(self, predicate: Callable[[], object], timeout: float):
        """Re-evaluate ``predicate`` on every change until it returns something truthy, or time out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
