"""Dashboard links and the jupyter-server-proxy host allow-list.

Links follow ``distributed.dashboard.link`` (formatted with host, port, scheme and every environment
variable, as in the seed). When that key is left at distributed's default and we run under JupyterHub
(or inside a Jupyter server with a base_url), the link goes through jupyter-server-proxy instead, so it
works behind the hub: ``{prefix}proxy/{host}:{port}/status``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import dask.config

DISTRIBUTED_DEFAULT = "{scheme}://{host}:{port}/status"
PROXY_TEMPLATE = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{host}:{port}/status"


def dashboard_link(host: str, port: int | str, *, base_url: str | None = None, env=None) -> str:
    env = dict(os.environ if env is None else env)
    template = dask.config.get("distributed.dashboard.link", DISTRIBUTED_DEFAULT)
    prefix = base_url or env.get("JUPYTERHUB_SERVICE_PREFIX")
    if template == DISTRIBUTED_DEFAULT and prefix:
        template = PROXY_TEMPLATE
        env["JUPYTERHUB_SERVICE_PREFIX"] = prefix if prefix.endswith("/") else prefix + "/"
    values = {**env, "host": host, "port": port, "scheme": "http"}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"distributed.dashboard.link {template!r} cannot be formatted: {exc!r}") from None


def host_allowlist(hosts: Callable[[], Iterable[str]]) -> Callable:
    """A jupyter-server-proxy ``host_allowlist`` callable admitting exactly ``hosts()`` (looked up per request).

    jupyter-server-proxy calls it as ``allow(handler, host)``; ``host`` has no port.
    """

    def allow(handler, host: str) -> bool:
        return host in set(hosts())

    return allow
