"""Loopback address allocation and the Service proxy."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

import dask.config
import pytest

from jupyter_dask_kube.runtimes import loopback
from jupyter_dask_kube.runtimes.loopback import (
    ServiceProxy,
    allocate_address,
    release_address,
)


pytestmark = pytest.mark.asyncio

def test_allocate_address_in_range_unique_and_free():
    ips = [allocate_address() for _ in range(50)]
    try:
        assert len(set(ips)) == 50
        net = ipaddress.IPv4Network(dask.config.get("kubernetes.local.address-range"))
        for ip in ips:
            assert ipaddress.IPv4Address(ip) in net and ip != "127.0.0.1"
        # a taken port makes the address ineligible
        s = socket.socket()
        s.bind((ips[0], 8786))
        try:
            assert not loopback._ports_free(ips[0], [8786])
        finally:
            s.close()
        with dask.config.set({"kubernetes.local.address-range": "127.99.0.0/30"}):
            a = allocate_address(ports=())
            b = allocate_address(ports=())
            assert {a, b} == {"127.99.0.1", "127.99.0.2"}
            with pytest.raises(RuntimeError):
                allocate_address(ports=())
            release_address(a)
            assert allocate_address(ports=()) == a
            release_address(a)
            release_address(b)
    finally:
        for ip in ips:
            release_address(ip)


async def _echo_server(ip):
    async def handle(r, w):
        data = await r.read()  # until the client half-closes
        w.write(data[::-1])
        await w.drain()
        w.close()
    return await asyncio.start_server(handle, ip, 0)


async def test_proxy_half_close_large_payload_and_no_backend():
    backend_ip, cluster_ip = allocate_address(ports=()), allocate_address(ports=(9000,))
    server = await _echo_server(backend_ip)
    port = server.sockets[0].getsockname()[1]
    target = {"ip": backend_ip}
    proxy = ServiceProxy(cluster_ip, [(9000, port)], lambda: target["ip"])
    await proxy.start()
    try:
        payload = os.urandom(8 * 2**20)
        r, w = await asyncio.open_connection(cluster_ip, 9000)
        w.write(payload)
        await w.drain()
        w.write_eof()  # half-close: the reply must still come back
        assert await asyncio.wait_for(r.read(), 30) == payload[::-1]
        w.close()

        # listener only on the cluster IP
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", 9000)

        # no backend yet: the connection waits for one (as a client of a real Service would retry)...
        proxy.UPSTREAM_PATIENCE = 1.0
        target["ip"] = None
        r, w = await asyncio.open_connection(cluster_ip, 9000)
        w.write(b"early")
        await w.drain()
        await asyncio.sleep(0.3)
        target["ip"] = backend_ip
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 5) == b"ylrae"
        w.close()
        # ...and is closed when none comes within the patience
        target["ip"] = None
        r, w = await asyncio.open_connection(cluster_ip, 9000)
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()

        # close() tears down live connections
        target["ip"] = backend_ip
        r, w = await asyncio.open_connection(cluster_ip, 9000)
        w.write(b"abc")
        await w.drain()
        await asyncio.sleep(0.1)
        await asyncio.wait_for(proxy.close(), 10)
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()
        release_address(backend_ip)
        release_address(cluster_ip)


async def test_proxy_carries_websockets():
    from tornado import web, websocket

    class Echo(websocket.WebSocketHandler):
        def on_message(self, message):
            self.write_message(message[::-1])

    backend_ip, cluster_ip = allocate_address(ports=()), allocate_address(ports=(9001,))
    app = web.Application([(r"/ws", Echo)])
    server = app.listen(0, address=backend_ip)
    port = next(iter(server._sockets.values())).getsockname()[1]
    proxy = ServiceProxy(cluster_ip, [(9001, port)], lambda: backend_ip)
    await proxy.start()
    try:
        conn = await websocket.websocket_connect(f"ws://{cluster_ip}:9001/ws")
        for msg in ("hello", "x" * 200_000):
            await conn.write_message(msg)
            assert await asyncio.wait_for(conn.read_message(), 10) == msg[::-1]
        conn.close()
    finally:
        await proxy.close()
        server.stop()
        release_address(backend_ip)
        release_address(cluster_ip)
