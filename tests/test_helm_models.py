"""helm_models: Dask Helm chart releases (the chart's names and labels) as attached Cluster models (pure)."""
from jupyter_dask_kube.backends import helm_models as hm


def chart_objects(release="rel", fullname="rel-dask", workers=2):
    def labels(component):
        return {"app": "dask", "release": release, "component": component, "heritage": "Helm", "chart": "dask-2024.1.1"}

    sched = {"metadata": {"name": f"{fullname}-scheduler", "labels": labels("scheduler"),
                          "creationTimestamp": "2026-12-04T18:00:00Z"}, "spec": {"replicas": 1}}
    worker = {"metadata": {"name": f"{fullname}-worker", "labels": labels("worker")},
              "spec": {"replicas": workers, "template": {"spec": {"containers": [
                  {"name": "w", "args": ["dask-worker", f"{fullname}-scheduler:8786"],
                   "resources": {"limits": {"cpu": "2", "memory": "4G"}}}]}}}}
    svc = {"metadata": {"name": f"{fullname}-scheduler", "labels": labels("scheduler")},
           "spec": {"clusterIP": "127.200.0.5", "ports": [{"name": f"{fullname}-scheduler", "port": 8786, "targetPort": 8786},
                                                         {"name": f"{fullname}-webui", "port": 80, "targetPort": 8787}]}}
    return sched, worker, svc


def pod(name, component, release="rel", ready=True):
    return {"metadata": {"name": name, "labels": {"app": "dask", "release": release, "component": component}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_release_found_by_the_chart_labels():
    sched, worker, svc = chart_objects()
    ours = {"metadata": {"name": "dask-alice-x", "labels": {"app.kubernetes.io/name": "dask"}}}
    found = hm.releases([sched, worker, ours], [svc])
    assert list(found) == ["rel"] and found["rel"]["problems"] == []
    assert found["rel"]["worker"] is worker and found["rel"]["service"] is svc


def test_model_running_with_address_dashboard_and_size():
    sched, worker, svc = chart_objects(workers=2)
    parts = hm.releases([sched, worker], [svc])["rel"]
    pods = [pod("s", "scheduler"), pod("w1", "worker"), pod("w2", "worker"), pod("x", "worker", release="other")]
    m = hm.cluster_model("rel", parts, pods, env={})
    assert m["id"] == "helm.rel" and hm.release_of(m["id"]) == "rel" and hm.release_of("dask-x") is None
    assert (m["status"], m["workers"], m["requested_workers"]) == ("running", 2, 2)
    assert m["scheduler_address"] == "tcp://127.200.0.5:8786"
    assert m["dashboard_link"] == "http://127.200.0.5:80/status"  # the chart's webUI port
    assert (m["cores"], m["memory"], m["backend"]) == (2.0, 4 * 10**9, "helm")
    assert [p["name"] for p in m["pods"]] == ["s", "w1", "w2"]
    m = hm.cluster_model("rel", parts, pods[:2], env={})
    assert m["status"] == "starting"


def test_unexpected_labels_and_missing_parts_are_reasons():
    sched, worker, svc = chart_objects()
    worker["metadata"]["labels"]["component"] = "workers"
    found = hm.releases([sched, worker], [svc])["rel"]
    m = hm.cluster_model("rel", found, [pod("s", "scheduler")], env={})
    assert m["status"] == "failed"
    assert "component='workers'" in m["message"] and "no worker Deployment" in m["message"]
    assert m["scheduler_address"] == ""
    only_worker = hm.releases([chart_objects("lone", "lone-dask")[1]], [])["lone"]
    m = hm.cluster_model("lone", only_worker, [], env={})
    assert m["status"] == "failed" and "no scheduler Deployment" in m["message"] and "no scheduler Service" in m["message"]


def test_pending_until_the_scheduler_is_ready():
    sched, worker, svc = chart_objects()
    parts = hm.releases([sched, worker], [svc])["rel"]
    m = hm.cluster_model("rel", parts, [pod("s", "scheduler", ready=False)], env={})
    assert m["status"] == "pending" and m["scheduler_address"] == ""
    assert hm.scale_patch(3) == {"spec": {"replicas": 3}}
