"""How a cluster object follows its workers without taking the scheduler's one worker-status subscription.

distributed's ``Cluster._start`` subscribes with op ``subscribe_worker_status``; the scheduler registers a
``WorkerStatusPlugin`` under the fixed name ``worker-status``, so a second subscriber silently replaces the
first. A cluster attached by name (a notebook running ``KubeCluster.from_name``, or a server adopting a cluster a
kernel made) would then freeze the view of the cluster's owner (the panel's card stops counting workers).
Attached clusters therefore poll the scheduler's ``identity`` instead, and turn each difference into the same
``add``/``remove`` updates the subscription would have pushed.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from distributed.core import Status
from distributed.deploy.cluster import Cluster

logger = logging.getLogger(__name__)

#: Seconds between polls of an attached cluster's scheduler (one small RPC each).
POLL_INTERVAL = 1.0


def worker_changes(known: dict, now: dict) -> list[tuple[str, object]]:
    """The (op, msg) updates that take ``known`` workers to ``now`` (pure; msgs as WorkerStatusPlugin's)."""
    ops: list[tuple[str, object]] = [("remove", addr) for addr in known if addr not in now]
    added = {addr: ident for addr, ident in now.items() if addr not in known}
    if added:
        ops.append(("add", {"workers": added}))
    return ops


class PolledWorkerStatus(Cluster):
    """Placed between SpecCluster and Cluster in a subclass's MRO: ``_start`` polls when ``poll_worker_status``."""

    poll_worker_status: bool = False
    worker_status_interval: float = POLL_INTERVAL

    async def _start(self):
        if not self.poll_worker_status:
            return await super()._start()
        self.scheduler_info = {"workers": {}}
        await self._poll_worker_status_once()
        info = await self.scheduler_comm.get_metadata(keys=["cluster-manager-info"], default={})
        self._cluster_info.update(info)
        self._sync_cluster_info_task = asyncio.ensure_future(self._sync_cluster_info())
        self._watch_worker_status_task = asyncio.ensure_future(self._poll_worker_status())

    async def _poll_worker_status_once(self):
        ident = await self.scheduler_comm.identity()
        workers = ident.pop("workers", {}) or {}
        for w in workers.values():  # as subscribe_worker_status sends them
            w.pop("metrics", None)
            w.pop("last_seen", None)
        self.scheduler_info.update({k: v for k, v in ident.items()})
        for op, msg in worker_changes(self.scheduler_info.setdefault("workers", {}), workers):
            self._update_worker_status(op, msg)

    async def _poll_worker_status(self):
        while self.status not in (Status.closing, Status.closed, Status.failed):
            await asyncio.sleep(self.worker_status_interval)
            try:
                await self._poll_worker_status_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a scheduler going away; the pod watch reports why
                logger.debug("cluster %s: worker status poll failed: %r", self.name, exc)

    async def _stop_polling(self):
        task = self._watch_worker_status_task
        if self.poll_worker_status and task is not None:
            task.cancel()
            with suppress(BaseException):
                await task
            self._watch_worker_status_task = None
