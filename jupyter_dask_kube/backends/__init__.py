"""Backends the REST handlers talk to (base.ClusterBackend): pods (kubernetes, local) and Dask-Gateway."""
from __future__ import annotations

from .base import ClusterBackend

__all__ = ["ClusterBackend"]
