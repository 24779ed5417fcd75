# JupyterHub configuration for tests/test_jupyterhub.py: a real hub, all on 127.0.0.1, nothing outside a temp folder.
#
# The test writes the per-run values (ports, folders, tokens, the emulated cluster's kubeconfig) to a JSON file
# and starts `jupyterhub -f this-file` with JDK_HUB_TEST_SETTINGS pointing at it. What worked is written down in
# /work/shared/RECIPES.md ("A real JupyterHub on one machine").
import json
import os
import sys

with open(os.environ["JDK_HUB_TEST_SETTINGS"]) as f:
    s = json.load(f)
c = get_config()  # noqa: F821 (provided by jupyterhub when it loads this file)

# -- the hub, its proxy and its state ------------------------------------------------------------------------
c.JupyterHub.bind_url = f"http://127.0.0.1:{s['proxy_port']}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [s["chp"]]
c.ConfigurableHTTPProxy.pid_file = os.path.join(s["dir"], "jupyterhub-proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(s["dir"], "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(s["dir"], "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(s["dir"], "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # hub shutdown stops the single-user servers
c.JupyterHub.cleanup_proxy = True  # ... and the proxy
c.JupyterHub.log_level = "INFO"

# -- users: the dummy authenticator (no password set), alice and bob ----------------------------------------
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {"alice", "bob"}

# An admin service whose token drives the test: makes user tokens and starts/stops servers over the REST API.
c.JupyterHub.services = [{"name": "jdk-test-admin", "api_token": s["admin_token"]}] + s.get("services", [])
c.JupyterHub.load_roles = [
    {
        "name": "jdk-test-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "read:users"],
        "services": ["jdk-test-admin"],
    },
    # As deploy/z2jh-values.yaml: the servers' own token may read the user's groups (templates and limits per group).
    {"name": "server", "scopes": ["users:activity!user", "access:servers!server", "read:users:groups!user"]},
] + s.get("roles", [])
# alice and bob in different groups: they see different templates and get different limits.
c.JupyterHub.load_groups = {"gpu-team": {"users": ["alice"]}, "students": {"users": ["bob"]}}

# -- single-user servers: local processes with the jupyter_dask_kube server extension ----------------------
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(s["dir"], "home", "{username}")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]  # jupyterhub must be installed where it runs
c.Spawner.ip = "127.0.0.1"
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.default_url = "/tree"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# Only what the spawner passes is seen by the servers: JUPYTER_CONFIG_DIR holds jupyter_server_config.json
# (extensions on, c.DaskKube.* with backend "kubernetes"), KUBECONFIG the one emulated cluster both users share.
c.Spawner.environment = dict(s["environment"])
if s.get("server_token_scopes"):  # e.g. access to a dask-gateway registered as a hub service
    c.Spawner.server_token_scopes = s["server_token_scopes"]
