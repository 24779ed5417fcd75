"""The node agent (scheduler + kubelet + kube-proxy over HTTP) on every Kubernetes target it drives: the emulator
and the source-built kube-apiserver. Everything is checked through the API server with the official client."""
from __future__ import annotations

import sys
import time
import urllib.request
import uuid

import pytest
from kubernetes.client import ApiException

from jupyter_dask_kube.testing import EmulatedKubernetes
from jupyter_dask_kube.testing.fixtures import kube_api

from helpers import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def target(request):
    """The emulator and the real API server (a JDK_TEST_REAL_KUBECONFIG cluster has a real kubelet of its own)."""
    from jupyter_dask_kube.testing.fixtures import kube_target_for

    return kube_target_for(request, request.param)


targets = pytest.mark.parametrize("target", ["emulator", "real"], indirect=True)


@pytest.fixture
def api(target):
    a = kube_api(target)
    yield a
    a.api_client.close()


def pod(name, command, *, labels=None, restart="Never", env=None, ports=None, resources=None, **spec):
    c = {"name": "main", "image": "busybox:1", "command": command}
    if env:
        c["env"] = env
    if ports:
        c["ports"] = ports
    if resources:
        c["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": restart, "containers": [c], **spec}}


def phase_of(api, ns, name, *phases):
    def check():
        p = api.read_namespaced_pod(name, ns)
        return p if p.status.phase in phases else None
    return wait_for(check, 60, what=f"{name} in {phases}")


def gone(api, ns, name, timeout=60):
    wait_for(lambda: name not in [p.metadata.name for p in api.list_namespaced_pod(ns).items], timeout,
             what=f"{name} gone")


@targets
def test_node_registered_and_ready(api, target):
    nodes = api.list_node().items
    assert nodes
    node = nodes[0]
    assert node.status.capacity["cpu"] and node.status.capacity["memory"] and node.status.capacity["pods"]
    assert {"type": "InternalIP", "address": "127.0.0.1"} in [a.to_dict() for a in node.status.addresses]
    assert node.status.daemon_endpoints.kubelet_endpoint.port > 0
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True" and ready.reason == "KubeletReady"


@targets
def test_pod_lifecycle_status_logs_and_exit_codes(api, target):
    ns, tag = target.namespace, uuid.uuid4().hex[:6]
    ok, bad = f"na-ok-{tag}", f"na-bad-{tag}"
    api.create_namespaced_pod(ns, pod(ok, ["sh", "-c", "echo hello from $HOSTNAME; echo second"]))
    api.create_namespaced_pod(ns, pod(bad, ["sh", "-c", "echo failing >&2; exit 3"]))
    done = phase_of(api, ns, ok, "Succeeded")
    failed = phase_of(api, ns, bad, "Failed")
    assert done.spec.node_name and done.status.pod_ip.startswith("127.") and done.status.pod_ip != "127.0.0.1"
    assert done.status.container_statuses[0].state.terminated.exit_code == 0
    term = failed.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert {c.type: c.status for c in done.status.conditions}["PodScheduled"] == "True"
    # pods/log: the API server asks the node's kubelet port (HTTPS) for it
    assert api.read_namespaced_pod_log(ok, ns) == f"hello from {ok}\nsecond\n"
    assert api.read_namespaced_pod_log(ok, ns, tail_lines=1) == "second\n"
    assert api.read_namespaced_pod_log(bad, ns) == "failing\n"
    # finished pods are deleted at once (no kubelet needed)
    api.delete_namespaced_pod(ok, ns)
    api.delete_namespaced_pod(bad, ns)
    gone(api, ns, ok, 20)
    gone(api, ns, bad, 20)


@targets
def test_restart_counts_and_crash_loop(api, target):
    ns, name = target.namespace, f"na-crash-{uuid.uuid4().hex[:6]}"
    api.create_namespaced_pod(ns, pod(name, ["sh", "-c", "exit 1"], restart="Always"))
    try:
        p = wait_for(lambda: (p := api.read_namespaced_pod(name, ns)).status.container_statuses
                     and p.status.container_statuses[0].restart_count >= 1 and p, 60, what="a restart")
        cs = p.status.container_statuses[0]
        assert cs.last_state.terminated.exit_code == 1
        assert p.status.phase == "Running"  # restartPolicy Always: never Failed
    finally:
        api.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    gone(api, ns, name, 30)


@targets
def test_graceful_deletion_sigterm_grace_sigkill_final_delete(api, target):
    """A container that ignores SIGTERM is killed after the grace period; meanwhile the pod is Terminating
    (deletionTimestamp set) and the agent deletes it for good afterwards."""
    ns, name = target.namespace, f"na-grace-{uuid.uuid4().hex[:6]}"
    api.create_namespaced_pod(ns, pod(name, ["sh", "-c", "trap '' TERM; echo up; while true; do sleep 0.1; done"]))
    phase_of(api, ns, name, "Running")
    wait_for(lambda: "up" in api.read_namespaced_pod_log(name, ns), 30, what="the container up")
    t0 = time.monotonic()
    api.delete_namespaced_pod(name, ns, grace_period_seconds=2)
    terminating = api.read_namespaced_pod(name, ns)
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 2
    gone(api, ns, name, 30)
    took = time.monotonic() - t0
    assert 1.5 <= took < 20, took  # it waited out the grace period (SIGTERM ignored), then SIGKILL


