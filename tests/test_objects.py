"""objects: manifests are exactly what we mean and survive the official client's models."""
import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, V1Pod

from jupyter_dask_kube import naming, objects
from jupyter_dask_kube.objects import (
    ANNOTATION_ADAPT,
    ANNOTATION_CREATED,
    ANNOTATION_DISPLAY_NAME,
    ANNOTATION_OPTIONS,
    ANNOTATION_TEMPLATE,
    ANNOTATION_WORKERS,
    DEFAULT_TOLERATIONS,
    LABEL_CLUSTER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_USER,
    MANAGED_BY,
    build_scheduler_pod,
    build_service,
    build_worker_pod,
    cluster_selector,
    component_selector,
    get_arg,
    has_flag,
    labels,
    make_pod_spec,
    owner_reference,
    parse_scheduler_annotations,
    resource_warnings,
    scheduler_annotations,
    set_arg,
    user_selector,
    WorkerPodBuilder,
)
from jupyter_dask_kube.templates import load_pod

from helpers import assert_round_trips

SEED = Path(__file__).parent / "data" / "worker-spec.yml"
CLUSTER = "dask-alice-0123456789"
WORKER = naming.worker_pod_name(CLUSTER, "ab1cd")
ADDRESS = f"tcp://{CLUSTER}:8786"
WORKER_TOLERATIONS = [
    {"key": "k8s.dask.org/dedicated", "operator": "Equal", "value": "worker", "effect": "NoSchedule"},
    {"key": "k8s.dask.org_dedicated", "operator": "Equal", "value": "worker", "effect": "NoSchedule"},
]
SCHEDULER_TOLERATIONS = [dict(t, value="scheduler") for t in WORKER_TOLERATIONS]
SCHEDULER_POD = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": naming.scheduler_pod_name(CLUSTER), "uid": "1111-2222"}}


def seed():
    return load_pod(SEED)


def worker(template=None, **kw):
    kw = {"cluster_name": CLUSTER, "username": "alice", "worker_name": WORKER, "scheduler_address": ADDRESS, **kw}
    tpl = seed() if template is None else template
    pod = build_worker_pod(tpl, **kw)
    # The cluster builds its workers with WorkerPodBuilder: the same pod, whatever the template
    name = kw.pop("worker_name")
    assert WorkerPodBuilder(tpl, **kw)(name) == pod
    return pod


