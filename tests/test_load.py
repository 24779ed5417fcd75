"""Load, correctness only: 20 clusters x 10 workers and 50 concurrent REST clients on one Jupyter server.

Runs benchmarks/load.py's :func:`run` (see its docstring for the setup: no-process emulated Kubernetes, real
schedulers in one helper process at the Services' addresses, a real ``jupyter_server`` with the extension) with
short windows, and asserts what must hold whatever the machine's speed; no timing is asserted:
- no request fails (every GET clusters, GET clusters/{id} and PATCH clusters/{id} answers 200);
- the server makes no Kubernetes API call while idle besides its pod watch, before and after the load
  (counted by the emulator itself);
- afterwards the server lists all 20 clusters, each with 10 requested workers, and the API holds exactly
  20 scheduler pods and 20 x 10 worker pods.
The figures (latencies, RSS per cluster) are printed: ``pytest tests/test_load.py -s``.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, os.pardir, "benchmarks", "load.py")

pytestmark = pytest.mark.skipif(bool(os.environ.get("JDK_TEST_REAL_KUBECONFIG")),
                                reason="needs the no-process emulator (200 worker pods that never run)")


def load_module():
    spec = importlib.util.spec_from_file_location("jdk_benchmark_load", LOAD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(600)
def test_load_20_clusters_50_clients():
    load = load_module()
    r = load.run(clusters=20, workers=10, clients=50, duration=8.0, idle=10.0, idle_before=True, seed=1)
    print(load.report(r))
    ld = r["load"]
    assert ld["errors"] == 0, ld["error_samples"]
    assert ld["list"]["n"] > 0 and ld["get"]["n"] > 0 and ld["patch"]["n"] > 0
    for window in ("idle_before", "idle_after"):
        assert r[window]["non_watch"] == 0, (window, r[window], r["server_log_tail"])
    final = r["final"]
    assert final["listed"] == 20 and final["all_requested"], final
    assert final["consistent"] and final["pods"] == 20 * 11, final
    assert "failed" not in final["statuses"], final
