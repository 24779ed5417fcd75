"""The operator backend on the real API server tier, with the Dask operator's own CRDs and its real controller
(dask-kubernetes, run as a process against that API server); the node agent runs the pods it makes.

The Jupyter server reaches the API as the unprivileged jdk-user, with deploy/rbac.yaml + deploy/rbac-operator.yaml
bound in a fresh namespace. Skipped when the binaries are not built (`make kube-binaries`), failed in CI.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("dask_kubernetes")

from jupyter_dask_kube.backends import operator_models as om  # noqa: E402
from jupyter_dask_kube.testing.daskoperator import DaskOperator, install_crds  # noqa: E402

from helpers import Pending, rest_call, tiny_template, wait_model, wait_until  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROOT = Path(__file__).parents[1]
TEMPLATES = {"tiny": tiny_template()}


@pytest.fixture(scope="module")
def operator_crds(real_control_plane):
    with real_control_plane.api_client() as c:
        install_crds(c)
    yield


@pytest.fixture
def username(monkeypatch):
    name = f"u{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def namespace(real_control_plane, operator_crds):
    cp = real_control_plane
    ns = cp.create_namespace(f"op-{uuid.uuid4().hex[:8]}")
    cp.grant(ns)
    cp.grant(ns, rbac_yaml=ROOT / "deploy" / "rbac-operator.yaml")
    yield ns
    cp.delete_namespace(ns)


@pytest.fixture
def operator(real_control_plane, namespace, tmp_path):
    with DaskOperator(real_control_plane.kubeconfig, namespace, log_path=str(tmp_path / "operator.log")) as op:
        yield op
        # a failed test's DaskClusters go while the operator still runs (its finalizers would hold the namespace)
        co = custom(real_control_plane)
        for cr in co.list_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS)["items"]:
            co.delete_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS, cr["metadata"]["name"])
        deadline = time.monotonic() + 60
        while co.list_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS)["items"] \
                and time.monotonic() < deadline:
            time.sleep(0.5)
    print((tmp_path / "operator.log").read_text()[-5000:])


@pytest.fixture
def jp_server_config(real_control_plane, namespace, username, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(namespace))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "auto", "templates": TEMPLATES, "max_workers": 4, "start_timeout": 600},
    }


def custom(cp):
    from kubernetes import client

    return client.CustomObjectsApi(cp.api_client())


def leftovers(cp, ns) -> dict:
    """Everything a cluster could leave in the namespace, as the admin sees it."""
    from kubernetes import client

    c = cp.api_client()
    co = client.CustomObjectsApi(c)
    out = {
        "daskclusters": [o["metadata"]["name"] for o in co.list_namespaced_custom_object(
            om.GROUP, om.VERSION, ns, om.CLUSTERS)["items"]],
        "daskworkergroups": [o["metadata"]["name"] for o in co.list_namespaced_custom_object(
            om.GROUP, om.VERSION, ns, om.WORKER_GROUPS)["items"]],
        "daskautoscalers": [o["metadata"]["name"] for o in co.list_namespaced_custom_object(
            om.GROUP, om.VERSION, ns, om.AUTOSCALERS)["items"]],
        "deployments": [d.metadata.name for d in client.AppsV1Api(c).list_namespaced_deployment(ns).items],
        "pods": [p.metadata.name for p in client.CoreV1Api(c).list_namespaced_pod(ns).items],
        "services": [s.metadata.name for s in client.CoreV1Api(c).list_namespaced_service(ns).items],
    }
    return {k: v for k, v in out.items() if v}


async def wait_nothing_left(cp, ns, timeout=180):
    async def empty():
        left = leftovers(cp, ns)
        return True if not left else Pending(str(left))

    await wait_until(empty, timeout, interval=0.5, what="nothing left in the namespace")


@pytest.mark.timeout(1200)
async def test_operator_create_compute_scale_adapt_delete(jp_fetch, real_control_plane, namespace, operator):
    from distributed import Client
    import dask.array as da

    code, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert status["backend"] == "operator" and status["problems"] == [], status  # auto picked the operator
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1, "name": "op"},
                                  expect=201)
    cid = model["id"]
    assert model["backend"] == "operator" and model["name"] == "op"
    cr = custom(real_control_plane).get_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS, cid)
    assert cr["spec"]["worker"]["replicas"] == 1

    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, timeout=300,
                             what="operator cluster running with 1 worker")
    assert model["scheduler_address"].startswith("tcp://127.") and model["dashboard_link"]
    async with Client(model["scheduler_address"], asynchronous=True, timeout="60s") as client:
        x = da.ones((200, 200), chunks=(50, 50))
        assert await client.compute(x.mean()) == 1.0

    await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 2}, expect=200)
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 2 and m["requested_workers"] == 2, timeout=300,
                     what="2 workers")
    code, logs = await rest_call(jp_fetch, "GET", "clusters", cid, "logs", expect=200)
    assert any("scheduler" in name for name in logs["logs"]), logs

    # adapt: a DaskAutoscaler; the operator asks the idle scheduler and scales down to the minimum
    code, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": {"minimum": 1, "maximum": 3}},
                                  expect=200)
    assert model["adapt"] == {"minimum": 1, "maximum": 3}
    scaler = custom(real_control_plane).get_namespaced_custom_object(om.GROUP, om.VERSION, namespace,
                                                                      om.AUTOSCALERS, cid)
    assert scaler["spec"] == {"cluster": cid, "minimum": 1, "maximum": 3}
    await wait_model(jp_fetch, cid, lambda m: m["requested_workers"] == 1 and m["workers"] == 1, timeout=300,
                     what="the operator's autoscaler scaling the idle cluster to its minimum")

    # over the admin's limit: refused, nothing changed
    code, err = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 9})
    assert code == 403 and "limit" in err["message"]

    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
    await wait_nothing_left(real_control_plane, namespace)
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert data["clusters"] == []


@pytest.mark.timeout(1200)
async def test_foreign_daskcluster_with_the_user_label_is_listed_and_scalable(
        jp_fetch, real_control_plane, namespace, username, operator):
    """A DaskCluster made elsewhere (dask-kubernetes' own spec builder, as KubeCluster makes it, created with
    kubectl's equivalent) shows in the panel when it carries the user's label; another user's does not."""
    from dask_kubernetes.operator import make_cluster_spec

    from jupyter_dask_kube.naming import safe_label_value

    mine = make_cluster_spec(name="theirs-mine", n_workers=1, worker_command="dask-worker")
    mine["metadata"]["labels"] = {"hub.jupyter.org/username": safe_label_value(username)}
    other = make_cluster_spec(name="theirs-other", n_workers=0)
    other["metadata"]["labels"] = {"hub.jupyter.org/username": "somebody-else"}
    co = custom(real_control_plane)
    for cr in (mine, other):
        co.create_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS, cr)
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert [c["id"] for c in data["clusters"]] == ["theirs-mine"]
    code, err = await rest_call(jp_fetch, "GET", "clusters", "theirs-other")
    assert code == 404
    await wait_model(jp_fetch, "theirs-mine", lambda m: m["status"] == "running" and m["workers"] == 1, timeout=300,
                     what="the foreign cluster running")
    await rest_call(jp_fetch, "PATCH", "clusters", "theirs-mine", body={"workers": 2}, expect=200)
    await wait_model(jp_fetch, "theirs-mine", lambda m: m["workers"] == 2, timeout=300, what="2 workers")
    code, _ = await rest_call(jp_fetch, "DELETE", "clusters", "theirs-other")
    assert code == 404
    await rest_call(jp_fetch, "DELETE", "clusters", "theirs-mine", expect=204)
    co.delete_namespaced_custom_object(om.GROUP, om.VERSION, namespace, om.CLUSTERS, "theirs-other")
    await wait_nothing_left(real_control_plane, namespace)


