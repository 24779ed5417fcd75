"""RBAC for real: the server extension run as an unprivileged token user of a real kube-apiserver, with or
without deploy/rbac.yaml's Role bound in its namespace. Skipped when the binaries are not built (`make
kube-binaries`), failed in CI."""
from __future__ import annotations

import uuid

import pytest

from jupyter_dask_kube import rbac
from jupyter_dask_kube.objects import user_selector

from helpers import rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TEMPLATES = {"tiny": tiny_template()}


@pytest.fixture
def username(monkeypatch):
    name = f"u{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def namespace(real_control_plane, request):
    """A fresh namespace; with the test marked ``with_role``, deploy/rbac.yaml's Role is bound to jdk-user
    there before the Jupyter server starts."""
    ns = real_control_plane.create_namespace(f"rbac-{uuid.uuid4().hex[:8]}")
    if request.node.get_closest_marker("with_role"):
        real_control_plane.grant(ns)
    yield ns
    real_control_plane.delete_namespace(ns)


@pytest.fixture
def jp_server_config(real_control_plane, namespace, username, monkeypatch):
    # The server reaches the API server as jdk-user, whose context defaults to the test's namespace.
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(namespace))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": TEMPLATES, "max_workers": 4},
    }


def objects_in(cp, namespace) -> dict:
    """Every pod and Service in the namespace, as the admin sees them."""
    api = cp.api()
    return {"pods": [p.metadata.name for p in api.list_namespaced_pod(namespace).items],
            "services": [s.metadata.name for s in api.list_namespaced_service(namespace).items]}


async def test_without_the_role_status_names_every_missing_verb_and_create_leaves_nothing(
        jp_fetch, real_control_plane, namespace, username):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert data["namespace"] == namespace
    problems = "\n".join(data["problems"])
    for perm in rbac.required_permissions():
        assert f"missing RBAC permission: {rbac.describe(*perm)} in namespace {namespace}" in problems, perm

    code, data = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1})
    assert 400 <= code < 600 and code != 500, (code, data)
    message = data["message"]
    assert "Forbidden" in message or "forbidden" in message, message
    assert "rbac.yaml" in message, message
    assert objects_in(real_control_plane, namespace) == {"pods": [], "services": []}
    # ...and nothing of this user's anywhere else either
    api = real_control_plane.api()
    assert api.list_pod_for_all_namespaces(label_selector=user_selector(username)).items == []


@pytest.mark.with_role
async def test_with_the_role_status_has_no_rbac_problem(jp_fetch, real_control_plane, namespace):
    """deploy/rbac.yaml's Role, bound to the user before the server starts, satisfies the preflight that the
    real API server's SelfSubjectAccessReviews answer."""
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert [p for p in data["problems"] if "RBAC" in p or "Forbidden" in p] == []


@pytest.mark.with_role
async def test_with_only_the_role_create_scale_delete_work(jp_fetch, real_control_plane, namespace, username):
    """The whole lifecycle as jdk-user with nothing but deploy/rbac.yaml's Role: pods run (node agent),
    scale up, logs through the API server, delete; the admin then sees nothing left."""
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, timeout=180,
                     what="1 worker on the real API server")
    await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 2}, expect=200)
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 2, timeout=180, what="2 workers")
    code, data = await rest_call(jp_fetch, "GET", "clusters", cid, "logs", expect=200)
    sched = [n for n in data["logs"] if n.endswith("-scheduler")]
    assert sched and "Scheduler at" in data["logs"][sched[0]]
    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
    await wait_until(lambda: objects_in(real_control_plane, namespace) == {"pods": [], "services": []}, 120,
                     interval=0.5, what="the cluster's pods and Service to be gone from the API server")
