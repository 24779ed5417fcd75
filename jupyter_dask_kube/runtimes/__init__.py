"""Pod runtimes: one interface (base.PodRuntime), one file per way of running pods."""
from .base import PodRuntime, RuntimeAPIError, WatchEvent

__all__ = ["PodRuntime", "RuntimeAPIError", "WatchEvent"]
