"""The pod-based backends (kubernetes, local) behind the backend interface: a thin adapter over ClusterManager."""
from __future__ import annotations

from ..bodies import CreateRequest
from ..manager import ClusterManager
from .base import ClusterBackend


class PodBackend(ClusterBackend):
    def __init__(self, manager: ClusterManager):
        self.manager = manager

    @property
    def name(self) -> str:
        return self.manager.runtime.backend

    async def start(self):
        await self.manager.start()

    async def close(self):
        await self.manager.close()
        # The runtime is ours: its API client, or the local runner's fork server and proxies.
        await self.manager.runtime.close()

    async def templates(self) -> list[dict]:
        await self.manager.refresh_access()  # which templates this user's hub groups may see
        return self.manager.template_list()

    async def list_json(self) -> str:
        await self.manager.start()
        return self.manager.list_json()

    async def cluster_json(self, cluster_id: str) -> str:
        await self.manager.start()
        return self.manager.model_json(self.manager.get(cluster_id))

    async def create(self, req: CreateRequest) -> dict:
        return await self.manager.create(req)

    async def scale(self, cluster_id: str, workers: int) -> dict:
        self.manager.get(cluster_id)  # 404 before anything else
        return await self.manager.scale(cluster_id, workers)

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        self.manager.get(cluster_id)
        return await self.manager.adapt(cluster_id, adapt)

    async def delete(self, cluster_id: str):
        await self.manager.delete(cluster_id)

    async def logs(self, cluster_id: str) -> dict[str, str]:
        return await self.manager.logs(cluster_id)

    async def status(self) -> dict:
        return await self.manager.status()

    def scheduler_hosts(self) -> set[str]:
        return self.manager.scheduler_hosts()
