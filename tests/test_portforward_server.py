"""The Jupyter server outside the cluster (a kubeconfig user of the real kube-apiserver) reaching its clusters
through ``pods/portforward``: the card shows the forwarded address, which works; deleting the cluster stops the
listeners. Without ``pods/portforward`` in the user's Role, the card says why and nothing is left behind.
Skipped when the real API server binaries are not built (`make kube-binaries`), failed in CI."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid
from pathlib import Path

import pytest
import tornado.httpclient
import yaml
from distributed import Client

from jupyter_dask_kube import tls
from jupyter_dask_kube.objects import user_selector

from helpers import rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
ROOT = Path(__file__).parents[1]


@pytest.fixture
def username(monkeypatch):
    name = f"u{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


def role_without_port_forward(tmp_path) -> Path:
    """deploy/rbac.yaml with its pods/portforward rule taken out."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    for d in docs:
        if d["kind"] == "Role":
            d["rules"] = [r for r in d["rules"] if "pods/portforward" not in r["resources"]]
    path = tmp_path / "rbac-no-portforward.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture
def namespace(real_control_plane, request, tmp_path):
    ns = real_control_plane.create_namespace(f"pf-{uuid.uuid4().hex[:8]}")
    if request.node.get_closest_marker("without_port_forward"):
        real_control_plane.grant(ns, rbac_yaml=role_without_port_forward(tmp_path))
    else:
        real_control_plane.grant(ns)
    yield ns
    real_control_plane.delete_namespace(ns)


@pytest.fixture
def jp_server_config(real_control_plane, namespace, username, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(namespace))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True, "jupyter_server_proxy": True}},
        "DaskKube": {"backend": "kubernetes", "templates": {"tiny": tiny_template()}, "port_forward": "always"},
    }


def objects_in(cp, namespace) -> dict:
    api = cp.api()
    return {"pods": [p.metadata.name for p in api.list_namespaced_pod(namespace).items],
            "services": [s.metadata.name for s in api.list_namespaced_service(namespace).items]}


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


async def fetch(url, headers):
    client = tornado.httpclient.AsyncHTTPClient()
    return await client.fetch(url, headers=headers, raise_error=False, follow_redirects=False)


async def test_the_card_shows_the_forwarded_address_and_it_works(jp_fetch, jp_http_port, jp_auth_header,
                                                                 real_control_plane, namespace):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, timeout=180,
                             what="1 worker, reached through port-forward")
    address = model["scheduler_address"]
    assert address.startswith("tls://"), address  # TLS per cluster, through the forwarder's plain byte pipe
    host, port = address[len("tls://"):].rsplit(":", 1)
    port = int(port)
    assert ipaddress.ip_address(host).is_loopback and host != "127.0.0.1", address  # the forwarder's own address
    assert f"/proxy/{host}:" in model["dashboard_link"], model["dashboard_link"]  # the forwarded dashboard port
    # what the card's address gives a notebook, with the owner's credentials from the cluster's Secret
    api = real_control_plane.api()
    secret = api.api_client.sanitize_for_serialization(
        await asyncio.to_thread(api.read_namespaced_secret, tls.secret_name(cid), namespace))
    security = tls.client_security(tls.credentials_from_secret(secret))
    async with Client(address, security=security, asynchronous=True) as client:
        assert await client.submit(sum, [2, 3]) == 5
    # the dashboard through jupyter-server-proxy: its allow-list admits the forwarder's own address only
    server = f"http://localhost:{jp_http_port}"
    resp = await fetch(server + model["dashboard_link"], jp_auth_header)
    assert resp.code == 200 and b"Dask" in resp.body, resp.code
    dport = model["dashboard_link"].split(f"/proxy/{host}:", 1)[1].split("/")[0]
    resp = await fetch(server + model["dashboard_link"].replace(f"/proxy/{host}:", "/proxy/127.0.0.1:"), jp_auth_header)
    assert resp.code == 403, (resp.code, dport)
    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
    await wait_until(lambda: objects_in(real_control_plane, namespace) == {"pods": [], "services": []}, 120,
                     interval=0.5, what="the cluster's pods and Service to be gone from the API server")
    await wait_until(lambda: not listening(host, port), 30, what=f"the forwarded port {port} to close")


@pytest.mark.without_port_forward
async def test_a_refused_port_forward_fails_with_the_reason_and_leaves_nothing(jp_fetch, real_control_plane,
                                                                                namespace, username):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "failed", timeout=180,
                             what="the card to fail on the refused port-forward")
    message = model["message"]
    assert "port-forward" in message and "forbidden" in message.lower() and "pods/portforward" in message, message
    await wait_until(lambda: objects_in(real_control_plane, namespace) == {"pods": [], "services": []}, 120,
                     interval=0.5, what="nothing left of the cluster on the API server")
    api = real_control_plane.api()
    assert api.list_pod_for_all_namespaces(label_selector=user_selector(username)).items == []
    await asyncio.sleep(0)
