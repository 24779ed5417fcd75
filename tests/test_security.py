"""Hostile input and access control through a real jupyter_server (pytest-jupyter), local runtime.

- No token: every endpoint and method is refused (and the dashboard proxy too); nothing is created.
- A cookie-authenticated browser session cannot POST/PATCH/DELETE without the _xsrf cookie/header pair;
  with the pair the same requests succeed.
- Another user's cluster in the SAME runtime (the server's own LocalRuntime, so the server's pod watch sees
  its pods): never listed, 404 on GET/PATCH/DELETE/logs, and left running.
- Body and option overrides that try privileged containers, host namespaces/paths, command/env injection,
  extra fields or images outside the offered choices: refused with a JSON 4xx, no record, no pod.
- The dashboard proxy admits the user's own live scheduler and nothing else (loopback names, another
  user's scheduler, random 127.x, link-local metadata, external names).
- The server token never appears in the server's logs or pod logs, and pods never inherit
  JUPYTERHUB_API_TOKEN / JPY_API_TOKEN from the server's environment.
"""
import contextlib
import io
import json
import logging
import uuid
from http.cookies import SimpleCookie
from urllib.parse import quote

import psutil
import pytest
import tornado.httpclient

from jupyter_dask_kube.objects import LABEL_CLUSTER, user_selector

from helpers import limited_pod, rest_call, wait_model

pytest_plugins = ["pytest_jupyter.jupyter_server"]

WORKER = limited_pod()
TEMPLATES = {
    "tiny": {
        "display_name": "Tiny",
        "default": True,
        "workers": 0,
        "worker": WORKER,
        "options": [
            {"name": "cores", "type": "integer", "default": 1, "min": 1, "max": 2},
            {"name": "memory", "type": "select", "default": "1G", "choices": ["1G", "2G"]},
        ],
    },
    "images": {
        "display_name": "Pick an image",
        "workers": 0,
        "worker": WORKER,
        "options": [
            {"name": "image", "type": "select", "default": "ghcr.io/dask/dask:latest",
             "choices": ["ghcr.io/dask/dask:latest", "ghcr.io/dask/dask:2024.1.0"]},
        ],
    },
}
SECRET_ENV = {
    "JUPYTERHUB_API_TOKEN": "hub-api-token-" + uuid.uuid4().hex,
    "JPY_API_TOKEN": "jpy-api-token-" + uuid.uuid4().hex,
}


@pytest.fixture
def username(monkeypatch):
    name = f"sec{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    for k, v in SECRET_ENV.items():  # as under JupyterHub: the single-user server holds these
        monkeypatch.setenv(k, v)
    return name


@pytest.fixture
def jp_server_config(username):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True, "jupyter_server_proxy": True},
                      "log_level": "DEBUG"},
        "DaskKube": {"backend": "local", "templates": TEMPLATES, "max_workers": 4, "max_clusters": 3},
    }


@pytest.fixture
def manager(jp_serverapp):
    return jp_serverapp.web_app.settings["dask_kube_manager"]


@pytest.fixture
def server(jp_http_port, jp_base_url):
    return f"http://localhost:{jp_http_port}"


@pytest.fixture
def api(server, jp_base_url):
    return f"{server}{jp_base_url}dask-kube/api/"


@pytest.fixture
def token(jp_serverapp):
    return jp_serverapp.identity_provider.token


async def fetch(url, method="GET", body=None, headers=None, **kw):
    client = tornado.httpclient.AsyncHTTPClient()
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    if body is None and method in ("POST", "PATCH", "PUT"):
        body = ""
    return await client.fetch(url, method=method, body=body, headers=headers or {}, raise_error=False,
                              follow_redirects=False, allow_nonstandard_methods=True, **kw)


def as_json(resp):
    return json.loads(resp.body) if resp.body else None


async def create_running(jp_fetch, body=None, timeout=120):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body=body or {"workers": 0})
    assert code == 201, model
    return await wait_model(jp_fetch, model["id"], lambda m: m["status"] == "running" and m["dashboard_link"], timeout,
                            what="a running cluster")