def template(*containers, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": list(containers), **spec}}


def our_labels(component, user="alice"):
    return {LABEL_NAME: "dask", LABEL_MANAGED_BY: MANAGED_BY, LABEL_CLUSTER: CLUSTER,
            LABEL_COMPONENT: component, LABEL_USER: user}


# --------------------------------------------------------------------- labels, selectors

def test_labels_and_selectors():
    assert labels(CLUSTER, "worker", "alice") == our_labels("worker")
    assert labels(CLUSTER, "scheduler", "jöhn@x")[LABEL_USER] == naming.safe_label_value("jöhn@x")
    assert cluster_selector(CLUSTER) == f"dask.org/cluster-name={CLUSTER}"
    assert component_selector(CLUSTER, "worker") == f"dask.org/cluster-name={CLUSTER},dask.org/component=worker"
    assert user_selector("alice") == "app.kubernetes.io/managed-by=jupyter-dask-kube,hub.jupyter.org/username=alice"
    assert user_selector("A B") == f"app.kubernetes.io/managed-by=jupyter-dask-kube,hub.jupyter.org/username={naming.safe_label_value('A B')}"


@pytest.mark.parametrize("cluster, component, match", [
    (CLUSTER, "dask-worker", "component must be one of scheduler, worker"),
    ("Dask_Cluster", "worker", "is not a DNS-1123 label"),
    ("x" * 64, "worker", "is not a DNS-1123 label"),
])
def test_labels_reject(cluster, component, match):
    with pytest.raises(ValueError, match=match):
        labels(cluster, component, "alice")


# ----------------------------------------------------------------------- args helpers

@pytest.mark.parametrize("args, flag, expected", [
    (["dask-worker", "--nthreads", "2"], "--nthreads", "2"),
    (["dask-worker", "--nthreads=4"], "--nthreads", "4"),
    (["dask-worker", "--nthreads"], "--nthreads", None),
    (["dask-worker", "--nthreads-x", "2"], "--nthreads", None),
    (["dask-worker", "--memory-limit=6 GB"], "--memory-limit", "6 GB"),
    ([], "--nthreads", None),
    (None, "--nthreads", None),
])
def test_get_arg(args, flag, expected):
    assert get_arg(args, flag) == expected
    assert has_flag(args, flag) == (args is not None and any(a == flag or a.startswith(flag + "=") for a in args))


@pytest.mark.parametrize("args, flag, value, expected", [
    (["dask-worker", "--nthreads", "2"], "--nthreads", 4, ["dask-worker", "--nthreads", "4"]),
    (["dask-worker", "--nthreads=2", "--x"], "--nthreads", "4", ["dask-worker", "--nthreads=4", "--x"]),
    (["dask-worker"], "--nthreads", 4, ["dask-worker", "--nthreads", "4"]),
    (["dask-worker", "--nthreads"], "--nthreads", 4, ["dask-worker", "--nthreads", "4"]),
    (None, "--name", "w", ["--name", "w"]),
])
def test_set_arg(args, flag, value, expected):
    original = copy.deepcopy(args)
    assert set_arg(args, flag, value) == expected
    assert args == original  # a new list


# ------------------------------------------------------------------------- worker pods

def test_worker_pod_from_seed_exactly():
    tpl = seed()
    before = copy.deepcopy(tpl)
    pod = build_worker_pod(tpl, cluster_name=CLUSTER, username="alice", worker_name=WORKER,
                           scheduler_address=ADDRESS, owner=SCHEDULER_POD, env={"EXTRA": 1})
    assert tpl == before
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": WORKER,
            "labels": {"foo": "bar", **our_labels("worker")},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": f"{CLUSTER}-scheduler", "uid": "1111-2222",
                                 "controller": True, "blockOwnerDeletion": False}],
        },
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "containers": [{
                "image": "daskdev/dask:latest",
                "imagePullPolicy": "IfNotPresent",
                "args": ["dask-worker", "--nthreads", "2", "--no-dashboard", "--memory-limit", "6GB",
                         "--death-timeout", "60", "--name", WORKER],
                "name": "dask",
                "env": [{"name": "DASK_SCHEDULER_ADDRESS", "value": ADDRESS}, {"name": "EXTRA", "value": "1"},
                        {"name": "EXTRA_PIP_PACKAGES", "value": "git+https://github.com/dask/distributed"}],
                "resources": {"limits": {"cpu": "2", "memory": "6G"}, "requests": {"cpu": "2", "memory": "6G"}},
            }],
            "tolerations": WORKER_TOLERATIONS,
        },
    }
    model = assert_round_trips(pod)
    assert model.metadata.owner_references[0].uid == "1111-2222"
    assert resource_warnings(pod) == []


