"""Template-driven Dask clusters on Kubernetes for JupyterHub users."""
from . import config  # noqa: F401  (loads the kubernetes.* dask config defaults)
from ._version import __version__

__all__ = ["__version__"]
