"""Bugs a real kube-apiserver (v1.20.2, jupyter_dask_kube.testing.controlplane) exposes, tested there:

- permissions granted after start-up: a server that started before the admin applied the Role works once it
  is applied, without a restart (the pod cache retries its first listing);
- client/server skew: the client (kubernetes >= 29) raises on some of 1.20's answers after the server did the
  work (a delete answered with a Status); every call the runtime makes goes through raw JSON and does not.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from pydantic import ValidationError

from jupyter_dask_kube.bodies import ApiError, CreateRequest
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.objects import user_selector
from jupyter_dask_kube.runtimes.base import RuntimeAPIError
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.templates import load_template

from helpers import WORKERS_UP, no_pods, tiny_template, wait_until

pytestmark = pytest.mark.asyncio


@pytest.fixture
def namespace(real_control_plane):
    ns = real_control_plane.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield ns
    real_control_plane.delete_namespace(ns)


async def test_permissions_granted_after_start_up(real_control_plane, namespace):
    cp = real_control_plane
    user = f"late{uuid.uuid4().hex[:6]}"
    rt = KubernetesRuntime(namespace, kubeconfig=cp.user_kubeconfig_for(namespace))
    manager = ClusterManager(runtime=rt, username=user, templates=[load_template(tiny_template(), name="tiny")])
    try:
        for _ in range(2):  # every try before the Role exists answers with a readable reason, quickly
            t = time.monotonic()
            with pytest.raises(ApiError) as info:
                await manager.create(CreateRequest(template="tiny"))
            assert time.monotonic() - t < 10
            message = info.value.message
            assert info.value.status == 503, message
            assert message.startswith(f"Forbidden: this Jupyter server may not list pods in namespace {namespace} ("), message
            assert f'User "{cp.user}" cannot list resource "pods"' in message and "deploy/rbac.yaml" in message
        assert manager.records == {}
        status = await manager.status()
        assert status["problems"][0] == message
        assert f"missing RBAC permission: list pods in namespace {namespace}" in status["problems"]
        first_attempts = manager.pod_cache.attempts

        cp.grant(namespace)
        # RBAC reaches the apiserver's authorizer through its informers (well under a second): wait for that,
        # as the admin would, then the very same manager (no restart) creates.
        await wait_until(lambda: rt.can_i("list", "pods"), 30, what="the Role to take effect")
        model = await manager.create(CreateRequest(template="tiny"))
        assert manager.pod_cache.attempts > first_attempts and manager.pod_cache.synced
        rec = manager.records[model["id"]]
        await wait_until(lambda: manager.model(rec)["status"] == "running" or manager.model(rec)["status"] == "failed",
                         WORKERS_UP, what="the cluster to run")
        assert manager.model(rec)["status"] == "running", manager.model(rec)
        manager._preflight = None  # the status preflight is cached for a minute: ask again now
        assert (await manager.status())["problems"] == []
        await manager.delete(model["id"])
        await wait_until(lambda: no_pods(rt, user_selector(user)), 60, what="nothing left")
        assert await rt.list_services(user_selector(user)) == []
    finally:
        await manager.close(detach=False)
        await rt.close()


async def test_runtime_calls_survive_client_server_skew(real_control_plane, namespace):
    cp = real_control_plane
    api = cp.api()
    # The skew itself: the client's own models raise on 1.20's Status answer, after the Service was deleted.
    api.create_namespaced_service(namespace, {"metadata": {"name": "skew"}, "spec": {"ports": [{"port": 80}]}})
    with pytest.raises(ValidationError):
        api.delete_namespaced_service("skew", namespace)
    assert [s.metadata.name for s in api.list_namespaced_service(namespace).items] == []

    rt = KubernetesRuntime(namespace, kubeconfig=cp.kubeconfig)
    labels = {"skew": "yes"}
    try:
        pod = await rt.create_pod({"metadata": {"name": "skew-pod", "labels": labels},
                                   "spec": {"containers": [{"name": "c", "image": "ghcr.io/dask/dask:latest",
                                                            "args": ["sleep", "3600"]}]}})
        assert pod["metadata"]["uid"]
        svc = await rt.create_service({"metadata": {"name": "skew", "labels": labels},
                                       "spec": {"selector": labels, "ports": [{"port": 8786}]}})
        assert svc["spec"]["clusterIP"].startswith("127.200.")
        assert (await rt.read_service("skew"))["metadata"]["uid"] == svc["metadata"]["uid"]
        assert [s["metadata"]["name"] for s in await rt.list_services("skew=yes")] == ["skew"]
        await rt.annotate_pod("skew-pod", {"a": "1"})
        assert (await rt.read_pod("skew-pod"))["metadata"]["annotations"]["a"] == "1"
        assert [p["metadata"]["name"] for p in await rt.list_pods("skew=yes")] == ["skew-pod"]
        assert isinstance(await rt.pod_events("skew-pod"), list)
        assert await rt.can_i("create", "pods") is True

        assert await rt.delete_service("skew") is True  # the call the raw client raised on
        assert await rt.read_service("skew") is None
        assert await rt.delete_service("skew") is False
        assert await rt.delete_pod("skew-pod", grace_period_seconds=0) is True
        await wait_until(lambda: no_pods(rt, "skew=yes"), 60, what="the pod gone")
        assert await rt.delete_pod("skew-pod") is False
        with pytest.raises(RuntimeAPIError) as info:  # a refusal still reaches the caller, in the API's words
            await rt.create_service({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 1}]}})
        assert info.value.status == 422 and "Bad_Name" in info.value.message
    finally:
        await rt.close()
