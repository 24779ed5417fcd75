"""The public testing module as an admin gets it: ``pip install "jupyter-dask-kube[testing]"`` into a fresh venv,
then ``python -m jupyter_dask_kube.testing`` from outside the checkout runs pods (issue 16 item 5); and the
package uses only kmock's public API.

The install test builds the project's wheel (``pip wheel``; the lab extension must already be built, as
``make setup`` does) and installs it with its ``[testing]`` extra from the package index, with pip's own cache
(~40 s warm). Without a reachable index it skips, except where $CI is set.
"""
import ast
import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid

import psutil
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jupyter_dask_kube"


def _private_kmock(name: str) -> bool:
    """``kmock._internal``, ``kmock._anything.sub``: kmock's private modules."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "kmock" and any(p.startswith("_") for p in parts[1:])


# -- kmock's public API only -------------------------------------------------------------------------
def _kmock_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every kmock import in a module: ``import kmock.x``, ``from kmock.x import y``
    (as ``kmock.x.y``) and ``importlib.import_module("kmock...")``/``__import__("kmock...")`` with a literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kmock"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kmock":
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and node.args[0].value.split(".")[0] == "kmock":
            found.append((node.lineno, node.args[0].value))
    return found


def test_source_uses_only_public_kmock_names():
    """No module of the package imports a private kmock module or name, nor reaches one by attribute
    (``kmock._internal...``)."""
    offenders, kmock_users = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source, str(path))
        imports = _kmock_imports(tree)
        if imports:
            kmock_users.append(path.name)
        offenders += [f"{path.relative_to(ROOT)}:{line}: {name}" for line, name in imports if _private_kmock(name)]
        for node in ast.walk(tree):  # kmock._internal.x written as an attribute
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id == "kmock":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: kmock.{node.attr}")
    # the check looks at the modules that really use kmock (it would pass vacuously if they moved)
    assert {"emulator.py", "apierrors.py"} <= set(kmock_users), kmock_users
    assert not offenders, "private kmock names used:\n" + "\n".join(offenders)


def test_private_kmock_check_catches_private_imports():
    """The AST check above finds each way of naming a private kmock module (so its pass means something)."""
    tree = ast.parse(textwrap.dedent("""
        import kmock._internal.k8s
        from kmock._internal import apis
        from kmock import _internal
        mod = importlib.import_module("kmock._internal.x")
        from kmock import KubernetesEmulator
    """))
    names = [name for _, name in _kmock_imports(tree)]
    assert [n for n in names if _private_kmock(n)] == [
        "kmock._internal.k8s", "kmock._internal.apis", "kmock._internal", "kmock._internal.x"]
    assert "kmock.KubernetesEmulator" in names and not _private_kmock("kmock.KubernetesEmulator")


# Run in a fresh interpreter: an import hook refuses a private kmock module to any import made by code of
# jupyter_dask_kube (kmock's own modules may import their internals), then every module of the testing
# package is imported; a probe import made "from" the package proves the hook refuses.
_IMPORT_GUARD = r"""
import builtins, importlib, importlib.abc, pkgutil, sys

def private(name):
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "kmock" and any(p.startswith("_") for p in parts[1:])

refused = []

def from_our_code(depth):
    frame = sys._getframe(depth)
    while frame is not None:
        mod = frame.f_globals.get("__name__", "")
        if not mod.startswith(("importlib", "_frozen_importlib")) and frame.f_code.co_filename != __file__:
            return mod.split(".")[0] == "jupyter_dask_kube"
        frame = frame.f_back
    return False

real_import = builtins.__import__

def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    caller = (globals or {}).get("__name__", "")
    if caller.split(".")[0] == "jupyter_dask_kube" and level == 0:
        wanted = [name] + [f"{name}.{f}" for f in (fromlist or ()) if f != "*"]
        bad = [w for w in wanted if private(w)]
        if bad:
            refused.append((caller, bad[0]))
            raise ImportError(f"{caller} imports private {bad[0]}")
    return real_import(name, globals, locals, fromlist, level)

