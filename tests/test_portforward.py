"""Reaching the scheduler from outside the cluster: port-forward through the API server (``pods/portforward``).

The node agent serves ``/portForward/{ns}/{pod}`` on its kubelet port as a kubelet does (WebSocket channels); the
real kube-apiserver (v1.20.2) and the emulator proxy the official client's upgrade there. On loopback the test tier
plays kube-proxy, so a Service's clusterIP is reachable: ``port_forward="always"`` takes the forwarded route anyway,
and the "auto" detection is tested with a clusterIP that refuses (an in-process emulator whose Service addresses
are taken but not listening)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import urllib.request
import uuid

import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.portforward import port_forward_mode, split_address, tcp_reachable
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import WORKERS_UP, no_pods, small_pod, wait_until



def closed(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode("utf-8", "replace")


def closed_port_error(kubeconfig: str, pod: str, namespace: str) -> str:
    """What the official client's port-forward reports for a port of the pod that nothing listens on."""
    from kubernetes import client, config
    from kubernetes.stream import portforward

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    try:
        pf = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports="9")
        sock = pf.socket(9)
        sock.settimeout(30)
        assert sock.recv(100) == b""  # nothing comes: the stream ends
        deadline = time.monotonic() + 30
        while pf.error(9) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return pf.error(9) or ""
    finally:
        api.api_client.close()


async def left_on_api_server(runtime, name: str) -> str | None:
    """None when no pod and no Service of the cluster is left, else what is."""
    pods = await runtime.list_pods(cluster_selector(name))
    svc = await runtime.read_service(name)
    return None if not pods and svc is None else f"pods {[p['metadata']['name'] for p in pods]}, service {bool(svc)}"


def test_modes_and_addresses():
    assert [port_forward_mode(v) for v in (None, True, False, "AUTO", " never ")] == ["auto", "always", "never",
                                                                                     "auto", "never"]
    with pytest.raises(ValueError, match="auto, always, never"):
        port_forward_mode("sometimes")
    assert split_address("tls://10.0.0.1:8786") == ("tls", "10.0.0.1", 8786)
    assert split_address("tcp://[::1]:8786") == ("tcp", "::1", 8786)


@pytest.mark.asyncio
async def test_probe_tells_a_refusing_address_from_a_listening_one():
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        assert not await tcp_reachable("127.0.0.1", bound.getsockname()[1], timeout=1)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        assert await tcp_reachable("127.0.0.1", server.sockets[0].getsockname()[1], timeout=1)


@pytest.mark.asyncio
async def test_forced_port_forward_computes_serves_the_dashboard_and_leaves_nothing(kube_target, monkeypatch):
    """Through the API server (emulator; real kube-apiserver -> node agent's kubelet port): Client(cluster)
    computes, the dashboard answers, a 50 MB result comes back; close() stops the listeners and deletes it all."""
    monkeypatch.setenv("KUBECONFIG", kube_target.kubeconfig)
    runtime = KubernetesRuntime(kube_target.namespace, kubeconfig=kube_target.kubeconfig)
    cluster = await KubeCluster(small_pod(), n_workers=1, name=f"pf-{uuid.uuid4().hex[:6]}", port_forward="always",
                                namespace=kube_target.namespace, asynchronous=True)
    name = cluster.name
    try:
        scheme, host, port = split_address(cluster.scheduler_address)
        assert scheme == "tls" and ipaddress.ip_address(host).is_loopback, cluster.scheduler_address
        assert cluster.forwarder is not None and (cluster.forwarder.host, cluster.forwarder.local[8786]) == (host, port)
        svc = await runtime.read_service(name)
        assert cluster.scheduler.address == f"tls://{svc['spec']['clusterIP']}:8786"  # what the workers use
        await cluster.wait_for_workers(1, timeout=WORKERS_UP)
        async with Client(cluster, asynchronous=True) as client:
            assert await client.submit(sum, [1, 2, 3]) == 6
            big = await client.submit(lambda n: b"x" * n, 50_000_000)
            assert len(big) == 50_000_000
        link = cluster.dashboard_link
        assert link.startswith(f"http://{host}:{cluster.forwarder.local[8787]}/"), link
        status, body = await asyncio.to_thread(fetch, link)
        assert status == 200 and "Dask" in body
        ports = dict(cluster.forwarder.local)
        assert cluster.forwarder.connections >= 3
        # a port nothing listens on: the kubelet's error channel says so, the stream ends (official client, raw)
        err = await asyncio.to_thread(closed_port_error, kube_target.kubeconfig, f"{name}-scheduler",
                                      kube_target.namespace)
        assert "error forwarding port 9" in err and "refused" in err.lower(), err
    finally:
        await cluster.close()
    assert cluster.forwarder is None
    for p in ports.values():
        assert closed(host, p), f"port {p} still listens after close()"
    try:
        await wait_until(lambda: no_pods(runtime, cluster_selector(name)),
                         60, what="pods deleted")
        assert await left_on_api_server(runtime, name) is None
    finally:
        await runtime.close()


