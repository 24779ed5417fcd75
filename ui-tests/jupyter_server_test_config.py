"""Server config for the UI tests: a real `jupyter lab` under a non-root base_url.

The server extension is the real one, on the local runtime (real dask processes).
"""
import json
import os
import tempfile
from pathlib import Path

c = get_config()  # noqa: F821

HERE = Path(__file__).parent
root = Path(tempfile.mkdtemp(prefix="dask-kube-ui-"))
state = Path(tempfile.mkdtemp(prefix="dask-kube-ui-state-"))  # settings, workspaces: outside root_dir

c.ServerApp.root_dir = str(root)
c.ServerApp.open_browser = False
c.ServerApp.allow_root = True
c.ServerApp.ip = "127.0.0.1"
c.IdentityProvider.token = ""
c.ServerApp.password = ""
c.ServerApp.disable_check_xsrf = False
c.FileContentsManager.delete_to_trash = False
c.LabApp.expose_app_in_browser = True

# no "Jupyter news" popup over the screenshots
overrides = state / "lab_settings"
overrides.mkdir()
(overrides / "overrides.json").write_text(
    json.dumps({"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}})
)
c.LabApp.app_settings_dir = str(overrides)
c.LabApp.user_settings_dir = str(state / "user_settings")
c.LabApp.workspaces_dir = str(state / "workspaces")

# keep dask from writing ~/.config/dask
os.environ.setdefault("DASK_CONFIG", str(state / "dask"))

c.ServerApp.jpserver_extensions = {"jupyter_dask_kube": True}

# --- the server extension (jupyter_dask_kube.extension) --------------------------------
c.DaskKube.backend = "local"
c.DaskKube.max_workers = 4
c.DaskKube.default_template = "tiny"
c.DaskKube.templates = {
    "tiny": {
        "name": "tiny",
        "display_name": "Tiny (1 thread, 1 GB workers)",
        "description": "Local processes for the UI tests.",
        "default": True,
        "workers": 2,
        "worker": {
            "kind": "Pod",
            "metadata": {"labels": {"purpose": "ui-tests"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "dask-worker",
                        "image": "ghcr.io/dask/dask:latest",
                        "args": [
                            "dask-worker",
                            "--nthreads", "1",
                            "--no-dashboard",
                            "--memory-limit", "1GB",
                            "--no-nanny",
                            "--death-timeout", "60",
                        ],
                        "resources": {
                            "limits": {"cpu": "1", "memory": "1G"},
                            "requests": {"cpu": "1", "memory": "1G"},
                        },
                    }
                ],
            },
        },
        "options": [
            {"name": "cores", "label": "Cores per worker", "type": "float",
             "default": 1, "min": 1, "max": 2},
        ],
    }
}

# A second template: the defaultTemplate setting switches to it, and its long names check that the
# sidebar neither overflows nor jumps.
LONG = "a-template-with-an-uncommonly-long-name-for-layout-tests"
c.DaskKube.templates[LONG] = {
    **c.DaskKube.templates["tiny"],
    "name": LONG,
    "display_name": "A template with an uncommonly long display name that cannot fit a sidebar",
    "description": "The same tiny local workers; averyveryverylongwordwithoutanyspacesthatmustwrapinsteadofoverflowing.",
    "default": False,
}

# Templates whose clusters carry what a user must be able to read on the card (notes.spec.ts):
# - "mismatch": real workers that report another dask version (seed best practice 1) and whose
#   --nthreads/--memory-limit are above their container limits (seed best practice 2);
# - "broken": a scheduler container the runtime cannot start, so the cluster fails with a reason.
_tiny_worker = c.DaskKube.templates["tiny"]["worker"]
_tiny_container = _tiny_worker["spec"]["containers"][0]
c.DaskKube.templates["mismatch"] = {
    "name": "mismatch",
    "display_name": "Mismatched workers",
    "description": "Workers of another dask version, with args above their limits.",
    "default": False,
    "workers": 1,
    "worker": {
        **_tiny_worker,
        "spec": {
            **_tiny_worker["spec"],
            "containers": [{
                **_tiny_container,
                "args": [
                    "dask-worker", "--nthreads", "2", "--no-dashboard", "--memory-limit", "2GB",
                    "--no-nanny", "--death-timeout", "60",
                    "--preload", "jupyter_dask_kube.testing.mismatch_preload",
                ],
            }],
        },
    },
}
c.DaskKube.templates["broken"] = {
    "name": "broken",
    "display_name": "Broken scheduler",
    "description": "A scheduler command that does not exist.",
    "default": False,
    "workers": 1,
    "worker": _tiny_worker,
    "scheduler": {
        "kind": "Pod",
        "spec": {"containers": [{
            "name": "dask-scheduler",
            "image": "ghcr.io/dask/dask:latest",
            "command": ["/nonexistent/dask-scheduler-that-is-not-installed"],
        }]},
    },
}
