"""The node agent's HTTPS kubelet port: what the API server proxies ``pods/log`` to.

Routes as a kubelet serves them: ``GET /containerLogs/{namespace}/{pod}/{container}?tailLines=N`` (plain text),
``GET /healthz``, and port-forward: ``GET /portForward/{ns}/{pod}[/{uid}]?port=P[&port=Q]`` upgraded to a WebSocket
(the kubelet's ``portforward/websocket.go``; the API server proxies ``pods/portforward`` upgrades here as they
come). Per requested port i: channel 2i carries the bytes, channel 2i+1 the error text; every binary message is
one channel byte then payload; the first message on each channel is the port, 2 bytes little-endian. SPDY (what
kubectl speaks) is not served: a 400 says so.
The fault hooks ``POST /jdk/evict/{ns}/{pod}`` and ``/jdk/oomkill/{ns}/{pod}`` need the agent's control token
(header ``X-Node-Agent-Token``): the emulator's ``/_emulator/pods/.../evict`` and ``/oomkill`` forward to them.
With ``client_ca``, clients must present a certificate it signed (the API server's kubelet client certificate).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
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
        app.router.add_get("/portForward/{ns}/{pod}", self._port_forward)
        app.router.add_get("/portForward/{ns}/{pod}/{uid}", self._port_forward)
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

    # -- port-forward ------------------------------------------------------------------------------------
    async def _port_forward(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        m = request.match_info
        ports = parse_ports(request.query.getall("port", []))
        if isinstance(ports, str):
            raise aiohttp.web.HTTPBadRequest(text=ports)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise aiohttp.web.HTTPBadRequest(text="this node agent serves port-forward over WebSocket only "
                                                  "(v4.channel.k8s.io), not SPDY")
        try:
            ip = self.agent.pod_address(m["ns"], m["pod"])
        except KeyError as e:
            raise aiohttp.web.HTTPNotFound(text=str(e.args[0]) if e.args else "not found")
        ws = aiohttp.web.WebSocketResponse(protocols=PORT_FORWARD_PROTOCOLS, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        for i, port in enumerate(ports):
            head = port.to_bytes(2, "little")
            await ws.send_bytes(bytes((2 * i,)) + head)
            await ws.send_bytes(bytes((2 * i + 1,)) + head)
        writers: dict[int, asyncio.StreamWriter] = {}
        pumps = [asyncio.ensure_future(self._pump_from_pod(ws, i, port, ip, m["pod"], writers))
                 for i, port in enumerate(ports)]
        connected = asyncio.gather(*(p for p in pumps), return_exceptions=True)
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel % 2 or channel // 2 >= len(ports):
                    continue  # error channels are the kubelet's to write
                writer = writers.get(channel // 2)
                while writer is None and not pumps[channel // 2].done():
                    await asyncio.sleep(0.005)  # bytes that came before the pod connection was open
                    writer = writers.get(channel // 2)
                if writer is not None and data:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in writers.values():
                w.close()
            await connected
            await ws.close()
        return ws

    @staticmethod
    async def _pump_from_pod(ws, i: int, port: int, ip: str, pod: str, writers: dict) -> None:
        """Dial the pod's port and copy what it sends onto data channel 2i; a failure goes on channel 2i+1."""
        try:
            reader, writer = await asyncio.open_connection(ip, port)
        except OSError as e:
            why = (os.strerror(e.errno) if e.errno else str(e)).lower()  # "connection refused", as Go words it
            await ws.send_bytes(bytes((2 * i + 1,)) +
                                f"error forwarding port {port} to pod {pod}: dial tcp {ip}:{port}: connect: {why}".encode())
            await ws.close()
            return
        writers[i] = writer
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                await ws.send_bytes(bytes((2 * i,)) + data)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            # as the kubelet: the stream ends with the pod's connection
            await ws.close()


#: The kubelet's binary websocket port-forward protocol; a client asking none gets binary channels too (as the
#: kubelet's wsstream does). Not served: v4.base64.channel.k8s.io, and SPDY (portforward.k8s.io, also tunnelled
#: over a WebSocket by kubectl >= 1.31).
PORT_FORWARD_PROTOCOLS = ("v4.channel.k8s.io",)


def parse_ports(values: list[str]) -> list[int] | str:
    """The ``port`` query values (repeated, or comma-separated) as ports, or the kubelet's complaint."""
    if not values:
        return 'query parameter "port" is required'
    out: list[int] = []
    for value in values:
        for p in value.split(","):
            if not p.isdigit() or not 0 < int(p) < 65536:
                return f'invalid port "{p}"'
            out.append(int(p))
    return out
