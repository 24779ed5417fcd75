"""Pod fields of a template reach the pods unchanged: node affinity, nodeSelector, priorityClassName,
securityContext (pod and container), volumes and volumeMounts, initContainers. On the emulated Kubernetes
API the pods are read back through the official client, as stored by the API server; on the local runtime
from the runtime's own pod objects (it keeps these fields but, running processes, honours none of them:
see the README). Either way the cluster runs and its workers connect."""
import copy
import json

import pytest
from distributed import Client

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube.objects import cluster_selector

from helpers import WORKERS_UP, small_pod
from test_cluster import backend, make_runtime, target  # noqa: F401  (fixtures)

pytestmark = pytest.mark.asyncio

POD_FIELDS = {
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["big"]}]}}
            ],
        }
    },
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "priorityClassName": "dask-batch",
    "securityContext": {"fsGroup": 100, "runAsNonRoot": False, "supplementalGroups": [100]},
    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "config", "configMap": {"name": "dask-config", "optional": True}}],
    "initContainers": [{"name": "prepare", "image": "busybox:1.36", "command": ["sh", "-c", "true"],
                        "resources": {}}],
}
CONTAINER_FIELDS = {
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
}


def template():
    pod = small_pod(**copy.deepcopy(CONTAINER_FIELDS))
    pod["spec"].update(copy.deepcopy(POD_FIELDS))
    return pod


def kept(expected, actual) -> bool:
    """Whether ``actual`` holds all of ``expected`` unchanged; fields the API server adds by default
    (terminationMessagePath, imagePullPolicy...) are allowed, as on a real cluster."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and kept(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        # Admission may append entries (a real API server mounts the service account token volume), but
        # every template entry is there, in its order, unchanged.
        if expected and all(isinstance(e, dict) and "name" in e for e in expected):
            actual = [a for a in actual if isinstance(a, dict) and a.get("name") in {e["name"] for e in expected}]
        return len(actual) == len(expected) and all(map(kept, expected, actual))
    return expected == actual


def _stored_pods(runtime, backend, name):  # noqa: F811
    """The cluster's pods as the API server (or the local runtime) holds them: name -> pod JSON."""
    if backend == "kubernetes":
        raw = runtime.core.list_namespaced_pod(runtime.namespace, label_selector=cluster_selector(name),
                                               _preload_content=False)
        return {p["metadata"]["name"]: p for p in json.loads(raw.data)["items"]}
    return None


async def test_template_pod_fields_reach_the_pods_unchanged(make_runtime, backend, request):  # noqa: F811
    _priority_class_exists(request)
    rt = make_runtime()
    async with KubeCluster(template(), runtime=rt, n_workers=1, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=WORKERS_UP)
            assert await client.submit(lambda x: x + 1, 1) == 2
        if backend == "kubernetes":
            import asyncio

            pods = await asyncio.to_thread(_stored_pods, rt, backend, cluster.name)
        else:
            pods = {p["metadata"]["name"]: p for p in await rt.list_pods(cluster_selector(cluster.name))}
        roles = sorted(p["metadata"]["labels"]["dask.org/component"] for p in pods.values())
        assert roles == ["scheduler", "worker"], roles
        for name, pod in pods.items():
            spec = pod["spec"]
            for field, value in POD_FIELDS.items():
                assert kept(value, spec.get(field)), (name, field, spec.get(field))
            (container,) = spec["containers"]
            for field, value in CONTAINER_FIELDS.items():
                assert kept(value, container.get(field)), (name, field, container.get(field))


async def test_a_v1pod_template_keeps_the_fields(make_runtime):  # noqa: F811
    """The same through the official client's V1Pod, as classic dask-kubernetes code passes it."""
    from helpers import deserialize

    rt = make_runtime()
    cluster = KubeCluster(deserialize(template(), "V1Pod"), runtime=rt, n_workers=0, asynchronous=True)
    try:
        for field, value in POD_FIELDS.items():
            assert cluster.pod_template["spec"][field] == value, field
        worker = cluster._worker_manifest("w", "tls://127.0.0.1:8786")
        for field, value in POD_FIELDS.items():  # entries are added (the TLS volume), none changed
            assert kept(value, worker["spec"][field]), field
    finally:
        await rt.close()


@pytest.mark.filterwarnings("ignore")
def _priority_class_exists(request):
    """A real API server admits a pod only when its PriorityClass exists (the emulator does not check)."""
    if "real" not in request.node.callspec.params.get("backend", ""):
        return
    from kubernetes import client, config

    api = client.SchedulingV1Api(config.new_client_from_config(config_file=request.getfixturevalue("target").kubeconfig))
    try:
        api.create_priority_class({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                   "metadata": {"name": "dask-batch"}, "value": 1000})
    except client.ApiException as e:
        if e.status != 409:
            raise


def test_kept_is_strict():
    assert kept({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4})
    assert not kept({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]})
    assert not kept({"a": [1]}, {"a": [1, 2]})
    assert not kept({"a": 1}, {})


async def test_what_the_local_processes_honour(make_runtime, tmp_path, request):  # noqa: F811
    _priority_class_exists(request)
    """What a pod's container runs with on this machine (the local runtime, and the emulator's kubelet):
    its args, env and workingDir; the other fields above are kept but have no effect here."""
    import os

    rt = make_runtime()
    pod = template()
    container = pod["spec"]["containers"][0]
    container["workingDir"] = str(tmp_path)
    container["env"] = [{"name": "DASK_KUBE_TEST_MARK", "value": "from-the-template"}]
    async with KubeCluster(pod, runtime=rt, n_workers=1, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=WORKERS_UP)
            seen = await client.run(lambda: (os.getcwd(), os.environ.get("DASK_KUBE_TEST_MARK")))
    assert list(seen.values()) == [(str(tmp_path), "from-the-template")], seen