class RefusePrivateKmock(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if private(name) and from_our_code(2):
            refused.append(("import_module", name))
            raise ImportError(f"private {name} requested by jupyter_dask_kube")
        return None

builtins.__import__ = guarded_import
sys.meta_path.insert(0, RefusePrivateKmock())

import jupyter_dask_kube.testing as testing
names = sorted(m.name for m in pkgutil.walk_packages(testing.__path__, "jupyter_dask_kube.testing."))
for name in names:
    importlib.import_module(name)
assert not refused, refused

# probes: an import statement and an import_module call made by "jupyter_dask_kube" code are refused
probe = {"__name__": "jupyter_dask_kube.testing._probe", "importlib": importlib}
for code in ("from kmock._internal import k8s", "from kmock import _internal",
             "importlib.import_module('kmock._internal_nonexistent_probe')"):
    try:
        exec(code, dict(probe))
    except ImportError:
        pass
    else:
        raise SystemExit(f"guard let through: {code}")
print("IMPORTED", len(names), "REFUSED_PROBES", len(refused))
"""


def test_testing_package_imports_without_private_kmock(tmp_path):
    script = tmp_path / "guard.py"
    script.write_text(_IMPORT_GUARD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    words = r.stdout.split()
    assert words[0] == "IMPORTED" and int(words[1]) >= 10, r.stdout  # the testing package's modules
    assert words[2:] == ["REFUSED_PROBES", "3"], r.stdout


# -- pip install "jupyter-dask-kube[testing]" in a fresh venv ------------------------------------------
def _run(cmd, timeout, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def _clean_env(venv: pathlib.Path) -> dict:
    """The environment of an admin's shell with the venv activated: nothing pointing into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DASK_CONFIG", "KUBECONFIG")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _index_problem() -> str | None:
    """Why pip's package index cannot be reached (None when it answers): its URL as pip is configured."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        r = _run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], 60)
        url = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "https://pypi.org/simple/"
    cafile = os.environ.get("PIP_CERT") or None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=20,
                                    context=ssl.create_default_context(cafile=cafile)) as answer:
            answer.read(1)
        return None
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections, TLS failures
        return f"{url}: {e}"


def _pip_ok(r: subprocess.CompletedProcess, what: str) -> None:
    """Fail on a pip failure; skip instead when the package index cannot be reached (unless $CI is set)."""
    if r.returncode == 0:
        return
    out = r.stdout + r.stderr
    problem = _index_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"{what}: pip cannot reach the package index ({problem}); set CI=1 to fail instead.\n"
                    f"{out[-1500:]}")
    pytest.fail(f"{what} failed:\n{out[-4000:]}")


@pytest.fixture(scope="module")
def testing_venv(tmp_path_factory):
    """A fresh venv (no system site-packages) with the project's wheel and its [testing] extra."""
    if not (PACKAGE / "labextension" / "static" / "style.js").exists():
        msg = "the lab extension is not built (run `make setup`); the wheel would need an npm build"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    base = tmp_path_factory.mktemp("pkg")
    times = {}
    t0 = time.monotonic()
    # build isolation: pip fetches hatchling & co. (cached after the first time)
    _pip_ok(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", ROOT], 600),
            "pip wheel of the checkout")
    wheels = list((base / "dist").glob("jupyter_dask_kube-*.whl"))
    assert len(wheels) == 1, wheels
    times["wheel"] = time.monotonic() - t0
    venv = base / "venv"
    t0 = time.monotonic()
    r = _run([sys.executable, "-m", "venv", venv], 120)
    assert r.returncode == 0, r.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    # pip's cache (~/.cache/pip) is on: a warm install takes ~40 s, a cold one a few minutes
    r = _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--prefer-binary", f"{wheels[0]}[testing]"],
             900, cwd=base, env=_clean_env(venv))
    times["install"] = time.monotonic() - t0
    _pip_ok(r, "pip install of the wheel's [testing] extra")
    print(f"wheel {times['wheel']:.1f}s, venv + install {times['install']:.1f}s")
    return venv