def test_worker_pod_builder_equals_build_worker_pod():
    """WorkerPodBuilder (what KubeCluster uses for every worker) makes exactly build_worker_pod's pod, for
    every name, as independent objects; where its shortcut cannot be exact it builds per pod."""
    kw = {"cluster_name": CLUSTER, "username": "alice", "scheduler_address": ADDRESS, "owner": SCHEDULER_POD,
          "env": {"EXTRA": 1, "FLAG": True, "UNICODE": "é ☃"}}
    templates = [
        seed(),
        template({"name": "dask", "image": "i", "args": ["dask-worker"],
                  "resources": {"limits": {"cpu": "2500m", "memory": "4Gi"}}}),
        template({"name": "s", "image": "s"}, {"name": "dask", "image": "i", "command": ["dask-worker"],
                                                 "args": ["--name", "fixed"], "ports": [{"containerPort": 8788}]}),
        # the placeholder itself in the template: built per pod, still right
        template({"name": "dask", "image": "i", "args": ["dask-worker", WorkerPodBuilder.PLACEHOLDER]}),
        # not plain JSON (a tuple, a non-string key): built per pod
        template({"name": "dask", "image": "i", "args": ["dask-worker"], "ports": ({"containerPort": 1},)}),
        {**template({"name": "dask", "image": "i", "args": ["dask-worker"]}), "metadata": {"annotations": {1: "x"}}},
    ]
    names = [WORKER, naming.worker_pod_name(CLUSTER, "zz9yy"), 'needs "escaping"\\ é']
    for tpl in templates:
        before = copy.deepcopy(tpl)
        builder = WorkerPodBuilder(tpl, **kw)
        pods = [builder(n) for n in names]
        assert pods == [build_worker_pod(tpl, worker_name=n, **kw) for n in names]
        assert tpl == before
        pods[0]["spec"]["containers"][0].setdefault("env", []).append({"name": "MUTATED"})
        pods[0]["metadata"]["labels"]["x"] = "y"
        assert builder(names[0]) == build_worker_pod(tpl, worker_name=names[0], **kw)  # nothing shared
    assert WorkerPodBuilder(templates[0], **kw)._text is not None  # the usual case takes the shortcut
    assert WorkerPodBuilder(templates[3], **kw)._text is None


def test_worker_pod_best_practices_added():
    tpl = template({"name": "dask", "image": "i", "args": ["dask-worker"],
                    "resources": {"limits": {"cpu": "2500m", "memory": "4Gi"}}})
    pod = worker(tpl)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["args"] == [
        "dask-worker", "--death-timeout", "60", "--name", WORKER, "--nthreads", "2", "--memory-limit", str(4 * 2**30)]
    assert_round_trips(pod)


def test_worker_pod_keeps_what_the_template_set():
    tpl = template({"name": "dask", "image": "i",
                    "args": ["dask", "worker", "--death-timeout=5", "--name", "mine", "--nthreads", "1",
                             "--memory-limit", "1GB"],
                    "resources": {"limits": {"cpu": "4", "memory": "8G"}},
                    "env": [{"name": "DASK_SCHEDULER_ADDRESS", "value": "old"}, {"name": "KEEP", "value": "k"}]},
                   restartPolicy="OnFailure",
                   tolerations=[{"key": "gpu", "operator": "Exists"}, WORKER_TOLERATIONS[0]])
    tpl["metadata"] = {"namespace": "team", "labels": {"dask.org/component": "mine", "x": "y"},
                       "generateName": "g-", "uid": "old", "resourceVersion": "9"}
    pod = worker(tpl)
    c = pod["spec"]["containers"][0]
    assert c["args"] == tpl["spec"]["containers"][0]["args"]
    assert c["env"] == [{"name": "DASK_SCHEDULER_ADDRESS", "value": ADDRESS}, {"name": "KEEP", "value": "k"}]
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}, *WORKER_TOLERATIONS]
    assert pod["metadata"] == {"namespace": "team", "name": WORKER, "labels": {"x": "y", **our_labels("worker")}}
    assert_round_trips(pod)


@pytest.mark.parametrize("command, args", [
    (["dask-worker"], None),
    (["/opt/conda/bin/dask-worker"], ["--nthreads", "1"]),
    (["dask"], ["worker"]),
    (None, ["dask", "cuda", "worker"]),
    (None, ["dask-cuda-worker", "$(DASK_SCHEDULER_ADDRESS)"]),
])
def test_worker_command_forms(command, args):
    c = {"name": "dask", "image": "i"}
    if command:
        c["command"] = command
    if args:
        c["args"] = args
    pod = worker(template(c))
    out = pod["spec"]["containers"][0]
    assert (out.get("command") or []) + out["args"] == (command or []) + (args or []) + [
        "--death-timeout", "60", "--name", WORKER]


