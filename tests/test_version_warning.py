"""Seed best practice 1: workers whose packages differ from the Jupyter server's show up in the cluster's
``warnings``. The mismatched worker is real: ``--preload jupyter_dask_kube.testing.mismatch_preload`` makes it report
another dask version."""
import pytest

from jupyter_dask_kube.testing.mismatch_preload import FAKE_DASK

from helpers import WORKER_ARGS, rest_call, small_pod, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PRELOAD = "jupyter_dask_kube.testing.mismatch_preload"


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "local", "templates": {
            "same": {"workers": 1, "worker": small_pod()},
            "other": {"workers": 1, "worker": small_pod(args=[*WORKER_ARGS, "--preload", PRELOAD])},
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
            assert f"dask: " in text and f"{FAKE_DASK} on the workers" in text and "Jupyter server" in text, text
        else:
            assert "ismatch" not in text, text
    finally:
        assert (await rest_call(jp_fetch, "DELETE", "clusters", cid))[0] == 204


def test_the_version_table_reads_as_one_line_per_package():
    from distributed.versions import error_message, get_versions

    from jupyter_dask_kube.versioncheck import readable_mismatch

    here = get_versions()
    other = dict(here, packages=dict(here["packages"], dask=FAKE_DASK, toolz="0.0.2"))
    text = readable_mismatch(error_message(scheduler=here, workers={"tcp://w": other}, source=here,
                                           source_name="Jupyter server")["warning"])
    dask_version = here["packages"]["dask"]
    assert text.startswith("Version mismatch between this server and the cluster: ")
    assert f"dask: {dask_version} on the Jupyter server, {dask_version} on the scheduler, {FAKE_DASK} on the workers" in text
    assert "toolz: " in text and "0.0.2 on the workers" in text
    assert "+--" not in text and "|" not in text
    assert readable_mismatch("something else") == "Version mismatch between this server and the cluster: something else"
