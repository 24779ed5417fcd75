"""The per-cluster NetworkPolicy against every Kubernetes target: the emulator and the real kube-apiserver
(whose validation, RBAC and controller-manager garbage collector are the real ones). Checked against the API
server, with an admin client, not through the runtime under test."""
from __future__ import annotations

import json
import os

import pytest
import pytest_asyncio
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import small_pod, wait_until

pytestmark = pytest.mark.asyncio


def admin(target):
    api_client = k8s_config.new_client_from_config(config_file=target.kubeconfig)
    return k8s.NetworkingV1Api(api_client), k8s.CoreV1Api(api_client)


def policy_of(net, namespace, name) -> dict | None:
    try:
        resp = net.read_namespaced_network_policy(name, namespace, _preload_content=False)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(resp.data)


def objects_of(target, name) -> dict:
    net, core = admin(target)
    sel = cluster_selector(name)
    return {"pods": [p.metadata.name for p in core.list_namespaced_pod(target.namespace, label_selector=sel).items],
            "services": [s.metadata.name for s in core.list_namespaced_service(target.namespace,
                                                                                label_selector=sel).items],
            "networkpolicies": [p.metadata.name for p in net.list_namespaced_network_policy(target.namespace).items
                                if p.metadata.name == name]}


@pytest_asyncio.fixture
async def runtime(kube_target):
    rt = KubernetesRuntime(kube_target.namespace, kubeconfig=kube_target.kubeconfig)
    yield rt
    await rt.close()


async def test_policy_made_with_the_cluster_owned_by_its_scheduler_and_gone_after_close(kube_target, runtime):
    net, core = admin(kube_target)
    cluster = await KubeCluster(small_pod(), runtime=runtime, username="alice", asynchronous=True, n_workers=1)
    name = cluster.name
    try:
        pol = policy_of(net, kube_target.namespace, name)
        assert pol is not None, "no NetworkPolicy for the cluster"
        scheds = core.list_namespaced_pod(kube_target.namespace,
                                          label_selector=cluster_selector(name) + ",dask.org/component=scheduler").items
        assert len(scheds) == 1
        sched = scheds[0]
        assert pol["metadata"]["ownerReferences"] == [{
            "apiVersion": "v1", "kind": "Pod", "name": sched.metadata.name, "uid": sched.metadata.uid,
            "controller": True, "blockOwnerDeletion": False}]
        spec = pol["spec"]
        assert spec["podSelector"] == {"matchLabels": {"dask.org/cluster-name": name}}
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [
            {"from": [{"podSelector": {"matchLabels": {"dask.org/cluster-name": name}}}]},
            {"from": [{"podSelector": {"matchLabels": {"component": "singleuser-server",
                                                       "hub.jupyter.org/username": "alice"}}}]},
        ]
        # the policy selects both the scheduler and the worker pods (by the labels they really carry)
        pods = core.list_namespaced_pod(kube_target.namespace, label_selector=cluster_selector(name)).items
        assert {p.metadata.labels["dask.org/component"] for p in pods} == {"scheduler", "worker"}
    finally:
        await cluster.close()
    await wait_until(lambda: policy_of(net, kube_target.namespace, name) is None, 30, interval=0.2,
                     what="the NetworkPolicy gone after close")


async def test_policy_goes_with_its_scheduler_pod(kube_target, runtime):
    """The ownerReference does it: deleting the scheduler pod alone removes the policy (the real tier's
    controller-manager garbage collector; the emulator's own)."""
    net, core = admin(kube_target)
    cluster = await KubeCluster(small_pod(), runtime=runtime, username="alice", asynchronous=True)
    name = cluster.name
    try:
        assert policy_of(net, kube_target.namespace, name) is not None
        await cluster.detach()  # let go without deleting anything
        sched = core.list_namespaced_pod(kube_target.namespace,
                                         label_selector=cluster_selector(name) + ",dask.org/component=scheduler").items[0]
        core.delete_namespaced_pod(sched.metadata.name, kube_target.namespace, grace_period_seconds=0)
        await wait_until(lambda: policy_of(net, kube_target.namespace, name) is None, 60, interval=0.25,
                         what="the NetworkPolicy collected with its owner")
    finally:
        for p in core.list_namespaced_pod(kube_target.namespace, label_selector=cluster_selector(name)).items:
            core.delete_namespaced_pod(p.metadata.name, kube_target.namespace, grace_period_seconds=0)


async def test_refused_policy_fails_the_create_with_the_api_reason_and_leaves_nothing(kube_target, runtime):
    bad = {"matchLabels": {"hub.jupyter.org/username": "not a label value!"}}
    cluster = KubeCluster(small_pod(), runtime=runtime, username="alice", asynchronous=True, n_workers=1,
                          network_policy_client_selector=bad)
    name = cluster.name
    with pytest.raises(RuntimeError) as info:
        await cluster
    text = str(info.value)
    assert "NetworkPolicy was refused" in text and "Invalid" in text and "not a label value!" in text, text
    await wait_until(lambda: objects_of(kube_target, name) == {"pods": [], "services": [], "networkpolicies": []},
                     60, interval=0.25, what="nothing of the refused cluster left")


async def test_no_policy_when_turned_off(kube_target, runtime):
    net, _ = admin(kube_target)
    cluster = await KubeCluster(small_pod(), runtime=runtime, username="alice", asynchronous=True,
                                network_policy=False)
    try:
        assert policy_of(net, kube_target.namespace, cluster.name) is None
    finally:
        await cluster.close()


async def test_notebook_in_another_namespace_is_selected_there(kube_target, runtime, monkeypatch):
    """A namespace per user: the notebook pod (POD_NAMESPACE, the downward API) is not in the cluster's namespace,
    so the policy's client peer selects its namespace by name too."""
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    net, _ = admin(kube_target)
    cluster = await KubeCluster(small_pod(), runtime=runtime, username="alice", asynchronous=True)
    try:
        pol = policy_of(net, kube_target.namespace, cluster.name)
        assert pol["spec"]["ingress"][1]["from"] == [{
            "podSelector": {"matchLabels": {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}}}]
    finally:
        await cluster.close()


BAD_POLICIES = [
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}, "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"podSelector": {}, "egress": [{"ports": [{"port": 70000}]}]}, "spec.egress[0].ports[0].port"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol"),
    ({"podSelector": {"matchLabels": {"a": "bad value"}}}, "spec.podSelector.matchLabels"),
]


@pytest.mark.parametrize("spec, field", BAD_POLICIES, ids=[f for _, f in BAD_POLICIES])
async def test_invalid_policies_are_refused_alike(kube_target, spec, field):
    """What the emulator refuses (netpolicy.problems), the real API server refuses too, naming the same field."""
    net, _ = admin(kube_target)
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(k8s.ApiException) as info:
        net.create_namespaced_network_policy(kube_target.namespace, body)
    assert info.value.status == 422, info.value.body
    assert field in json.loads(info.value.body)["message"], info.value.body
    assert policy_of(net, kube_target.namespace, "bad") is None