def test_env_goes_to_every_container_flags_only_to_the_worker():
    tpl = template({"name": "sidecar", "image": "s", "args": ["sleep", "inf"]},
                   {"name": "dask", "image": "i", "args": ["dask-worker"]},
                   {"name": "second", "image": "i", "args": ["dask-worker"]})
    pod = worker(tpl, env={"A": "1", "B": True})
    side, dask_c, second = pod["spec"]["containers"]
    for c in (side, dask_c, second):
        assert c["env"] == [{"name": "DASK_SCHEDULER_ADDRESS", "value": ADDRESS}, {"name": "A", "value": "1"},
                            {"name": "B", "value": "true"}]
    assert side["args"] == ["sleep", "inf"]
    assert second["args"] == ["dask-worker"]
    assert dask_c["args"] == ["dask-worker", "--death-timeout", "60", "--name", WORKER]


def test_non_dask_container_is_left_alone():
    pod = worker(template({"name": "c", "image": "custom:1"}))
    assert "args" not in pod["spec"]["containers"][0]


def test_owner_reference():
    assert owner_reference(SCHEDULER_POD) == {"apiVersion": "v1", "kind": "Pod", "name": f"{CLUSTER}-scheduler",
                                              "uid": "1111-2222", "controller": True, "blockOwnerDeletion": False}
    assert owner_reference({"metadata": {"name": "s", "uid": "u"}})["kind"] == "Pod"
    with pytest.raises(ValueError, match="needs the owner's metadata.name and metadata.uid"):
        owner_reference({"metadata": {"name": "s"}})
    with pytest.raises(ValueError, match="metadata.uid"):
        worker(owner={"metadata": {"name": "s"}})


# -------------------------------------------------------------------- resource warnings

def _limits_pod(args, cpu="2", memory="6G"):
    limits = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return template({"name": "dask", "image": "i", "args": ["dask-worker", *args], "resources": {"limits": limits}})


@pytest.mark.parametrize("args, cpu, memory, expected", [
    (["--nthreads", "2", "--memory-limit", "6GB"], "2", "6G", []),
    (["--nthreads", "2", "--memory-limit", "6G"], "2", "6G", []),
    (["--memory-limit", "6000000000"], "2", "6G", []),
    (["--memory-limit", "5GiB"], "2", "6G", []),
    (["--memory-limit", "auto"], "2", "6G", []),
    (["--memory-limit", "0.8"], "2", "6G", []),
    (["--memory-limit", "0"], "2", "6G", []),
    (["--nthreads", "1"], "500m", None, []),
    (["--nthreads", "8", "--memory-limit", "64GB"], None, None, []),
    (["--memory-limit", "8GB"], "2", "6G",
     ["container dask: --memory-limit 8GB is above the container's memory limit 6G: Kubernetes may OOM-kill workers"]),
    (["--memory-limit=6GiB"], "2", "6G",
     ["container dask: --memory-limit 6GiB is above the container's memory limit 6G: Kubernetes may OOM-kill workers"]),
    (["--nthreads", "4"], "2", "6G",
     ["container dask: --nthreads 4 is above the container's cpu limit 2: workers will be throttled"]),
    (["--nworkers", "2", "--nthreads", "2", "--memory-limit", "4GB"], "2", "6G",
     ["container dask: --nthreads 2 x 2 processes is above the container's cpu limit 2: workers will be throttled",
      ("container dask: --memory-limit 4GB x 2 processes is above the container's memory limit 6G: "
       "Kubernetes may OOM-kill workers")]),
    (["--nthreads", "x", "--memory-limit", "lots"], "2", "6G", []),
])
def test_resource_warnings(args, cpu, memory, expected):
    assert resource_warnings(_limits_pod(args, cpu, memory)) == expected


# ---------------------------------------------------------------------- scheduler pods

def test_scheduler_pod_derived_from_worker_template():
    tpl = seed()
    ann = scheduler_annotations("small", "Small", 2, None, {"cores": 2}, created=datetime(2026, 1, 2, 3, 4, 5))
    pod = build_scheduler_pod(None, tpl, cluster_name=CLUSTER, username="alice", annotations=ann,
                              idle_timeout=600, env={"X": "y"})
    assert tpl == seed()
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{CLUSTER}-scheduler", "labels": {"foo": "bar", **our_labels("scheduler")},
                     "annotations": ann},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "containers": [{
                "image": "daskdev/dask:latest",
                "imagePullPolicy": "IfNotPresent",
                "args": ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787", "--idle-timeout", "600"],
                "name": "dask",
                "env": [{"name": "X", "value": "y"},
                        {"name": "EXTRA_PIP_PACKAGES", "value": "git+https://github.com/dask/distributed"}],
                "resources": {"limits": {"cpu": "2", "memory": "6G"}, "requests": {"cpu": "2", "memory": "6G"}},
                "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                          {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
            }],
            "tolerations": SCHEDULER_TOLERATIONS,
        },
    }
    assert_round_trips(pod)


