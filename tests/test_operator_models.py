"""operator_models: our templates as DaskCluster resources and DaskClusters as Cluster models (pure)."""
from datetime import datetime, timedelta, timezone

import pytest

from jupyter_dask_kube.backends import operator_models as om
from jupyter_dask_kube.templates import load_template

TEMPLATE = {
    "name": "small", "display_name": "Small", "workers": 2,
    "worker": {"kind": "Pod", "metadata": {"labels": {"team": "geo"}}, "spec": {
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{"name": "dask", "image": "ghcr.io/dask/dask:2026.8.0",
                        "args": ["dask-worker", "--nthreads", "1", "--memory-limit", "2GB"],
                        "resources": {"limits": {"cpu": "1", "memory": "2G"}}}]}},
    "options": [{"name": "cores", "type": "integer", "default": 1, "min": 1, "max": 4}],
}


def make(user="alice@example.org", **kw):
    t = load_template(TEMPLATE).apply_options(kw.pop("options", {"cores": 3}))
    args = dict(name="dask-alice-abc12", username=user, display_name="My cluster", workers=2,
                options={"cores": 3}, created=datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc))
    args.update(kw)
    return om.daskcluster(t, **args)


def worker_container(cr):
    return cr["spec"]["worker"]["spec"]["containers"][0]


def test_daskcluster_names_labels_and_ownership():
    cr = make()
    assert cr["apiVersion"] == "kubernetes.dask.org/v1" and cr["kind"] == "DaskCluster"
    assert cr["metadata"]["name"] == "dask-alice-abc12"
    labels = cr["metadata"]["labels"]
    assert labels["hub.jupyter.org/username"] != "alice@example.org"  # made a valid label value
    assert om.owned_by(cr, "alice@example.org") and not om.owned_by(cr, "bob")
    assert om.user_label_selector("alice@example.org") == f"hub.jupyter.org/username={labels['hub.jupyter.org/username']}"
    assert labels["app.kubernetes.io/managed-by"] == "jupyter-dask-kube"
    # the operator sets its own cluster-name/component labels on each child
    assert "dask.org/component" not in labels and "dask.org/component" not in cr["spec"]["worker"]["metadata"]["labels"]
    assert cr["spec"]["worker"]["metadata"]["labels"]["team"] == "geo"  # template labels kept
    ann = cr["metadata"]["annotations"]
    assert ann["dask-kube.jupyter.org/display-name"] == "My cluster"
    assert ann["dask-kube.jupyter.org/template"] == "small"
    assert '"cores": 3' in ann["dask-kube.jupyter.org/options"]


def test_daskcluster_worker_spec_keeps_options_limits_tolerations():
    cr = make()
    assert cr["spec"]["worker"]["replicas"] == 2
    c = worker_container(cr)
    assert c["resources"]["limits"]["cpu"] == "3" and c["resources"]["requests"]["cpu"] == "3"
    args = c["args"]
    assert args[args.index("--nthreads") + 1] == "3"
    assert args[args.index("--name") + 1] == "$(DASK_WORKER_NAME)"  # the operator's per-worker name
    assert "--death-timeout" in args
    # the scheduler address is the operator's (its Service's DNS name): we must not set it
    assert all(e["name"] != "DASK_SCHEDULER_ADDRESS" for e in c.get("env") or [])
    keys = {(t["key"], t.get("value")) for t in cr["spec"]["worker"]["spec"]["tolerations"]}
    assert ("gpu", None) in keys and ("k8s.dask.org/dedicated", "worker") in keys
    assert cr["spec"]["worker"]["spec"]["restartPolicy"] == "Always"  # Deployments allow nothing else


