"""Seed best practice 1: workers whose packages differ from the Jupyter server's show up in the cluster's
``warnings``. The mismatched worker is real: a ``--preload`` module makes it report another dask version."""
import textwrap

import pytest

from helpers import WORKER_ARGS, rest_call, small_pod, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

FAKE_DASK = "0.0.1+mismatch"
PRELOAD = textwrap.dedent(f'''
    # Imported by `dask worker --preload` before the worker registers: from now on this worker reports
    # another dask version everywhere, as a worker from a different image would.
    import sys

    import distributed.versions

    # dask may import a preload more than once in a process: patch only the original function
    _real = getattr(distributed.versions, "_real_get_versions", distributed.versions.get_versions)
    distributed.versions._real_get_versions = _real


    def _mismatched(packages=None):
        versions = _real(packages)
        versions["packages"] = dict(versions["packages"], dask="{FAKE_DASK}")
        return versions


    for module in list(sys.modules.values()):
        if getattr(module, "get_versions", None) is _real:
            module.get_versions = _mismatched
''')


@pytest.fixture
def preload(tmp_path):
    path = tmp_path / "mismatch_preload.py"
    path.write_text(PRELOAD)
    return str(path)


@pytest.fixture
def jp_server_config(preload):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "local", "templates": {
            "same": {"workers": 1, "worker": small_pod()},
            "other": {"workers": 1, "worker": small_pod(args=[*WORKER_ARGS, "--preload", preload])},
        }},
    }


@pytest.mark.parametrize("template, mismatch", [("other", True), ("same", False)])
async def test_version_mismatch_is_a_warning(jp_fetch, jp_serverapp, template, mismatch):
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": template})
    assert code == 201
    cid = model["id"]
    try:
        await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, 90, what="one worker")
        # the check runs once, when the first worker registers: wait for it to have run
        rec = jp_serverapp.web_app.settings["dask_kube_manager"].get(cid)
        await wait_until(lambda: rec.version_task is not None and rec.version_task.done(), 30,
                         what="the version check")
        code, model = await rest_call(jp_fetch, "GET", "clusters", cid)
        text = "\n".join(model["warnings"])
        if mismatch:
            assert "Mismatched versions" in text and FAKE_DASK in text and "Jupyter server" in text, text
        else:
            assert "ismatch" not in text, text
    finally:
        assert (await rest_call(jp_fetch, "DELETE", "clusters", cid))[0] == 204
