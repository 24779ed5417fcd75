"""The emulated Kubernetes cluster, driven through the OFFICIAL kubernetes client over HTTP (no mocks)."""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import psutil
import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException

from jupyter_dask_kube.testing import EmulatedKubernetes
from jupyter_dask_kube.testing.fixtures import kube_api

from helpers import wait_for

PY = sys.executable


# The emulator answers within milliseconds, and some waits are timed: poll often.
wait_fast = functools.partial(wait_for, interval=0.05)


def pod(name=None, labels=None, command=None, image="ghcr.io/dask/dask:latest", resources=None, generate=None,
        owner=None, restart="Never"):
    meta = {"labels": labels or {}}
    if generate:
        meta["generateName"] = generate
    else:
        meta["name"] = name
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner.metadata.name,
                                    "uid": owner.metadata.uid}]
    c = {"name": "main", "image": image, "args": command or [PY, "-c", "import time; time.sleep(600)"]}
    if resources:
        c["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"restartPolicy": restart, "containers": [c]}}


@pytest.fixture(scope="module")
def api(emulated_kubernetes):
    return kube_api(emulated_kubernetes)


@pytest.fixture(scope="module")
def napi(emulated_kubernetes_noproc):
    return kube_api(emulated_kubernetes_noproc)


@pytest.fixture
def label():
    return f"t{uuid.uuid4().hex[:10]}"


def status_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


# -- CRUD, identity, statuses ------------------------------------------------------------------------------
def test_create_get_list_delete_pod(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    created = napi.create_namespaced_pod(ns, pod(f"p-{label}", {"t": label}))
    meta = created.metadata
    assert meta.name == f"p-{label}" and meta.namespace == ns
    assert meta.uid and int(meta.resource_version) > 0 and meta.creation_timestamp is not None
    assert created.kind == "Pod" and created.api_version == "v1"
    got = napi.read_namespaced_pod(meta.name, ns)
    assert got.metadata.uid == meta.uid
    listed = napi.list_namespaced_pod(ns, label_selector=f"t={label}")
    assert [p.metadata.name for p in listed.items] == [meta.name]
    assert int(listed.metadata.resource_version) >= int(meta.resource_version)
    assert napi.list_pod_for_all_namespaces(label_selector=f"t={label}").items
    napi.delete_namespaced_pod(meta.name, ns)
    wait_fast(lambda: not napi.list_namespaced_pod(ns, label_selector=f"t={label}").items, 5)


def test_status_codes(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    _, code, _ = napi.create_namespaced_pod_with_http_info(ns, pod(f"s-{label}"))
    assert code == 201
    assert napi.read_namespaced_pod_with_http_info(f"s-{label}", ns)[1] == 200
    with pytest.raises(ApiException) as e:
        napi.create_namespaced_pod(ns, pod(f"s-{label}"))
    assert e.value.status == 409
    body = status_body(e.value)
    assert body["kind"] == "Status" and body["reason"] == "AlreadyExists"
    assert body["message"] == f'pods "s-{label}" already exists' and body["code"] == 409
    with pytest.raises(ApiException) as e:
        napi.read_namespaced_pod("nope", ns)
    assert e.value.status == 404 and status_body(e.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as e:
        napi.delete_namespaced_pod("nope", ns)
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:  # no containers
        napi.create_namespaced_pod(ns, {"metadata": {"name": f"e-{label}"}, "spec": {"containers": []}})
    assert e.value.status == 422 and status_body(e.value)["reason"] == "Invalid"
    assert "spec.containers: Required value" in status_body(e.value)["message"]
    with pytest.raises(ApiException) as e:  # bad name
        napi.create_namespaced_pod(ns, pod("Bad_Name"))
    assert e.value.status == 422 and "metadata.name: Invalid value" in status_body(e.value)["message"]
    with pytest.raises(ApiException) as e:  # unknown namespace
        napi.create_namespaced_pod("no-such-namespace", pod(f"x-{label}"))
    assert e.value.status == 404 and status_body(e.value)["message"] == 'namespaces "no-such-namespace" not found'
    napi.delete_namespaced_pod(f"s-{label}", ns)


def test_generate_name_twice_and_namespace_from_url(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    a = napi.create_namespaced_pod(ns, pod(generate="gen-", labels={"t": label}))
    b = napi.create_namespaced_pod(ns, pod(generate="gen-", labels={"t": label}))
    assert a.metadata.name != b.metadata.name and a.metadata.name.startswith("gen-")
    assert a.metadata.namespace == ns  # the body had no namespace
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    # and they do not vanish from namespaced watches
    w = watch.Watch()
    names = {ev["object"].metadata.name for ev in w.stream(napi.list_namespaced_pod, ns, label_selector=f"t={label}",
                                                            timeout_seconds=1, _request_timeout=10)}
    assert names == {a.metadata.name, b.metadata.name}
    napi.delete_collection_namespaced_pod(ns, label_selector=f"t={label}")


def test_patch_and_status(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    p = napi.create_namespaced_pod(ns, pod(f"pa-{label}", {"t": label}))
    patched = napi.patch_namespaced_pod(p.metadata.name, ns, {"metadata": {"labels": {"extra": "1"},
                                                                           "annotations": {"a": "b"}}})
    assert patched.metadata.labels == {"t": label, "extra": "1"} and patched.metadata.annotations == {"a": "b"}
    assert int(patched.metadata.resource_version) > int(p.metadata.resource_version)
    patched = napi.patch_namespaced_pod(p.metadata.name, ns, [{"op": "remove", "path": "/metadata/labels/extra"}])
    assert patched.metadata.labels == {"t": label}
    st = napi.patch_namespaced_pod_status(p.metadata.name, ns, {"status": {"phase": "Succeeded"}})
    assert st.status.phase == "Succeeded"
    assert napi.read_namespaced_pod_status(p.metadata.name, ns).status.phase == "Succeeded"
    with pytest.raises(ApiException) as e:
        napi.patch_namespaced_pod(p.metadata.name, ns, {"metadata": {"labels": {"bad label": "x"}}})
    assert e.value.status == 422
    cur = napi.read_namespaced_pod(p.metadata.name, ns)
    cur.metadata.labels["replaced"] = "yes"
    assert napi.replace_namespaced_pod(p.metadata.name, ns, cur).metadata.labels["replaced"] == "yes"
    with pytest.raises(ApiException) as e:  # stale resourceVersion
        napi.replace_namespaced_pod(p.metadata.name, ns, cur)
    assert e.value.status == 409 and status_body(e.value)["reason"] == "Conflict"
    napi.delete_namespaced_pod(p.metadata.name, ns)


def test_namespaces_and_ssar(napi, emulated_kubernetes_noproc):
    emu = emulated_kubernetes_noproc
    names = {n.metadata.name for n in napi.list_namespace().items}
    assert {"default", emu.namespace} <= names
    assert napi.read_namespace(emu.namespace).status.phase == "Active"
    authz = client.AuthorizationV1Api(napi.api_client)

    def review(verb, resource, sub=None):
        body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace=emu.namespace, verb=verb, resource=resource,
                                                            subresource=sub)))
        return authz.create_self_subject_access_review(body).status.allowed

    assert review("create", "pods") is True
    try:
        emu.set_faults(review_denied=[("create", "pods"), ("get", "pods/log")])
        assert review("create", "pods") is False
        assert review("get", "pods", "log") is False
        assert review("list", "pods") is True
    finally:
        emu.clear_faults()


# -- selectors and watches ----------------------------------------------------------------------------------
def test_label_and_field_selectors(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    for i, role in enumerate(["scheduler", "worker", "worker"]):
        napi.create_namespaced_pod(ns, pod(f"sel-{label}-{i}", {"t": label, "role": role, **({"x": "1"} if i else {})}))

    def names(**kw):
        return sorted(p.metadata.name for p in napi.list_namespaced_pod(ns, **kw).items)

    assert names(label_selector=f"t={label},role=worker") == [f"sel-{label}-1", f"sel-{label}-2"]
    assert names(label_selector=f"t={label},role!=worker") == [f"sel-{label}-0"]
    assert names(label_selector=f"t={label},role in (scheduler)") == [f"sel-{label}-0"]
    assert names(label_selector=f"t={label},role notin (scheduler)") == [f"sel-{label}-1", f"sel-{label}-2"]
    assert names(label_selector=f"t={label},x") == [f"sel-{label}-1", f"sel-{label}-2"]
    assert names(label_selector=f"t={label},!x") == [f"sel-{label}-0"]
    assert names(label_selector=f"t={label}", field_selector=f"metadata.name=sel-{label}-2") == [f"sel-{label}-2"]
    wait_fast(lambda: names(label_selector=f"t={label}", field_selector="status.phase=Running") == names(
        label_selector=f"t={label}"), 5)
    assert names(label_selector=f"t={label}", field_selector="status.phase=Pending") == []
    with pytest.raises(ApiException) as e:
        names(field_selector="spec.bogus=1")
    assert e.value.status == 400
    # watch with selectors
    w = watch.Watch()
    seen = [(ev["type"], ev["object"].metadata.name) for ev in w.stream(
        napi.list_namespaced_pod, ns, label_selector=f"t={label},role=worker",
        field_selector=f"metadata.name=sel-{label}-1", timeout_seconds=1, _request_timeout=10)]
    assert seen == [("ADDED", f"sel-{label}-1")]
    # deletecollection with a selector (bound pods go gracefully: the node agent finishes their deletion)
    napi.delete_collection_namespaced_pod(ns, label_selector=f"t={label},role=worker")
    wait_fast(lambda: names(label_selector=f"t={label}") == [f"sel-{label}-0"], 10)
    napi.delete_collection_namespaced_pod(ns, label_selector=f"t={label}")
    wait_fast(lambda: names(label_selector=f"t={label}") == [], 10)


def test_watch_live_resume_and_timeout(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    rv = napi.list_namespaced_pod(ns, label_selector=f"t={label}").metadata.resource_version
    events = []

    def consume():
        w = watch.Watch()
        for ev in w.stream(napi.list_namespaced_pod, ns, label_selector=f"t={label}", resource_version=rv,
                           timeout_seconds=3, _request_timeout=15):
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].status.phase))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t0 = time.monotonic()
    t.start()
    napi.create_namespaced_pod(ns, pod(f"w-{label}", {"t": label}))
    napi.create_namespaced_pod(ns, pod(f"other-{label}", {"t": "else"}))
    wait_fast(lambda: napi.read_namespaced_pod(f"w-{label}", ns).status.phase == "Running", 5)
    napi.delete_namespaced_pod(f"w-{label}", ns)
    t.join(20)
    assert not t.is_alive()
    types = [e[0] for e in events]
    assert types[0] == "ADDED" and "MODIFIED" in types and types[-1] == "DELETED"
    assert all(e[1] == f"w-{label}" for e in events)
    # resume from the version before: the same history again
    replay = [(ev["type"], ev["object"].metadata.name) for ev in watch.Watch().stream(
        napi.list_namespaced_pod, ns, label_selector=f"t={label}", resource_version=rv, timeout_seconds=1,
        _request_timeout=10)]
    assert [e[0] for e in replay] == types
    # timeoutSeconds ends an idle stream
    t0 = time.monotonic()
    assert list(watch.Watch().stream(napi.list_namespaced_pod, ns, label_selector="t=nothing-here",
                                     timeout_seconds=1, _request_timeout=10)) == []
    assert time.monotonic() - t0 < 5
    # watch=1 works too (raw HTTP)
    url = f"{emulated_kubernetes_noproc.url}/api/v1/namespaces/{ns}/pods?watch=1&timeoutSeconds=1&labelSelector=t%3Dnone"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b""
    napi.delete_namespaced_pod(f"other-{label}", ns)


def test_watch_410_when_too_old(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    rv = napi.list_namespaced_pod(ns).metadata.resource_version
    napi.create_namespaced_pod(ns, pod(f"old-{label}", {"t": label}))
    emulated_kubernetes_noproc.compact()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(napi.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=2,
                                  _request_timeout=10))
    assert e.value.status == 410 and "Expired" in e.value.reason
    napi.delete_namespaced_pod(f"old-{label}", ns)


# -- garbage collection, services, scheduling ----------------------------------------------------------------
def test_owner_reference_gc(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    owner = napi.create_namespaced_pod(ns, pod(f"own-{label}", {"t": label}))
    napi.create_namespaced_pod(ns, pod(f"dep-{label}", {"t": label}, owner=owner))
    svc = napi.create_namespaced_service(ns, {"metadata": {"name": f"svc-{label}", "labels": {"t": label},
                                                           "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                                                                "name": owner.metadata.name,
                                                                                "uid": owner.metadata.uid}]},
                                              "spec": {"selector": {"t": label}, "ports": [{"port": 8786}]}})
    assert svc.spec.cluster_ip and svc.spec.cluster_ip.startswith("127.")
    assert svc.spec.ports[0].target_port == 8786
    napi.delete_namespaced_pod(owner.metadata.name, ns)
    wait_fast(lambda: not napi.list_namespaced_pod(ns, label_selector=f"t={label}").items
              and not napi.list_namespaced_service(ns, label_selector=f"t={label}").items, 10, what="GC")


def test_services_crud(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    body = {"metadata": {"name": f"s{label}", "labels": {"t": label}},
            "spec": {"selector": {"t": label}, "ports": [{"name": "comm", "port": 8786, "targetPort": 8786}]}}
    created = napi.create_namespaced_service(ns, body)
    assert created.spec.cluster_ip and created.spec.type == "ClusterIP"
    with pytest.raises(ApiException) as e:
        napi.create_namespaced_service(ns, body)
    assert e.value.status == 409
    assert napi.read_namespaced_service(f"s{label}", ns).spec.cluster_ip == created.spec.cluster_ip
    assert [s.metadata.name for s in napi.list_namespaced_service(ns, label_selector=f"t={label}").items] == [f"s{label}"]
    napi.delete_namespaced_service(f"s{label}", ns)
    with pytest.raises(ApiException) as e:
        napi.read_namespaced_service(f"s{label}", ns)
    assert e.value.status == 404


def _condition(p, type_):
    return next((c for c in p.status.conditions or [] if c.type == type_), None)


def test_unschedulable_wording(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace
    napi.create_namespaced_pod(ns, pod(f"big-{label}", {"t": label}, resources={"requests": {"memory": "1000Gi"}}))
    napi.create_namespaced_pod(ns, pod(f"cpu-{label}", {"t": label}, resources={"requests": {"cpu": "100"}}))
    big = wait_fast(lambda: (p := napi.read_namespaced_pod(f"big-{label}", ns)) and _condition(p, "PodScheduled") and p, 5)
    cond = _condition(big, "PodScheduled")
    assert big.status.phase == "Pending" and big.spec.node_name is None
    assert (cond.status, cond.reason, cond.message) == ("False", "Unschedulable",
                                                        "0/1 nodes are available: 1 Insufficient memory.")
    cpu = wait_fast(lambda: (p := napi.read_namespaced_pod(f"cpu-{label}", ns)) and _condition(p, "PodScheduled") and p, 5)
    assert _condition(cpu, "PodScheduled").message == "0/1 nodes are available: 1 Insufficient cpu."
    napi.delete_collection_namespaced_pod(ns, label_selector=f"t={label}")


def test_forbidden_and_quota_faults(napi, emulated_kubernetes_noproc, label):
    emu = emulated_kubernetes_noproc
    ns = emu.namespace
    try:
        emu.set_faults(forbidden=[("create", "pods")])
        with pytest.raises(ApiException) as e:
            napi.create_namespaced_pod(ns, pod(f"f-{label}"))
        assert e.value.status == 403
        assert status_body(e.value)["message"] == (
            'pods is forbidden: User "system:serviceaccount:default:jupyter" cannot create resource "pods" in API '
            f'group "" in the namespace "{ns}"')
        napi.list_namespaced_pod(ns)  # other verbs still work
        used = len([p for p in napi.list_namespaced_pod(ns).items if p.status.phase not in ("Succeeded", "Failed")])
        emu.set_faults(quota={"pods": used + 1})
        napi.create_namespaced_pod(ns, pod(f"q1-{label}", {"t": label}))
        with pytest.raises(ApiException) as e:
            napi.create_namespaced_pod(ns, pod(f"q2-{label}", {"t": label}))
        assert e.value.status == 403
        assert status_body(e.value)["message"] == (
            f'pods "q2-{label}" is forbidden: exceeded quota: compute, requested: pods=1, used: pods={used + 1}, '
            f"limited: pods={used + 1}")
        emu.set_faults(error_rate=1.0, error_statuses=[503])
        with pytest.raises(ApiException) as e:
            napi.list_namespaced_pod(ns)
        assert e.value.status == 503
    finally:
        emu.clear_faults()
    napi.delete_collection_namespaced_pod(ns, label_selector=f"t={label}")


def test_no_process_mode_200_pods(napi, emulated_kubernetes_noproc, label):
    ns = emulated_kubernetes_noproc.namespace

    def create(i):
        return napi.create_namespaced_pod(ns, pod(f"load-{label}-{i}", {"t": label}))

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(create, range(200)))
    created = time.perf_counter() - t0
    pods = wait_fast(lambda: (items := napi.list_namespaced_pod(ns, label_selector=f"t={label}").items)
                     and len(items) == 200 and all(p.status.phase == "Running" and p.status.pod_ip for p in items)
                     and items, 10)
    running = time.perf_counter() - t0
    assert len({p.status.pod_ip for p in pods}) == 200
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: napi.delete_namespaced_pod(f"load-{label}-{i}", ns), range(200)))
    deleted = time.perf_counter() - t0
    # bound pods go gracefully: the node agent stops them and deletes them again with grace 0
    wait_fast(lambda: not napi.list_namespaced_pod(ns, label_selector=f"t={label}").items, 20)
    gone = time.perf_counter() - t0
    print(f"\n200 pods (16 threads): created {created:.3f}s, all Running {running:.3f}s, deleted {deleted:.3f}s, "
          f"gone {gone:.3f}s")


