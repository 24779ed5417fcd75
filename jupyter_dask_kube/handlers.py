"""Thin REST handlers over the cluster backend (backends/base.py; the API is written down in openapi.yaml).

Every handler is authenticated and authorized by jupyter_server (XSRF included for non-GET), validates
its body in bodies.py, and answers errors as JSON ``{"message": ...}`` with a 4xx.
"""
from __future__ import annotations

import functools
import json
import logging
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import advisories
from .bodies import ApiError, parse_create, parse_json, parse_patch
from .runtimes import RuntimeAPIError

logger = logging.getLogger(__name__)
AUTH_RESOURCE = "dask-kube"
OPENAPI = os.path.join(os.path.dirname(__file__), "openapi.yaml")


def answers_errors(method):
    """ApiError -> its status; a Kubernetes refusal -> 403/409/503 with the API's own words."""

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except ApiError as exc:
            self._error(exc.status, exc.message)
        except RuntimeAPIError as exc:
            status = exc.status if exc.status in (403, 404, 409, 422) else 503
            self._error(status, f"Kubernetes: {exc.reason}: {exc.message}" if exc.status else exc.message)

    return wrapper


class DaskKubeHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def backend(self):
        return self.settings["dask_kube_backend"]

    def _error(self, status: int, message: str):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def _json(self, data, status: int = 200):
        self._json_text(json.dumps(data), status)

    def _json_text(self, text: str, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(text)

    def _body(self) -> dict:
        return parse_json(self.request.body)


class TemplatesHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    @answers_errors
    async def get(self):
        self._json({"templates": await self.backend.templates()})


class ClustersHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    @answers_errors
    async def get(self):
        self._json_text(await self.backend.list_json())

    @web.authenticated
    @authorized
    @answers_errors
    async def post(self):
        req = parse_create(self._body())
        model = await self.backend.create(req)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + model["id"])
        self._json(model, 201)


class ClusterHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, cluster_id):
        self._json_text(await self.backend.cluster_json(cluster_id))

    @web.authenticated
    @authorized
    @answers_errors
    async def patch(self, cluster_id):
        change = parse_patch(self._body())
        if "workers" in change:
            model = await self.backend.scale(cluster_id, change["workers"])
        else:
            model = await self.backend.adapt(cluster_id, change["adapt"])
        self._json(model)

    @web.authenticated
    @authorized
    @answers_errors
    async def delete(self, cluster_id):
        await self.backend.delete(cluster_id)
        self.set_status(204)
        self.finish()


class LogsHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    @answers_errors
    async def get(self, cluster_id):
        self._json({"logs": await self.backend.logs(cluster_id)})


class StatusHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    @answers_errors
    async def get(self):
        status = await self.backend.status()
        # running versions older than the security floor (advisories.py), for every backend
        status["warnings"] = [*status.get("warnings", []), *advisories.status_warnings()]
        self._json(status)


class OpenAPIHandler(DaskKubeHandler):
    @web.authenticated
    @authorized
    async def get(self):
        with open(OPENAPI) as f:
            # APIHandler.finish would otherwise label the YAML document application/json
            self.finish(f.read(), set_content_type="application/yaml")


class NotFoundHandler(DaskKubeHandler):
    """Any other path under the API (or an id the routes do not match): a JSON 404, not the HTML page."""

    @web.authenticated
    async def _not_found(self, *args):
        self._error(404, f"no such API path: {self.request.path}")

    get = post = put = patch = delete = _not_found


def handlers(prefix: str = "dask-kube/api") -> list[tuple]:
    cid = r"([A-Za-z0-9][A-Za-z0-9.\-]{0,252})"
    return [
        (rf"/{prefix}/templates/?", TemplatesHandler),
        (rf"/{prefix}/clusters/?", ClustersHandler),
        (rf"/{prefix}/clusters/{cid}/?", ClusterHandler),
        (rf"/{prefix}/clusters/{cid}/logs/?", LogsHandler),
        (rf"/{prefix}/status/?", StatusHandler),
        (rf"/{prefix}/openapi.yaml", OpenAPIHandler),
        (rf"/{prefix}(/.*)?", NotFoundHandler),
    ]
