"""The gateway backend (``c.DaskKube.backend = "gateway"``) against a REAL dask-gateway-server from PyPI.

A ``dask-gateway-server`` subprocess (local backend: clusters are real ``dask scheduler`` / ``dask worker``
processes; its TLS proxy on 127.0.0.1) with cluster options and limits set in the gateway. The server extension
finds it through dask config ``gateway.address`` / ``gateway.proxy-address`` / ``gateway.auth.*``, as
dask-gateway's own client does. Through our REST API (pytest-jupyter's jp_fetch):
- the gateway's options become our template's option fields, with the gateway's bounds;
- create -> running with its workers; the card's snippet (``connect_code``) runs a computation over the
  cluster's TLS; scale, adapt, logs, shutdown; nothing left behind (the gateway's list, the process table);
- a cluster made in a "notebook" with ``Gateway().new_cluster()`` is listed; another gateway user sees none of
  ours and gets 404 for our ids;
- the gateway's limits and refusals come back as 4xx JSON with the gateway's own words, and leave nothing;
- an unreachable gateway and bad credentials: 503 with a readable reason, never a 500.
"""
from __future__ import annotations

import asyncio
import uuid

import dask.config
import pytest

pytest.importorskip("dask_gateway_server")
from dask_gateway import BasicAuth, Gateway  # noqa: E402

from jupyter_dask_kube.backends.gateway import GatewayBackend  # noqa: E402
from jupyter_dask_kube.bodies import ApiError, CreateRequest  # noqa: E402
from jupyter_dask_kube.testing.gateway import LocalGateway  # noqa: E402

from helpers import rest_call, wait_model, wait_until  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PASSWORD = uuid.uuid4().hex
MAX_WORKERS = 3
# Cluster options and limits set in the gateway, as a hub admin would.
GATEWAY_LIMITS = f"""
from dask_gateway_server.options import Bool, Float, Integer, Options, Select, String

def options_handler(options):
    return {{
        "worker_cores": options.worker_cores,
        "worker_threads": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
        "scheduler_cores": options.scheduler_cores,
    }}

c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", 1.0, min=0.5, max=2.0, label="Worker memory (GiB)"),
    Select("environment", ["basic", "ml"], default="basic", label="Environment"),
    Bool("debug", False, label="Debug logs"),
    String("note", "", label="Note"),
    Integer("scheduler_cores", 1, min=1, max=16, label="Scheduler cores"),
    handler=options_handler,
)
c.ClusterConfig.cluster_max_workers = {MAX_WORKERS}
c.ClusterConfig.cluster_max_cores = 8
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = LocalGateway(auth="simple", password=PASSWORD, extra_config=GATEWAY_LIMITS,
                      workdir=str(tmp_path_factory.mktemp("gateway")))
    with gw:
        yield gw
    assert not gw.dask_processes()


@pytest.fixture
def username():
    return f"u{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gateway_settings(gateway, username):
    """Dask config the way a hub ships it for dask-gateway's own client (daskhub sets these keys)."""
    return {
        "gateway.address": gateway.address,
        "gateway.proxy-address": gateway.proxy_address,
        "gateway.auth.type": "basic",
        "gateway.auth.kwargs": {"username": username, "password": PASSWORD},
    }


@pytest.fixture
def jp_server_config(gateway_settings):
    with dask.config.set(gateway_settings):
        yield {
            "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True, "jupyter_server_proxy": True}},
            "DaskKube": {"backend": "gateway"},
        }


def own_clusters(gateway, username, status=("pending", "running", "stopping", "failed")):
    """The user's clusters as the gateway lists them (its own client)."""
    async def ls():
        async with Gateway(gateway.address, gateway.proxy_address, auth=BasicAuth(username, PASSWORD),
                           asynchronous=True) as g:
            return {c.name: c.status.name for c in await g.list_clusters(status=list(status))}

    return ls()


async def nothing_left(gateway, username, name=None):
    async def check():
        left = await own_clusters(gateway, username)
        if name is not None:
            left = {k: v for k, v in left.items() if k == name}
        return not left and not gateway.dask_processes()

    await wait_until(check, 60, interval=0.3, what="the gateway's clusters and processes gone")