def test_a_refused_upgrade_keeps_the_api_servers_words():
    """The client reports a refused WebSocket upgrade as status 0 with the HTTP answer in its text."""
    from kubernetes.client.rest import ApiException

    from jupyter_dask_kube.runtimes.kubernetes import _handshake_error

    body = ('{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \\"x\\" is forbidden: User '
            '\\"jdk-user\\" cannot get resource \\"pods/portforward\\" in API group \\"\\" in the namespace \\"n\\"",'
            '"reason":"Forbidden","code":403}\n')
    err = _handshake_error(ApiException(status=0, reason=f"Handshake status 403 Forbidden -+-+- {{'a': 'b'}} -+-+- {body}"),
                           "https://api", "x")
    assert (err.status, err.reason) == (403, "Forbidden")
    assert err.message == 'pods "x" is forbidden: User "jdk-user" cannot get resource "pods/portforward" in API group "" in the namespace "n"'
    err = _handshake_error(ApiException(status=0, reason="Handshake status 500 Internal Server Error -+-+- {} -+-+- None"),
                           "https://api", "x")
    assert (err.status, err.reason) == (500, "InternalServerError")
    err = _handshake_error(ApiException(status=0, reason="[Errno 111] Connection refused"), "https://api", "x")
    assert err.status == 0 and "Connection refused" in err.message


@pytest.fixture
def unreachable_services():
    """An emulator of this process whose Services get a clusterIP that refuses connections (its ports are bound,
    not listening, so the node agent cannot play kube-proxy there): as a laptop outside the cluster sees them."""
    from jupyter_dask_kube.runtimes.loopback import allocate_address, release_address
    from jupyter_dask_kube.testing import EmulatedKubernetes

    ip = allocate_address([8786, 8787])
    socks = []
    for port in (8786, 8787):
        s = socket.socket()
        s.bind((ip, port))
        socks.append(s)
    emu = EmulatedKubernetes(processes=True, in_process=True)
    emu.start()
    emu.info.emulator.allocate_ip = lambda: ip
    try:
        yield emu, ip
    finally:
        emu.stop()
        for s in socks:
            s.close()
        release_address(ip)


@pytest.mark.asyncio
async def test_auto_detects_an_unreachable_service_and_port_forwards(unreachable_services, monkeypatch):
    emu, ip = unreachable_services
    monkeypatch.setenv("KUBECONFIG", emu.kubeconfig)
    assert not await tcp_reachable(ip, 8786)
    runtime = KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)
    try:
        # never: the reason names the address that did not answer; nothing is left
        with pytest.raises(RuntimeError, match=f"tls://{ip}:8786 did not answer within 5s"):
            await KubeCluster(small_pod(), name="pf-never-{uuid}", port_forward="never", scheduler_timeout=5,
                              asynchronous=True)
        await wait_until(lambda: no_pods(runtime, "app.kubernetes.io/name=dask"), 60, what="the failed cluster gone")
        # auto (the default): the direct route refuses, the forwarded one answers
        cluster = await KubeCluster(small_pod(), name="pf-auto-{uuid}", asynchronous=True)
        try:
            assert cluster.port_forward == "auto" and cluster.forwarder is not None
            assert cluster.scheduler_address == cluster.forwarder.address(8786, "tls")
            assert cluster.scheduler.address == f"tls://{ip}:8786"  # the workers' address is still the Service's
            async with Client(cluster, asynchronous=True) as client:
                assert (await client.scheduler.identity())["type"] == "Scheduler"
            status, body = await asyncio.to_thread(fetch, cluster.dashboard_link)
            assert status == 200
            # attached by name (the card's snippet in a kernel outside the cluster): forwarded too, by its own
            # listeners; closing it lets go and stops them, the cluster stays
            other = await KubeCluster.from_name(cluster.name, asynchronous=True)
            try:
                assert other.forwarder is not None and other.scheduler_address != cluster.scheduler_address
                async with Client(other, asynchronous=True) as client:
                    assert (await client.scheduler.identity())["type"] == "Scheduler"
            finally:
                await other.close()
            assert closed(*split_address(other.scheduler_address)[1:])
            assert await runtime.read_pod(f"{cluster.name}-scheduler") is not None
        finally:
            await cluster.close()
        await wait_until(lambda: no_pods(runtime, "app.kubernetes.io/name=dask"), 60, what="pods deleted")
    finally:
        await runtime.close()


@pytest.mark.asyncio
async def test_forwarder_pipes_bytes_both_ways_and_closes_its_listeners():
    """PortForwarder alone, with a dial that connects to a local echo server: bytes go both ways per connection,
    a failing dial ends that connection (and is kept for the caller), close() stops the listener."""
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    dials = []

    async def dial(pod, port):
        dials.append((pod, port))
        if pod == "gone":
            raise RuntimeError("pods \"gone\" not found")
        sock = socket.create_connection(("127.0.0.1", target))
        sock.setblocking(False)
        return sock

    from jupyter_dask_kube.portforward import PortForwarder

    fwd = PortForwarder(dial, "p", [8786])
    local = (await fwd.start())[8786]
    # an address of its own (Linux): the dashboard proxy's allow-list admits this forwarder, not all of 127.0.0.1
    assert fwd.host != "127.0.0.1" and ipaddress.ip_address(fwd.host).is_loopback
    assert fwd.address(8786, "tls") == f"tls://{fwd.host}:{local}"
    for payload in (b"hello", b"x" * 3_000_000):
        reader, writer = await asyncio.open_connection(fwd.host, local)
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 30) == payload
        writer.close()
    assert dials == [("p", 8786), ("p", 8786)] and fwd.connections == 2
    await fwd.close()
    assert closed(fwd.host, local)

    bad = PortForwarder(dial, "gone", [8786], host="127.0.0.1")
    local = (await bad.start())[8786]
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the connection ends
    assert "not found" in str(bad.last_error) and bad.connections == 0
    writer.close()
    await bad.close()
    server.close()
    await server.wait_closed()
