"""Per-user limits that hold: max_memory (and what a worker with no memory size counts as), and clusters
made from Python, which the panel shows, counting toward the limits of what the panel or REST creates."""
import uuid

import pytest

from jupyter_dask_kube.templates import ClusterTemplate

from helpers import WORKER_ARGS, detached_cluster, limited_pod, rest_call, small_pod, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NO_MEMORY_ARGS = [a for a in WORKER_ARGS if a not in ("--memory-limit", "1GB")]
TEMPLATES = {
    # 1G container limit: counts 1G a worker
    "limited": {"workers": 0, "worker": limited_pod()},
    # no limit, no --memory-limit size: a worker may use a whole node
    "unsized": {"workers": 0, "worker": small_pod(args=NO_MEMORY_ARGS)},
    "auto": {"workers": 0, "worker": small_pod(args=[*NO_MEMORY_ARGS, "--memory-limit", "auto"])},
    # only a request: counts the request
    "requested": {"workers": 0, "worker": small_pod(args=NO_MEMORY_ARGS,
                                                     resources={"requests": {"memory": "512Mi"}})},
}


@pytest.mark.parametrize("container, memory", [
    ({"resources": {"limits": {"memory": "2Gi"}}, "args": WORKER_ARGS}, 2 * 2**30),  # the limit first
    ({"args": WORKER_ARGS}, 10**9),  # --memory-limit 1GB
    ({"args": NO_MEMORY_ARGS, "resources": {"requests": {"memory": "512Mi"}}}, 512 * 2**20),
    ({"args": [*NO_MEMORY_ARGS, "--memory-limit", "0.5"], "resources": {"requests": {"memory": "1G"}}}, 10**9),
    ({"args": NO_MEMORY_ARGS}, None),
    ({"args": [*NO_MEMORY_ARGS, "--memory-limit", "auto"]}, None),
    ({"args": [*NO_MEMORY_ARGS, "--memory-limit", "0"]}, None),
])
def test_what_a_worker_counts_as(container, memory):
    t = ClusterTemplate("t", "t", "", False, small_pod(**container))
    assert t.worker_resources()["memory"] == memory


@pytest.fixture
def jp_server_config(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", f"m{uuid.uuid4().hex[:8]}")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "local", "templates": TEMPLATES, "max_memory": "3G"},
    }


async def test_max_memory_across_clusters_create_scale_adapt(jp_fetch):
    """Clusters with 0 workers make no worker pods, so the limit arithmetic is checked without load."""
    async def create(template, **body):
        return await rest_call(jp_fetch, "POST", "clusters", body={"template": template, **body})

    code, first = await create("limited", workers=2)  # 2G of 3G
    assert code == 201, first
    code, data = await create("limited", workers=2)  # 4G
    assert code == 403 and "your limit is 2.79 GiB" in data["message"] and "1.86 GiB in use" in data["message"], data
    code, data = await create("limited", adapt={"minimum": 0, "maximum": 2})  # adapt counts its maximum
    assert code == 403, data
    code, second = await create("limited", workers=1)  # 3G exactly
    assert code == 201, second
    for cid in (first["id"], second["id"]):  # scaling waits for a running scheduler
        await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", 90, what="running")
    # scaling counts the other clusters too
    code, data = await rest_call(jp_fetch, "PATCH", "clusters", second["id"], body={"workers": 2})
    assert code == 403 and "GiB" in data["message"], data
    code, data = await rest_call(jp_fetch, "PATCH", "clusters", first["id"], body={"adapt": {"minimum": 0, "maximum": 3}})
    assert code == 403, data
    # a request-only worker counts its request: 512Mi does not fit the 0 bytes left, 0 workers do
    code, data = await create("requested", workers=1)
    assert code == 403 and "0.5 GiB" in data["message"], data
    # room again once a cluster is gone
    assert (await rest_call(jp_fetch, "DELETE", "clusters", second["id"]))[0] == 204
    code, data = await rest_call(jp_fetch, "PATCH", "clusters", first["id"], body={"workers": 3})
    assert code == 200, data
    for cid in (first["id"],):
        assert (await rest_call(jp_fetch, "DELETE", "clusters", cid))[0] == 204


async def test_the_admin_sees_templates_that_cannot_be_counted(jp_fetch):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    unsized = [p for p in data["problems"] if "no memory size" in p]
    assert len(unsized) == 2 and any("'unsized'" in p for p in unsized) and any("'auto'" in p for p in unsized), data


@pytest.mark.parametrize("template", ["unsized", "auto"])
async def test_workers_without_a_memory_size_are_refused_under_a_memory_limit(jp_fetch, template):
    code, data = await rest_call(jp_fetch, "POST", "clusters", body={"template": template, "workers": 1})
    assert code == 403, data
    assert "does not say how much memory" in data["message"] and "2.79 GiB" in data["message"], data
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert data["clusters"] == []  # nothing half-made


class TestPythonClustersCount:
    """On the emulated Kubernetes API: a cluster made from Python (remote scheduler, 2 workers, scaled in
    its own process so no worker count is recorded) shows in the panel and counts toward the limits of
    what REST creates."""

    @pytest.fixture
    def user(self, emulated_kubernetes, monkeypatch):
        name = f"p{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("JUPYTERHUB_USER", name)
        monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
        return name

    @pytest.fixture
    def jp_server_config(self, user):
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
            "DaskKube": {"backend": "kubernetes", "templates": {"limited": TEMPLATES["limited"]},
                         "max_cores": 3, "max_memory": "3G", "max_clusters": 2},
        }

    async def test_python_cluster_counts_toward_rest_limits(self, jp_fetch, user, emulated_kubernetes):
        name = await detached_cluster(user, kubeconfig=emulated_kubernetes.kubeconfig, pod=limited_pod(), workers=2)
        try:
            async def listed():
                code, data = await rest_call(jp_fetch, "GET", "clusters")
                return next((c for c in data["clusters"] if c["id"] == name and c["workers"] == 2), None)

            shown = await wait_until(listed, 90, what="the Python cluster in the panel's list")
            assert shown["status"] == "running"
            # 2 cores and 2G in use by the Python cluster: 2 more workers exceed both limits
            code, data = await rest_call(jp_fetch, "POST", "clusters", body={"template": "limited", "workers": 2})
            assert code == 403 and "(2 in use)" in data["message"], data
            code, made = await rest_call(jp_fetch, "POST", "clusters", body={"template": "limited", "workers": 0})
            assert code == 201, made
            # and it is one of the user's 2 clusters
            code, data = await rest_call(jp_fetch, "POST", "clusters", body={"template": "limited", "workers": 0})
            assert code == 403 and "limit is 2" in data["message"], data
            await wait_model(jp_fetch, made["id"], lambda m: m["status"] == "running", 90, what="running")
            assert (await rest_call(jp_fetch, "DELETE", "clusters", made["id"]))[0] == 204
        finally:
            assert (await rest_call(jp_fetch, "DELETE", "clusters", name))[0] == 204