def test_kubectl_get_pods(napi, emulated_kubernetes_noproc, label, tmp_path):
    if not os.path.exists("/usr/bin/kubectl"):
        pytest.skip("no kubectl")
    emu = emulated_kubernetes_noproc
    napi.create_namespaced_pod(emu.namespace, pod(f"kc-{label}", {"t": label}))
    out = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", emu.kubeconfig, "--cache-dir", str(tmp_path),
                          "get", "pods", "-l", f"t={label}", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"pod/kc-{label}"
    out = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", emu.kubeconfig, "--cache-dir", str(tmp_path),
                          "delete", "pod", f"kc-{label}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# -- real processes -------------------------------------------------------------------------------------------
def test_dask_scheduler_behind_service(api, emulated_kubernetes, label):
    ns = emulated_kubernetes.namespace
    sched = api.create_namespaced_pod(ns, pod(f"sched-{label}", {"t": label, "role": "scheduler"},
                                              command=["dask", "scheduler"], restart="Always"))
    svc = api.create_namespaced_service(ns, {
        "metadata": {"name": f"d{label}", "labels": {"t": label},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": sched.metadata.name,
                                          "uid": sched.metadata.uid}]},
        "spec": {"selector": {"t": label, "role": "scheduler"},
                 "ports": [{"name": "comm", "port": 8786, "targetPort": 8786},
                           {"name": "dashboard", "port": 8787, "targetPort": 8787}]}})
    ip = svc.spec.cluster_ip
    running = wait_fast(lambda: (p := api.read_namespaced_pod(sched.metadata.name, ns)).status.phase == "Running"
                        and p, 60, what="scheduler Running")
    assert running.spec.node_name == "emulated-node-1" and running.status.pod_ip

    def dashboard_ok():
        try:
            with urllib.request.urlopen(f"http://{ip}:8787/status", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    wait_fast(dashboard_ok, 60, interval=0.2, what="dashboard via clusterIP")
    code = ("from distributed import Client; c = Client('tcp://%s:8786', timeout=30); "
            "print(c.scheduler_info()['type']); c.close()" % ip)
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Scheduler" in out.stdout, out.stderr
    logs = api.read_namespaced_pod_log(sched.metadata.name, ns, tail_lines=50)
    assert "Scheduler at" in logs
    pids = [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "scheduler" in p.info["cmdline"]
            and any(ip_ in " ".join(p.info["cmdline"]) for ip_ in [running.status.pod_ip])]
    # deleting the owner: graceful stop (deletionTimestamp first), then DELETED, the Service is collected
    api.delete_namespaced_pod(sched.metadata.name, ns)
    wait_fast(lambda: not api.list_namespaced_pod(ns, label_selector=f"t={label}").items, 30, what="pod gone")
    wait_fast(lambda: not api.list_namespaced_service(ns, label_selector=f"t={label}").items, 10, what="svc gone")
    wait_fast(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                              for p in pids), 10, what="processes gone")