async def assert_nothing_created(jp_fetch, manager, username):
    code, data = await rest_call(jp_fetch, "GET", "clusters")
    assert code == 200 and data["clusters"] == []
    assert manager.records == {}
    assert await manager.runtime.list_pods(user_selector(username)) == []


ENDPOINTS = [
    ("GET", "templates"), ("GET", "clusters"), ("POST", "clusters"), ("GET", "status"), ("GET", "openapi.yaml"),
    ("GET", "clusters/dask-x-1"), ("PATCH", "clusters/dask-x-1"), ("DELETE", "clusters/dask-x-1"),
    ("GET", "clusters/dask-x-1/logs"), ("PUT", "clusters"), ("POST", "templates"), ("GET", "nothing/here"),
]


# -- authentication ------------------------------------------------------------------------------

async def test_no_token_refused_on_every_endpoint_and_method(jp_fetch, api, server, jp_base_url, manager, username):
    cid = (await create_running(jp_fetch))["id"]
    targets = ENDPOINTS + [(m, f"clusters/{cid}") for m in ("GET", "PATCH", "DELETE")] + [("GET", f"clusters/{cid}/logs")]
    for headers in ({}, {"Authorization": "token wrong"}, {"Authorization": "Bearer "}, {"Cookie": "username-x=forged"}):
        for method, path in targets:
            body = {"workers": 3} if method in ("POST", "PATCH", "PUT") else None
            resp = await fetch(api + path, method, body=body, headers=headers)
            assert resp.code in (401, 403), (headers, method, path, resp.code)
            assert b"ghcr.io" not in resp.body and cid.encode() not in resp.body
    # and nothing changed: one cluster, still 0 workers
    code, data = await rest_call(jp_fetch, "GET", "clusters")
    assert [c["id"] for c in data["clusters"]] == [cid] and data["clusters"][0]["requested_workers"] == 0
    # the dashboard proxy needs the login too
    link = data["clusters"][0]["dashboard_link"]
    resp = await fetch(server + link)
    assert resp.code in (302, 401, 403), resp.code
    if resp.code == 302:
        assert "/login" in resp.headers["Location"]
    await rest_call(jp_fetch, "DELETE", "clusters", cid)


# -- XSRF ------------------------------------------------------------------------------------------

def _cookies(resp) -> dict:
    jar = SimpleCookie()
    for header in resp.headers.get_list("Set-Cookie"):
        jar.load(header)
    return {k: m.value for k, m in jar.items()}


