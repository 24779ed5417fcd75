"""The REST API through a real jupyter_server (pytest-jupyter's jp_fetch), on the local runtime and on
the emulated Kubernetes API."""
import asyncio
import uuid

import pytest
import tornado.httpclient

from jupyter_dask_kube.objects import cluster_selector, user_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.runtimes.local import LocalRuntime
from jupyter_dask_kube.testing.fixtures import BACKEND_PARAMS, backend_target

from helpers import no_pods, rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TEMPLATES = {
    "tiny": tiny_template(description="for tests", options=[
        {"name": "cores", "type": "integer", "default": 1, "min": 1, "max": 2},
        {"name": "memory", "type": "select", "default": "1G", "choices": ["1G", "2G"]},
    ]),
}


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    return request.param.split("-")[0]


@pytest.fixture
def username(monkeypatch):
    # A fresh user per test: clusters of other tests on the shared emulated cluster are someone else's.
    name = f"u{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def kube_env(backend, request, monkeypatch):
    if backend == "kubernetes":
        emu = backend_target(request)
        monkeypatch.setenv("KUBECONFIG", emu.kubeconfig)
        return emu
    return None


@pytest.fixture
def jp_server_config(backend, username, kube_env):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True, "jupyter_server_proxy": True}},
        "DaskKube": {
            "backend": backend,
            "templates": TEMPLATES,
            "max_workers": 4,
            "max_clusters": 3,
            "max_cores": 6,
        },
    }


def make_runtime(backend, emu):
    return LocalRuntime() if backend == "local" else KubernetesRuntime(emu.namespace, kubeconfig=emu.kubeconfig)


@pytest.fixture
def other_runtime(backend, kube_env):
    """A second client of the same cluster (pytest-jupyter runs tests on its own loop: close on a fresh one)."""
    rt = make_runtime(backend, kube_env)
    yield rt
    asyncio.run(rt.close())


async def test_templates(jp_fetch, backend):
    code, data = await rest_call(jp_fetch, "GET", "templates", expect=200)
    (t,) = data["templates"]
    assert t["name"] == "tiny" and t["default"] is True and t["backend"] == backend
    assert t["worker"]["cores"] == 1 and t["worker"]["memory"] == "1G"
    assert {o["name"] for o in t["options"]} == {"cores", "memory"}


async def test_status(jp_fetch, backend):
    code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert data["backend"] == backend
    assert data["namespace"] == "default"
    assert data["version"]
    assert data["problems"] == []


async def test_cluster_lifecycle(jp_fetch, backend, username, kube_env, other_runtime):
    code, model = await rest_call(jp_fetch, "POST", "clusters",
                                  body={"template": "tiny", "workers": 2, "name": "My analysis"}, expect=201)
    cid = model["id"]
    assert model["status"] in ("pending", "starting")
    assert model["name"] == "My analysis" and model["template"] == "tiny"
    assert cid.startswith(f"dask-{username}-")
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 2, what="2 workers")
    assert model["requested_workers"] == 2
    assert model["scheduler_address"].startswith("tls://")  # TLS per cluster, on by default
    if backend == "local":  # the snippet the panel inserts: the owner-only credential files, by path
        code_text = model["connect_code"]
        assert "Security(" in code_text and "client.key" in code_text and model["scheduler_address"] in code_text
        assert "PRIVATE KEY" not in code_text
    assert model["cores"] == 2 and model["memory"] >= 2 * 10**9 * 0.9
    assert "proxy/" in model["dashboard_link"] and model["dashboard_link"].endswith("/status")
    roles = sorted(p["role"] for p in model["pods"])
    assert roles == ["scheduler", "worker", "worker"]

    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert [c["id"] for c in data["clusters"]] == [cid]

    # scale, adapt, adapt off
    code, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 3}, expect=200)
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 3, what="3 workers")
    code, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": {"minimum": 1, "maximum": 4}},
                                  expect=200)
    assert model["adapt"] == {"minimum": 1, "maximum": 4}
    code, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": None}, expect=200)
    assert model["adapt"] is None

    code, data = await rest_call(jp_fetch, "GET", "clusters", cid, "logs", expect=200)
    sched = [n for n in data["logs"] if n.endswith("-scheduler")]
    assert sched and "Scheduler at" in data["logs"][sched[0]]

    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204
    await rest_call(jp_fetch, "GET", "clusters", cid, expect=404)
    pods = await other_runtime.list_pods(cluster_selector(cid))
    assert pods == [] or all(p["metadata"].get("deletionTimestamp") for p in pods)