def test_failed_command_and_logs(api, emulated_kubernetes, label):
    ns = emulated_kubernetes.namespace
    api.create_namespaced_pod(ns, pod(f"fail-{label}", {"t": label},
                                      command=[PY, "-c", "print('hello from the pod'); raise SystemExit(3)"]))
    failed = wait_fast(lambda: (p := api.read_namespaced_pod(f"fail-{label}", ns)).status.phase == "Failed" and p, 30)
    term = failed.status.container_statuses[0].state.terminated
    assert term.exit_code == 3 and term.reason == "Error"
    assert "hello from the pod" in api.read_namespaced_pod_log(f"fail-{label}", ns, container="main")
    api.delete_namespaced_pod(f"fail-{label}", ns)
    wait_fast(lambda: not api.list_namespaced_pod(ns, label_selector=f"t={label}").items, 10)


def test_image_pull_backoff(api, emulated_kubernetes, label):
    ns = emulated_kubernetes.namespace
    api.create_namespaced_pod(ns, pod(f"img-{label}", {"t": label}, image="example.org/doesnotexist:1"))

    def waiting_reason():
        p = api.read_namespaced_pod(f"img-{label}", ns)
        st = (p.status.container_statuses or [None])[0]
        return st and st.state.waiting and st.state.waiting.reason

    assert wait_fast(lambda: waiting_reason() == "ImagePullBackOff", 20)
    assert api.read_namespaced_pod(f"img-{label}", ns).status.phase == "Pending"
    api.delete_namespaced_pod(f"img-{label}", ns, grace_period_seconds=0)
    wait_fast(lambda: not api.list_namespaced_pod(ns, label_selector=f"t={label}").items, 10)


