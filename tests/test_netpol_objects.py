"""The per-cluster NetworkPolicy builder (objects.build_network_policy), the client selector's username as
kubespawner labels user pods, and the per-user namespace name (naming.format_namespace)."""
from __future__ import annotations

import pytest

from jupyter_dask_kube import naming
from jupyter_dask_kube.netpolicy import Pod, allows, problems
from jupyter_dask_kube.objects import DEFAULT_CLIENT_SELECTOR, build_network_policy, client_selector, labels

SCHED = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dask-alice-abc-scheduler", "uid": "u-1",
                                                         "namespace": "hub"}}


# Expected values are kubespawner's own test cases (tests/test_slugs.py, test_safe_slug_label).
@pytest.mark.parametrize("name, expected", [
    ("", ""), ("x", "x"), ("a-b", "a-b"), ("9a", "9a"), ("9.", "x-9---99a1b84b"), ("AbC", "AbC"),
    ("AbC.", "abc---dbe8c5d1"), ("ab.c", "ab.c"), ("a@b.c", "a-b-c---d648b243"), ("-x", "x---a4209624"),
    ("x-", "x---c8b60efc"), ("x" * 63, "x" * 63), ("x" * 64, "xxxxxxxxxxxxxxxxxxxxx---7ce10097"),
    ("x" * 65, "xxxxxxxxxxxxxxxxxxxxx---9537c5fd"),
])
def test_kubespawner_username_label(name, expected):
    assert naming.kubespawner_username_label(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("alice", "alice"), ("Alice", "-41lice"), ("a.b", "a-2eb"), ("a-b", "a-2db"), ("jöhn", "j-c3-b6hn"),
])
def test_kubespawner_escaped_username(name, expected):
    assert naming.kubespawner_escaped_username(name) == expected


def test_client_selector_fills_the_username():
    assert client_selector(None, "alice") == {"matchLabels": {"component": "singleuser-server",
                                                              "hub.jupyter.org/username": "alice"}}
    assert client_selector(None, "a@b.c")["matchLabels"]["hub.jupyter.org/username"] == "a-b-c---d648b243"
    legacy = {"matchLabels": {"hub.jupyter.org/username": "{escaped_username}"},
              "matchExpressions": [{"key": "x", "operator": "In", "values": ["{username}", "y"]}]}
    assert client_selector(legacy, "Al") == {"matchLabels": {"hub.jupyter.org/username": "-41l"},
                                             "matchExpressions": [{"key": "x", "operator": "In", "values": ["Al", "y"]}]}
    assert DEFAULT_CLIENT_SELECTOR["matchLabels"]["hub.jupyter.org/username"] == "{username}"  # not mutated
    with pytest.raises(ValueError):
        client_selector(["not", "a", "selector"], "alice")


def test_policy_shape_owner_and_validity():
    p = build_network_policy("dask-alice-abc", "alice", SCHED, client_selector(None, "alice"))
    assert p["apiVersion"] == "networking.k8s.io/v1" and p["kind"] == "NetworkPolicy"
    assert p["metadata"]["name"] == "dask-alice-abc"
    assert p["metadata"]["labels"] == labels("dask-alice-abc", "scheduler", "alice")
    assert p["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": SCHED["metadata"]["name"],
                                                 "uid": "u-1", "controller": True, "blockOwnerDeletion": False}]
    assert p["spec"]["podSelector"] == {"matchLabels": {"dask.org/cluster-name": "dask-alice-abc"}}
    assert p["spec"]["policyTypes"] == ["Ingress"]
    assert problems(p) == []
    # before the scheduler pod exists (no uid) there is no owner to name
    assert "ownerReferences" not in build_network_policy("c", "alice", {}, {})["metadata"]


