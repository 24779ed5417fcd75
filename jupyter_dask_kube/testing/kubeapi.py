"""A small asynchronous Kubernetes API client for the node agent: raw JSON over HTTP(S) from a kubeconfig.

The agent plays kubelet, scheduler and kube-proxy beside any API server (the emulator, a real kube-apiserver),
so it reaches the server only as those components do: through a kubeconfig (server, CA, token or client
certificate), with list-then-watch from a resourceVersion and a fresh list when the server answers 410 Gone.
The kubeconfig is read by the official ``kubernetes`` client's loader, so every credential form it knows works.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

log = logging.getLogger("jupyter_dask_kube.testing.nodeagent")

__all__ = ["NODE_AGENT_USER_AGENT", "KubeAPI", "KubeAPIError"]

#: How the agent introduces itself (a kubelet says "kubelet/v1.20.2 ..."); the emulator counts its requests apart.
NODE_AGENT_USER_AGENT = "jdk-node-agent"


class KubeAPIError(Exception):
    def __init__(self, status: int, body: dict | str):
        self.status = status
        self.body = body
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else str(body)
        super().__init__(f"{status} {self.reason}: {message}")


class KubeAPI:
    """``async with KubeAPI(kubeconfig) as api: await api.get("/api/v1/nodes")``."""

    def __init__(self, kubeconfig: str, *, context: str | None = None, headers: dict | None = None):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                persist_config=False)
        self.host = cfg.host.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": f"{NODE_AGENT_USER_AGENT}/1 (kubelet, scheduler, kube-proxy)",
                        **(headers or {})}
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if token:
            prefix = (cfg.api_key_prefix or {}).get("authorization")
            self.headers["Authorization"] = token if token.lower().startswith("bearer") or not prefix \
                else f"{prefix} {token}"
            if not self.headers["Authorization"].lower().startswith("bearer"):
                self.headers["Authorization"] = "Bearer " + self.headers["Authorization"]
        self.ssl: ssl.SSLContext | bool = False
        if self.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else \
                ssl._create_unverified_context()  # noqa: S323  (only when the kubeconfig says insecure)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            self.ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeAPI:
        self.session()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ssl, limit=64),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body=None, *, params: dict | None = None,
                      content_type: str = "application/json", timeout: float = 30.0) -> dict:
        data = None if body is None else json.dumps(body).encode()
        async with self.session().request(method, self.host + path, data=data, params=params,
                                          headers={"Content-Type": content_type} if data else None,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            try:
                out = json.loads(text) if text else {}
            except ValueError:
                out = text
            if resp.status >= 400:
                raise KubeAPIError(resp.status, out)
            return out

    async def get(self, path: str, **params) -> dict:
        return await self.request("GET", path, params={k: str(v) for k, v in params.items()} or None)

    async def post(self, path: str, body: dict) -> dict:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: dict) -> dict:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str, body: dict | None = None) -> dict | None:
        """DELETE; None when it was already gone."""
        try:
            return await self.request("DELETE", path, body)
        except KubeAPIError as e:
            if e.status == 404:
                return None
            raise

    async def list_watch(self, path: str, on_event: Callable[[str, dict], Awaitable[None] | None], *,
                         on_synced: Callable[[list[dict]], Awaitable[None] | None] | None = None,
                         stop: asyncio.Event, watch_timeout: int = 300, **params) -> None:
        """List ``path`` then watch it from the list's resourceVersion, until ``stop`` is set. ``on_synced(items)``
        gets every full listing (the first, and each relist after a 410 Gone or an error), ``on_event(type,
        obj)`` every change after it. Connection errors are retried with back-off."""
        backoff = 0.2
        rv = None
        while not stop.is_set():
            try:
                if rv is None:
                    listing = await self.get(path, **params)
                    rv = listing["metadata"]["resourceVersion"]
                    if on_synced is not None:
                        await _maybe_await(on_synced(listing.get("items") or []))
                async for etype, obj in self._watch(path, rv, watch_timeout, params):
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            rv = None  # too old: relist
                            break
                        raise KubeAPIError(obj.get("code") or 500, obj)
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if etype == "BOOKMARK":
                        continue
                    await _maybe_await(on_event(etype, obj))
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except KubeAPIError as e:
                if e.status == 410:
                    rv = None
                    continue
                log.warning("watch %s: %s; retrying", path, e)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
                if stop.is_set():
                    return
                log.info("watch %s: %r; retrying", path, e)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _watch(self, path: str, rv: str, timeout: int, params: dict) -> AsyncIterator[tuple[str, dict]]:
        query = {**{k: str(v) for k, v in params.items()}, "watch": "true", "resourceVersion": str(rv),
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout)}
        async with self.session().get(self.host + path, params=query,
                                      timeout=aiohttp.ClientTimeout(total=timeout + 30, sock_read=timeout + 30)) as resp:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    raise KubeAPIError(resp.status, json.loads(text))
                except ValueError:
                    raise KubeAPIError(resp.status, text) from None
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        ev = json.loads(line)
                        yield ev.get("type", ""), ev.get("object") or {}


async def _maybe_await(value) -> None:
    if asyncio.iscoroutine(value):
        await value


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
