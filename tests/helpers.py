"""Small pieces several test files share (pytest puts tests/ on sys.path: `from helpers import ...`)."""
import asyncio
import time

WORKER_ARGS = ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB", "--death-timeout", "60"]


def small_pod(**container):
    """A one-container worker pod template: 1 thread, 1 GB; keyword arguments replace container fields."""
    c = {"name": "dask", "image": "ghcr.io/dask/dask:latest", "args": list(WORKER_ARGS)}
    c.update(container)
    return {"kind": "Pod", "spec": {"restartPolicy": "Never", "containers": [c]}}


async def wait_until(predicate, timeout=60, interval=0.1, what="condition"):
    """Poll ``predicate`` (sync or async) until truthy, its value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
