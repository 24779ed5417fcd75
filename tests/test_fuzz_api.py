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
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import zlib

import psutil
import pytest
import requests

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
    "tiny": {
        "display_name": "Tiny (1 thread, 1 GB)",
        "description": "fuzzing",
        "default": True,
        "workers": 0,
        "worker": {
            "kind": "Pod",
            "spec": {
                "containers": [
                    {
                        "name": "dask",
                        "image": "ghcr.io/dask/dask:latest",
                        "args": ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"],
                        "resources": {"limits": {"cpu": "1", "memory": "1G"}},
                    }
                ]
            },
        },
        "options": [
            {"name": "cores", "type": "integer", "default": 1, "min": 1, "max": 2},
            {"name": "memory", "type": "select", "default": "1G", "choices": ["1G", "2G"]},
            {"name": "image", "type": "select", "default": "ghcr.io/dask/dask:latest",
             "choices": ["ghcr.io/dask/dask:latest", "ghcr.io/dask/dask:2024.1.0"]},
            {"name": "spot", "type": "bool", "default": False},
            {"name": "ratio", "type": "float", "default": 0.5, "min": 0, "max": 1},
        ],
    }
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``python -m jupyter_server`` with the extension, token auth and a local backend, in a subprocess."""

    def __init__(self, workdir, *, extra_config: str = "", env: dict | None = None):
        self.workdir = workdir
        self.token = uuid.uuid4().hex
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}{BASE_URL}"
        self.log_path = workdir / "server.log"
        cfg = workdir / "jupyter_server_config.py"
        cfg.write_text(textwrap.dedent(f"""
            c = get_config()
            c.ServerApp.jpserver_extensions = {{
                "jupyter_dask_kube": True, "jupyter_server_proxy": True,
                "jupyterlab": False, "jupyter_lsp": False, "notebook_shim": False, "notebook": False,
                "dask_labextension": False, "jupyter_server_terminals": False, "nbclassic": False,
            }}
            c.IdentityProvider.token = {self.token!r}
            c.ServerApp.ip = "127.0.0.1"
            c.ServerApp.port = {self.port}
            c.ServerApp.port_retries = 0
            c.ServerApp.base_url = {BASE_URL!r}
            c.ServerApp.open_browser = False
            c.ServerApp.allow_root = True
            c.ServerApp.root_dir = {str(workdir)!r}
            c.DaskKube.backend = "local"
            c.DaskKube.templates = {TEMPLATES!r}
            c.DaskKube.max_workers = 2
            c.DaskKube.max_clusters = 2
            c.DaskKube.max_cores = 4
        """) + extra_config)
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(workdir / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
            "DASK_CONFIG": str(workdir / "dask"),
            "JUPYTERHUB_USER": "fuzzer",
            **(env or {}),
        }
        self.env.pop("KUBECONFIG", None)
        self.env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
        self.cmd = [sys.executable, "-m", "jupyter_server", f"--config={cfg}"]
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    def api(self, *path: str) -> str:
        return self.url + "dask-kube/api/" + "/".join(path)

    def start(self, timeout: float = 90):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.session.get(self.api("status"), timeout=5).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter server did not answer in {timeout}s:\n{self.log()}")
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def clusters(self) -> list[dict]:
        r = self.session.get(self.api("clusters"), timeout=30)
        r.raise_for_status()
        return r.json()["clusters"]

    def delete_all(self):
        for c in self.clusters():
            r = self.session.delete(self.api("clusters", c["id"]), timeout=60)
            assert r.status_code in (204, 404), (r.status_code, r.text)

    def stop(self) -> list[psutil.Process]:
        """Stop the server (SIGTERM, then SIGKILL); answer the processes still alive after it (none, we hope)."""
        if self.proc is None:
            return []
        try:
            family = [psutil.Process(self.proc.pid)] + psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        gone, alive = psutil.wait_procs(family, timeout=15)
        for p in alive:  # only what this server started
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self._log.close()
        self.session.close()
        return alive


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = JupyterServer(tmp_path_factory.mktemp("fuzz-server")).start()
    leftover = []
    try:
        yield server
        server.delete_all()
        assert server.clusters() == []
    finally:
        leftover = server.stop()
    assert not leftover, f"processes left after the server stopped: {leftover}"


@pytest.fixture(scope="module")
def anchor_cluster(fuzz_server):
    """A running cluster of this user, for id-taking operations to hit (it may be changed by PATCH)."""
    s = fuzz_server
    r = s.session.post(s.api("clusters"), json={"workers": 0, "name": "anchor"}, timeout=30)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    deadline = time.monotonic() + 120
    while s.session.get(s.api("clusters", cid), timeout=30).json()["status"] != "running":
        assert time.monotonic() < deadline, "anchor cluster did not start"
        time.sleep(0.3)
    return cid


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    s = fuzz_server
    schema = schemathesis.openapi.from_url(s.api("openapi.yaml"), headers={"Authorization": f"token {s.token}"})
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
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = None
        self.skipped = 0
        self.sent = 0
        self.statuses: dict[str, dict[int, int]] = {}
        self.unrouted = 0  # 404s for paths no route matches (JSON since the catch-all handler)

    def over(self) -> bool:
        if self.start is None:
            self.start = time.monotonic()
        return time.monotonic() - self.start > self.seconds


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
        gone = server.session.delete(server.api("clusters", response.json()["id"]), timeout=60)
        assert gone.status_code == 204, (gone.status_code, gone.text)
    if response.status_code == 404 and b"no such API path" in response.content:
        budget.unrouted += 1
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module")
def budget():
    b = Budget(TIME_BUDGET)
    yield b
    print(f"\nfuzz: {b.sent} requests sent ({b.unrouted} to unrouted paths), {b.skipped} skipped over the "
          f"time budget; statuses by operation: {b.statuses}")


@pytest.fixture(scope="module")
def created():
    return []


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_under_fuzzing(case, fuzz_server, anchor_cluster, budget, created):
    _run_case(case, fuzz_server, anchor_cluster, budget, created)


@pytest.fixture(scope="module")
def slow_budget():
    b = Budget(SLOW_TIME_BUDGET)
    yield b
    print(f"\nfuzz (slow): {b.sent} requests sent ({b.unrouted} to unrouted paths), {b.skipped} skipped; "
          f"statuses by operation: {b.statuses}")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_under_long_fuzzing(case, fuzz_server, anchor_cluster, slow_budget, created):
    _run_case(case, fuzz_server, anchor_cluster, slow_budget, created)


def test_fuzzing_left_no_clusters(fuzz_server, created):
    """Clean up what fuzzing made (list and DELETE) and check that nothing of it is left."""
    fuzz_server.delete_all()
    assert fuzz_server.clusters() == []
    live = {c["id"] for c in fuzz_server.clusters()}
    assert not live & set(created)
