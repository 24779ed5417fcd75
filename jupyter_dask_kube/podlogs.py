"""The logs of a cluster's pods, scheduler first: one implementation for ``KubeCluster.get_logs()`` and the
REST ``clusters/{id}/logs``."""
from __future__ import annotations

import asyncio

from .objects import LABEL_CLUSTER, LABEL_COMPONENT
from .runtimes import PodRuntime
from .runtimes.base import readable_error

#: Lines per pod unless the caller asks otherwise: enough to see why a pod failed, bounded for the browser.
DEFAULT_TAIL_LINES = 2000


async def cluster_pod_logs(
    runtime: PodRuntime,
    pods: dict[str, dict],
    cluster_name: str,
    *,
    scheduler: bool = True,
    workers: bool = True,
    tail_lines: int | None = DEFAULT_TAIL_LINES,
) -> dict[str, str]:
    """``{pod name: text}`` for the pods of ``cluster_name`` among ``pods`` (a pod cache's view), the
    scheduler first, then workers by name; read in parallel. A pod whose logs cannot be read says why
    instead of failing the whole answer."""
    wanted = {"scheduler": scheduler, "worker": workers}
    names = sorted(
        (
            name for name, pod in pods.items()
            if (pod["metadata"].get("labels") or {}).get(LABEL_CLUSTER) == cluster_name
            and wanted.get((pod["metadata"].get("labels") or {}).get(LABEL_COMPONENT), False)
        ),
        key=lambda n: ((pods[n]["metadata"]["labels"].get(LABEL_COMPONENT) != "scheduler"), n),
    )
    texts = await asyncio.gather(*(runtime.pod_logs(n, tail_lines=tail_lines) for n in names), return_exceptions=True)
    return {n: (t if isinstance(t, str) else f"(logs unavailable: {readable_error(t)})") for n, t in zip(names, texts)}