def test_scheduler_pod_drops_worker_command():
    tpl = template({"name": "dask", "image": "i", "command": ["dask-worker"], "args": ["--nthreads", "2"],
                    "readinessProbe": {"tcpSocket": {"port": 9000}}})
    pod = build_scheduler_pod(None, tpl, cluster_name=CLUSTER, username="alice")
    c = pod["spec"]["containers"][0]
    assert "command" not in c and "readinessProbe" not in c
    assert c["args"] == ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787"]
    assert "annotations" not in pod["metadata"] and "env" not in c


def test_scheduler_pod_from_its_own_template():
    sched = template({"name": "scheduler", "image": "s:1", "args": ["dask-scheduler"]}, restartPolicy="Always")
    sched["metadata"] = {"annotations": {"keep": "me", ANNOTATION_TEMPLATE: "old"}}
    pod = build_scheduler_pod(sched, seed(), cluster_name=CLUSTER, username="alice", idle_timeout=30.5,
                              annotations={ANNOTATION_TEMPLATE: "small"})
    c = pod["spec"]["containers"][0]
    assert c["args"] == ["dask-scheduler", "--idle-timeout", "30.5"]
    assert c["ports"][0]["containerPort"] == 8786 and c["image"] == "s:1"
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["metadata"]["annotations"] == {"keep": "me", ANNOTATION_TEMPLATE: "small"}
    assert pod["metadata"]["labels"] == our_labels("scheduler")
    assert pod["spec"]["tolerations"] == SCHEDULER_TOLERATIONS
    assert_round_trips(pod)


def test_scheduler_template_with_custom_ports_and_idle_timeout_kept():
    sched = template({"name": "s", "image": "s:1", "args": ["dask", "scheduler", "--idle-timeout", "5"],
                      "ports": [{"containerPort": 9999}]})
    c = build_scheduler_pod(sched, seed(), cluster_name=CLUSTER, username="alice", idle_timeout=60)["spec"]["containers"][0]
    assert c["args"] == ["dask", "scheduler", "--idle-timeout", "5"] and c["ports"] == [{"containerPort": 9999}]


# ----------------------------------------------------------------------------- service

def test_service():
    svc = build_service(CLUSTER, "alice", SCHEDULER_POD)
    assert svc == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": CLUSTER,
            "labels": our_labels("scheduler"),
            "ownerReferences": [owner_reference(SCHEDULER_POD)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_CLUSTER: CLUSTER, LABEL_COMPONENT: "scheduler"},
            "ports": [{"name": "tcp-comm", "port": 8786, "targetPort": 8786, "protocol": "TCP"},
                      {"name": "http-dashboard", "port": 8787, "targetPort": 8787, "protocol": "TCP"}],
        },
    }
    model = assert_round_trips(svc, "V1Service")
    assert model.spec.ports[1].target_port == 8787
    # the selector picks exactly the scheduler pod we build
    sched = build_scheduler_pod(None, seed(), cluster_name=CLUSTER, username="alice")
    assert svc["spec"]["selector"].items() <= sched["metadata"]["labels"].items()
    assert not svc["spec"]["selector"].items() <= worker()["metadata"]["labels"].items()


def test_service_without_uid_has_no_owner():
    svc = build_service(CLUSTER, "alice", {"metadata": {"name": "x"}})
    assert "ownerReferences" not in svc["metadata"]
    assert_round_trips(svc, "V1Service")


# ------------------------------------------------------------------------- annotations

