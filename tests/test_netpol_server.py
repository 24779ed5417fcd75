"""The per-cluster NetworkPolicy through the server extension on the real kube-apiserver, as the unprivileged
token user jdk-user: a Role without the networkpolicies rule is named by the status preflight, and the refused
policy reaches the card in the API server's words with nothing of the cluster left behind. Skipped when the
binaries are not built (`make kube-binaries`), failed in CI."""
from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client

from helpers import rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TEMPLATES = {"tiny": tiny_template()}
ROOT = __import__("pathlib").Path(__file__).parents[1]


@pytest.fixture
def username(monkeypatch):
    name = f"n{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def namespace(real_control_plane, tmp_path):
    """A fresh namespace where jdk-user has deploy/rbac.yaml's Role minus its networkpolicies rule."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    for d in docs:
        if d["kind"] == "Role":
            d["rules"] = [r for r in d["rules"] if "networking.k8s.io" not in r["apiGroups"]]
    path = tmp_path / "rbac-no-netpol.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    ns = real_control_plane.create_namespace(f"np-{uuid.uuid4().hex[:8]}")
    real_control_plane.grant(ns, rbac_yaml=path)
    yield ns
    real_control_plane.delete_namespace(ns)


@pytest.fixture
def jp_server_config(real_control_plane, namespace, username, monkeypatch, request):
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(namespace))
    policy = not request.node.get_closest_marker("no_network_policy")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": TEMPLATES, "max_workers": 2, "network_policy": policy},
    }


def everything_in(cp, namespace) -> dict:
    api = cp.api()
    net = client.NetworkingV1Api(api.api_client)
    return {"pods": [p.metadata.name for p in api.list_namespaced_pod(namespace).items],
            "services": [s.metadata.name for s in api.list_namespaced_service(namespace).items],
            "networkpolicies": [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items]}


async def test_refused_policy_reason_on_the_card_and_nothing_left(jp_fetch, real_control_plane, namespace):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    problems = data["problems"]
    assert f"missing RBAC permission: create networkpolicies.networking.k8s.io in namespace {namespace}" in problems
    assert not any("pods" in p for p in problems), problems  # the rest of the Role is there

    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1})
    if code == 201:
        model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", 120,
                                 what="the create to fail on the refused NetworkPolicy")
        message = model["message"]
    else:
        assert 400 <= code < 600 and code != 500, (code, model)
        message = model["message"]
    assert "NetworkPolicy was refused: Forbidden" in message, message
    assert "networkpolicies.networking.k8s.io" in message, message
    await wait_until(lambda: everything_in(real_control_plane, namespace) ==
                     {"pods": [], "services": [], "networkpolicies": []}, 120, interval=0.5,
                     what="nothing of the refused cluster left on the API server")


@pytest.mark.no_network_policy
async def test_turned_off_no_policy_no_permission_needed(jp_fetch, real_control_plane, namespace):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert [p for p in data["problems"] if "RBAC" in p] == []
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "running" and m["workers"] == 1, 180,
                     what="a cluster without a NetworkPolicy")
    assert everything_in(real_control_plane, namespace)["networkpolicies"] == []
    resp = await jp_fetch("dask-kube", "api", "clusters", model["id"], method="DELETE")
    assert resp.code == 204
    await wait_until(lambda: everything_in(real_control_plane, namespace)["pods"] == [], 120, interval=0.5,
                     what="the pods gone")
