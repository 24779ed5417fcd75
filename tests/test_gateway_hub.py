"""The gateway backend behind a real JupyterHub, against a real dask-gateway-server with JupyterHub auth.

The daskhub layout on one machine: a `jupyterhub` (alice and bob, tests/hub/) and a dask-gateway-server (local
backend) registered as the hub service "dask-gateway", its JupyterHubAuthenticator checking users' tokens with the
hub and requiring `access:services!service=dask-gateway` (granted to the users by a role, and to their servers'
JUPYTERHUB_API_TOKEN by c.Spawner.server_token_scopes). The single-user servers run the extension with
``c.DaskKube.backend = "gateway"`` and find the gateway the way dask-gateway's client does: a gateway.yaml in
their dask config (gateway.address, gateway.proxy-address, gateway.auth.type: jupyterhub). It proves:
- alice and bob each create a cluster through /user/<name>/dask-kube/api and each sees only their own; bob gets 404
  for alice's cluster on GET, PATCH, DELETE and logs; the gateway itself records each cluster under its owner;
- the card's snippet (connect_code) runs a computation on alice's cluster with her token, over the gateway's TLS;
- a limit set in the gateway (cluster_max_workers) comes back as a 403 with the gateway's words;
- deleting leaves nothing: the gateway's lists are empty and no dask process is left;
- a hub token without access to the gateway service, and a token the hub does not know: a 503 with the reason.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile

import dask.config
import pytest

pytest.importorskip("dask_gateway_server")
pytest.importorskip("jupyterhub")
from dask_gateway import Gateway, JupyterHubAuth  # noqa: E402

from jupyter_dask_kube.backends.gateway import GatewayBackend  # noqa: E402
from jupyter_dask_kube.bodies import ApiError  # noqa: E402
from jupyter_dask_kube.testing.gateway import LocalGateway  # noqa: E402

from helpers import wait_for  # noqa: E402
from test_jupyterhub import Hub, User, chp_command  # noqa: E402,F401 (chp_command: a fixture used here)

SERVICE = "dask-gateway"
MAX_WORKERS = 2
LIMITS = f"""
c.JupyterHubAuthenticator.jupyterhub_service_name = "{SERVICE}"
c.ClusterConfig.cluster_max_workers = {MAX_WORKERS}
"""


@pytest.fixture(scope="module")
def daskhub(chp_command):  # noqa: F811
    workdir = tempfile.mkdtemp(prefix="jdk-gwhub-")
    token = secrets.token_hex(16)
    hub = Hub(
        chp_command, None, workdir,
        dask_kube={"backend": "gateway"},
        hub_settings={
            "services": [{"name": SERVICE, "api_token": token}],
            "roles": [{"name": "dask-gateway-users", "scopes": [f"access:services!service={SERVICE}"],
                       "users": ["alice", "bob"]}],
            "server_token_scopes": ["users:activity!user", "access:servers!server",
                                    f"access:services!service={SERVICE}"],
        },
    )
    gateway = LocalGateway(auth="jupyterhub", hub_api_url=hub.api_url, api_token=token, extra_config=LIMITS,
                           workdir=os.path.join(workdir, "gateway"))
    hub.dask_config = {"gateway.yaml": (
        "gateway:\n"
        f"  address: {gateway.address}\n"
        f"  proxy-address: {gateway.proxy_address}\n"
        "  auth:\n"
        "    type: jupyterhub\n"
    )}
    try:
        gateway.start()
        hub.start()
        yield hub, gateway
    finally:
        survivors = hub.stop()
        gateway.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        assert not survivors, f"still running after the hub stopped (now killed): {survivors}"


def gateway_list(gateway, token):
    """The clusters the gateway has for this hub token (dask-gateway's own client)."""
    async def ls():
        async with Gateway(gateway.address, gateway.proxy_address, auth=JupyterHubAuth(token), asynchronous=True) as g:
            return {c.name for c in await g.list_clusters(status=["pending", "running", "stopping", "failed"])}

    return asyncio.run(ls())


def test_two_users_on_one_gateway(daskhub):
    hub, gateway = daskhub
    alice, bob = User(hub, "alice"), User(hub, "bob")

    code, t = alice.api("GET", "templates")
    assert code == 200 and t["templates"][0]["backend"] == "gateway", (code, t)
    ids = {}
    for user in (alice, bob):
        code, model = user.api("POST", "clusters", {"workers": 1})
        assert code == 201 and model["backend"] == "gateway", (user.name, code, model)
        ids[user.name] = model["id"]
    for user in (alice, bob):
        model = user.wait_cluster(ids[user.name], lambda m: m["status"] == "running" and m["workers"] == 1,
                                  f"{user.name}'s gateway cluster running with 1 worker", timeout=150)
        assert model["dashboard_link"] == f"{gateway.address}/clusters/{ids[user.name]}/status"

    # each sees only their own, here and in the gateway itself
    for user, other in ((alice, bob), (bob, alice)):
        code, data = user.api("GET", "clusters")
        assert code == 200 and [c["id"] for c in data["clusters"]] == [ids[user.name]], data
        assert gateway_list(gateway, hub.tokens[user.name]) == {ids[user.name]}
    for method, path, body in [("GET", "", None), ("PATCH", "", {"workers": 2}), ("DELETE", "", None),
                               ("GET", "/logs", None)]:
        code, err = bob.api(method, f"clusters/{ids['alice']}{path}", body)
        assert code == 404 and "message" in err, (method, path, code, err)
    alice.wait_cluster(ids["alice"], lambda m: m["status"] == "running", "alice's cluster untouched", timeout=10)

    # what the card inserts into alice's notebook runs there (her token), with the cluster's TLS
    code, model = alice.api("GET", f"clusters/{ids['alice']}")
    settings = {"gateway.address": gateway.address, "gateway.proxy-address": gateway.proxy_address,
                "gateway.auth.type": "jupyterhub", "gateway.auth.kwargs": {"api_token": hub.tokens["alice"]}}
    with dask.config.set(settings):
        scope = {}
        exec(model["connect_code"], scope)
        try:
            assert scope["client"].submit(sum, [1, 2, 3]).result(timeout=60) == 6
        finally:
            scope["client"].close()
            scope["cluster"].close()

    # a limit set in the gateway, in the gateway's words
    code, err = alice.api("PATCH", f"clusters/{ids['alice']}", {"workers": 5})
    assert code == 403 and f"exceed resource limit of {MAX_WORKERS} workers" in err["message"], (code, err)
    alice.wait_cluster(ids["alice"], lambda m: m["workers"] == MAX_WORKERS, "alice at the gateway's limit", 120)

    for user in (alice, bob):
        code, _ = user.api("DELETE", f"clusters/{ids[user.name]}")
        assert code == 204
    for user in (alice, bob):
        wait_for(lambda user=user: not gateway_list(gateway, hub.tokens[user.name]), 60,
                 what=f"{user.name}'s gateway clusters gone")
        code, data = user.api("GET", "clusters")
        assert code == 200 and data["clusters"] == []
    wait_for(lambda: not gateway.dask_processes(), 60, what="no dask process left under the gateway")


def test_tokens_the_gateway_refuses(daskhub):
    hub, gateway = daskhub
    r = hub.admin("POST", "users/alice/tokens",
                  {"note": "no dask-gateway access", "scopes": ["read:users:name!user=alice"], "expires_in": 600})
    assert r.status_code in (200, 201), r.text
    # no access scope: the gateway answers 401; a token the hub does not know: the gateway's own words (the hub
    # refuses to look it up)
    for token, words in ((r.json()["token"], "refused our credentials (401"),
                         ("not-a-hub-token", "Permission failure verifying user's JupyterHub API token")):
        async def attempt():
            backend = GatewayBackend(address=gateway.address, auth=JupyterHubAuth(token))
            try:
                with pytest.raises(ApiError) as e:
                    await backend.list_json()
                return e.value
            finally:
                await backend.close()

        err = asyncio.run(attempt())
        assert err.status == 503 and words in err.message, err.message
