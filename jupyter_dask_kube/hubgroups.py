"""The user's JupyterHub groups, asked of the hub API with the server's own token, cached.

GET ``$JUPYTERHUB_API_URL/user`` with ``$JUPYTERHUB_API_TOKEN`` answers the token owner's model; it holds
``groups`` when the token has the scope ``read:users:groups!user`` (deploy/z2jh-values.yaml grants it to
the servers' role). A failed lookup is kept for a short while with its reason, so the sidebar is not slowed
down by a hub that does not answer; callers then fall back to default limits and hide group-only templates.
"""
from __future__ import annotations

import json
import logging
import os
import time

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

logger = logging.getLogger(__name__)
SCOPE = "read:users:groups!user"
FAILURE_TTL = 30.0


class HubGroups:
    def __init__(self, api_url: str, token: str, *, ttl: float = 300.0, timeout: float = 5.0):
        self.url = api_url.rstrip("/") + "/user"
        self._token = token
        self.ttl = ttl
        self.timeout = timeout
        self._cached: tuple[float, frozenset[str], str | None] | None = None  # (until, groups, problem)

    @classmethod
    def from_environment(cls, env=None, **kw) -> HubGroups | None:
        """Under JupyterHub (its API URL and the server's token in the environment), else None."""
        env = os.environ if env is None else env
        if env.get("JUPYTERHUB_API_URL") and env.get("JUPYTERHUB_API_TOKEN"):
            return cls(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], **kw)
        return None

    async def lookup(self) -> tuple[frozenset[str], str | None]:
        """(groups, problem): problem is None when the hub answered with the groups."""
        now = time.monotonic()
        if self._cached and now < self._cached[0]:
            return self._cached[1], self._cached[2]
        groups, problem = await self._fetch()
        if problem:
            logger.warning("dask-kube: %s", problem)
        self._cached = (now + (FAILURE_TTL if problem else self.ttl), groups, problem)
        return groups, problem

    async def _fetch(self) -> tuple[frozenset[str], str | None]:
        req = HTTPRequest(self.url, headers={"Authorization": f"token {self._token}"}, request_timeout=self.timeout,
                          connect_timeout=self.timeout)
        try:
            resp = await AsyncHTTPClient().fetch(req)
            model = json.loads(resp.body)
        except HTTPClientError as exc:
            return frozenset(), f"cannot read your groups from JupyterHub ({self.url}): HTTP {exc.code} {exc.message}"
        except (OSError, ValueError) as exc:
            return frozenset(), f"cannot read your groups from JupyterHub ({self.url}): {exc}"
        groups = model.get("groups") if isinstance(model, dict) else None
        if not isinstance(groups, list):
            return frozenset(), (f"JupyterHub did not say which groups you are in: this server's token lacks the "
                                 f"scope {SCOPE} (see deploy/z2jh-values.yaml)")
        return frozenset(str(g) for g in groups), None
