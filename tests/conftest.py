"""Test-wide hygiene: nothing a test does may write to the real home folder or user dask config."""
import os
import tempfile

# Set before dask or jupyter are imported anywhere, so their config paths point here.
_home = tempfile.mkdtemp(prefix="jdk-test-home-")
os.environ["DASK_CONFIG"] = os.path.join(_home, "dask")
os.environ.setdefault("JUPYTER_CONFIG_DIR", os.path.join(_home, "jupyter-config"))
os.environ.setdefault("JUPYTER_DATA_DIR", os.path.join(_home, "jupyter-data"))
os.environ.setdefault("JUPYTER_RUNTIME_DIR", os.path.join(_home, "jupyter-runtime"))
os.environ.setdefault("IPYTHONDIR", os.path.join(_home, "ipython"))
# A developer's own kubeconfig must never be picked up by backend="auto" in tests.
os.environ.pop("KUBECONFIG", None) if not os.environ.get("JDK_TEST_REAL_KUBECONFIG") else None
os.environ.setdefault("JUPYTERHUB_USER", "tester")

pytest_plugins = ["jupyter_dask_kube.testing.fixtures"]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run long soak loops (marked slow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    import pytest

    skip = pytest.mark.skip(reason="soak loop: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
