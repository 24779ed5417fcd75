"""A namespace per user (c.DaskKube.namespace = "dask-{username}") on the real kube-apiserver: the status
preflight says what is missing until the admin makes the namespace and its RoleBinding, then clusters go
there. The server runs as the unprivileged token user jdk-user. Skipped when the binaries are not built
(`make kube-binaries`), failed in CI."""
from __future__ import annotations

import uuid

import pytest

from jupyter_dask_kube.naming import format_namespace

from helpers import rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TEMPLATES = {"tiny": tiny_template()}


@pytest.fixture
def username(monkeypatch):
    name = f"U.{uuid.uuid4().hex[:6]}"  # not a DNS label as is: the namespace gets its escaped form
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def home(real_control_plane):
    """The namespace of the server's kubeconfig context (where clusters would go without the template)."""
    ns = real_control_plane.create_namespace(f"home-{uuid.uuid4().hex[:8]}")
    yield ns
    real_control_plane.delete_namespace(ns)


@pytest.fixture
def user_namespace(username):
    return format_namespace("dask-{username}", username)


@pytest.fixture
def jp_server_config(real_control_plane, home, username, monkeypatch, request):
    if request.node.get_closest_marker("made_by_admin"):
        ns = real_control_plane.create_namespace(format_namespace("dask-{username}", username))
        real_control_plane.grant(ns)
        request.addfinalizer(lambda: real_control_plane.delete_namespace(ns))
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(home))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": TEMPLATES, "max_workers": 2,
                     "namespace": "dask-{username}"},
    }


async def test_missing_namespace_is_named_in_the_status(jp_fetch, user_namespace, username):
    assert user_namespace.startswith("dask-u-") and user_namespace != f"dask-{username}"
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert data["namespace"] == user_namespace
    problems = "\n".join(data["problems"])
    assert (f"no RBAC permissions in namespace {user_namespace}: the namespace does not exist, or it has no "
            "RoleBinding") in problems, problems
    code, data = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1})
    assert 400 <= code < 600 and code != 500, (code, data)


@pytest.mark.made_by_admin
async def test_with_namespace_and_role_binding_clusters_go_there(jp_fetch, real_control_plane, user_namespace, home):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert data["namespace"] == user_namespace
    assert [p for p in data["problems"] if "RBAC" in p or "namespace" in p] == []
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, timeout=180,
                     what="1 worker in the user's namespace")
    api = real_control_plane.api()
    pods = api.list_namespaced_pod(user_namespace).items
    assert len(pods) == 2 and {p.metadata.labels["dask.org/cluster-name"] for p in pods} == {cid}
    assert api.list_namespaced_pod(home).items == []
    from kubernetes import client
    net = client.NetworkingV1Api(api.api_client)
    assert [p.metadata.name for p in net.list_namespaced_network_policy(user_namespace).items] == [cid]
    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
    await wait_until(lambda: not api.list_namespaced_pod(user_namespace).items, 120, interval=0.5,
                     what="the cluster's pods gone from the user's namespace")
