"""Template-driven Dask clusters on Kubernetes for JupyterHub users.

Python API: ``KubeCluster.from_yaml('worker-spec.yml'); cluster.scale(10); cluster.adapt(minimum=1, maximum=100)``.
"""
from . import config  # noqa: F401  (loads the kubernetes.* dask config defaults)
from ._version import __version__


def __getattr__(name):
    # Lazy, so `import jupyter_dask_kube` (e.g. by jupyter_server listing extensions) stays cheap.
    if name == "KubeCluster":
        from .cluster import KubeCluster

        return KubeCluster
    if name in ("list_clusters", "ClusterNotFound"):
        from . import attach

        return getattr(attach, name)
    if name == "make_pod_spec":
        from .objects import make_pod_spec

        return make_pod_spec
    raise AttributeError(f"module 'jupyter_dask_kube' has no attribute {name!r}")


def _jupyter_server_extension_points():
    from .extension import DaskKube

    return [{"module": "jupyter_dask_kube.extension", "app": DaskKube}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-dask-kube"}]


__all__ = ["ClusterNotFound", "KubeCluster", "list_clusters", "make_pod_spec", "__version__"]
