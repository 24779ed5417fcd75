"""A dask preload that makes a real worker report another dask version, as a worker from a different image
would: ``dask worker --preload jupyter_dask_kube.testing.mismatch_preload``. For tests of the version
warning (seed best practice 1) in pytest and in the browser. Importing it changes nothing: only
``dask_setup``, which dask calls in the worker, does."""
import sys

FAKE_DASK = "0.0.1+mismatch"


def dask_setup(worker=None):
    import distributed.versions

    # dask may run a preload more than once in a process: patch only the original function
    real = getattr(distributed.versions, "_real_get_versions", distributed.versions.get_versions)
    distributed.versions._real_get_versions = real

    def mismatched(packages=None):
        versions = real(packages)
        versions["packages"] = dict(versions["packages"], dask=FAKE_DASK)
        return versions

    for module in list(sys.modules.values()):
        if getattr(module, "get_versions", None) is real:
            module.get_versions = mismatched
