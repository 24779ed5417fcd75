"""``python -m jupyter_dask_kube.testing``: serve an emulated Kubernetes cluster and write a kubeconfig for it.

Pods created through it run as local processes (each on its own 127.x.y.z), Services get a loopback
clusterIP that forwards to a ready pod. Stop with Ctrl-C / SIGTERM: every pod's processes are stopped first.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile

from .emulator import EmulatorFaults
from .nodeagent import Autoscaler
from .scheduling import parse_node
from .server import READY_MARK, ServerInfo, serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jupyter_dask_kube.testing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument("--kubeconfig", default=None,
                   help="where to write the kubeconfig (default: a file in a new temporary directory)")
    p.add_argument("--namespace", default="default", help="namespace that exists and is the context's default")
    p.add_argument("--no-processes", action="store_true",
                   help="do not run anything: pods turn Running with a podIP at once (control-plane load tests)")
    p.add_argument("--node", action="append", default=[], metavar="SPEC",
                   help='a node, e.g. "cpu=64,memory=256Gi,pods=500[,name=n1][,label.k=v]"; repeat for more '
                        "(default: one node emulated-node-1 with cpu=64,memory=256Gi,pods=500)")
    p.add_argument("--autoscale-node", default=None, metavar="SPEC",
                   help="play cluster-autoscaler: a pod that fits no node but would fit a new node of this spec "
                        "(same form as --node) gets one after --autoscale-delay seconds")
    p.add_argument("--autoscale-delay", type=float, default=5.0, help="seconds until an autoscaled node is up")
    p.add_argument("--autoscale-max", type=int, default=3, help="at most this many autoscaled nodes")
    p.add_argument("--log-dir", default=None, help="directory for the pods' container output (default: in memory)")
    p.add_argument("--watch-history", type=int, default=2000,
                   help="watch events kept per resource for resumption; older resourceVersions get 410 Gone")
    p.add_argument("--unpullable", default="doesnotexist,unpullable",
                   help="comma-separated words: images containing one fail to pull (ImagePullBackOff)")
    p.add_argument("--deny", action="append", default=[], metavar="VERB:RESOURCE",
                   help="answer 403 Forbidden for this verb and resource (e.g. create:pods); repeatable")
    p.add_argument("--quota-pods", type=int, default=None, help="at most this many pods per namespace")
    p.add_argument("--real", action="store_true",
                   help="instead of the emulator, start a real etcd + kube-apiserver + kube-controller-manager "
                        "v1.20.2 on 127.0.0.1 (built by `make kube-binaries`) and print admin and user kubeconfigs")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.real:
        from .controlplane import serve_real
        return serve_real(namespace=args.namespace, kubeconfig=args.kubeconfig, processes=not args.no_processes)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    own_dir = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        own_dir = tempfile.mkdtemp(prefix="jdk-emulated-cluster-")
        kubeconfig = os.path.join(own_dir, "kubeconfig")
    nodes = [parse_node(n, i + 1) for i, n in enumerate(args.node)] or None
    autoscaler = None
    if args.autoscale_node:
        template = parse_node(args.autoscale_node)
        if "name=" not in args.autoscale_node:
            template.name = "autoscaled"
        autoscaler = Autoscaler(template, args.autoscale_delay, args.autoscale_max)
    words = [w for w in args.unpullable.split(",") if w]
    faults = EmulatorFaults(forbidden={tuple(d.split(":", 1)) for d in args.deny},
                            quota={"pods": args.quota_pods} if args.quota_pods is not None else {})

    def ready(info: ServerInfo) -> None:
        mode = "pods run as local processes" if not args.no_processes else "no processes: pods only pretend to run"
        print(f"{READY_MARK}{info.url} (namespace {info.namespace}; {mode})", flush=True)
        print(f"Kubeconfig written to {info.kubeconfig}", flush=True)
        print(f"export KUBECONFIG={info.kubeconfig}", flush=True)
        print("Press Ctrl-C to stop (every pod's processes are stopped).", flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(host=args.host, port=args.port, kubeconfig=kubeconfig, namespace=args.namespace,
                    run_processes=not args.no_processes, nodes=nodes, faults=faults, log_dir=args.log_dir,
                    watch_history=args.watch_history, autoscaler=autoscaler,
                    image_pull_fail=(lambda image: any(w in image for w in words)) if words else None,
                    ready=ready, stop=stop, parent_pid=args.parent_pid)

    try:
        asyncio.run(run())
    finally:
        if own_dir:
            import shutil
            shutil.rmtree(own_dir, ignore_errors=True)
    print("Emulated cluster stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