# -- options -------------------------------------------------------------------------------------------------
async def test_template_is_the_gateways_options(jp_fetch, gateway):
    _, data = await rest_call(jp_fetch, "GET", "templates", expect=200)
    (t,) = data["templates"]
    assert t["name"] == "gateway" and t["backend"] == "gateway" and t["default"] is True
    opts = {o["name"]: o for o in t["options"]}
    assert opts["worker_cores"] == {"name": "worker_cores", "label": "Worker cores", "type": "integer",
                                    "default": 1, "min": 1, "max": 2}
    assert opts["worker_memory"]["type"] == "float" and (opts["worker_memory"]["min"], opts["worker_memory"]["max"]) == (0.5, 2.0)
    assert opts["environment"]["type"] == "select" and opts["environment"]["choices"] == ["basic", "ml"]
    assert opts["debug"]["type"] == "bool" and opts["note"]["type"] == "string"
    assert t["worker"]["cores"] == 1
    _, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert status["backend"] == "gateway" and status["namespace"] == gateway.address and status["problems"] == []


# -- the whole life of a cluster -------------------------------------------------------------------------------
async def test_create_compute_scale_adapt_delete(jp_fetch, gateway, username, gateway_settings):
    _, model = await rest_call(jp_fetch, "POST", "clusters", body={
        "name": "Analysis", "workers": 2, "options": {"worker_cores": 2, "environment": "ml"}}, expect=201)
    cid = model["id"]
    assert model["backend"] == "gateway" and model["name"] == "Analysis" and model["requested_workers"] == 2
    assert model["status"] in ("pending", "starting")
    assert cid in await own_clusters(gateway, username)

    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 2, 120)
    assert model["cores"] == 4  # the gateway applied our option: 2 cores per worker
    assert model["options"]["worker_cores"] == 2 and model["options"]["environment"] == "ml"
    assert model["scheduler_address"] == f"{gateway.proxy_address}/{cid}"
    assert model["dashboard_link"] == f"{gateway.address}/clusters/{cid}/status"  # the gateway's proxy
    assert f'Gateway().connect("{cid}")' in model["connect_code"]

    # What a notebook gets when the card is inserted: the gateway's client, with the cluster's TLS.
    def run_snippet():
        with dask.config.set(gateway_settings):
            scope = {}
            exec(model["connect_code"], scope)
            client, cluster = scope["client"], scope["cluster"]
            try:
                assert client.scheduler.address.startswith("gateway://")
                assert cluster.security.tls_cert  # the TLS credentials came from the gateway
                return client.submit(lambda x: x * 7, 6).result(timeout=60), len(client.scheduler_info()["workers"])
            finally:
                client.close()
                cluster.close()

    assert await asyncio.to_thread(run_snippet) == (42, 2)

    # a limit set in the gateway: 403 with the gateway's own words; the gateway scaled to its limit
    code, err = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 5})
    assert code == 403 and f"exceed resource limit of {MAX_WORKERS} workers" in err["message"], err
    model = await wait_model(jp_fetch, cid, lambda m: m["workers"] == MAX_WORKERS, 120)
    assert model["requested_workers"] == MAX_WORKERS and "resource limit" in model["warnings"][0]

    _, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 1}, expect=200)
    assert model["requested_workers"] == 1 and model["warnings"] == []
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 1 and m["status"] == "running", 120)

    code, err = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": {"minimum": 0, "maximum": 9}})
    assert code == 403 and "resource limit" in err["message"]
    _, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": {"minimum": 2, "maximum": 3}}, expect=200)
    assert model["adapt"] == {"minimum": 2, "maximum": 3}
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 2, 120, what="adaptive minimum reached")
    _, model = await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"adapt": None}, expect=200)
    assert model["adapt"] is None

    _, logs = await rest_call(jp_fetch, "GET", "clusters", cid, "logs", expect=200)
    assert "scheduler" in logs["logs"] and "distributed" in logs["logs"]["scheduler"]

    await rest_call(jp_fetch, "DELETE", "clusters", cid, expect=204)
    await nothing_left(gateway, username, cid)
    _, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert cid not in {c["id"] for c in data["clusters"]}
    await rest_call(jp_fetch, "GET", "clusters", cid, expect=404)


