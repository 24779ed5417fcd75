"""Schemathesis against the project's own OpenAPI document, served by a REAL ``jupyter server``.

The server runs as a subprocess (schemathesis drives WSGI/ASGI apps in-process, not tornado) with token
auth, the local backend, a tiny template and small limits. The schema is loaded from the server itself
(``{base_url}dask-kube/api/openapi.yaml``), so the document users see is the one tested.

Every generated request (schema-valid and schema-violating) must get:
- no 5xx (``not_a_server_error``);
- a documented status, content type and headers, and a body that conforms to the documented schema
  (``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``);
- for every 4xx, documented or not (405, 404 for an id the route does not match, ...): a JSON object
  with a string ``message`` (``json_error_message``, below);
- schema-violating requests rejected with a 4xx (``negative_data_rejection``).

Relaxed, on purpose: ``positive_data_acceptance`` (schema-valid data must answer 2xx). The schema cannot
say what is valid *right now*: a schema-valid body may ask for 50 workers (403: over the admin's limit),
name a template that does not exist (404), a random cluster id (404), or options the template does not
offer (400/403). Those are the documented answers and are checked by the conformance checks above.

Path ids: half of the generated id-taking requests (GET/PATCH/logs) are pointed at a real, running
cluster of this user, so PATCH bodies reach the scale/adapt code instead of stopping at 404.

Bounds: ``MAX_EXAMPLES`` per operation and mode, no Hypothesis deadline, and ``TIME_BUDGET`` seconds for
the whole run (cases past it are not sent; the number is printed). ``--run-slow`` also runs a longer
variant (marked slow). Every cluster fuzzing made is deleted at the end (list and DELETE, checked empty), and the
server and every process it started are gone when the module ends.
"""
from __future__ import annotations

import json
import time
import zlib

import pytest
import requests

from helpers import tiny_template, wait_for
from jupyter_process import JupyterServer, server_config, server_env

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import load_all_checks  # noqa: E402

load_all_checks()
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error  # noqa: E402

MAX_EXAMPLES = 50
SLOW_MAX_EXAMPLES = 300
TIME_BUDGET = 150.0  # seconds, the whole default run (server start excluded)
SLOW_TIME_BUDGET = 1500.0
BASE_URL = "/jdk-fuzz/"  # a non-root base_url, as under JupyterHub

TEMPLATES = {
    "tiny": tiny_template(description="fuzzing", workers=0, options=[
        {"name": "cores", "type": "integer", "default": 1, "min": 1, "max": 2},
        {"name": "memory", "type": "select", "default": "1G", "choices": ["1G", "2G"]},
        {"name": "image", "type": "select", "default": "ghcr.io/dask/dask:latest",
         "choices": ["ghcr.io/dask/dask:latest", "ghcr.io/dask/dask:2024.1.0"]},
        {"name": "spot", "type": "bool", "default": False},
        {"name": "ratio", "type": "float", "default": 0.5, "min": 0, "max": 1},
    ]),
}
CONFIG = server_config(
    TEMPLATES,
    backend="local",
    extensions={  # not under test, and slow to load
        "jupyter_server_proxy": True, "jupyterlab": False, "jupyter_lsp": False, "notebook_shim": False,
        "notebook": False, "dask_labextension": False, "jupyter_server_terminals": False, "nbclassic": False,
    },
    max_workers=2,
    max_clusters=2,
    max_cores=4,
)


def delete_all(server: JupyterServer):
    for cid in server.clusters():
        code, data = server.call("DELETE", "clusters", cid, timeout=60)
        assert code in (204, 404), (code, data)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz-server")
    env = server_env(workdir, config=CONFIG, user="fuzzer")
    server = JupyterServer(workdir, env, "fuzz", base_url=BASE_URL, new_session=True).start()
    server.session = requests.Session()  # what schemathesis sends its cases with
    server.session.headers["Authorization"] = f"token {server.token}"
    leftover = []
    try:
        yield server
        delete_all(server)
        assert server.clusters() == {}
    finally:
        leftover = server.stop()
        server.session.close()
    assert not leftover, f"processes left after the server stopped: {leftover}"


