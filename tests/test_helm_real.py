"""Dask Helm chart releases on the real API server tier: manifests in the chart's shape (scheduler Deployment +
Service, worker Deployment, the chart's names and labels), made real by the controller-manager (ReplicaSets,
pods) and run by the node agent; the panel shows them beside our clusters, scales them, deletes them only when
the admin allows it. Skipped when the binaries are not built (`make kube-binaries`), failed in CI."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from helpers import Pending, rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROOT = Path(__file__).parents[1]


def chart_release(release: str, workers: int = 1, component_label: str = "worker") -> list[dict]:
    """What `helm install {release} dask/dask` makes (default label style), trimmed to what runs here."""
    full = f"{release}-dask"

    def labels(component):
        return {"app": "dask", "release": release, "component": component, "heritage": "Helm",
                "chart": "dask-2024.1.1"}

    def deployment(component, replicas, args, ports):
        sel = {"app": "dask", "release": release, "component": component}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": f"{full}-{'worker' if component == component_label else component}",
                             "labels": labels(component)},
                "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                         "template": {"metadata": {"labels": sel}, "spec": {"containers": [{
                             "name": f"{full}-{component}", "image": "ghcr.io/dask/dask:2026.8.0", "args": args,
                             "ports": [{"containerPort": p} for p in ports],
                             "resources": {"limits": {"cpu": "1", "memory": "1G"},
                                           "requests": {"cpu": "100m", "memory": "256M"}}}]}}}}

    return [
        deployment("scheduler", 1, ["dask-scheduler", "--port", "8786", "--dashboard-address", ":8787"], [8786, 8787]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{full}-scheduler", "labels": labels("scheduler")},
         "spec": {"selector": {"app": "dask", "release": release, "component": "scheduler"}, "type": "ClusterIP",
                  "ports": [{"name": f"{full}-scheduler", "port": 8786, "targetPort": 8786},
                            {"name": f"{full}-webui", "port": 80, "targetPort": 8787}]}},
        deployment(component_label, workers, ["dask-worker", f"{full}-scheduler:8786", "--nthreads", "1",
                                              "--memory-limit", "1G", "--no-dashboard"], [8789]),
    ]


def apply(cp, ns, objs):
    from kubernetes import client

    c = cp.api_client()
    for o in objs:
        if o["kind"] == "Deployment":
            client.AppsV1Api(c).create_namespaced_deployment(ns, o)
        else:
            client.CoreV1Api(c).create_namespaced_service(ns, o)


@pytest.fixture
def namespace(real_control_plane, monkeypatch):
    cp = real_control_plane
    monkeypatch.setenv("JUPYTERHUB_USER", f"u{uuid.uuid4().hex[:8]}")
    ns = cp.create_namespace(f"helm-{uuid.uuid4().hex[:8]}")
    cp.grant(ns)
    cp.grant(ns, rbac_yaml=ROOT / "deploy" / "rbac-helm.yaml")
    yield ns
    cp.delete_namespace(ns)


@pytest.fixture
def allow_delete():
    return False


@pytest.fixture
def jp_server_config(real_control_plane, namespace, monkeypatch, allow_delete):
    monkeypatch.setenv("KUBECONFIG", real_control_plane.user_kubeconfig_for(namespace))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": {"tiny": tiny_template()}, "max_workers": 4,
                     "helm_allow_delete": allow_delete},
    }


def deployments(cp, ns) -> dict:
    from kubernetes import client

    return {d.metadata.name: d.spec.replicas for d in client.AppsV1Api(cp.api_client()).list_namespaced_deployment(ns).items}


@pytest.mark.timeout(1200)
async def test_helm_release_attached_scaled_not_deleted(jp_fetch, real_control_plane, namespace):
    from distributed import Client
    import dask.array as da

    cp = real_control_plane
    apply(cp, namespace, chart_release("rel"))
    model = await wait_model(jp_fetch, "helm.rel", lambda m: m["status"] == "running" and m["workers"] == 1,
                             timeout=300, what="the Helm release running with 1 worker")
    assert model["backend"] == "helm" and model["name"] == "rel" and model["dashboard_link"]
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert [c["id"] for c in data["clusters"]] == ["helm.rel"]
    async with Client(model["scheduler_address"], asynchronous=True, timeout="60s") as client:
        assert await client.compute(da.ones((100, 100), chunks=50).mean()) == 1.0
    code, logs = await rest_call(jp_fetch, "GET", "clusters", "helm.rel", "logs", expect=200)
    assert any(name.startswith("rel-dask-scheduler") for name in logs["logs"]), logs

    await rest_call(jp_fetch, "PATCH", "clusters", "helm.rel", body={"workers": 2}, expect=200)
    assert deployments(cp, namespace)["rel-dask-worker"] == 2
    await wait_model(jp_fetch, "helm.rel", lambda m: m["workers"] == 2, timeout=300, what="2 workers")
    # in Python, as classic HelmCluster
    import asyncio

    from jupyter_dask_kube.helmcluster import HelmCluster

    hc = await asyncio.to_thread(HelmCluster, "rel", namespace, kubeconfig=cp.user_kubeconfig_for(namespace))
    assert await asyncio.to_thread(lambda: hc.scheduler_address) == model["scheduler_address"]
    with pytest.raises(LookupError):
        await asyncio.to_thread(HelmCluster, "nope", namespace, kubeconfig=cp.user_kubeconfig_for(namespace))
    hc.close()
    code, err = await rest_call(jp_fetch, "PATCH", "clusters", "helm.rel", body={"workers": 9})
    assert code == 403
    code, err = await rest_call(jp_fetch, "DELETE", "clusters", "helm.rel")
    assert code == 403 and "helm uninstall rel" in err["message"]
    assert deployments(cp, namespace) == {"rel-dask-scheduler": 1, "rel-dask-worker": 2}


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("allow_delete", [True])
async def test_helm_release_deleted_when_allowed_and_bad_labels_are_a_reason(jp_fetch, real_control_plane, namespace):
    from kubernetes import client

    cp = real_control_plane
    apply(cp, namespace, chart_release("rel", workers=1))
    apply(cp, namespace, chart_release("odd", workers=0, component_label="dask-worker"))
    model = await wait_model(jp_fetch, "helm.odd", lambda m: m["status"] == "failed", timeout=120, what="odd release")
    assert "component='dask-worker'" in model["message"] and "no worker Deployment" in model["message"]
    code, _ = await rest_call(jp_fetch, "PATCH", "clusters", "helm.odd", body={"workers": 1})
    assert code == 409
    await wait_model(jp_fetch, "helm.rel", lambda m: m["status"] == "running", timeout=300, what="rel running")
    await rest_call(jp_fetch, "DELETE", "clusters", "helm.rel", expect=204)

    async def rel_gone():
        names = [p.metadata.name for p in client.CoreV1Api(cp.api_client()).list_namespaced_pod(namespace).items]
        left = [n for n in names if n.startswith("rel-")] + [n for n in deployments(cp, namespace) if n.startswith("rel-")]
        left += [s.metadata.name for s in client.CoreV1Api(cp.api_client()).list_namespaced_service(namespace).items
                 if s.metadata.name.startswith("rel-")]
        return True if not left else Pending(str(left))

    await wait_until(rel_gone, 180, interval=0.5, what="release rel gone")
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert [c["id"] for c in data["clusters"]] == ["helm.odd"]
