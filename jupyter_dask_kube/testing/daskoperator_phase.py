"""One more kopf handler for the Dask operator's controller on the test tier (loaded beside
``dask_kubernetes.operator.controller`` by ``python -m jupyter_dask_kube.testing.daskoperator``).

dask-kubernetes 2026.3.0 (the newest release on the package index) has a race, dask/dask-kubernetes#968:
the Service handler marks the DaskCluster ``Running`` as soon as the scheduler Service is created, and the
create handler, which made that Service, returns a moment later and writes ``Pending`` over it. Nothing
changes the phase after that, so dask-kubernetes' own ``KubeCluster()`` (which waits for ``Running``) times
out with "Dask Cluster resource not actioned after 60 seconds" although every pod is up. On this tier the
Service handler often wins. The upstream fix (dask/dask-kubernetes#977, merged after 2026.3.0) lets the create
handler set the phase itself once all components exist; this handler does the same after the fact: a cluster
that reaches ``Pending`` while its scheduler Service exists gets the phase the Service handler would give it.
Remove it once a release with #977 is required. Our backend does not depend on it (operator_models reads
the pods, not the phase).
"""
from __future__ import annotations

import kopf


def phase_for_service(service: dict | None) -> str | None:
    """The phase dask-kubernetes' Service handler gives a cluster whose scheduler Service is ``service``:
    None while there is no Service, ``Pending`` for a LoadBalancer without ingress, else ``Running`` (pure)."""
    if not service:
        return None
    spec, status = service.get("spec") or {}, service.get("status") or {}
    if spec.get("type") == "LoadBalancer" and not ((status.get("loadBalancer") or {}).get("ingress")):
        return "Pending"
    return "Running"


@kopf.on.field("daskcluster.kubernetes.dask.org", field="status.phase", new="Pending")
async def daskcluster_pending_with_service(name, namespace, patch, logger, **_) -> None:
    from kr8s import NotFoundError
    from kr8s.asyncio.objects import Service

    try:
        service = await Service.get(f"{name}-scheduler", namespace=namespace)
    except NotFoundError:
        return  # the Service handler sets the phase when the Service appears
    phase = phase_for_service(service.raw)
    if phase and phase != "Pending":
        logger.info(f"scheduler Service exists: phase {phase} (dask/dask-kubernetes#968)")
        patch.status["phase"] = phase