# -- the command line ----------------------------------------------------------------------------------------
def test_cli_starts_and_sigterm_leaves_no_process(tmp_path):
    kubeconfig = tmp_path / "kc"
    log = tmp_path / "out.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PY, "-m", "jupyter_dask_kube.testing", "--kubeconfig", str(kubeconfig)],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_fast(lambda: "export KUBECONFIG=" in log.read_text(), 60, what="ready line")
        text = log.read_text()
        assert f"export KUBECONFIG={kubeconfig}" in text and kubeconfig.exists()
        emu = type("E", (), {"kubeconfig": str(kubeconfig)})()
        api = kube_api(emu)
        api.create_namespaced_pod("default", pod("cli-pod", {"t": "cli"}))
        p = wait_fast(lambda: (x := api.read_namespaced_pod("cli-pod", "default")).status.phase == "Running" and x, 30)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the pod should run as a process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert p.status.pod_ip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_in_process_variant():
    with EmulatedKubernetes(processes=False, in_process=True) as emu:
        api = kube_api(emu)
        created = api.create_namespaced_pod(emu.namespace, pod(generate="inproc-"))
        assert wait_fast(lambda: api.read_namespaced_pod(created.metadata.name, emu.namespace).status.phase == "Running", 5)
        assert emu.pid == os.getpid()