BAD_BODIES = [
    ("not json", b"{nope", 400),
    ("a list", [], 400),
    ("workers string", {"workers": "3"}, 400),
    ("workers negative", {"workers": -1}, 400),
    ("workers fraction", {"workers": 1.5}, 400),
    ("workers bool", {"workers": True}, 400),
    ("workers huge", {"workers": 10**30}, 400),
    ("workers over limit", {"workers": 5}, 403),
    ("adapt min > max", {"adapt": {"minimum": 3, "maximum": 1}}, 400),
    ("adapt not object", {"adapt": 3}, 400),
    ("adapt over limit", {"adapt": {"minimum": 0, "maximum": 50}}, 403),
    ("both workers and adapt", {"workers": 1, "adapt": {"minimum": 0, "maximum": 2}}, 400),
    ("unknown field", {"workerz": 2}, 400),
    ("unknown template", {"template": "huge"}, 404),
    ("template not string", {"template": 7}, 400),
    ("unknown option", {"options": {"gpus": 1}}, 400),
    ("option over bound", {"options": {"cores": 8}}, 403),
    ("option wrong type", {"options": {"cores": "many"}}, 400),
    ("option not a choice", {"options": {"memory": "64G"}}, 403),
    ("options not object", {"options": [1]}, 400),
    ("name too long", {"name": "x" * 500}, 400),
    ("cores over user limit", {"workers": 4, "options": {"cores": 2}}, 403),
]


@pytest.mark.parametrize("label,body,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_create_bodies(jp_fetch, label, body, status, backend, username, other_runtime):
    code, data = await rest_call(jp_fetch, "POST", "clusters", body=body)
    assert code == status, data
    assert isinstance(data["message"], str) and data["message"]
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert data["clusters"] == []
    assert await other_runtime.list_pods(user_selector(username)) == []


async def test_bad_patch_bodies_and_unknown_ids(jp_fetch, backend):
    await rest_call(jp_fetch, "GET", "clusters", "dask-nobody-123", expect=404)
    await rest_call(jp_fetch, "DELETE", "clusters", "dask-nobody-123", expect=404)
    await rest_call(jp_fetch, "GET", "clusters", "dask-nobody-123", "logs", expect=404)
    await rest_call(jp_fetch, "PATCH", "clusters", "dask-nobody-123", body={"workers": 1}, expect=404)
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 0}, expect=201)
    cid = model["id"]
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", what="running")
    for body, status in [
        ({}, 400),
        ({"workers": 1, "adapt": None}, 400),
        ({"workers": -2}, 400),
        ({"workers": 99}, 403),
        ({"adapt": {"minimum": 2}}, 400),
        ({"adapt": {"minimum": 0, "maximum": 99}}, 403),
        ({"replicas": 2}, 400),
    ]:
        code, data = await rest_call(jp_fetch, "PATCH", "clusters", cid, body=body)
        assert code == status and data["message"], (body, code, data)
    code, data = await rest_call(jp_fetch, "PATCH", "clusters", cid, body=b"[1,")
    assert code == 400
    code, model = await rest_call(jp_fetch, "GET", "clusters", cid, expect=200)
    assert model["requested_workers"] == 0 and model["adapt"] is None
    await rest_call(jp_fetch, "DELETE", "clusters", cid)


async def test_max_clusters(jp_fetch, backend):
    ids, names = [], []
    for _ in range(3):
        code, model = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 0}, expect=201)
        ids.append(model["id"])
        names.append(model["name"])
    # default names differ, so the user can tell the cards apart
    assert names == [names[0], f"{names[0]} 2", f"{names[0]} 3"], names
    code, data = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 0}, expect=403)
    assert "limit is 3" in data["message"]
    for cid in ids:
        await wait_model(jp_fetch, cid, lambda m: m["status"] in ("running", "failed"), what="settled")
        resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
        assert resp.code == 204


async def test_unauthenticated_requests_refused(jp_fetch, jp_base_url, jp_http_port, backend):
    client = tornado.httpclient.AsyncHTTPClient()
    base = f"http://localhost:{jp_http_port}{jp_base_url}dask-kube/api/"
    for method, path, body in [
        ("GET", "clusters", None),
        ("GET", "templates", None),
        ("GET", "status", None),
        ("POST", "clusters", "{}"),
        ("DELETE", "clusters/x", None),
        ("PATCH", "clusters/x", "{}"),
    ]:
        resp = await client.fetch(base + path, method=method, body=body, raise_error=False, allow_nonstandard_methods=True)
        assert resp.code in (401, 403), (method, path, resp.code)
    code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert data["clusters"] == []


async def test_other_users_clusters_invisible(jp_fetch, backend, kube_env, other_runtime):
    """A cluster of another user, in the same namespace: never listed, never reachable by id."""
    from jupyter_dask_kube import KubeCluster

    other = KubeCluster(
        TEMPLATES["tiny"]["worker"], runtime=other_runtime, username="mallory", asynchronous=True, n_workers=0
    )
    await other
    try:
        code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
        assert other.name not in [c["id"] for c in data["clusters"]]
        await rest_call(jp_fetch, "GET", "clusters", other.name, expect=404)
        await rest_call(jp_fetch, "PATCH", "clusters", other.name, body={"workers": 1}, expect=404)
        await rest_call(jp_fetch, "DELETE", "clusters", other.name, expect=404)
        assert await other_runtime.read_pod(f"{other.name}-scheduler") is not None
    finally:
        await other.close()