_POD_SCRIPT = r"""
import json, sys, time
from kubernetes import client, config

config.load_kube_config(sys.argv[1])
core = client.CoreV1Api()
marker = sys.argv[2]

def pod(name, command):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "python:3.11", "command": command,
                 "env": [{"name": "PKG_TEST_MARKER", "value": marker}]}]}}

def wait_phase(name, phases, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        phase = core.read_namespaced_pod(name, "default").status.phase
        if phase in phases:
            return phase
        if time.monotonic() > deadline:
            raise SystemExit(f"pod {name} still {phase} after {timeout}s")
        time.sleep(0.2)

core.create_namespaced_pod("default", pod("hello", [
    "python", "-c", "import distributed, os, sys; print('hello-from-pod', 6 * 7, sys.prefix, os.environ['PKG_TEST_MARKER'])"]))
phase = wait_phase("hello", ("Succeeded", "Failed"))
status = core.read_namespaced_pod("hello", "default").status
logs = core.read_namespaced_pod_log("hello", "default")
# a pod still running when the server is stopped: its process must go too
core.create_namespaced_pod("default", pod("sleeper", ["sleep", "600"]))
sleeper = wait_phase("sleeper", ("Running", "Failed", "Succeeded"))
print(json.dumps({"phase": phase, "exit": status.container_statuses[0].state.terminated.exit_code,
                  "logs": logs, "sleeper": sleeper}))
"""


def _processes_with(marker: str, text: str) -> list:
    """Processes whose environment holds ``marker`` or whose command line mentions ``text``."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if text in " ".join(p.info["cmdline"] or []) or marker in str(p.environ().get("PKG_TEST_MARKER")):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.timeout(1200)
def test_pip_installed_testing_module_runs_pods(testing_venv, tmp_path):
    """From a directory outside the checkout, the venv's ``python -m jupyter_dask_kube.testing`` serves an API
    on which the official client's pod runs a real command to Succeeded with readable logs; stopping the
    server by PID leaves no process behind."""
    venv, env = testing_venv, _clean_env(testing_venv)
    python = venv / "bin" / "python"
    work = tmp_path / "admin"
    work.mkdir()
    assert ROOT not in work.parents
    r = _run([python, "-c", "import jupyter_dask_kube, kmock, kubernetes; print(jupyter_dask_kube.__file__)"],
             120, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert pathlib.Path(r.stdout.strip()).is_relative_to(venv), r.stdout  # the installed copy, not the checkout
    kubeconfig, marker = work / "kubeconfig", uuid.uuid4().hex
    t0 = time.monotonic()
    server = subprocess.Popen([python, "-m", "jupyter_dask_kube.testing", "--kubeconfig", kubeconfig,
                               "--port", "0"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("Emulated Kubernetes API listening on http://127.0.0.1:" in ln for ln in lines):
            line = server.stdout.readline()
            assert line or server.poll() is None, "server exited:\n" + "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "no READY line:\n" + "".join(lines)
        ready = time.monotonic() - t0
        assert kubeconfig.exists()
        (work / "pods.py").write_text(_POD_SCRIPT)
        r = _run([python, work / "pods.py", kubeconfig, marker], 240, cwd=work, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert (result["phase"], result["exit"], result["sleeper"]) == ("Succeeded", 0, "Running"), result
        assert result["logs"].split() == ["hello-from-pod", "42", str(venv), marker], result
        alive = _processes_with(marker, str(work))
        assert any(p.pid != server.pid and "sleep" in " ".join(p.cmdline()) for p in alive), alive
        assert server.pid in {p.pid for p in alive}
        descendants = psutil.Process(server.pid).children(recursive=True)
        os.kill(server.pid, signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, "".join(lines) + out
        assert "Emulated cluster stopped." in out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    deadline = time.monotonic() + 30
    while (left := [p for p in descendants + _processes_with(marker, str(work)) if p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left after stopping the server: {[(p.pid, p.cmdline()) for p in left]}"
    print(f"server ready {ready:.1f}s after start; whole run {time.monotonic() - t0:.1f}s")
