"""Templates and limits per JupyterHub group: the pure rules, the hub lookup against a real HTTP server (answers,
a token without the scope, refusals, no hub at all) and the manager's use of them (403 with a JSON-able message,
fallback to the defaults). The real-hub run is in test_jupyterhub.py."""
import json

import pytest
import pytest_asyncio
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_dask_kube.access import Limits, check_group_limits, limits_for, visible
from jupyter_dask_kube.bodies import ApiError, CreateRequest
from jupyter_dask_kube.hubgroups import HubGroups
from jupyter_dask_kube.manager import ClusterManager
from jupyter_dask_kube.runtimes.local import LocalRuntime
from jupyter_dask_kube.templates import TemplateError, load_template

from helpers import small_pod

GPU = load_template({"workers": 1, "worker": small_pod(), "groups": ["gpu"]}, name="gpu")
BOBS = load_template({"workers": 1, "worker": small_pod(), "users": ["bob"], "groups": ["staff"]}, name="bobs")
ALL = load_template({"workers": 1, "worker": small_pod(), "default": True}, name="all")


def test_template_audience():
    assert visible(ALL, "anyone", set())
    assert visible(GPU, "alice", {"gpu"}) and not visible(GPU, "alice", {"cpu"}) and not visible(GPU, "gpu", set())
    assert visible(BOBS, "bob", set()) and visible(BOBS, "carol", {"staff"}) and not visible(BOBS, "alice", {"gpu"})
    with pytest.raises(TemplateError, match="groups"):
        load_template({"worker": small_pod(), "groups": "gpu"}, name="x")
    with pytest.raises(TemplateError, match=r"users\[0\]"):
        load_template({"worker": small_pod(), "users": [None]}, name="x")


def test_most_generous_group_limits():
    default = Limits(max_clusters=1, max_workers=2, max_cores=4, max_memory=8 * 2**30)
    groups = check_group_limits({
        "gpu": {"max_workers": 10, "max_memory": "64Gi"},
        "staff": {"max_workers": 4, "max_clusters": 3, "max_cores": 0},
    })
    assert limits_for(default, groups, set()) == default
    assert limits_for(default, groups, {"other"}) == default
    assert limits_for(default, groups, {"gpu"}) == Limits(1, 10, 4, 64 * 2**30)
    assert limits_for(default, groups, {"gpu", "staff"}) == Limits(3, 10, 0, 64 * 2**30)  # 0 = no limit wins
    for bad in ({"g": {"max_gpus": 1}}, {"g": {"max_workers": -1}}, {"g": {"max_workers": True}}, {"g": 3}, []):
        with pytest.raises(ValueError):
            check_group_limits(bad)


@pytest_asyncio.fixture
async def hub_api():
    """A real HTTP server playing the hub's /user: what it answers is set per test; it counts requests."""
    state = {"status": 200, "body": {"name": "alice", "groups": ["gpu"]}, "requests": 0, "auth": None}

    class UserHandler(tornado.web.RequestHandler):
        def get(self):
            state["requests"] += 1
            state["auth"] = self.request.headers.get("Authorization")
            self.set_status(state["status"])
            self.finish(json.dumps(state["body"]))

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application([(r"/hub/api/user", UserHandler)]))
    server.add_sockets(sockets)
    state["url"] = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hub/api"
    yield state
    server.stop()


@pytest.mark.asyncio
async def test_hub_lookup_cached_and_its_failures(hub_api):
    hub = HubGroups(hub_api["url"], "secret-token", ttl=300)
    assert await hub.lookup() == (frozenset({"gpu"}), None)
    assert hub_api["auth"] == "token secret-token"
    assert await hub.lookup() == (frozenset({"gpu"}), None) and hub_api["requests"] == 1  # cached

    hub_api["body"] = {"name": "alice"}  # the server's token lacks read:users:groups
    groups, problem = await HubGroups(hub_api["url"], "t").lookup()
    assert groups == frozenset() and "lacks the scope read:users:groups!user" in problem
    hub_api["status"], hub_api["body"] = 403, {"message": "no"}
    groups, problem = await HubGroups(hub_api["url"], "t").lookup()
    assert groups == frozenset() and "HTTP 403" in problem and "t" not in problem.split("(")[0].split()
    groups, problem = await HubGroups("http://127.0.0.1:9/hub/api", "t", timeout=2).lookup()
    assert groups == frozenset() and "cannot read your groups from JupyterHub" in problem
    assert HubGroups.from_environment({}) is None
    assert HubGroups.from_environment({"JUPYTERHUB_API_URL": hub_api["url"], "JUPYTERHUB_API_TOKEN": "x"}).url.endswith("/user")


@pytest.mark.asyncio
async def test_manager_templates_and_limits_by_group(hub_api):
    rt = LocalRuntime()
    limits = Limits(max_workers=2)
    gl = check_group_limits({"gpu": {"max_workers": 8}})
    alice = ClusterManager(runtime=rt, username="alice", templates=[ALL, GPU, BOBS], limits=limits,
                           groups=HubGroups(hub_api["url"], "t"), group_limits=gl)
    try:
        await alice.refresh_access()
        assert [t["name"] for t in alice.template_list()] == ["all", "gpu"] and alice.limits.max_workers == 8
        with pytest.raises(ApiError) as err:
            await alice.create(CreateRequest(template="bobs"))
        assert err.value.status == 403
        assert err.value.message == "template 'bobs' is only for group staff and user bob, and you are not among them"
        with pytest.raises(ApiError) as err:
            await alice.create(CreateRequest(template="all", workers=9))
        assert err.value.status == 403 and "limit of 8 workers" in err.value.message

        # the hub stops answering: default limits, group-only templates hidden, and the reason is shown
        hub_api["status"] = 500
        alice.group_source = HubGroups(hub_api["url"], "t")
        await alice.refresh_access()
        assert [t["name"] for t in alice.template_list()] == ["all"] and alice.limits.max_workers == 2
        with pytest.raises(ApiError) as err:
            await alice.create(CreateRequest(template="gpu"))
        assert err.value.status == 403 and "HTTP 500" in err.value.message
        assert any("cannot read your groups" in p for p in (await alice.status())["problems"])
        assert alice.list() == [] and await rt.list_pods() == []  # nothing made on the way
    finally:
        await alice.close(detach=False)
        await rt.close()
