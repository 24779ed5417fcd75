"""When a cluster ends, and how its scheduler pod is made to end then without the Jupyter server (pure).

Three rules, all enforced where the Jupyter server is not needed:
- the owner: the scheduler pod gets an ownerReference to the notebook pod (ownerpod.py finds it), so
  Kubernetes' garbage collector removes the cluster when the hub stops or culls the server (workers and
  the Service hang off the scheduler pod already);
- an expiry time (``max_lifetime``, and ``max_detached_lifetime`` for a cluster kept past its owner): the
  scheduler closes itself then (lifetime_preload.py, passed inline to ``dask scheduler --preload``) and the
  pod carries ``activeDeadlineSeconds`` a little beyond it, so a kubelet ends it even if the process hangs;
- no client for ``no_client_timeout`` seconds: the same preload closes the scheduler.
A scheduler that closes exits 0, its workers lose it and exit (``handle_scheduler`` closes them).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .objects import _set_env, format_timestamp, owner_reference, parse_timestamp
from .templates import container_argv, is_dask_scheduler

ANNOTATION_EXPIRES = "dask-kube.jupyter.org/expires"
ANNOTATION_KEEP = "dask-kube.jupyter.org/keep"
ENV_EXPIRES = "DASK_KUBE_EXPIRES"  # unix seconds
ENV_NO_CLIENT_TIMEOUT = "DASK_KUBE_NO_CLIENT_TIMEOUT"  # seconds
# activeDeadlineSeconds is the backstop: the scheduler's own close comes first, with room to exit cleanly.
DEADLINE_GRACE = 60
PRELOAD_FILE = os.path.join(os.path.dirname(__file__), "lifetime_preload.py")


@dataclass(frozen=True)
class LifetimePolicy:
    """The admin's rules, in seconds (0 = off)."""

    max_lifetime: float = 0
    max_detached_lifetime: float = 0
    no_client_timeout: float = 0

    def expires(self, created: datetime, keep: bool) -> datetime | None:
        """When a cluster made at ``created`` must end: the shortest bound that applies, None for none."""
        bounds = [b for b in (self.max_lifetime, self.max_detached_lifetime if keep else 0) if b and b > 0]
        # whole seconds, as the annotation keeps it: the card shows the same time before and after a restart
        return (created + timedelta(seconds=min(bounds))).replace(microsecond=0) if bounds else None


def lifetime_annotations(expires: datetime | None, keep: bool) -> dict:
    """What re-adoption, ``from_name`` and ``list_clusters`` read back (scheduler pod annotations)."""
    return {ANNOTATION_EXPIRES: format_timestamp(expires) if expires else "", ANNOTATION_KEEP: "true" if keep else "false"}


def parse_lifetime_annotations(annotations: dict | None) -> tuple[datetime | None, bool]:
    """(expires, keep) from a scheduler pod's annotations; garbled or missing values -> (None, False)."""
    a = annotations if isinstance(annotations, dict) else {}
    return parse_timestamp(a.get(ANNOTATION_EXPIRES)), str(a.get(ANNOTATION_KEEP, "")).lower() == "true"


@functools.lru_cache(maxsize=1)
def _preload_text() -> str:
    with open(PRELOAD_FILE) as f:  # the package's own file, read once
        return f.read()


def scheduler_container(pod: dict) -> dict | None:
    """The container running ``dask scheduler``, or None (an image with its own entrypoint)."""
    return next((c for c in (pod.get("spec") or {}).get("containers") or [] if is_dask_scheduler(c)), None)


def apply_lifetime(
    pod: dict,
    *,
    expires: datetime | None = None,
    no_client_timeout: float = 0,
    owner: dict | None = None,
    now: datetime | None = None,
) -> dict:
    """The scheduler pod (changed in place and returned) made to end by itself, and to go with its owner.

    ``owner``: the notebook pod (with metadata.uid); None when the cluster is kept past its server or the
    server does not run in a pod.
    """
    if owner is not None:
        refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("uid") != owner["metadata"]["uid"]]
        ref = owner_reference(owner)
        ref["controller"] = False  # the notebook pod owns, it does not control (kubespawner's pods are bare)
        pod["metadata"]["ownerReferences"] = refs + [ref]
    env = {}
    if expires is not None:
        env[ENV_EXPIRES] = f"{expires.timestamp():.0f}"
        now = now or datetime.now(timezone.utc)
        left = max(1, math.ceil((expires - now).total_seconds()))
        deadline = left + DEADLINE_GRACE
        current = pod["spec"].get("activeDeadlineSeconds")
        pod["spec"]["activeDeadlineSeconds"] = min(current, deadline) if isinstance(current, int) and current > 0 else deadline
    if no_client_timeout and no_client_timeout > 0:
        env[ENV_NO_CLIENT_TIMEOUT] = f"{no_client_timeout:g}"
    container = scheduler_container(pod)
    if env and container is not None:
        _set_env(container, env)
        if _preload_text() not in container_argv(container):
            # the text itself (distributed runs a preload given as source), so the image needs only distributed
            container["args"] = [*(container.get("args") or []), "--preload", _preload_text()]
    return pod


def remaining(expires: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds left before ``expires`` (negative once past), None without an expiry."""
    if expires is None:
        return None
    return (expires - (now or datetime.now(timezone.utc))).total_seconds()


__all__ = [
    "ANNOTATION_EXPIRES", "ANNOTATION_KEEP", "DEADLINE_GRACE", "ENV_EXPIRES", "ENV_NO_CLIENT_TIMEOUT", "LifetimePolicy",
    "apply_lifetime", "lifetime_annotations", "parse_lifetime_annotations", "remaining", "scheduler_container",
]