async def test_notebook_clusters_listed_and_users_kept_apart(jp_fetch, gateway, username):
    """A cluster made with Gateway().new_cluster() shows up; another gateway user sees nothing of ours."""
    def new_cluster():
        with Gateway(gateway.address, gateway.proxy_address, auth=BasicAuth(username, PASSWORD)) as g:
            c = g.new_cluster(shutdown_on_close=False)
            c.scale(1)
            name = c.name
            c.close()
            return name

    name = await asyncio.to_thread(new_cluster)
    model = await wait_model(jp_fetch, name, lambda m: m["status"] == "running" and m["workers"] == 1, 120)
    assert model["requested_workers"] == 1 and model["template"] == "gateway"
    _, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert [c["id"] for c in data["clusters"]] == [name]

    bob = GatewayBackend(address=gateway.address, proxy_address=gateway.proxy_address,
                         auth=BasicAuth(f"bob-{username}", PASSWORD))
    try:
        assert '"clusters": []' in await bob.list_json()
        for call in (bob.cluster_json(name), bob.scale(name, 2), bob.delete(name), bob.logs(name)):
            with pytest.raises(ApiError) as e:
                await call
            assert e.value.status == 404
    finally:
        await bob.close()
    assert (await own_clusters(gateway, username)) == {name: "RUNNING"}

    await rest_call(jp_fetch, "DELETE", "clusters", name, expect=204)
    await nothing_left(gateway, username)


# -- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, words", [
    ({"options": {"worker_cores": 3}}, 400, "worker_cores must be <= 2"),
    ({"options": {"environment": "gpu"}}, 400, "'gpu' is not a valid option for environment"),
    ({"options": {"worker_cores": "two"}}, 400, "worker_cores must be an integer"),
    ({"options": {"cpus": 2}}, 400, "unknown option 'cpus'"),
    ({"template": "small"}, 404, "no template 'small'"),
    # accepted by the option's bounds, refused by the gateway's own limit (cluster_max_cores = 8)
    ({"options": {"scheduler_cores": 9}}, 403, "Scheduler cores request of 9 exceeds cluster cores limit of 8"),
])
async def test_refused_creates_leave_nothing(jp_fetch, gateway, username, body, status, words):
    code, err = await rest_call(jp_fetch, "POST", "clusters", body=body)
    assert code == status and words in err["message"], (code, err)
    assert await own_clusters(gateway, username) == {}
    _, data = await rest_call(jp_fetch, "GET", "clusters", expect=200)
    assert data["clusters"] == []


@pytest.mark.parametrize("gateway_settings, words", [
    ({"gateway.address": "http://127.0.0.1:9", "gateway.auth.type": "basic",
      "gateway.auth.kwargs": {"username": "x", "password": "y"}}, "not reachable"),
], ids=["unreachable"])
async def test_unreachable_gateway(jp_fetch, gateway_settings, words):
    for method, path, body in [("GET", ("clusters",), None), ("GET", ("templates",), None),
                               ("POST", ("clusters",), {"workers": 1}), ("GET", ("clusters", "abc"), None)]:
        code, err = await rest_call(jp_fetch, method, *path, body=body)
        assert code == 503 and words in err["message"] and "127.0.0.1:9" in err["message"], (method, path, code, err)
    _, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert words in status["problems"][0]


async def test_bad_credentials(gateway, username):
    backend = GatewayBackend(address=gateway.address, auth=BasicAuth(username, "wrong-password"))
    try:
        for call in (backend.list_json(), backend.templates(), backend.create(CreateRequest(workers=1))):
            with pytest.raises(ApiError) as e:
                await call
            assert e.value.status == 503 and "refused our credentials" in e.value.message, e.value.message
        assert (await backend.status())["problems"]
    finally:
        await backend.close()
    assert await own_clusters(gateway, username) == {}


async def test_no_gateway_configured(monkeypatch):
    with dask.config.set({"gateway.address": None}):
        backend = GatewayBackend()
        with pytest.raises(ApiError) as e:
            await backend.list_json()
    assert e.value.status == 503 and "gateway.address" in e.value.message
