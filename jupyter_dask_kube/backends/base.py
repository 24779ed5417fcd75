"""What the REST handlers talk to: one user's clusters on one backend.

Shaped like dask-gateway-server's ``backends/`` (one base class, one file per backend). The handlers know
nothing else; each backend answers with DESIGN.md's Template and Cluster models and raises
``bodies.ApiError`` (a 4xx/503 with a readable message) for anything the caller should read.
"""
from __future__ import annotations

from ..bodies import CreateRequest


class ClusterBackend:
    #: the ``backend`` field of Template and Cluster models and of the status answer
    name = "base"

    async def start(self):
        """Connect (watch, adopt, reach the gateway...). Safe to call again; raises ApiError(503) when it cannot."""

    async def close(self):
        """Release what this backend holds (clients, watches); clusters keep running unless the backend owns them."""

    async def templates(self) -> list[dict]:
        raise NotImplementedError

    async def list_json(self) -> str:
        """``{"clusters": [Cluster]}`` as JSON text: the caller's own clusters only."""
        raise NotImplementedError

    async def cluster_json(self, cluster_id: str) -> str:
        """One Cluster as JSON text; ApiError(404) when it is not the caller's."""
        raise NotImplementedError

    async def create(self, req: CreateRequest) -> dict:
        raise NotImplementedError

    async def scale(self, cluster_id: str, workers: int) -> dict:
        raise NotImplementedError

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        raise NotImplementedError

    async def delete(self, cluster_id: str):
        raise NotImplementedError

    async def logs(self, cluster_id: str) -> dict[str, str]:
        raise NotImplementedError

    async def status(self) -> dict:
        raise NotImplementedError

    def scheduler_hosts(self) -> set[str]:
        """Hosts jupyter-server-proxy may reach for this user's dashboards (none when dashboards go elsewhere)."""
        return set()
