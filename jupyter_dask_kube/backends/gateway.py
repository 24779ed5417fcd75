"""Dask-Gateway as a backend (``c.DaskKube.backend = "gateway"``): the panel in front of a hub's dask-gateway.

Everything goes through dask-gateway's own client (``dask_gateway.Gateway``, async API), found the way it finds
the gateway itself: dask config ``gateway.address``, ``gateway.proxy-address``, ``gateway.public-address`` and
``gateway.auth.type`` (``jupyterhub`` reads ``JUPYTERHUB_API_TOKEN``, which every single-user server has). The
gateway decides who owns what: the list is the gateway's list for these credentials, so clusters made in a
notebook with ``Gateway().new_cluster()`` show up, and nobody else's do.

Worker counts come from the scheduler itself, asked (``identity``) over the gateway's TLS proxy with the
cluster's credentials when the panel reads. Not by subscribing to its worker-status stream as GatewayCluster
does: a scheduler keeps ONE such subscriber (distributed's WorkerStatusPlugin has a fixed name), so ours would
take the stream from the notebook's GatewayCluster widget, and the notebook's would silence ours.
"""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from dataclasses import dataclass, field

import aiohttp
import dask.config
from dask_gateway import Gateway
from dask_gateway.client import GatewayClusterError, GatewayServerError
from distributed.core import rpc

from .._version import __version__
from ..bodies import ApiError, CreateRequest
from . import gateway_models
from .base import ClusterBackend

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds for one call to the gateway (its own ?wait long-polls are shorter)
FRESH = 0.05  # a scheduler's worker table younger than this is not asked again
READ_WAIT = 1.0  # how long a GET waits for the schedulers' answers before showing what it has


@dataclass
class GatewayRecord:
    """What we know of one gateway cluster beyond the gateway's report."""

    name: str
    display_name: str | None = None
    requested: int | None = None  # None: made elsewhere, count unknown until we scale it
    adapt: dict | None = None
    message: str = ""
    warnings: list = field(default_factory=list)
    scheduler: rpc | None = None  # to the scheduler through the gateway's proxy, with the cluster's TLS
    worker_table: dict | None = None  # the scheduler's identity()["workers"]; None before the first answer
    read_at: float = -1e9
    reading: asyncio.Task | None = None
    task: asyncio.Task | None = None  # our create: wait for the scheduler, then scale or adapt

    def workers(self) -> dict | None:
        return self.worker_table