def test_annotations_round_trip():
    created = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    ann = scheduler_annotations("small", "Small (2 cores)", 3, {"minimum": 1, "maximum": 10},
                                {"cores": 2.5, "image": "x"}, created=created)
    assert ann == {
        ANNOTATION_TEMPLATE: "small",
        ANNOTATION_DISPLAY_NAME: "Small (2 cores)",
        ANNOTATION_WORKERS: "3",
        ANNOTATION_ADAPT: '{"minimum": 1, "maximum": 10}',
        ANNOTATION_CREATED: "2026-03-04T05:06:07Z",
        ANNOTATION_OPTIONS: '{"cores": 2.5, "image": "x"}',
    }
    assert all(isinstance(v, str) for v in ann.values())  # annotation values must be strings
    assert parse_scheduler_annotations(ann) == {"template": "small", "display_name": "Small (2 cores)", "workers": 3,
                                                "adapt": {"minimum": 1, "maximum": 10},
                                                "options": {"cores": 2.5, "image": "x"}, "created": created}


def test_annotations_defaults_and_timezones():
    ann = scheduler_annotations("t", "T", 0, None, None)
    assert ann[ANNOTATION_ADAPT] == "null" and ann[ANNOTATION_OPTIONS] == "{}"
    created = parse_scheduler_annotations(ann)["created"]
    assert abs(datetime.now(timezone.utc) - created) < timedelta(seconds=5)
    plus2 = timezone(timedelta(hours=2))
    ann = scheduler_annotations("t", "T", 0, None, None, created=datetime(2026, 1, 1, 12, 0, tzinfo=plus2))
    assert ann[ANNOTATION_CREATED] == "2026-01-01T10:00:00Z"


@pytest.mark.parametrize("annotations, expected", [
    (None, {}),
    ({}, {}),
    ({ANNOTATION_WORKERS: "many"}, {}),
    ({ANNOTATION_WORKERS: "-3"}, {}),
    ({ANNOTATION_WORKERS: " 4 "}, {"workers": 4}),
    ({ANNOTATION_ADAPT: "{not json"}, {}),
    ({ANNOTATION_ADAPT: "[1, 2]"}, {}),
    ({ANNOTATION_ADAPT: '{"minimum": 5, "maximum": 2}'}, {}),
    ({ANNOTATION_ADAPT: '{"minimum": "a", "maximum": 2}'}, {}),
    ({ANNOTATION_ADAPT: '{"maximum": 2}'}, {"adapt": {"minimum": 0, "maximum": 2}}),
    ({ANNOTATION_OPTIONS: "[]"}, {}),
    ({ANNOTATION_OPTIONS: "garbage"}, {}),
    ({ANNOTATION_CREATED: "yesterday"}, {}),
    ({ANNOTATION_CREATED: "2026-01-01T00:00:00"}, {"created": datetime(2026, 1, 1, tzinfo=timezone.utc)}),
    ({ANNOTATION_TEMPLATE: "t"}, {"template": "t", "display_name": "t"}),
    ({ANNOTATION_TEMPLATE: 5}, {}),
    ("not a dict", {}),
])
def test_parse_annotations_tolerant(annotations, expected):
    defaults = {"template": "", "display_name": "", "workers": 0, "adapt": None, "options": {}, "created": None}
    assert parse_scheduler_annotations(annotations) == {**defaults, **expected}


# -------------------------------------------------------------------------- make_pod_spec

def test_make_pod_spec_classic():
    pod = make_pod_spec("daskdev/dask:latest", labels={"app": "x"}, threads_per_worker=2, env={"FOO": "bar", "N": 1},
                        memory_limit="4G", memory_request="3G", cpu_limit=1, cpu_request="500m", gpu_limit=1,
                        annotations={"a": "b"})
    assert isinstance(pod, V1Pod)
    c = pod.spec.containers[0]
    assert c.name == "dask-worker" and c.image == "daskdev/dask:latest"
    assert c.args == ["dask-worker", "$(DASK_SCHEDULER_ADDRESS)", "--nthreads", "2", "--death-timeout", "60",
                      "--memory-limit", "4G"]
    assert c.resources.limits == {"cpu": "1", "memory": "4G", "nvidia.com/gpu": "1"}
    assert c.resources.requests == {"cpu": "500m", "memory": "3G"}
    assert [(e.name, e.value) for e in c.env] == [("FOO", "bar"), ("N", "1")]
    assert pod.spec.restart_policy == "Never"
    assert pod.metadata.labels == {"app": "x"} and pod.metadata.annotations == {"a": "b"}
    assert ApiClient().sanitize_for_serialization(pod.spec.tolerations) == DEFAULT_TOLERATIONS
    # and our own loader takes it as a template
    loaded = load_pod(pod)
    assert loaded["spec"]["containers"][0]["args"][:2] == ["dask-worker", "$(DASK_SCHEDULER_ADDRESS)"]
    assert_round_trips(loaded)


