"""A pod cache kept current by one watch (an informer): the only way cluster code learns pod states.

Readers never poll the API: they read ``pods`` or await ``wait_for`` and wake on the next change.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .runtimes.base import PodRuntime

logger = logging.getLogger(__name__)

Listener = Callable[[str, dict], None]


class PodCache:
    def __init__(self, runtime: PodRuntime, label_selector: str = ""):
        self.runtime = runtime
        self.label_selector = label_selector
        self.pods: dict[str, dict] = {}
        #: Bumped on every change of ``pods``: readers can cache what they derive from it.
        self.generation = 0
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None

    async def start(self, timeout: float = 30) -> PodCache:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"pod-cache[{self.label_selector}]")
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self._synced.wait()), self._task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done and self._task.exception():
            raise self._task.exception()
        if not self._synced.is_set():
            raise TimeoutError(f"pod list for {self.label_selector!r} did not arrive within {timeout}s")
        return self

    async def _run(self):
        watch = self.runtime.watch_pods(self.label_selector)
        try:
            async for ev in watch:
                if ev.type == "SYNCED":
                    self._synced.set()
                    continue
                name = ev.object["metadata"]["name"]
                if ev.type == "DELETED":
                    self.pods.pop(name, None)
                else:
                    self.pods[name] = ev.object
                self.generation += 1
                for listener in list(self._listeners):
                    try:
                        listener(ev.type, ev.object)
                    except Exception:  # one bad listener must not stop the cache
                        logger.exception("pod listener failed")
                self._changed.set()
                self._changed = asyncio.Event()
        finally:
            await watch.aclose()

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