def test_daskcluster_scheduler_from_worker_image_and_service():
    cr = make()
    s = cr["spec"]["scheduler"]
    c = s["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/dask/dask:2026.8.0"
    assert c["args"][:2] == ["dask", "scheduler"]
    assert {p["name"] for p in c["ports"]} == {"tcp-comm", "http-dashboard"}
    assert {p["name"] for p in s["service"]["ports"]} == {"tcp-comm", "http-dashboard"}
    assert s["service"]["selector"] == {"dask.org/cluster-name": "dask-alice-abc12", "dask.org/component": "scheduler"}
    keys = {(t["key"], t.get("value")) for t in s["spec"]["tolerations"]}
    assert ("k8s.dask.org/dedicated", "scheduler") in keys


def test_daskcluster_idle_timeout_and_bad_name():
    cr = make(idle_timeout=120)
    assert cr["spec"]["idleTimeout"] == 120
    assert "--idle-timeout" in cr["spec"]["scheduler"]["spec"]["containers"][0]["args"]
    with pytest.raises(ValueError):
        make(name="Not_A_DNS_Label")


def test_autoscaler_and_patches():
    a = om.autoscaler("dask-alice-abc12", 1, 5)
    assert a["kind"] == "DaskAutoscaler" and a["spec"] == {"cluster": "dask-alice-abc12", "minimum": 1, "maximum": 5}
    assert om.scale_patch(4) == {"spec": {"worker": {"replicas": 4}}}


def pod(name, component, phase="Running", ready=True, **status):
    return {"metadata": {"name": name, "labels": {"dask.org/component": component}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       **status}}


SERVICE = {"spec": {"clusterIP": "127.200.0.9", "ports": [{"name": "tcp-comm", "port": 8786},
                                                         {"name": "http-dashboard", "port": 8787}]}}
NOW = datetime(2026, 12, 4, 18, 5, tzinfo=timezone.utc)


def with_status(cr, phase, created=datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc)):
    cr["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    cr["metadata"]["namespace"] = "ns1"
    if phase is not None:
        cr["status"] = {"phase": phase}
    return cr


def test_model_running_counts_ready_workers_only():
    cr = with_status(make(), "Running")
    pods = [pod("s", "scheduler"), pod("w1", "worker"), pod("w2", "worker", ready=False)]
    m = om.cluster_model(cr, pods=pods, service=SERVICE, now=NOW, env={})
    assert m["id"] == "dask-alice-abc12" and m["name"] == "My cluster" and m["backend"] == "operator"
    assert (m["workers"], m["requested_workers"]) == (1, 2)
    assert m["status"] == "starting"  # fewer workers than asked
    assert m["scheduler_address"] == "tcp://127.200.0.9:8786"
    assert m["dashboard_link"] == "http://127.200.0.9:8787/status"
    assert m["cores"] == 3.0 and m["memory"] == 2 * 10**9
    assert [p["role"] for p in m["pods"]] == ["scheduler", "worker", "worker"]
    cr["spec"]["worker"]["replicas"] = 1
    assert om.cluster_model(cr, pods=pods[:2], service=SERVICE, now=NOW, env={})["status"] == "running"
    # the operator may leave a ClusterIP cluster "Pending": ready pods and the Service make it running
    cr["status"]["phase"] = "Pending"
    assert om.cluster_model(cr, pods=pods[:2], service=SERVICE, now=NOW, env={})["status"] == "running"
    # no ready scheduler: starting, whatever the phase says
    cr["status"]["phase"] = "Running"
    assert om.cluster_model(cr, pods=pods[1:2], service=SERVICE, now=NOW, env={})["status"] == "starting"


def test_model_phases():
    assert om.cluster_model(with_status(make(), "Created"), pods=[], service=None, now=NOW)["status"] == "pending"
    m = om.cluster_model(with_status(make(), "Pending"), pods=[], service=None, now=NOW)
    assert m["status"] == "starting" and m["scheduler_address"] == "" and m["dashboard_link"] == ""
    m = om.cluster_model(with_status(make(), "Error"), pods=[], service=None, now=NOW)
    assert m["status"] == "failed" and "operator reports an error" in m["message"]
    cr = with_status(make(), "Running")
    cr["metadata"]["deletionTimestamp"] = "2026-12-04T18:04:00Z"
    assert om.cluster_model(cr, pods=[], service=SERVICE, now=NOW)["status"] == "stopping"


def test_model_operator_not_running_times_out_with_reason():
    cr = with_status(make(), None)
    m = om.cluster_model(cr, pods=[], service=None, now=NOW, start_timeout=600)
    assert m["status"] == "pending" and "waiting for the Dask operator" in m["message"]
    m = om.cluster_model(cr, pods=[], service=None, now=NOW + timedelta(minutes=10), start_timeout=600)
    assert m["status"] == "failed"
    assert "has not acted on this DaskCluster in 900s" in m["message"] and "ns1" in m["message"]


def test_model_pod_problem_is_the_message():
    cr = with_status(make(), "Pending")
    bad = pod("w1", "worker", phase="Pending", ready=False, containerStatuses=[
        {"name": "dask", "state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}}])
    m = om.cluster_model(cr, pods=[pod("s", "scheduler"), bad], service=SERVICE, now=NOW)
    assert m["message"].startswith("ErrImagePull") and "w1" in m["message"]


def test_model_adapt_and_foreign_cluster():
    cr = with_status(make(), "Running")
    m = om.cluster_model(cr, pods=[], service=SERVICE, autoscaler_cr=om.autoscaler("x", 1, 6), now=NOW, env={})
    assert m["adapt"] == {"minimum": 1, "maximum": 6}
    # made with kubectl / dask-kubernetes' KubeCluster: no annotations of ours, only the user's label
    foreign = {"metadata": {"name": "mine", "labels": {"hub.jupyter.org/username": "alice"},
                            "creationTimestamp": "2026-12-04T18:00:00Z"},
               "spec": {"worker": {"replicas": 3, "spec": {"containers": [{"name": "w", "args": ["dask", "worker"]}]}}},
               "status": {"phase": "Running"}}
    m = om.cluster_model(foreign, pods=[], service=SERVICE, now=NOW, env={})
    assert (m["name"], m["template"], m["requested_workers"], m["cores"]) == ("mine", "", 3, None)
    assert om.owned_by(foreign, "alice")


def test_model_requested_workers_follow_the_default_worker_group():
    cr = with_status(make(), "Running")  # the DaskCluster still says 2
    group = {"spec": {"cluster": "dask-alice-abc12", "worker": {"replicas": 5}}}
    m = om.cluster_model(cr, pods=[], service=SERVICE, worker_group=group, now=NOW, env={})
    assert m["requested_workers"] == 5  # the operator's autoscaler scaled the group
    assert om.default_worker_group("dask-alice-abc12") == "dask-alice-abc12-default"