@pytest.fixture
def kubecluster_env(real_control_plane, namespace, monkeypatch):
    """What dask-kubernetes' KubeCluster needs in this test process, as it has in a notebook pod on a real
    cluster: Service names resolve (cluster DNS; without it KubeCluster port-forwards through the API server,
    which the node agent does not serve) and kr8s' discovery has singular names (kube-apiserver < 1.27 serves
    none for built-ins: testing/kr8s_compat.py). Both undone after the test."""
    import socket

    from kr8s._api import Api
    from kubernetes import client

    from jupyter_dask_kube.testing.clusterdns import install_resolver
    from jupyter_dask_kube.testing.kr8s_compat import patch_discovery, patch_read_retry

    monkeypatch.setattr(Api, "async_api_resources_uncached", Api.async_api_resources_uncached)
    monkeypatch.setattr(Api, "_create_session", Api._create_session)
    patch_discovery()
    patch_read_retry()
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
    with real_control_plane.api_client() as api_client:
        core = client.CoreV1Api(api_client)
        install_resolver(lambda: [api_client.sanitize_for_serialization(s)
                                  for s in core.list_namespaced_service(namespace).items])
        yield


@pytest.mark.timeout(1200)
async def test_kubecluster_from_dask_kubernetes_shows_in_the_panel(
        jp_fetch, real_control_plane, namespace, username, operator, kubecluster_env):
    """dask-kubernetes' own ``KubeCluster``, given a spec with the user's label (README: the ownership label),
    run as the same user as the server: its DaskCluster is listed by the REST API, computes with a Client, and
    is scaled and deleted from the panel."""
    import dask.array as da
    from dask_kubernetes.operator import KubeCluster, make_cluster_spec
    from distributed import Client

    from jupyter_dask_kube.naming import safe_label_value

    name = f"kc-{uuid.uuid4().hex[:6]}"
    spec = make_cluster_spec(name=name, n_workers=1, worker_command="dask-worker")
    spec["metadata"]["labels"] = {"hub.jupyter.org/username": safe_label_value(username)}
    cluster = await KubeCluster(custom_cluster_spec=spec, namespace=namespace, asynchronous=True, quiet=True,
                                shutdown_on_close=False)
    try:
        code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
        assert [c["id"] for c in data["clusters"]] == [name], data
        model = await wait_model(jp_fetch, name, lambda m: m["status"] == "running" and m["workers"] == 1,
                                 timeout=300, what="the KubeCluster's DaskCluster running with 1 worker")
        assert model["backend"] == "operator" and model["scheduler_address"].startswith("tcp://127.")
        async with Client(cluster, asynchronous=True, timeout="60s") as client:
            assert await client.compute(da.ones((200, 200), chunks=(50, 50)).mean()) == 1.0

            await rest_call(jp_fetch, "PATCH", "clusters", name, body={"workers": 2}, expect=200)
            await wait_model(jp_fetch, name, lambda m: m["workers"] == 2 and m["requested_workers"] == 2,
                             timeout=300, what="2 workers, scaled from the panel")
            await client.wait_for_workers(2, timeout=120)  # the KubeCluster's scheduler has them too
        await rest_call(jp_fetch, "DELETE", "clusters", name, expect=204)
        await wait_nothing_left(real_control_plane, namespace)
        code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
        assert data["clusters"] == []
    finally:
        await cluster.close()


@pytest.mark.timeout(1200)
async def test_operator_not_running_gives_a_reason_and_delete_leaves_nothing(
        jp_fetch, real_control_plane, namespace, jp_serverapp):
    """No controller: the DaskCluster never gets a status; after the start timeout the card says why."""
    backend = jp_serverapp.web_app.settings["dask_kube_backend"]
    getattr(backend, "inner", backend).start_timeout = 3  # the operator backend, under the Helm releases
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    assert model["status"] == "pending" and "waiting for the Dask operator" in model["message"]
    model = await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "failed", timeout=60,
                             what="the start timeout")
    assert "has not acted on this DaskCluster" in model["message"]
    await rest_call(jp_fetch, "DELETE", "clusters", model["id"], expect=204)
    await wait_nothing_left(real_control_plane, namespace, timeout=60)