@targets
def test_unschedulable_in_the_schedulers_words(api, target):
    ns, name = target.namespace, f"na-huge-{uuid.uuid4().hex[:6]}"
    api.create_namespaced_pod(ns, pod(name, ["sleep", "60"], resources={"requests": {"cpu": "100000"}}))
    try:
        cond = wait_for(lambda: next((c for c in api.read_namespaced_pod(name, ns).status.conditions or []
                                      if c.type == "PodScheduled"), None), 30, what="PodScheduled condition")
        assert (cond.status, cond.reason) == ("False", "Unschedulable")
        nodes = len(api.list_node().items)
        assert cond.message == f"0/{nodes} nodes are available: {nodes} Insufficient cpu."
        events = wait_for(lambda: [e for e in api.list_namespaced_event(ns).items
                                   if e.involved_object.name == name and e.reason == "FailedScheduling"], 30,
                          what="a FailedScheduling event")
        assert events[0].source.component == "default-scheduler" and events[0].message == cond.message
        assert api.read_namespaced_pod(name, ns).spec.node_name is None
    finally:
        api.delete_namespaced_pod(name, ns)
    gone(api, ns, name, 30)


@targets
def test_service_links_and_cluster_ip_proxy(api, target):
    """The kubelet's Service variables (unless enableServiceLinks: false), and kube-proxy: the clusterIP reaches
    a ready pod chosen by the Service's selector."""
    ns, tag = target.namespace, uuid.uuid4().hex[:6]
    svc_name = f"na-web-{tag}"
    api.create_namespaced_service(ns, {"metadata": {"name": svc_name}, "spec": {
        "selector": {"app": f"web-{tag}"}, "ports": [{"name": "http", "port": 8080, "targetPort": "web"}]}})
    svc = api.read_namespaced_service(svc_name, ns)
    ip = svc.spec.cluster_ip
    prefix = svc_name.upper().replace("-", "_")
    show = [f"echo {v}=${v}" for v in (f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT",
                                       f"{prefix}_SERVICE_PORT_HTTP", f"{prefix}_PORT")]
    server = f"exec {sys.executable} -m http.server 8080 --bind $POD_IP"
    pod_ip_env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    linked, unlinked = f"na-linked-{tag}", f"na-unlinked-{tag}"
    api.create_namespaced_pod(ns, pod(linked, ["sh", "-c", "; ".join(show) + "; " + server],
                                      labels={"app": f"web-{tag}"}, env=pod_ip_env,
                                      ports=[{"name": "web", "containerPort": 8080}]))
    api.create_namespaced_pod(ns, pod(unlinked, ["sh", "-c", "; ".join(show)], enableServiceLinks=False))
    try:
        phase_of(api, ns, unlinked, "Succeeded")
        phase_of(api, ns, linked, "Running")
        text = wait_for(lambda: (t := api.read_namespaced_pod_log(linked, ns)) and "_PORT=" in t and t, 30,
                        what="the linked pod's output")
        assert f"{prefix}_SERVICE_HOST={ip}\n" in text
        assert f"{prefix}_SERVICE_PORT=8080\n" in text and f"{prefix}_SERVICE_PORT_HTTP=8080\n" in text
        assert f"{prefix}_PORT=tcp://{ip}:8080\n" in text
        assert api.read_namespaced_pod_log(unlinked, ns) == "".join(
            f"{v}=\n" for v in (f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_SERVICE_PORT_HTTP",
                                f"{prefix}_PORT"))
        body = wait_for(lambda: _get(f"http://{ip}:8080/"), 30, what="the Service's clusterIP to answer")
        assert b"Directory listing" in body
    finally:
        api.delete_namespaced_pod(linked, ns, grace_period_seconds=1)
        api.delete_namespaced_pod(unlinked, ns)
        try:
            api.delete_namespaced_service(svc_name, ns)
        except (ApiException, ValueError):  # 1.20 answers a Status the 37.x client cannot read as a Service
            pass
    gone(api, ns, linked, 30)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


def test_autoscaler_adds_a_node_after_a_delay():
    """Unschedulable is not final where an autoscaler runs: TriggeredScaleUp, a new Node after the delay, the pod
    bound; a pod too big for any new node gets NotTriggerScaleUp at once."""
    with EmulatedKubernetes(processes=False, nodes=["cpu=2,memory=8Gi"], autoscale=("cpu=8,memory=32Gi", 2.0)) as emu:
        api = emu.api()
        ns = emu.namespace
        api.create_namespaced_pod(ns, pod("wants-4", ["sleep", "1"], resources={"requests": {"cpu": "4"}}))
        api.create_namespaced_pod(ns, pod("wants-64", ["sleep", "1"], resources={"requests": {"cpu": "64"}}))
        t0 = time.monotonic()

        def events(name, reason):
            return [e for e in api.list_namespaced_event(ns).items
                    if e.involved_object.name == name and e.reason == reason]

        cond = wait_for(lambda: next((c for c in api.read_namespaced_pod("wants-4", ns).status.conditions or []
                                      if c.type == "PodScheduled" and c.status == "False"), None), 20,
                        what="wants-4 Unschedulable")
        assert cond.message == "0/1 nodes are available: 1 Insufficient cpu."
        up = wait_for(lambda: events("wants-4", "TriggeredScaleUp"), 20, what="TriggeredScaleUp")
        assert up[0].source.component == "cluster-autoscaler"
        no = wait_for(lambda: events("wants-64", "NotTriggerScaleUp"), 20, what="NotTriggerScaleUp")
        assert "Insufficient cpu" in no[0].message
        bound = wait_for(lambda: api.read_namespaced_pod("wants-4", ns).spec.node_name, 30, what="wants-4 bound")
        assert bound == "autoscaled-1" and time.monotonic() - t0 >= 1.5
        assert len(api.list_node().items) == 2
        assert api.read_namespaced_pod("wants-64", ns).spec.node_name is None
