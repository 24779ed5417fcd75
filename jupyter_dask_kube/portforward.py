"""Reach a scheduler pod from outside the cluster: local listeners that port-forward through the API server.

A Jupyter server or a ``KubeCluster`` using a kubeconfig on a laptop cannot reach a Service's clusterIP or a pod
IP. :class:`PortForwarder` listens on loopback (one ephemeral port per remote port: the Dask comm and the
dashboard), on an address of its own from ``kubernetes.local.address-range`` where the system allows it (Linux:
so the dashboard proxy's host allow-list, which admits a user's scheduler hosts, admits this cluster's forwarder
and nothing else on the host), else on 127.0.0.1 (macOS has only that one by default) and carries each accepted connection through its own ``pods/portforward`` stream (the runtime's
``open_port_forward``: the official client's WebSocket port-forward). It is a plain byte pipe, so ``tcp://`` and
``tls://`` alike go through. :func:`tcp_reachable` is the probe that decides whether it is needed.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress

logger = logging.getLogger(__name__)

#: How long a direct connection may take before the route counts as unreachable.
PROBE_TIMEOUT = 1.0
#: What a port-forward setting may say (dask config ``kubernetes.port-forward``, ``c.DaskKube.port_forward``).
MODES = ("auto", "always", "never")

Dial = Callable[[str, int], Awaitable[socket.socket]]


def port_forward_mode(value) -> str:
    """``auto`` | ``always`` | ``never`` from a setting (booleans: True = always, False = never)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "always" if value else "never"
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"port-forward must be one of {', '.join(MODES)} (or a boolean), not {value!r}")
    return mode


def split_address(address: str) -> tuple[str, str, int]:
    """``tls://10.0.0.1:8786`` -> ("tls", "10.0.0.1", 8786)."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    return scheme or "tcp", host.strip("[]"), int(port)


async def tcp_reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` (refused, unroutable or silent: False)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with suppress(Exception):
        await writer.wait_closed()
    return True


class PortForwarder:
    """``fwd = PortForwarder(dial, pod, [8786, 8787]); await fwd.start(); fwd.address(8786); await fwd.close()``."""

    def __init__(self, dial: Dial, pod: str, ports, host: str | None = None):
        self.dial = dial
        self.pod = pod
        self.host = host or ""  # chosen in start() when not given
        self._own_host = host is None
        self.ports = list(ports)
        self.local: dict[int, int] = {}  # remote port -> local port
        self.last_error: BaseException | None = None
        self.connections = 0  # forwarded so far
        self._servers: list[asyncio.base_events.Server] = []
        self._open: set[asyncio.Task] = set()

    async def start(self) -> dict[int, int]:
        if self._own_host:
            from .runtimes.loopback import allocate_address

            self.host = allocate_address([])
            try:
                await self._listen()
            except OSError:  # this system has no loopback address but 127.0.0.1
                self._release_host()
                self.host = "127.0.0.1"
                await self._listen()
        else:
            await self._listen()
        logger.info("port-forwarding pod %s: %s", self.pod,
                    ", ".join(f"{self.host}:{lp} -> {rp}" for rp, lp in self.local.items()))
        return dict(self.local)

    async def _listen(self):
        for server in self._servers:
            server.close()
        self._servers.clear()
        for remote in self.ports:
            server = await asyncio.start_server(
                lambda r, w, remote=remote: self._accept(r, w, remote), self.host, 0)
            self._servers.append(server)
            self.local[remote] = server.sockets[0].getsockname()[1]

    def _release_host(self):
        if self._own_host and self.host:
            from .runtimes.loopback import release_address

            release_address(self.host)

    def address(self, remote_port: int, scheme: str = "tcp") -> str:
        return f"{scheme}://{self.host}:{self.local[remote_port]}"

    def _accept(self, reader, writer, remote: int):
        task = asyncio.ensure_future(self._forward(reader, writer, remote))
        self._open.add(task)
        task.add_done_callback(self._open.discard)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: int):
        try:
            try:
                sock = await self.dial(self.pod, remote)
            except Exception as exc:  # noqa: BLE001 - kept for the caller (refused, pod gone); this connection ends
                self.last_error = exc
                logger.warning("port-forward to %s:%d failed: %s", self.pod, remote, exc)
                return
            self.connections += 1
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                await _hang_up(up_reader, up_writer)
        finally:
            writer.close()

    async def close(self):
        """Stop listening and end every forwarded connection."""
        for server in self._servers:
            server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(list(self._open), timeout=5)
        for server in self._servers:
            with suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()
        self._release_host()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 1.0):
    """End the stream's side gracefully: EOF first, then wait (briefly) for the other side to close. Closing with
    unread bytes would reset the connection, which kills the client's port-forward thread before it closes its
    WebSocket (the API server's connection would then linger)."""
    with suppress(Exception):
        if not writer.is_closing() and writer.can_write_eof():
            writer.write_eof()
        async def drain():
            while await reader.read(1 << 16):
                pass
        await asyncio.wait_for(drain(), timeout)
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """Copy until EOF, then half-close the other side (so a request/response protocol sees the end)."""
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
