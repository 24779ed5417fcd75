"""The admin CLI (`jupyter dask-kube list|cleanup`) against an emulated cluster, with real pods.

It gets an emulated cluster of its own: `cleanup` without --user deletes every user's clusters in the
namespace, which must not touch clusters of tests sharing the session's emulated cluster.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest

from jupyter_dask_kube.cli import main
from jupyter_dask_kube.objects import cluster_selector, user_selector
from jupyter_dask_kube.testing import EmulatedKubernetes
from jupyter_dask_kube.testing.fixtures import kube_api, kube_target_for

from helpers import WORKERS_UP, Pending, detached_cluster, pods_of, services_of, wait_for
from jupyter_process import free_port

GONE = 90


@pytest.fixture(scope="module", params=["emulator", "real"])
def emu(request):
    """An API server of the CLI's own: cleanup without --user deletes every user's clusters of its namespace.
    A cluster named by JDK_TEST_REAL_KUBECONFIG is never used here for that reason."""
    if request.param == "real":
        yield kube_target_for(request, "real").in_namespace("jdk-cli-test")
        return
    with EmulatedKubernetes(processes=True) as k:
        yield k


@pytest.fixture
def kube(emu):
    api = kube_api(emu)
    yield api
    api.api_client.close()


@pytest.fixture
def cli(emu, monkeypatch, capsys):
    """main(argv) in this process with KUBECONFIG set: (exit code, stdout, stderr)."""
    monkeypatch.setenv("KUBECONFIG", emu.kubeconfig)

    def run(*argv):
        capsys.readouterr()
        code = main(["--backend", "kubernetes", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def table(out: str) -> dict[str, list[str]]:
    """`list` output: cluster name -> [user, scheduler phase, workers, age]; checks the header."""
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines and lines[0].split() == ["CLUSTER", "USER", "SCHEDULER", "WORKERS", "AGE"], out
    return {cols[0]: cols[1:] for cols in (l.split() for l in lines[1:])}


@pytest.fixture(scope="module")
def two_users(emu):
    """alice: a cluster with 2 workers; bob: a cluster with 1 worker (all pods Running)."""
    async def both():
        return await asyncio.gather(
            detached_cluster("alice", kubeconfig=emu.kubeconfig, workers=2),
            detached_cluster("bob", kubeconfig=emu.kubeconfig, workers=1),
        )

    alice, bob = asyncio.run(both())
    return alice, bob


@pytest.mark.timeout(600)
def test_list_and_cleanup(emu, two_users, kube, cli):
    alice, bob = two_users
    ns = emu.namespace
    alice_sel, bob_sel = user_selector("alice"), user_selector("bob")

    def running(sel, n):
        def check():
            pods = pods_of(kube, ns, sel)
            ok = len(pods) == n and all(ph == "Running" and not d for _, ph, d in pods.values())
            return pods if ok else Pending(repr(pods))
        return wait_for(check, WORKERS_UP, what=f"{n} running pods for {sel}")

    alice_pods, bob_pods = running(alice_sel, 3), running(bob_sel, 2)

    # list: both users' clusters, scheduler phase, worker counts
    code, out, err = cli("list")
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {alice, bob}, out
    assert rows[alice][:3] == ["alice", "Running", "2"], out
    assert rows[bob][:3] == ["bob", "Running", "1"], out
    assert all(r[3][-1] == "s" for r in rows.values()), out  # ages like "0m12s"

    # dry run: says what it would delete, deletes nothing
    code, out, err = cli("cleanup", "--user", "alice", "--dry-run")
    assert code == 0, err
    assert out.strip() == f"would delete {alice} (user alice, 2 workers, age {out.split('age ')[1].split(')')[0]})", out
    assert bob not in out
    assert pods_of(kube, ns, alice_sel) == alice_pods
    assert pods_of(kube, ns, bob_sel) == bob_pods
    assert services_of(kube, ns, alice_sel) == [alice]

    # alice only: her pods and Service go, bob's stay as they were
    code, out, err = cli("cleanup", "--user", "alice")
    assert code == 0, err
    assert out.strip() == f"deleted {alice} (user alice, 3 pods)", out
    wait_for(lambda: not (p := pods_of(kube, ns, alice_sel)) or Pending(repr(p)), GONE, what="alice's pods gone")
    assert services_of(kube, ns, alice_sel) == []
    assert pods_of(kube, ns, bob_sel) == bob_pods
    assert services_of(kube, ns, bob_sel) == [bob]
    code, out, err = cli("list")
    assert set(table(out)) == {bob}, out

    # nothing is an hour old: nothing deleted
    code, out, err = cli("cleanup", "--older-than", "1h")
    assert code == 0, err
    assert out.strip() == "nothing to clean up", out
    assert pods_of(kube, ns, bob_sel) == bob_pods
    code, out, err = cli("cleanup", "--older-than", "1h", "--dry-run")
    assert code == 0 and out.strip() == "nothing to clean up", out

    # everything left
    code, out, err = cli("cleanup")
    assert code == 0, err
    assert out.strip() == f"deleted {bob} (user bob, 2 pods)", out
    wait_for(lambda: not (p := pods_of(kube, ns, bob_sel)) or Pending(repr(p)), GONE, what="bob's pods gone")
    assert services_of(kube, ns, bob_sel) == []
    assert pods_of(kube, ns, cluster_selector(alice)) == {}
    code, out, err = cli("list")
    assert code == 0 and table(out) == {}, out
    code, out, err = cli("cleanup")
    assert code == 0 and out.strip() == "nothing to clean up", out


def _run_module(*argv, kubeconfig, timeout=120):
    env = dict(os.environ, KUBECONFIG=kubeconfig, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "jupyter_dask_kube.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_module_entry_list(emu):
    """`python -m jupyter_dask_kube.cli` is the same program."""
    r = _run_module("--backend", "kubernetes", "list", kubeconfig=emu.kubeconfig)
    assert r.returncode == 0, r.stderr
    table(r.stdout)
    assert "Traceback" not in r.stderr


def test_jupyter_launcher_list(emu):
    """`jupyter dask-kube list`: the jupyter launcher finds the `jupyter-dask-kube` entry point script."""
    if shutil.which("jupyter-dask-kube") is None:
        pytest.skip("the jupyter-dask-kube entry point script is not on PATH (reinstall the package: pip install -e .)")
    if shutil.which("jupyter") is None:
        pytest.skip("the jupyter launcher is not on PATH")
    env = dict(os.environ, KUBECONFIG=emu.kubeconfig)
    r = subprocess.run(["jupyter", "dask-kube", "--backend", "kubernetes", "list"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    table(r.stdout)


@pytest.fixture
def dead_api_kubeconfig(tmp_path):
    """A well-formed kubeconfig whose API server does not answer (nothing listens on the port)."""
    from jupyter_dask_kube.testing import write_kubeconfig

    return write_kubeconfig(str(tmp_path / "dead"), f"http://127.0.0.1:{free_port()}")


BAD_KUBECONFIGS = {
    "missing file": lambda tmp, dead: str(tmp / "no-such-kubeconfig"),
    "not yaml": lambda tmp, dead: _write(tmp / "garbage", "{{{ this is : not [ yaml"),
    "no contexts": lambda tmp, dead: _write(tmp / "empty", "apiVersion: v1\nkind: Config\n"),
    "API unreachable": lambda tmp, dead: dead,
}


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", list(BAD_KUBECONFIGS))
@pytest.mark.parametrize("command", [["list"], ["cleanup", "--dry-run"]], ids=["list", "cleanup"])
def test_bad_kubeconfig_one_readable_line(case, command, tmp_path, dead_api_kubeconfig):
    path = BAD_KUBECONFIGS[case](tmp_path, dead_api_kubeconfig)
    started = time.monotonic()
    r = _run_module("--backend", "kubernetes", *command, kubeconfig=path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("jupyter dask-kube: ") and len(lines[0]) > len("jupyter dask-kube: ") + 5, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert time.monotonic() - started < 60