def test_make_pod_spec_minimal():
    pod = make_pod_spec("img")
    c = pod.spec.containers[0]
    assert c.args == ["dask-worker", "$(DASK_SCHEDULER_ADDRESS)", "--nthreads", "1", "--death-timeout", "60"]
    assert c.resources.limits == {} and c.resources.requests == {} and c.env == []
    assert pod.metadata.labels == {}


def test_make_pod_spec_extra_configs_merge():
    pod = make_pod_spec(
        "img",
        extra_container_config={"imagePullPolicy": "IfNotPresent", "securityContext": {"runAsUser": 0},
                                "env": [{"name": "E", "value": "1"}]},
        extra_pod_config={"automountServiceAccountToken": False,
                          "tolerations": [{"key": "gpu", "operator": "Exists"}]},
        env={"A": "a"},
    )
    assert pod.spec.automount_service_account_token is False
    c = pod.spec.containers[0]
    assert c.image_pull_policy == "IfNotPresent" and c.security_context.run_as_user == 0
    assert [e.name for e in c.env] == ["A", "E"]  # lists are appended, as classic did
    assert [t.key for t in pod.spec.tolerations] == ["k8s.dask.org/dedicated", "k8s.dask.org_dedicated", "gpu"]
    pod = make_pod_spec("img", extra_container_config={"resources": {"limits": {"cpu": "3"}}}, cpu_request=1)
    assert pod.spec.containers[0].resources.limits == {"cpu": "3"}
    assert pod.spec.containers[0].resources.requests == {"cpu": "1"}


@pytest.mark.parametrize("kw, match", [
    ({"extra_container_config": {"image_pull_policy": "Always"}}, "'image_pull_policy' is not a V1Container attribute"),
    ({"extra_pod_config": {"nodeselector": {}}}, "'nodeselector' is not a V1PodSpec attribute"),
])
def test_make_pod_spec_rejects_unknown_attributes(kw, match):
    with pytest.raises(ValueError, match=match):
        make_pod_spec("img", **kw)


def test_to_model_and_manifest():
    pod = worker()
    assert objects.to_manifest(objects.to_model(pod, "V1Pod")) == pod


def test_service_links_off_unless_the_template_sets_them():
    """A kubelet injects variables for every Service of the namespace: ours are all dask-..., which dask
    reads as config (DASK_*). Every pod we make turns that off; a template may turn it back on."""
    template = {"kind": "Pod", "spec": {"containers": [{"name": "w", "image": "i", "args": ["dask-worker"]}]}}
    worker = objects.build_worker_pod(template, cluster_name="dask-a-1", username="a", worker_name="dask-a-1-worker-x",
                                      scheduler_address="tcp://127.200.0.1:8786")
    scheduler = objects.build_scheduler_pod(None, template, cluster_name="dask-a-1", username="a")
    assert worker["spec"]["enableServiceLinks"] is False and scheduler["spec"]["enableServiceLinks"] is False
    assert "enableServiceLinks" not in template["spec"]  # the template is not modified
    on = copy.deepcopy(template)
    on["spec"]["enableServiceLinks"] = True
    assert objects.build_worker_pod(on, cluster_name="dask-a-1", username="a", worker_name="w1",
                                    scheduler_address="tcp://x:8786")["spec"]["enableServiceLinks"] is True
    assert objects.build_scheduler_pod(on, on, cluster_name="dask-a-1", username="a")["spec"]["enableServiceLinks"] is True