async def test_dashboard_proxy_admits_only_own_schedulers(jp_fetch, jp_http_port, jp_auth_header, backend):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 0}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["dashboard_link"], what="running")
    link = model["dashboard_link"]  # {base_url}proxy/{host}:{port}/status
    assert link.startswith("/") and "/proxy/" in link
    client = tornado.httpclient.AsyncHTTPClient()
    server = f"http://localhost:{jp_http_port}"
    # jp_fetch would escape the ":" of host:port, so fetch the link as a browser would
    resp = await client.fetch(server + link, headers=jp_auth_header, raise_error=False)
    assert resp.code == 200 and b"Dask" in resp.body, resp.code
    host_port = link.split("/proxy/", 1)[1].split("/")[0]
    port = host_port.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost", "127.9.9.9"):
        other = link.replace(host_port, f"{host}:{port}")
        resp = await client.fetch(server + other, headers=jp_auth_header, raise_error=False)
        assert resp.code == 403, (host, resp.code)
    # the owner's dashboard without credentials: refused too
    resp = await client.fetch(server + link, raise_error=False, follow_redirects=False)
    assert resp.code in (302, 401, 403), resp.code
    await rest_call(jp_fetch, "DELETE", "clusters", cid)
    # once the cluster is gone its host is no longer admitted
    resp = await client.fetch(server + link, headers=jp_auth_header, raise_error=False)
    assert resp.code == 403


async def test_rbac_preflight_reports_missing_verbs(jp_fetch, backend, kube_env):
    if backend != "kubernetes":
        pytest.skip("RBAC exists only on the Kubernetes backend")
    kube_env.set_faults(forbidden=[["delete", "services"], ["get", "pods/log"]])
    try:
        code, data = await rest_call(jp_fetch, "GET", "status", expect=200)
    finally:
        kube_env.set_faults()
    text = "\n".join(data["problems"])
    assert "delete services" in text and "get pods/log" in text
    assert "create pods" not in text


async def test_openapi_document_served(jp_fetch, backend):
    import yaml

    resp = await jp_fetch("dask-kube", "api", "openapi.yaml")
    doc = yaml.safe_load(resp.body)
    paths = set(doc["paths"])
    assert {
        "/dask-kube/api/templates",
        "/dask-kube/api/clusters",
        "/dask-kube/api/clusters/{id}",
        "/dask-kube/api/clusters/{id}/logs",
        "/dask-kube/api/status",
    } <= paths
    cluster_fields = set(doc["components"]["schemas"]["Cluster"]["required"])
    assert {"id", "status", "workers", "requested_workers", "pods", "warnings", "dashboard_link"} <= cluster_fields


def test_shipped_role_grants_what_the_preflight_checks():
    """deploy/rbac.yaml and the status preflight must agree, or admins get false alarms."""
    from pathlib import Path

    import yaml

    from jupyter_dask_kube.manager import RBAC_VERBS

    docs = list(yaml.safe_load_all((Path(__file__).parents[1] / "deploy" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    for resource, sub, verb in RBAC_VERBS:
        assert (f"{resource}/{sub}" if sub else resource, verb) in granted


async def test_cluster_made_from_python_appears_and_can_be_deleted(jp_fetch, backend, username, kube_env, other_runtime):
    """DESIGN user 3: a KubeCluster made from Python (remote scheduler) shows up in the sidebar's list
    while the server runs, and the API can shut it down."""
    if backend != "kubernetes":
        pytest.skip("a local-runtime cluster lives in its own process; only Kubernetes is shared")
    from jupyter_dask_kube import KubeCluster

    cluster = KubeCluster(TEMPLATES["tiny"]["worker"], runtime=other_runtime, username=username, asynchronous=True)
    await cluster
    cluster.scale(1)
    try:
        model = await wait_model(jp_fetch, cluster.name, lambda m: m["status"] == "running" and m["workers"] == 1,
                                 what="the Python-made cluster, adopted")
        assert model["template"] == "(python)"
        resp = await jp_fetch("dask-kube", "api", "clusters", cluster.name, method="DELETE")
        assert resp.code == 204
        await wait_until(lambda: no_pods(other_runtime, cluster_selector(cluster.name)), 30, interval=0.2,
                         what="the pods of the deleted cluster to go")
        code, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
        assert cluster.name not in [c["id"] for c in data["clusters"]]
    finally:
        await cluster.close()
