"""The node agent's HTTPS kubelet port: what the API server proxies ``pods/log`` to.

Routes as a kubelet serves them: ``GET /containerLogs/{namespace}/{pod}/{container}?tailLines=N`` (plain text),
``GET /healthz``. Port-forward (``/portForward/{ns}/{pod}``, SPDY or websocket upgrade) would go here too.
The fault hooks ``POST /jdk/evict/{ns}/{pod}`` and ``/jdk/oomkill/{ns}/{pod}`` need the agent's control token
(header ``X-Node-Agent-Token``): the emulator's ``/_emulator/pods/.../evict`` and ``/oomkill`` forward to them.
With ``client_ca``, clients must present a certificate it signed (the API server's kubelet client certificate).
"""
from __future__ import annotations

import hmac
import json
import ssl

import aiohttp.web

__all__ = ["CONTROL_HEADER", "KubeletServer"]

CONTROL_HEADER = "X-Node-Agent-Token"


class KubeletServer:
    def __init__(self, agent, host: str, port: int, cert: str, key: str, client_ca: str | None = None):
        self.agent = agent
        self.host, self.port = host, port
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(cert, key)
        if client_ca:
            self.ssl.load_verify_locations(client_ca)
            self.ssl.verify_mode = ssl.CERT_REQUIRED
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> int:
        app = aiohttp.web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        app.router.add_post("/jdk/{action:evict|oomkill}/{ns}/{pod}", self._fault)
        self._runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _healthz(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    async def _logs(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        m = request.match_info
        tail = request.query.get("tailLines")
        try:
            text = self.agent.logs(m["ns"], m["pod"], m["container"], int(tail) if tail else None)
        except KeyError as e:
            raise aiohttp.web.HTTPNotFound(text=str(e.args[0]) if e.args else "not found")
        except ValueError as e:
            raise aiohttp.web.HTTPBadRequest(text=str(e))
        return aiohttp.web.Response(text=text, content_type="text/plain")

    async def _fault(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        token = request.headers.get(CONTROL_HEADER, "")
        if not hmac.compare_digest(token, self.agent.control_token):
            raise aiohttp.web.HTTPForbidden(text="fault hooks need the node agent's control token")
        m = request.match_info
        body = await request.json() if request.can_read_body else {}
        try:
            if m["action"] == "evict":
                kwargs = {"message": body["message"]} if body.get("message") else {}
                pod = await self.agent.evict(m["ns"], m["pod"], **kwargs)
            else:
                pod = await self.agent.oom_kill(m["ns"], m["pod"], container=body.get("container"))
        except KeyError:
            raise aiohttp.web.HTTPNotFound(text=json.dumps({"message": f'pods "{m["pod"]}" not found'}),
                                           content_type="application/json")
        except ValueError as e:
            raise aiohttp.web.HTTPBadRequest(text=json.dumps({"message": str(e)}), content_type="application/json")
        return aiohttp.web.json_response(pod)
