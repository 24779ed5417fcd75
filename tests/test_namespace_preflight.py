"""A namespace per user on the emulated API server, where the service account may read namespaces: the
preflight then says which is missing, the namespace or its RoleBinding. (tests/test_namespace_per_user.py runs
the real API server, where it may not, and gets the message that names both.)"""
from __future__ import annotations

import uuid

import pytest

from jupyter_dask_kube import manager
from jupyter_dask_kube.naming import format_namespace

from helpers import rest_call

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def user(monkeypatch):
    name = f"p{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def emu(emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    emulated_kubernetes.set_faults(review_denied=[("*", "*")])  # no RoleBinding anywhere
    yield emulated_kubernetes
    emulated_kubernetes.clear_faults()


@pytest.fixture
def jp_server_config(emu, user):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
            "DaskKube": {"backend": "kubernetes", "namespace": "dask-{username}",
                         "templates": {"tiny": {"workers": 0, "worker": {"kind": "Pod", "spec": {"containers": [
                             {"name": "dask", "image": "x", "args": ["dask-worker"]}]}}}}}}


async def test_preflight_says_which_is_missing(jp_fetch, emu, user, monkeypatch):
    ns = format_namespace("dask-{username}", user)
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert data["namespace"] == ns
    assert data["problems"][0].startswith(f"no RBAC permissions in namespace {ns}: namespace {ns} does not exist;"), \
        data["problems"]
    emu.api().create_namespace({"metadata": {"name": ns}})
    try:
        monkeypatch.setattr(manager, "PREFLIGHT_TTL", 0)  # the preflight's answer is cached for a minute
        code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
        assert data["problems"][0].startswith(
            f"no RBAC permissions in namespace {ns}: namespace {ns} exists but has no RoleBinding"), data["problems"]
    finally:
        emu.api().delete_namespace(ns)
