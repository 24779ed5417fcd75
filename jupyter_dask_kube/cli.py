"""Admin CLI: ``jupyter dask-kube list`` and ``jupyter dask-kube cleanup [--user U] [--older-than T]``.

Works on every user's clusters in a namespace, found by the labels this project puts on every object.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import datetime, timezone

from dask.utils import parse_timedelta

from .objects import LABEL_CLUSTER, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_USER, MANAGED_BY, parse_timestamp
from .runtimes import RuntimeAPIError, make_runtime
from .tls import secret_name


def _clusters(pods: list[dict]) -> dict[str, dict]:
    """Group pods by cluster: user, created (the oldest pod), scheduler phase, worker count."""
    out: dict[str, dict] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        name = labels.get(LABEL_CLUSTER)
        if not name:
            continue
        c = out.setdefault(name, {"name": name, "user": labels.get(LABEL_USER, "?"), "scheduler": "-", "workers": 0, "created": None})
        created = parse_timestamp(pod["metadata"].get("creationTimestamp"))
        if created and (c["created"] is None or created < c["created"]):
            c["created"] = created
        if labels.get(LABEL_COMPONENT) == "scheduler":
            c["scheduler"] = pod.get("status", {}).get("phase", "Pending")
        elif labels.get(LABEL_COMPONENT) == "worker":
            c["workers"] += 1
    return out


def _age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "?"
    s = int((now - created).total_seconds())
    return f"{s // 86400}d{s % 86400 // 3600}h" if s >= 86400 else f"{s // 3600}h{s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m{s % 60}s"


async def _run(args) -> int:
    runtime = make_runtime(args.backend, args.namespace)
    try:
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        if getattr(args, "user", None):
            from .naming import safe_label_value

            selector += f",{LABEL_USER}={safe_label_value(args.user)}"
        clusters = _clusters(await runtime.list_pods(selector))
        now = datetime.now(timezone.utc)
        if args.command == "list":
            rows = [("CLUSTER", "USER", "SCHEDULER", "WORKERS", "AGE")]
            rows += [(c["name"], c["user"], c["scheduler"], str(c["workers"]), _age(c["created"], now)) for c in clusters.values()]
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
            return 0
        older = parse_timedelta(args.older_than) if args.older_than else 0
        doomed = [c for c in clusters.values() if c["created"] is None or (now - c["created"]).total_seconds() >= older]
        for c in doomed:
            if args.dry_run:
                print(f"would delete {c['name']} (user {c['user']}, {c['workers']} workers, age {_age(c['created'], now)})")
                continue
            # Delete the Service and every pod explicitly: garbage collection may lag or be absent.
            await runtime.delete_service(c["name"])
            with contextlib.suppress(RuntimeAPIError, NotImplementedError):  # clusters without TLS have none (and it is GC'd anyway)
                await runtime.delete_secret(secret_name(c["name"]))
            n = await runtime.delete_pods(f"{LABEL_CLUSTER}={c['name']}")
            print(f"deleted {c['name']} (user {c['user']}, {n} pods)")
        if not doomed:
            print("nothing to clean up")
        return 0
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter dask-kube", description="List and clean up users' Dask clusters.")
    parser.add_argument("--namespace", help="namespace (default: as the server extension would choose)")
    parser.add_argument("--backend", default="kubernetes", choices=["kubernetes", "local", "auto"])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list every user's clusters")
    clean = sub.add_parser("cleanup", help="delete clusters (all, or one user's, or old ones)")
    clean.add_argument("--user", help="only this JupyterHub user's clusters")
    clean.add_argument("--older-than", help='only clusters older than this, e.g. "2h", "1 day", "3600"')
    clean.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except Exception as exc:  # an admin tool: one readable line, not a traceback
        # Some errors (a YAML parse error in the kubeconfig) span lines: keep it to one.
        print(f"jupyter dask-kube: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
