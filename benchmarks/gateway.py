"""Click to 4 workers on the gateway backend, against dask-gateway's own client, in the same run.

Issue #14: "click-to-4-workers through our REST API on the gateway backend, as a ratio to dask-gateway's own
client in the same run (target <= 1.1x: we should add nothing)". Both sides use ONE dask-gateway-server 2026.3
(local backend, bundled proxy, SimpleAuthenticator; jupyter_dask_kube.testing.gateway.LocalGateway) on 127.0.0.1,
as the same gateway user, with the gateway's default worker (1 core, 1 thread, 1 GB):

(a) ours: a real Jupyter server (``python -m jupyter_server``, token auth) with ``c.DaskKube.backend = "gateway"``,
    finding the gateway through a daskhub-style gateway.yaml in its DASK_CONFIG. Timed from
    ``POST dask-kube/api/clusters {"template": "gateway", "workers": 4}`` until ``GET clusters/{id}`` (every 50 ms)
    reports 4 connected workers; then ``DELETE`` until every process the cluster added under the gateway is gone.
(b) dask-gateway's client in this process: ``Gateway(...).new_cluster()`` + ``cluster.scale(4)`` until its
    worker-status stream lists 4 (read every 50 ms); ``cluster.shutdown()`` until the processes are gone
    (click_to_workers.gateway_once, the peer of the main benchmark).

Both run alternately, one warm-up each (untimed), then ``--runs`` (default 5) timed pairs; medians and the ratio
ours / dask-gateway are printed. Run: ``python benchmarks/gateway.py [--runs 5]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import click_to_workers as ctw  # noqa: E402  (sets DASK_CONFIG for this process first)

from jupyter_dask_kube.testing.gateway import LocalGateway  # noqa: E402  (the type ctw.start_gateway gives)

TARGET = 1.1
USER = "bench"  # click_to_workers.gateway_once's BasicAuth user: both sides are the same gateway user

OURS_CONFIG = """
c.ServerApp.jpserver_extensions = {"jupyter_dask_kube": True, "dask_labextension": False}
c.DaskKube.backend = "gateway"
"""

GATEWAY_YAML = """
gateway:
  address: {address}
  proxy-address: {proxy_address}
  auth:
    type: basic
    kwargs: {{username: {user}, password: {password}}}
"""


def ours_once(srv: ctw.JupyterServer, gw: LocalGateway):
    def n_workers(cid):
        m = srv.request("GET", f"dask-kube/api/clusters/{cid}")
        if m["status"] == "failed":
            raise RuntimeError(f"ours: failed: {m['message']}")
        return m["workers"]

    return ctw.time_cluster(
        "ours (gateway backend)", gw.proc.pid,
        lambda: srv.request("POST", "dask-kube/api/clusters", {"template": "gateway", "workers": ctw.WORKERS},
                            expect=(201,))["id"],
        n_workers,
        lambda cid: srv.request("DELETE", f"dask-kube/api/clusters/{cid}", expect=(204,)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 5)))
    args = ap.parse_args()

    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    gw = ctw.start_gateway()
    password = gw.password
    srv = None
    res = {"ours": [], "gateway": []}
    try:
        srv = ctw.JupyterServer(
            "ours", "server-module", OURS_CONFIG,
            {"gateway.yaml": GATEWAY_YAML.format(address=gw.address, proxy_address=gw.proxy_address, user=USER,
                                                 password=password)},
            absent="dask/clusters")
        say("warm-up (untimed): one cluster each")
        ours_once(srv, gw)
        ctw.gateway_once(gw)
        for i in range(args.runs):
            res["ours"].append(ours_once(srv, gw))
            res["gateway"].append(ctw.gateway_once(gw))
            say(f"run {i + 1}/{args.runs}: " + "  ".join(f"{k} {v[-1][0]:.2f}s up / {v[-1][1]:.2f}s down"
                                                          for k, v in res.items()))
    finally:
        if srv:
            srv.stop()
        gw.stop()

    med = statistics.median
    up = {k: med(x[0] for x in v) for k, v in res.items()}
    down = {k: med(x[1] for x in v) for k, v in res.items()}
    ratio = up["ours"] / up["gateway"]
    print(f"dask-gateway-server local backend, {ctw.WORKERS} workers, median of {args.runs}")
    print(f"click -> {ctw.WORKERS} workers: ours (REST, gateway backend) {up['ours']:.2f} s, "
          f"dask-gateway client {up['gateway']:.2f} s: ratio {ratio:.2f}x (target <= {TARGET}x)")
    print(f"shutdown -> processes gone: ours {down['ours']:.2f} s, dask-gateway client {down['gateway']:.2f} s: "
          f"ratio {down['ours'] / down['gateway']:.2f}x")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