class GatewayBackend(ClusterBackend):
    name = "gateway"

    def __init__(self, *, address=None, proxy_address=None, public_address=None, auth=None):
        # None: dask-gateway's own lookup (dask config gateway.*)
        self._client_args = dict(address=address, proxy_address=proxy_address, public_address=public_address, auth=auth)
        self.gateway: Gateway | None = None
        self.records: dict[str, GatewayRecord] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        if self.gateway is not None:
            return self.gateway.address
        return self._client_args["address"] or str(dask.config.get("gateway.address", None))

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self):
        if self.gateway is not None:
            return
        try:
            self.gateway = Gateway(asynchronous=True, **self._client_args)
        except Exception as exc:  # no address, or an auth type that cannot be set up (no JupyterHub token...)
            raise ApiError(503, f"Dask Gateway not configured: {exc} (dask config gateway.address, gateway.auth.type)") from None

    async def close(self):
        for t in list(self._tasks):
            t.cancel()
        for rec in list(self.records.values()):
            await self._forget(rec)
        if self.gateway is not None:
            with suppress(Exception):
                await self.gateway.close()
            self.gateway = None

    # -- talking to the gateway ------------------------------------------------------------------
    async def _call(self, coro, *, cluster: str | None = None, refusal: int = 403):
        """Await a gateway client call; its failures as ApiErrors with the gateway's own words.

        ``cluster``: the call is about that cluster, so "not found" and "not yours" are both a 404 (another
        user's cluster names are not confirmed). ``refusal``: the status for the gateway refusing a request
        (HTTP 422: options its config rejects, limits)."""
        try:
            return await asyncio.wait_for(coro, REQUEST_TIMEOUT)
        except ValueError as exc:  # the client's translation of the gateway's 404 and 422
            if cluster is not None and "not found" in str(exc).lower():
                raise ApiError(404, f"no cluster {cluster!r}") from None
            raise ApiError(refusal, f"Dask Gateway refused: {exc}") from None
        except GatewayClusterError as exc:  # 409: e.g. the cluster is not running (yet)
            raise ApiError(409, f"Dask Gateway: {exc}") from None
        except GatewayServerError as exc:
            raise ApiError(503, f"Dask Gateway error: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            if exc.status == 401:
                raise ApiError(503, f"Dask Gateway at {self.address} refused our credentials ({exc.status} "
                                    f"{exc.message}): check dask config gateway.auth") from None
            if exc.status == 403 and cluster is not None:
                raise ApiError(404, f"no cluster {cluster!r}") from None
            raise ApiError(503, f"Dask Gateway at {self.address}: {exc.status} {exc.message}") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise ApiError(503, f"Dask Gateway at {self.address} not reachable: {exc or type(exc).__name__}") from None

    async def _post(self, cluster: str, action: str, body: dict) -> dict:
        """POST to a cluster's scale/adapt route through the client's own request (auth, session, errors).

        ``Gateway.scale_cluster`` would turn the gateway's answer (``{"ok": false, "msg": "... would exceed
        resource limit ..."}``) into a warnings.warn; we need it as the answer to the user."""
        gw = self.gateway
        resp = await self._call(gw._request("POST", f"{gw.address}/api/v1/clusters/{cluster}/{action}", json=body),
                                cluster=cluster)
        with suppress(Exception):
            return await resp.json()
        return {}

    async def _report(self, cluster_id: str):
        await self.start()
        report = await self._call(self.gateway.get_cluster(cluster_id), cluster=cluster_id)
        if report.status.name == "STOPPED":  # the gateway keeps stopped clusters on record; for us they are gone
            rec = self.records.get(cluster_id)
            if rec is not None:
                await self._forget(rec)
            raise ApiError(404, f"no cluster {cluster_id!r} (it was shut down)")
        return report

    # -- watching the schedulers -----------------------------------------------------------------
    def _background(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _record(self, name: str) -> GatewayRecord:
        rec = self.records.get(name)
        if rec is None:
            rec = self.records[name] = GatewayRecord(name)
        return rec

    def _connect(self, rec: GatewayRecord, report):
        """An rpc to a running cluster's scheduler (the report carries the address and TLS credentials)."""
        if rec.scheduler is None and report.scheduler_address and report.security is not None:
            rec.scheduler = rpc(report.scheduler_address,
                                connection_args=report.security.get_connection_args("client"))

    async def _read_workers(self, rec: GatewayRecord):
        try:
            info = await asyncio.wait_for(rec.scheduler.identity(), REQUEST_TIMEOUT)
            rec.worker_table = info.get("workers", {})
            rec.read_at = asyncio.get_running_loop().time()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the scheduler is going away, or not reachable yet: keep what we had
            logger.debug("dask-kube: cannot read the workers of %s: %s", rec.name, exc)

    async def _refresh(self, records: list[GatewayRecord]):
        """Fresh worker tables for these clusters, waiting at most READ_WAIT (one read per cluster in flight)."""
        now = asyncio.get_running_loop().time()
        waits = []
        for rec in records:
            if rec.scheduler is None or now - rec.read_at < FRESH:
                continue
            if rec.reading is None or rec.reading.done():
                rec.reading = self._background(self._read_workers(rec))
            waits.append(rec.reading)
        if waits:
            await asyncio.wait(waits, timeout=READ_WAIT)

    async def _forget(self, rec: GatewayRecord):
        self.records.pop(rec.name, None)
        for t in (rec.task, rec.reading):
            if t is not None and not t.done():
                t.cancel()
        if rec.scheduler is not None:
            with suppress(Exception):
                await rec.scheduler.close_rpc()
            rec.scheduler = None

    async def _models(self, reports) -> list[dict]:
        recs = []
        for report in reports:
            rec = self._record(report.name)
            if report.status.name == "RUNNING":
                self._connect(rec, report)
                recs.append(rec)
        await self._refresh(recs)
        return [self._model(r) for r in reports]

    def _model(self, report) -> dict:
        rec = self._record(report.name)
        return gateway_models.cluster_model(
            report, workers=rec.workers() if report.status.name == "RUNNING" else {}, requested=rec.requested,
            adapt=rec.adapt, display_name=rec.display_name, message=rec.message, warnings=rec.warnings,
        )

    # -- read ------------------------------------------------------------------------------------
    async def templates(self) -> list[dict]:
        await self.start()
        options = await self._call(self.gateway.cluster_options(), refusal=503)
        return [gateway_models.template(options, self.gateway.address)]

    async def _list(self) -> list[dict]:
        await self.start()
        reports = await self._call(self.gateway.list_clusters(), refusal=503)
        live = {r.name for r in reports}
        for name in [n for n in self.records if n not in live]:  # stopped, here or elsewhere
            rec = self.records[name]
            if rec.task is None or rec.task.done():
                await self._forget(rec)
        models = await self._models(reports)
        models.sort(key=lambda m: (m["created"] or "", m["id"]))
        return models

    async def list_json(self) -> str:
        return json.dumps({"clusters": await self._list()})

    async def cluster_json(self, cluster_id: str) -> str:
        (model,) = await self._models([await self._report(cluster_id)])
        return json.dumps(model)

    async def status(self) -> dict:
        problems = []
        try:
            await self.start()
            await self._call(self.gateway.list_clusters(), refusal=503)
        except ApiError as exc:
            problems.append(exc.message)
        return {"backend": self.name, "namespace": self.address, "version": __version__, "problems": problems}

    async def logs(self, cluster_id: str) -> dict[str, str]:
        """The scheduler's and workers' recent log lines, read over the scheduler connection (TLS, via the proxy)."""
        await self._report(cluster_id)  # 404 for a cluster that is not ours
        rec = self.records.get(cluster_id)
        if rec is None or rec.scheduler is None:
            return {}
        out = {}
        try:
            out["scheduler"] = "\n".join(line for _, line in await rec.scheduler.get_logs())
            for worker, lines in (await rec.scheduler.worker_logs()).items():
                out[worker] = "\n".join(line for _, line in lines)
        except Exception as exc:  # the scheduler went away while we read
            out.setdefault("scheduler", f"(logs not readable: {exc})")
        return out

    # -- change ----------------------------------------------------------------------------------
    async def create(self, req: CreateRequest) -> dict:
        await self.start()
        if req.template not in (None, gateway_models.TEMPLATE_NAME):
            raise ApiError(404, f"no template {req.template!r} (the gateway backend offers {gateway_models.TEMPLATE_NAME!r})")
        options = await self._call(self.gateway.cluster_options(), refusal=503)
        gateway_models.apply_options(options, req.options)  # 400 before anything is made
        name = await self._call(self.gateway.submit(options))
        rec = self._record(name)
        rec.display_name = req.name
        rec.adapt = req.adapt
        rec.requested = req.workers if req.workers is not None else 0
        try:
            report = await self._report(name)
        except ApiError:  # made but not reportable: take it back rather than leave it behind
            with suppress(Exception):
                await self.gateway.stop_cluster(name)
            await self._forget(rec)
            raise
        rec.task = self._background(self._bring_up(rec))
        return self._model(report)

    async def _bring_up(self, rec: GatewayRecord):
        try:
            report = await self._report(rec.name)
            while report.status.name == "PENDING":  # the gateway answers ?wait when the status changes
                report = await self._call(self.gateway.get_cluster(rec.name, wait=True), cluster=rec.name)
            if report.status.name != "RUNNING":
                rec.message = f"the gateway reports the cluster {report.status.name.lower()}"
                return
            self._connect(rec, report)
            if rec.adapt:
                await self._adapt(rec, rec.adapt)
            elif rec.requested:
                await self._scale(rec, rec.requested)
        except ApiError as exc:
            rec.message = exc.message
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the cluster failed to start: the gateway's report says FAILED
            rec.message = f"{type(exc).__name__}: {exc}"

    async def _scale(self, rec: GatewayRecord, workers: int) -> str | None:
        """Scale; the gateway's limit message when it scaled to less than asked."""
        answer = await self._post(rec.name, "scale", {"count": workers})
        rec.adapt = None
        rec.requested = workers
        refused = None if answer.get("ok", True) else answer.get("msg")
        if refused:
            rec.warnings = [refused]
            with suppress(ValueError, IndexError):  # "... Scaling to 4 instead."
                rec.requested = int(refused.rsplit("Scaling to ", 1)[1].split()[0])
        else:
            rec.warnings = []
        return refused

    async def _adapt(self, rec: GatewayRecord, adapt: dict | None) -> str | None:
        if adapt is None:
            await self._refresh([rec])
            workers = rec.workers()
            answer = await self._post(rec.name, "adapt", {"active": False})
            rec.adapt = None
            rec.requested = len(workers) if workers is not None else rec.requested
        else:
            answer = await self._post(rec.name, "adapt", {**adapt, "active": True})
            rec.adapt = dict(adapt)
        refused = None if answer.get("ok", True) else answer.get("msg")
        rec.warnings = [refused] if refused else []
        return refused

    async def _running(self, cluster_id: str) -> GatewayRecord:
        report = await self._report(cluster_id)
        if report.status.name != "RUNNING":
            raise ApiError(409, f"cluster {cluster_id} is {report.status.name.lower()}, not running yet")
        rec = self._record(cluster_id)
        self._connect(rec, report)
        return rec

    async def scale(self, cluster_id: str, workers: int) -> dict:
        rec = await self._running(cluster_id)
        refused = await self._scale(rec, workers)
        if refused:
            raise ApiError(403, f"Dask Gateway: {refused}")
        return self._model(await self._report(cluster_id))

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        rec = await self._running(cluster_id)
        refused = await self._adapt(rec, adapt)
        if refused:
            raise ApiError(403, f"Dask Gateway: {refused}")
        return self._model(await self._report(cluster_id))

    async def delete(self, cluster_id: str):
        await self._report(cluster_id)  # 404 for a cluster that is not ours (the gateway would answer 204)
        await self._call(self.gateway.stop_cluster(cluster_id), cluster=cluster_id)
        rec = self.records.get(cluster_id)
        if rec is not None:
            await self._forget(rec)
