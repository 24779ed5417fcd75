"""Runs inside the dask scheduler: it closes at its expiry time, and after a while with no client.

Passed as the TEXT of a ``dask scheduler --preload`` (lifetimes.apply_lifetime), so the scheduler image needs
only distributed, and the rules hold with the Jupyter server gone. Settings come from the environment:
DASK_KUBE_EXPIRES (unix seconds) and DASK_KUBE_NO_CLIENT_TIMEOUT (seconds). Self-contained: imports only
the standard library and distributed.
"""
import asyncio
import logging
import os
import time

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("distributed.scheduler")
CHECK_INTERVAL = 1.0
# Not a user's client: distributed's placeholder that owns fire-and-forget futures.
INTERNAL_CLIENTS = {"fire-and-forget"}


class LifetimePlugin(SchedulerPlugin):
    name = "dask-kube-lifetime"

    def __init__(self, expires=None, no_client_timeout=0.0, check_interval=CHECK_INTERVAL):
        self.expires = expires
        self.no_client_timeout = no_client_timeout
        self.check_interval = check_interval
        self.clients = set()
        self.no_client_since = time.time()
        self._task = None
        self._closing = None

    def add_client(self, scheduler, client):
        if client not in INTERNAL_CLIENTS:
            self.clients.add(client)
            self.no_client_since = None

    def remove_client(self, scheduler, client):
        self.clients.discard(client)
        if not self.clients and self.no_client_since is None:
            self.no_client_since = time.time()

    def reason(self, now):
        """Why the scheduler must close now, or None."""
        if self.expires and now >= self.expires:
            return "its lifetime ended"
        if self.no_client_timeout and self.no_client_since is not None and now - self.no_client_since >= self.no_client_timeout:
            return f"no client connected for {self.no_client_timeout:g}s"
        return None

    async def watch(self, scheduler):
        while True:
            why = self.reason(time.time())
            if why:
                logger.info("Scheduler closing: %s", why)
                # In a task of its own, as distributed's idle timeout does: close() closes this plugin,
                # which cancels the task that runs this loop.
                self._closing = asyncio.ensure_future(scheduler.close(reason=f"dask-kube: {why}"))
                return
            await asyncio.sleep(self.check_interval)

    async def close(self):
        if self._task is not None:
            self._task.cancel()


def _number(name):
    try:
        return float(os.environ.get(name) or 0)
    except ValueError:
        logger.error("dask-kube lifetime: %s=%r is not a number; ignored", name, os.environ.get(name))
        return 0.0


def dask_setup(scheduler):
    expires = _number("DASK_KUBE_EXPIRES") or None
    timeout = _number("DASK_KUBE_NO_CLIENT_TIMEOUT")
    if not expires and not timeout:
        return
    plugin = LifetimePlugin(expires, timeout)
    scheduler.add_plugin(plugin)
    plugin._task = asyncio.ensure_future(plugin.watch(scheduler))
    logger.info("dask-kube lifetime: expires at %s, no-client timeout %gs", expires, timeout)
