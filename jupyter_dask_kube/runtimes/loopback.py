"""Loopback addresses for local "pods" and a tiny TCP proxy that plays a Service's clusterIP.

Linux routes the whole 127.0.0.0/8 to the loopback interface, so every local pod and every Service gets
its own 127.x.y.z (from dask config ``kubernetes.local.address-range``) and binds only that: two users'
clusters on one host never share an address, and nothing is reachable through 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterable

import dask.config

from .. import config as _config  # noqa: F401  (loads the kubernetes.* defaults)
from ..selectors import selects

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_handed_out: set[str] = set()
_rng = random.SystemRandom()


def _ports_free(ip: str, ports: Iterable[int]) -> bool:
    for port in ports:
        if not port:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            s.bind((ip, int(port)))
        except OSError:
            return False
        finally:
            s.close()
    return True


def allocate_address(ports: Iterable[int] = (8786, 8787), network: str | None = None) -> str:
    """A random, currently unused loopback address in ``network`` (default: dask config
    ``kubernetes.local.address-range``) where every port in ``ports`` can be bound. Never 127.0.0.1.

    Addresses handed out by this process are remembered until :func:`release_address`; across processes
    the random pick from millions of addresses plus the bind check make collisions negligible.
    """
    net = ipaddress.IPv4Network(network or dask.config.get("kubernetes.local.address-range", "127.64.0.0/10"),
                                strict=False)
    ports = [int(p) for p in ports]
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:
        first, last = first + 1, last - 1  # skip network and broadcast addresses
    for _ in range(200):
        candidate = ipaddress.IPv4Address(_rng.randint(first, last))
        ip = str(candidate)
        if ip == "127.0.0.1":
            continue
        if ip.endswith((".0", ".255")) and net.num_addresses > 256:
            continue
        with _lock:
            if ip in _handed_out:
                continue
            _handed_out.add(ip)
        if _ports_free(ip, ports):
            return ip
        release_address(ip)
    raise RuntimeError(f"no free address in {net} for ports {ports}")


def release_address(ip: str | None) -> None:
    """Give an address from :func:`allocate_address` back."""
    with _lock:
        _handed_out.discard(ip)


def pick_endpoint(service: dict | None, pods: Iterable[dict], target_port) -> tuple[str, int] | None:
    """Where a connection to ``service`` goes, as kube-proxy decides it: a random Running pod with an IP that the
    Service's selector selects and that is not terminating, preferring Ready ones; ``target_port`` (a number or
    a container port's name) mapped on that pod. None when there is none. The one endpoint rule shared by the
    local runtime and the node agent."""
    selector = ((service or {}).get("spec") or {}).get("selector")
    if not selector:
        return None
    candidates = [p for p in pods if selects(selector, p["metadata"].get("labels"))
                  and not p["metadata"].get("deletionTimestamp")
                  and (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")]
    ready = [p for p in candidates if any(c.get("type") == "Ready" and c.get("status") == "True"
                                          for c in p["status"].get("conditions") or [])]
    if not (ready or candidates):
        return None
    pod = _rng.choice(ready or candidates)
    port = target_port
    if isinstance(port, str) and not port.isdigit():
        port = next((p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                     for p in c.get("ports") or [] if p.get("name") == target_port), None)
        if port is None:
            return None
    return pod["status"]["podIP"], int(port)


class ServiceProxy:
    """Forward TCP from ``(cluster_ip, port)`` to ``(resolve(), target_port)`` for each port pair.

    ``resolve`` is called for every new connection and returns the backend pod's IP, or None when no
    pod is ready; a connection waits up to UPSTREAM_PATIENCE for one, then is closed. It may take no argument, or the
    target port (an int, or a named port string) and may then return ``(ip, port)``.
    Listeners bind ``cluster_ip`` only.
    """

    BUFFER = 256 * 1024
    #: Seconds a new connection waits for a backend that is not up yet (see _on_connect).
    UPSTREAM_PATIENCE = 20.0
    #: Seconds between attempts to reach that backend: often during the first second (workers forked with their
    #: scheduler hold connections here until it listens, and each waited half an interval on average), then less.
    RETRY_FAST, RETRY_FAST_FOR, RETRY_SLOW = 0.01, 1.0, 0.05

    def __init__(self, cluster_ip: str, ports: Iterable[tuple[int, int | str]],
                 resolve: Callable[..., str | tuple[str, int] | None]):
        self.cluster_ip = cluster_ip
        self.ports = [(int(p), t) for p, t in ports]
        self.resolve = resolve
        try:
            params = [p for p in inspect.signature(resolve).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        except (TypeError, ValueError):
            params = []
        self._resolve_takes_port = bool(params)
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    async def start(self) -> None:
        try:
            for port, target in self.ports:
                server = await asyncio.start_server(
                    lambda r, w, target=target: self._on_connect(r, w, target),
                    host=self.cluster_ip, port=port, reuse_address=True, limit=self.BUFFER)
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise

    def _target(self, target_port):
        res = self.resolve(target_port) if self._resolve_takes_port else self.resolve()
        if not res:
            return None
        if isinstance(res, tuple):
            return res[0], int(res[1])
        if isinstance(target_port, str) and not target_port.isdigit():
            return None  # a named port needs a resolver that maps it
        return res, int(target_port)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port):
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        up_writer = None
        try:
            if self._closed:
                return
            # The client's connection is already accepted, so closing it now would look like a
            # broken handshake, which dask does not retry. A real Service's client would instead see
            # "refused" and retry; holding the connection while the pod comes up gives the same outcome.
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = started + self.UPSTREAM_PATIENCE
            while True:
                try:
                    target = self._target(target_port)
                except Exception:
                    logger.exception("service %s resolve failed", self.cluster_ip)
                    target = None
                if target is not None:
                    try:
                        up_reader, up_writer = await asyncio.open_connection(*target, limit=self.BUFFER)
                        break
                    except OSError as e:
                        logger.debug("service %s: cannot reach %s:%s: %s", self.cluster_ip, *target, e)
                if self._closed or loop.time() >= deadline:
                    return
                await asyncio.sleep(self.RETRY_FAST if loop.time() - started < self.RETRY_FAST_FOR else self.RETRY_SLOW)
            self._writers.add(up_writer)
            for w in (writer, up_writer):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(self.BUFFER)
                if not data:
                    break
                writer.write(data)
                if writer.transport.get_write_buffer_size() > self.BUFFER:
                    await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # half-close: the peer sees EOF, the other direction keeps flowing
        except (ConnectionError, OSError):
            # one side broke: tear both down
            writer.transport.abort()

    async def close(self) -> None:
        self._closed = True
        for server in self._servers:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()