def _cookie_header(cookies: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def test_cookie_session_needs_xsrf_for_changes(jp_fetch, api, server, jp_base_url, token, manager, username):
    # A browser session: the login cookie set when the token came in the URL, then only cookies are sent.
    resp = await fetch(f"{api}status?token={token}")
    assert resp.code == 200
    login = {k: v for k, v in _cookies(resp).items() if k.startswith("username-")}
    assert login, resp.headers.get_list("Set-Cookie")
    resp = await fetch(f"{server}{jp_base_url}login")  # the login page hands out the _xsrf cookie
    xsrf = _cookies(resp)["_xsrf"]

    only_login = {"Cookie": _cookie_header(login)}
    resp = await fetch(api + "clusters", headers=only_login)
    assert resp.code == 200, resp.code  # the cookie is a valid login: reads work

    cid = (await create_running(jp_fetch))["id"]  # a target for PATCH / DELETE
    refused = [
        only_login,
        {"Cookie": _cookie_header({**login, "_xsrf": xsrf})},  # the cookie alone is what a forged form sends
        {"Cookie": _cookie_header({**login, "_xsrf": xsrf}), "X-XSRFToken": "2|00|11|22"},  # wrong header
        {"Cookie": _cookie_header(login), "X-XSRFToken": xsrf},  # header without its cookie
    ]
    for headers in refused:
        resp = await fetch(api + "clusters", "POST", {"workers": 0}, headers)
        assert resp.code == 403, (headers, resp.code, resp.body)
        resp = await fetch(api + f"clusters/{cid}", "PATCH", {"workers": 2}, headers)
        assert resp.code == 403, (headers, resp.code, resp.body)
        resp = await fetch(api + f"clusters/{cid}", "DELETE", None, headers)
        assert resp.code == 403, (headers, resp.code, resp.body)
    # nothing was created, changed or deleted
    assert list(manager.records) == [cid]
    code, model = await rest_call(jp_fetch, "GET", "clusters", cid)
    assert code == 200 and model["requested_workers"] == 0

    # the same requests with the cookie/header pair, as JupyterLab sends them: accepted
    good = {"Cookie": _cookie_header({**login, "_xsrf": xsrf}), "X-XSRFToken": xsrf}
    resp = await fetch(api + f"clusters/{cid}", "PATCH", {"workers": 1}, good)
    assert resp.code == 200, (resp.code, resp.body)
    assert as_json(resp)["requested_workers"] == 1
    resp = await fetch(api + "clusters", "POST", {"workers": 0}, good)
    assert resp.code == 201, (resp.code, resp.body)
    new = as_json(resp)["id"]
    for c in (new, cid):
        resp = await fetch(api + f"clusters/{c}", "DELETE", None, good)
        assert resp.code == 204, (resp.code, resp.body)
    await assert_nothing_created(jp_fetch, manager, username)


# -- another user's cluster ------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def mallory_cluster(manager):
    """A cluster of user "mallory" in the server's own runtime (same pod store, same namespace).

    A context manager, not a fixture: it must run on pytest-jupyter's loop, the server's own."""
    from jupyter_dask_kube import KubeCluster

    await manager.start()
    other = KubeCluster(WORKER, runtime=manager.runtime, username="mallory", asynchronous=True, n_workers=0)
    await other
    try:
        yield other
    finally:
        await other.close()


async def test_other_users_cluster_is_invisible(jp_fetch, manager):
    async with mallory_cluster(manager) as mallory:
        await _check_invisible(jp_fetch, manager, mallory)


async def _check_invisible(jp_fetch, manager, mallory):
    name = mallory.name
    assert "mallory" in name
    # the server's pod watch sees mallory's pods only if it watches everyone's: it must not
    assert all(p["metadata"]["labels"].get(LABEL_CLUSTER) != name for p in manager.pod_cache.pods.values())
    code, data = await rest_call(jp_fetch, "GET", "clusters")
    assert code == 200 and name not in json.dumps(data)
    for method, path, body in [("GET", (name,), None), ("PATCH", (name,), {"workers": 2}),
                               ("PATCH", (name,), {"adapt": {"minimum": 0, "maximum": 2}}),
                               ("GET", (name, "logs"), None), ("DELETE", (name,), None)]:
        code, data = await rest_call(jp_fetch, method, "clusters", *path, body=body)
        assert code == 404 and isinstance(data["message"], str), (method, path, code, data)
    pod = await manager.runtime.read_pod(f"{name}-scheduler")
    assert pod is not None and not pod["metadata"].get("deletionTimestamp")
    assert len(mallory.worker_spec) == 0


# -- hostile overrides -------------------------------------------------------------------------------

PRIVILEGED = {"privileged": True, "runAsUser": 0, "allowPrivilegeEscalation": True, "capabilities": {"add": ["ALL"]}}
HOSTILE = [
    # extra top-level fields: the body is not a pod spec
    ("securityContext field", {"securityContext": PRIVILEGED}, 400),
    ("worker pod override", {"worker": {"spec": {"containers": [{"name": "x", "image": "evil", "securityContext": PRIVILEGED}]}}}, 400),
    ("hostNetwork field", {"hostNetwork": True}, 400),
    ("hostPID field", {"hostPID": True}, 400),
    ("spec field", {"spec": {"hostPID": True, "hostNetwork": True}}, 400),
    ("volumes field", {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, 400),
    ("command field", {"command": ["sh", "-c", "id"]}, 400),
    ("args field", {"args": ["--privileged"]}, 400),
    ("env field", {"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}, 400),
    ("image field", {"image": "evil"}, 400),
    # options the template does not offer
    ("options.securityContext", {"options": {"securityContext": PRIVILEGED}}, 400),
    ("options.privileged", {"options": {"privileged": True}}, 400),
    ("options.hostNetwork", {"options": {"hostNetwork": True}}, 400),
    ("options.hostPID", {"options": {"hostPID": True}}, 400),
    ("options.volumes", {"options": {"volumes": [{"name": "r", "hostPath": {"path": "/"}}]}}, 400),
    ("options.command", {"options": {"command": ["sh", "-c", "id"]}}, 400),
    ("options.args", {"options": {"args": ["--nthreads", "1", ";id"]}}, 400),
    ("options.env", {"options": {"env": [{"name": "JUPYTERHUB_API_TOKEN", "value": "x"}]}}, 400),
    ("options.resources", {"options": {"resources": {"limits": {"cpu": "64"}}}}, 400),
    ("options.image not offered", {"options": {"image": "evil"}}, 400),
    ("options.serviceAccountName", {"options": {"serviceAccountName": "admin"}}, 400),
    ("options.__class__", {"options": {"__class__": "x"}}, 400),
    # offered options with values that try to smuggle something
    ("cores as object", {"options": {"cores": {"privileged": True}}}, 400),
    ("cores as string", {"options": {"cores": "1 --privileged"}}, 400),
    ("cores above max", {"options": {"cores": 64}}, 403),
    ("memory with flags", {"options": {"memory": "1G --preload evil"}}, 400),
    ("memory not a choice", {"options": {"memory": "64G"}}, 403),
    ("memory as list", {"options": {"memory": ["1G", "--privileged"]}}, 400),
    ("image not a choice", {"template": "images", "options": {"image": "evil"}}, 403),
    ("image with a space", {"template": "images", "options": {"image": "ghcr.io/dask/dask:latest --privileged"}}, 400),
    ("image as object", {"template": "images", "options": {"image": {"name": "evil"}}}, 400),
    ("image for the template without image", {"template": "tiny", "options": {"image": "ghcr.io/dask/dask:latest"}}, 400),
    # the template name is a name, not a path or a spec
    ("template path", {"template": "../../etc/passwd"}, 404),
    ("template object", {"template": {"worker": WORKER}}, 400),
    ("display name with control characters", {"name": "x\n\x1b[31mred"}, 400),
]


@pytest.mark.parametrize("label,body,status", HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_overrides_refused(jp_fetch, manager, username, label, body, status):
    code, data = await rest_call(jp_fetch, "POST", "clusters", body=body)
    assert code == status, (code, data)
    assert isinstance(data, dict) and isinstance(data["message"], str) and data["message"]
    await assert_nothing_created(jp_fetch, manager, username)
    assert await manager.runtime.list_pods({}) == []


# -- dashboard proxy ---------------------------------------------------------------------------------

async def test_proxy_admits_only_own_live_schedulers(jp_fetch, jp_auth_header, manager, server):
    async with mallory_cluster(manager) as mallory:
        await _check_proxy(jp_fetch, jp_auth_header, mallory, server)


async def _check_proxy(jp_fetch, jp_auth_header, mallory, server):
    model = await create_running(jp_fetch)
    link = model["dashboard_link"]  # {base_url}proxy/{host}:{port}/status
    host_port = link.split("/proxy/", 1)[1].split("/")[0]
    own_host, port = host_port.rsplit(":", 1)
    resp = await fetch(server + link, headers=jp_auth_header)
    assert resp.code == 200 and b"Dask" in resp.body, resp.code

    mallory_host = mallory.scheduler_address.split("://")[1].rsplit(":", 1)[0]
    mallory_port = mallory.scheduler_info["services"]["dashboard"]
    assert mallory_host != own_host
    octets = own_host.split(".")
    neighbour = ".".join(octets[:3] + [str((int(octets[3]) + 7) % 250 + 2)])
    for host, p in [("127.0.0.1", port), ("localhost", port), (mallory_host, mallory_port), (mallory_host, port),
                    (neighbour, port), ("127.45.67.89", port), ("0.0.0.0", port), ("169.254.169.254", "80"),
                    ("example.com", "80"), ("kubernetes.default.svc", "443")]:
        other = link.replace(host_port, f"{host}:{p}")
        resp = await fetch(server + other, headers=jp_auth_header)
        assert resp.code == 403, (host, p, resp.code)
    await rest_call(jp_fetch, "DELETE", "clusters", model["id"])
    resp = await fetch(server + link, headers=jp_auth_header)
    assert resp.code == 403  # a deleted cluster's host is no longer admitted


# -- secrets -----------------------------------------------------------------------------------------

class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.buffer = io.StringIO()

    def emit(self, record):
        try:
            self.buffer.write(self.format(record) + "\n")
        except Exception:  # a log record that cannot be formatted is not a leak
            pass


@pytest.fixture
def server_logs(jp_serverapp):
    cap = Capture()
    names = ["", "ServerApp", "DaskKube", "tornado", "tornado.access", "tornado.application", "tornado.general",
             "jupyter_dask_kube", "jupyter_server_proxy", "distributed", jp_serverapp.log.name]
    loggers = {logging.getLogger(n) for n in names} | {jp_serverapp.log}
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(cap)
        lg.setLevel(logging.DEBUG)
    yield cap
    for lg, level in saved:
        lg.removeHandler(cap)
        lg.setLevel(level)


async def test_tokens_never_logged_nor_passed_to_pods(jp_fetch, api, token, manager, username, server_logs):
    secrets = [token, *SECRET_ENV.values()]
    # create in every way a client may send the token: header (jp_fetch), URL query, and a bad request
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"workers": 1})
    assert code == 201, model
    cid = model["id"]
    resp = await fetch(f"{api}clusters?token={quote(token)}", "POST", {"workers": 99})
    assert resp.code == 403
    resp = await fetch(f"{api}clusters?token={quote(token)}", "POST", b"{not json")
    assert resp.code == 400
    resp = await fetch(f"{api}clusters/{cid}?token={quote(token)}")
    assert resp.code == 200
    await fetch(f"{api}status?token=wrong-{token}")  # a refused one is logged too
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, 120,
                             what="1 worker")

    # the pods' processes: no hub or server token in their environment
    runner = manager.runtime.runner
    pod_names = [p["name"] for p in model["pods"]]
    assert len(pod_names) == 2
    for pod in pod_names:
        pids = runner.pids(pod)
        assert pids, pod
        for pid in pids:
            env = psutil.Process(pid).environ()
            for key in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"):
                assert key not in env, (pod, key)
            assert not any(s in v for s in secrets for v in env.values()), pod
    # ... nor, asked from inside dask, on the worker or the scheduler
    from distributed import Client

    # (the cluster has TLS: the owner's credentials, as the Jupyter server holds them)
    cluster = manager.records[cid].cluster
    keys = [cluster._credentials.key, cluster._credentials.client_key]
    key_lines = [line for k in keys for line in k.splitlines() if "-----" not in line]
    async with Client(model["scheduler_address"], security=cluster.security, asynchronous=True) as client:
        seen = await client.run(lambda: {k: v for k, v in __import__("os").environ.items()})
        seen["scheduler"] = await client.run_on_scheduler(lambda: dict(__import__("os").environ))
    for who, env in seen.items():
        assert "JUPYTERHUB_API_TOKEN" not in env and "JPY_API_TOKEN" not in env, who
        assert not any(s in v for s in secrets for v in env.values()), who

    code, logs = await rest_call(jp_fetch, "GET", "clusters", cid, "logs")
    assert code == 200 and logs["logs"]
    # TLS keys: never in a REST answer (the connect code names files), nor in the logs below
    code, listing = await rest_call(jp_fetch, "GET", "clusters")
    answers = json.dumps([listing, model, logs])
    assert "PRIVATE KEY" not in answers and not any(line in answers for line in key_lines)
    resp = await jp_fetch("dask-kube", "api", "clusters", cid, method="DELETE")
    assert resp.code == 204

    text = server_logs.buffer.getvalue()
    assert cid in text and "clusters" in text, "the capture saw the requests"
    for s in secrets:
        assert s not in text
        assert s not in json.dumps(logs)
    assert "PRIVATE KEY" not in text and not any(line in text for line in key_lines)
