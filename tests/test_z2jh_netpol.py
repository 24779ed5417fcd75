"""zero-to-jupyterhub as shipped: its default NetworkPolicies (tests/data/z2jh-default-netpols.yaml), the egress
rules deploy/z2jh-values.yaml adds, and each cluster's own policy, evaluated by the Kubernetes rules
(jupyter_dask_kube/netpolicy.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jupyter_dask_kube.netpolicy import Pod, allows, problems
from jupyter_dask_kube.objects import build_network_policy, client_selector, labels

ROOT = Path(__file__).parents[1]
NS = "hub"
RELEASE = {"app": "jupyterhub", "release": "jupyterhub"}
NAMESPACES = {NS: {}, "kube-system": {}}


def z2jh_defaults() -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "tests" / "data" / "z2jh-default-netpols.yaml").read_text()) if d]


def with_our_values(policies: list[dict]) -> list[dict]:
    """The chart's singleuser policy with deploy/z2jh-values.yaml's singleuser.networkPolicy.egress appended,
    as the template does ("{{- with .Values.singleuser.networkPolicy.egress }}")."""
    values = yaml.safe_load((ROOT / "deploy" / "z2jh-values.yaml").read_text())
    extra = values["singleuser"]["networkPolicy"]["egress"]
    out = []
    for p in policies:
        if p["metadata"]["name"] == "singleuser":
            p = {**p, "spec": {**p["spec"], "egress": p["spec"]["egress"] + extra}}
        out.append(p)
    return out


def user_pod(name: str, ip: str) -> Pod:
    # kubespawner's labels on a user pod, plus the chart's singleuser.extraLabels default
    return Pod(f"jupyter-{name}", NS, {**RELEASE, "component": "singleuser-server", "hub.jupyter.org/username": name,
                                       "hub.jupyter.org/network-access-hub": "true"}, ip,
               ports={"notebook-port": (8888, "TCP")})


ALICE, BOB = user_pod("alice", "10.8.0.10"), user_pod("bob", "10.8.0.11")
HUB = Pod("hub-0", NS, {**RELEASE, "component": "hub"}, "10.8.0.2", ports={"http": (8081, "TCP")})


def cluster(user: str, cid: str, base: int):
    sched_manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{cid}-scheduler", "uid": f"uid-{cid}"}}
    policy = build_network_policy(cid, user, sched_manifest, client_selector(None, user))
    policy["metadata"]["namespace"] = NS
    sched = Pod(f"{cid}-scheduler", NS, labels(cid, "scheduler", user), f"10.8.1.{base}",
                ports={"tcp-comm": (8786, "TCP"), "http-dashboard": (8787, "TCP")})
    workers = [Pod(f"{cid}-worker-{i}", NS, labels(cid, "worker", user), f"10.8.1.{base + 1 + i}") for i in range(2)]
    return policy, sched, workers


A_POL, A_SCHED, A_WORKERS = cluster("alice", "dask-alice-1", 10)
B_POL, B_SCHED, B_WORKERS = cluster("bob", "dask-bob-1", 20)
WORKER_PORT = 40321  # a port distributed picked


def test_test_data_and_values_are_valid_policies():
    for p in with_our_values(z2jh_defaults()) + [A_POL, B_POL]:
        assert problems(p) == [], p["metadata"]["name"]


@pytest.fixture
def policies():
    return with_our_values(z2jh_defaults()) + [A_POL, B_POL]


def reach(src, dst, port, policies):
    return allows(src, dst, port, "TCP", policies, NAMESPACES)


def test_alice_reaches_her_scheduler_dashboard_and_workers(policies):
    assert reach(ALICE, A_SCHED, 8786, policies)
    assert reach(ALICE, A_SCHED, 8787, policies)
    for w in A_WORKERS:
        assert reach(ALICE, w, WORKER_PORT, policies)


def test_bob_reaches_none_of_alices(policies):
    assert not reach(BOB, A_SCHED, 8786, policies)
    assert not reach(BOB, A_SCHED, 8787, policies)
    assert not any(reach(BOB, w, WORKER_PORT, policies) for w in A_WORKERS)
    # nor do bob's Dask pods, which his own code controls
    assert not reach(B_WORKERS[0], A_SCHED, 8786, policies)
    assert not reach(B_SCHED, A_WORKERS[0], WORKER_PORT, policies)
    # and alice reaches none of bob's
    assert not reach(ALICE, B_SCHED, 8786, policies)


def test_the_cluster_talks_to_itself(policies):
    for w in A_WORKERS:
        assert reach(w, A_SCHED, 8786, policies)
        assert reach(A_SCHED, w, WORKER_PORT, policies)
    assert reach(A_WORKERS[0], A_WORKERS[1], WORKER_PORT, policies)


def test_the_values_add_nothing_broader(policies):
    """The extra egress reaches Dask pods only: not other private addresses, not the hub on other ports."""
    other = Pod("db", NS, {"app": "postgres"}, "10.8.2.2", ports={"pg": (5432, "TCP")})
    assert not reach(ALICE, other, 5432, policies)
    assert not reach(ALICE, A_SCHED, 22, policies)                     # scheduler: its two ports only
    assert reach(ALICE, HUB, 8081, policies) and not reach(ALICE, HUB, 8082, policies)


def test_without_our_values_alice_cannot_reach_her_scheduler():
    """The bug this fixes: z2jh >= 2.0 blocks egress to private IPs, and pod IPs are private."""
    policies = z2jh_defaults() + [A_POL, B_POL]
    assert not reach(ALICE, A_SCHED, 8786, policies)
    assert not reach(ALICE, A_SCHED, 8787, policies)
    assert not reach(ALICE, A_WORKERS[0], WORKER_PORT, policies)
    # ...though the cluster's own policy would let her in: her egress is what stops it
    assert reach(Pod("x", NS, ALICE.labels, ALICE.ip), A_SCHED, 8786, [A_POL])