@pytest.fixture(scope="module")
def anchor_cluster(fuzz_server):
    """A running cluster of this user, for id-taking operations to hit (it may be changed by PATCH)."""
    s = fuzz_server
    _, model = s.call("POST", "clusters", body={"workers": 0, "name": "anchor"}, expect=201)
    cid = model["id"]
    wait_for(lambda: s.call("GET", "clusters", cid)[1]["status"] == "running", 120, interval=0.3,
             what="the anchor cluster to start")
    return cid


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    s = fuzz_server
    schema = schemathesis.openapi.from_url(s.api_url("openapi.yaml"), headers={"Authorization": f"token {s.token}"})
    schema.config.update(base_url=s.url.rstrip("/"), headers={"Authorization": f"token {s.token}"},
                         request_timeout=60)
    return schema


def json_error_message(ctx, response, case):
    """Every 4xx, documented or not, is a JSON object with a string "message"."""
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(
                f"{response.status_code} without a JSON body: {response.headers.get('Content-Type')} "
                f"{response.content[:200]!r}"
            ) from None
        assert isinstance(body, dict) and isinstance(body.get("message"), str), (response.status_code, body)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    json_error_message,
]

schema = schemathesis.pytest.from_fixture("api_schema")


class Budget:
    def __init__(self, seconds: float, label: str):
        self.seconds = seconds
        self.label = label
        self.start = None
        self.skipped = 0
        self.sent = 0
        self.statuses: dict[str, dict[int, int]] = {}
        self.unrouted = 0  # 404s for paths no route matches (JSON since the catch-all handler)

    def over(self) -> bool:
        if self.start is None:
            self.start = time.monotonic()
        return time.monotonic() - self.start > self.seconds

    def report(self):
        print(f"\n{self.label}: {self.sent} requests sent ({self.unrouted} to unrouted paths), {self.skipped} skipped "
              f"over the time budget; statuses by operation: {self.statuses}")


def _run_case(case, server, anchor, budget, created):
    if budget.over():
        budget.skipped += 1
        return
    op = case.operation
    # Half of the cases (decided by the case itself, so Hypothesis replays stay deterministic)
    use_anchor = zlib.crc32(repr((case.path_parameters, case.body)).encode()) % 2 == 0
    if use_anchor and "id" in (case.path_parameters or {}) and op.method.upper() != "DELETE":
        case.path_parameters = {**case.path_parameters, "id": anchor}
    response = case.call(session=server.session)
    budget.sent += 1
    counts = budget.statuses.setdefault(op.label, {})
    counts[response.status_code] = counts.get(response.status_code, 0) + 1
    if op.method.upper() == "POST" and response.status_code == 201:
        created.append(response.json()["id"])
        # keep room under max_clusters for the next creates; DELETE answers once the pods are gone
        code, data = server.call("DELETE", "clusters", response.json()["id"], timeout=60)
        assert code == 204, (code, data)
    if response.status_code == 404 and b"no such API path" in response.content:
        budget.unrouted += 1
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module")
def budget():
    b = Budget(TIME_BUDGET, "fuzz")
    yield b
    b.report()


@pytest.fixture(scope="module")
def created():
    return []


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_under_fuzzing(case, fuzz_server, anchor_cluster, budget, created):
    _run_case(case, fuzz_server, anchor_cluster, budget, created)


@pytest.fixture(scope="module")
def slow_budget():
    b = Budget(SLOW_TIME_BUDGET, "fuzz (slow)")
    yield b
    b.report()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_under_long_fuzzing(case, fuzz_server, anchor_cluster, slow_budget, created):
    _run_case(case, fuzz_server, anchor_cluster, slow_budget, created)


def test_fuzzing_left_no_clusters(fuzz_server, created):
    """Clean up what fuzzing made (list and DELETE) and check that nothing of it is left."""
    delete_all(fuzz_server)
    assert fuzz_server.clusters() == {}
    assert not set(fuzz_server.clusters()) & set(created)