def test_policy_lets_in_the_owner_and_the_cluster_only():
    p = build_network_policy("dask-alice-abc", "alice", SCHED, client_selector(None, "alice"))
    cl = {"dask.org/cluster-name": "dask-alice-abc"}
    sched = Pod("s", "hub", {**cl, "dask.org/component": "scheduler"}, "10.1.0.1")
    worker = Pod("w", "hub", {**cl, "dask.org/component": "worker"}, "10.1.0.2")
    alice = Pod("jupyter-alice", "hub", {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}, "10.1.0.3")
    bob = Pod("jupyter-bob", "hub", {"component": "singleuser-server", "hub.jupyter.org/username": "bob"}, "10.1.0.4")
    other = Pod("w2", "hub", {"dask.org/cluster-name": "dask-bob-xyz"}, "10.1.0.5")
    for port in (8786, 8787):
        assert allows(alice, sched, port, policies=[p]) and not allows(bob, sched, port, policies=[p])
        assert not allows(other, sched, port, policies=[p])
    assert allows(alice, worker, 40123, policies=[p]) and not allows(bob, worker, 40123, policies=[p])
    assert allows(worker, sched, 8786, policies=[p]) and allows(sched, worker, 40123, policies=[p])
    # the same notebook pod labels in another namespace are not the owner
    assert not allows(Pod("x", "elsewhere", alice.labels, "10.1.0.9"), sched, 8786, policies=[p])


def test_client_in_another_namespace_is_selected_by_namespace_name():
    sched_pod = {**SCHED, "metadata": {**SCHED["metadata"], "namespace": "dask-alice"}}
    p = build_network_policy("c1", "alice", sched_pod, client_selector(None, "alice"), client_namespace="hub")
    assert p["spec"]["ingress"][1]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "hub"}}
    sched = Pod("s", "dask-alice", {"dask.org/cluster-name": "c1"}, "10.2.0.1")
    alice = Pod("a", "hub", {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}, "10.1.0.3")
    assert allows(alice, sched, 8786, policies=[p])
    assert not allows(Pod("a2", "dask-bob", alice.labels, "10.3.0.3"), sched, 8786, policies=[p])
    same = build_network_policy("c1", "alice", sched_pod, {}, client_namespace="dask-alice")
    assert "namespaceSelector" not in same["spec"]["ingress"][1]["from"][0]


@pytest.mark.parametrize("template, user, expected", [
    (None, "alice", None), ("dask", "alice", "dask"), ("dask-{username}", "alice", "dask-alice"),
    ("dask-{username}", "Alice@Example.org", naming.format_namespace("dask-{username}", "Alice@Example.org")),
    ("{username}", "bob", "bob"),
])
def test_format_namespace(template, user, expected):
    got = naming.format_namespace(template, user)
    assert got == expected
    if got:
        assert naming.is_dns_label(got)


def test_format_namespace_escapes_and_keeps_users_apart():
    a, b = naming.format_namespace("dask-{username}", "Alice"), naming.format_namespace("dask-{username}", "alice")
    assert a != b and a.startswith("dask-alice-") and naming.is_dns_label(a)
    long = naming.format_namespace("dask-{username}", "x" * 200)
    assert len(long) <= 63 and naming.is_dns_label(long)
    with pytest.raises(ValueError, match="no room"):
        naming.format_namespace("x" * 60 + "{username}", "alice")
    with pytest.raises(ValueError, match="DNS-1123"):
        naming.format_namespace("Dask_{username}", "alice")


def test_only_the_kubernetes_runtime_keeps_policies():
    """The local runtime ignores them (its pods are processes on loopback: no network plugin to enforce a policy),
    so KubeCluster never asks it to make one."""
    from jupyter_dask_kube.runtimes.base import PodRuntime
    from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
    from jupyter_dask_kube.runtimes.local import LocalRuntime

    assert KubernetesRuntime.network_policies is True
    assert LocalRuntime.network_policies is False and PodRuntime.network_policies is False
    assert LocalRuntime.create_network_policy is PodRuntime.create_network_policy
