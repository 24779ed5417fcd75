"""One user's clusters: create from admin templates, list, scale, adapt, close, re-adopt, limits, idle cull.

Every read (list, get) is served from memory: cluster state comes from the pod watch (PodCache) and
from the scheduler's own worker-status stream, so a page refresh never costs a Kubernetes call.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone

from distributed.core import Status

from ._version import __version__
from .access import Limits, audience, limits_for, visible
from .attach import connect_code
from .bodies import ApiError, CreateRequest
from .cluster import ANNOTATION_WORKER_TEMPLATE, KubeCluster
from .objects import (
    ANNOTATION_WORKERS,
    LABEL_CLUSTER,
    LABEL_COMPONENT,
    cluster_selector,
    parse_scheduler_annotations,
    parse_timestamp,
    scheduler_annotations,
    user_selector,
)
from . import rbac
from .naming import service_name
from .podcache import PodCache
from .podlogs import cluster_pod_logs
from .podstatus import is_terminal, pod_summary, readable_problem
from .runtimes import PodRuntime, RuntimeAPIError
from .lifetimes import LifetimePolicy, lifetime_annotations, parse_lifetime_annotations
from .ownerpod import OwnerPodError, find_owner_pod
from .runtimes.base import readable_error
from .templates import ClusterTemplate, OptionError
from .tls import connect_code as tls_connect_code, secret_name
from .versioncheck import readable_mismatch

logger = logging.getLogger(__name__)

# The verbs of the shipped Role (rbac.yaml), checked by the status preflight.
# (resource, subresource, verb) the status preflight checks: derived from the runtime's table of calls.
RBAC_VERBS = rbac.required_permissions()
PREFLIGHT_TTL = 60.0
LOST_WORKER_WINDOW = 300.0  # how long a lost worker's reason stays in the cluster's warnings
# A scheduler pod this young without its Service may be a create in flight elsewhere: not half-made yet.
HALF_MADE_GRACE = 10.0


@dataclass
class ClusterRecord:
    cluster: KubeCluster
    template: str
    display_name: str
    requested: int
    adapt: dict | None
    cores_per_worker: float
    memory_per_worker: int | None  # None: the worker template does not say
    options: dict
    created: datetime
    state: str = "creating"  # creating | ready | stopping | failed
    message: str = ""
    warnings: list = field(default_factory=list)
    task: asyncio.Task | None = None
    version_task: asyncio.Task | None = None
    #: Adopted with a recorded worker count (made by a manager): bring it back to that count.
    restore_workers: bool = False
    #: (key, model, model as JSON): see ClusterManager._model
    cached_model: tuple = ()
    #: When the cluster ends by itself (lifetimes.py), and whether it outlives the owner's server.
    expires: datetime | None = None
    keep: bool = False

    def cancel_tasks(self):
        for t in (self.task, self.version_task):
            if t is not None and not t.done():
                t.cancel()

    def __post_init__(self):
        self.id: str = self.cluster.name  # fixed for the cluster's life; read on every GET

    @property
    def reserved_workers(self) -> int:
        """The most workers this cluster may run: what limits are checked against."""
        return self.adapt["maximum"] if self.adapt else self.requested


def _per_worker(template: ClusterTemplate) -> tuple[float, int | None]:
    """Cores and memory bytes one worker counts for in the limits. Cores default to 1 (dask's one
    thread); memory None = the template does not say (no limit, request or absolute --memory-limit)."""
    res = template.worker_resources()
    cores = res.get("cores") or 1.0
    memory = res.get("memory")
    return float(cores), (int(memory) if memory else None)


class ClusterManager:
    def __init__(
        self,
        *,
        runtime: PodRuntime,
        username: str,
        templates: list[ClusterTemplate],
        default_template: str | None = None,
        limits: Limits | None = None,
        name_template: str | None = None,
        idle_timeout: float = 0,
        start_timeout: float | None = None,
        port_forward: str | None = None,
        base_url: str = "/",
        options_handler=None,
        template_problems: list[str] | None = None,
        lifetimes: LifetimePolicy | None = None,
        owner_pod: str | None = None,
        owner_namespace: str | None = None,
        groups=None,
        group_limits: dict | None = None,
        network_policy: bool = True,
        network_policy_client_selector: dict | None = None,
        tls: bool | None = None,
    ):
        self.runtime = runtime
        self.username = username
        #: TLS per cluster (tls.py); None: dask config kubernetes.tls
        self.tls = tls
        self.templates = {t.name: t for t in templates}
        self.default_template = default_template
        self.limits = self.default_limits = limits or Limits()
        #: Where the user's JupyterHub groups come from (hubgroups.HubGroups), None outside a hub.
        self.group_source = groups
        self.group_limits = group_limits or {}
        self.groups: frozenset[str] = frozenset()
        self.groups_problem: str | None = None
        self.name_template = name_template
        self.idle_timeout = idle_timeout or 0
        self.start_timeout = start_timeout
        self.port_forward = port_forward  # None: dask config kubernetes.port-forward
        self.base_url = base_url
        self.options_handler = options_handler
        self.template_problems = list(template_problems or []) + self._unsized_templates()
        self.lifetimes = lifetimes or LifetimePolicy()
        #: The notebook pod that owns non-kept clusters (ownerpod.py); None: not in a pod, or turned off.
        self.owner_pod, self.owner_namespace = owner_pod, owner_namespace
        #: A NetworkPolicy per cluster (Kubernetes): only the client pods this selects, and the cluster's own.
        self.network_policy, self.network_policy_client_selector = network_policy, network_policy_client_selector
        self.records: dict[str, ClusterRecord] = {}
        self.pod_cache = PodCache(runtime, user_selector(username))
        self._preflight: tuple[float, list[str]] | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._start_error: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._adopting: set[str] = set()  # clusters whose Service is being checked before adoption
        self._deleted: set[str] = set()  # clusters this manager deleted: late watch events must not revive them
        self._grouped: tuple = ()  # (pod cache generation, pods by cluster id)

    def _unsized_templates(self) -> list[str]:
        """Under max_memory, templates whose workers (with default options) have no memory size: the
        admin sees them in the status problems rather than users meeting a 403 on create."""
        if not self.limits.max_memory:
            return []
        out = []
        for t in self.templates.values():
            try:
                memory = _per_worker(t.apply_options({}))[1]
            except (OptionError, ValueError):
                continue  # reported when used
            if memory is None:
                out.append(f"{t.name!r}: its workers have no memory size (no memory limit or request, no "
                           "--memory-limit size), so it cannot be created under the per-user memory limit")
        return out

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self):
        """Watch the user's pods and re-adopt their clusters (Kubernetes backend). Safe to call again."""
        async with self._start_lock:
            if self._started:
                return
            try:
                await self.pod_cache.start()
            except Exception as exc:
                # Not final: the pod cache keeps retrying, and the next call here tries again at once.
                self._start_error = _start_problem(exc, self.runtime.namespace)
                logger.error("dask-kube: %s", self._start_error)
                raise ApiError(503, self._start_error) from None
            self._start_error = None
            self.pod_cache.subscribe(self._on_pod_event)
            self._started = True
            if self.runtime.backend == "kubernetes":
                await self._readopt()

    async def _readopt(self):
        """Adopt every live cluster of this user found by label (after a restart, or made from Python)."""
        schedulers = [
            p for p in self.pod_cache.pods.values()
            if p["metadata"].get("labels", {}).get(LABEL_COMPONENT) == "scheduler"
        ]
        tasks = [t for t in (await asyncio.gather(*(self._adopt(p) for p in schedulers))) if t]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.info("dask-kube: re-adopted %d cluster(s) of %s", len(tasks), self.username)

    async def _service_appears(self, name: str, timeout: float = 10.0) -> bool:
        """A KubeCluster made elsewhere creates its Service just after its scheduler pod."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with suppress(RuntimeAPIError):
                if await self.runtime.read_service(name) is not None:
                    return True
            await asyncio.sleep(0.25)
        return False

    async def _adopt(self, pod: dict, live: bool = False) -> asyncio.Task | None:
        """Take over the cluster of one scheduler pod; the task that brings it up, or None."""
        name = pod["metadata"].get("labels", {}).get(LABEL_CLUSTER)
        if not name or name in self.records or name in self._deleted:
            return None
        pod = self.pod_cache.pods.get(pod["metadata"]["name"], pod)  # the newest state, not the event's
        if is_terminal(pod) or pod["metadata"].get("deletionTimestamp"):
            # A dead scheduler: remove what is left of that cluster rather than adopt it.
            with suppress(Exception):
                await self.runtime.delete_pod(pod["metadata"]["name"], grace_period_seconds=0)
            return None
        if name in self._adopting:  # already being looked at (re-adoption and a pod event)
            return None
        self._adopting.add(name)
        try:
            if live:  # a pod event: wait for the Service of a create in flight; delete nothing
                if not await self._service_appears(name):
                    return None  # not a remote-scheduler cluster (or still being made): nothing to adopt yet
            elif not await self._has_service(name, pod):  # re-adoption: a half-made cluster is deleted
                return None
        finally:
            self._adopting.discard(name)
        if name in self.records:
            return None
        ann = pod["metadata"].get("annotations") or {}
        meta = parse_scheduler_annotations(ann)
        tmpl = self.templates.get(meta["template"])
        # Only option values the template still offers: the admin may have removed one since.
        options = {k: v for k, v in meta["options"].items() if tmpl and k in {o.name for o in tmpl.options}}
        try:
            worker_template = json.loads(ann[ANNOTATION_WORKER_TEMPLATE])
        except (KeyError, ValueError):
            if tmpl is None:
                logger.warning("dask-kube: cannot adopt %s: no worker template recorded", name)
                return None
            worker_template = tmpl.apply_options(options).worker
        cluster = KubeCluster(
            worker_template,
            name=name,
            adopt=True,
            runtime=self.runtime,
            pod_cache=self.pod_cache,
            username=self.username,
            asynchronous=True,
            shutdown_on_close=False,
            port_forward=self.port_forward,
        )
        cores, memory = _per_worker(ClusterTemplate(name, name, "", False, worker_template))
        rec = ClusterRecord(
            cluster=cluster,
            template=meta["template"] or "(python)",
            display_name=meta["display_name"] or name,
            requested=meta["workers"],
            adapt=meta["adapt"],
            cores_per_worker=cores,
            memory_per_worker=memory,
            options=meta["options"],
            created=meta["created"] or datetime.now(timezone.utc),
            restore_workers=ANNOTATION_WORKERS in ann,  # a KubeCluster from Python records no count
        )
        rec.expires, rec.keep = parse_lifetime_annotations(ann)
        self.records[name] = rec
        rec.task = asyncio.create_task(self._bring_up(rec, adopt=True))
        return rec.task

    async def _has_service(self, name: str, pod: dict) -> bool:
        """Whether the scheduler pod has its Service; if not, delete what is left of the cluster.

        A scheduler pod without a Service is half-made: a create cut short (the server was killed between
        creating the pod and the Service) or a delete cut short (the Service goes first). Neither can be
        adopted (there is no address) and nothing else would ever remove it: the Service and the workers
        hang off the scheduler pod (ownerReferences), not the other way round. A create still in flight
        elsewhere (a KubeCluster from Python) gets HALF_MADE_GRACE seconds from the pod's creation first.
        """
        async def found() -> bool:
            try:
                return await self.runtime.read_service(service_name(name)) is not None
            except RuntimeAPIError:
                return True  # cannot tell (RBAC, API down): adopt as before; its start reports the problem

        if await found():
            return True
        created = parse_timestamp(pod["metadata"].get("creationTimestamp"))
        age = (datetime.now(timezone.utc) - created).total_seconds() if created else HALF_MADE_GRACE
        if age < HALF_MADE_GRACE:
            await asyncio.sleep(HALF_MADE_GRACE - max(age, 0))
            if await found():
                return True
        logger.warning("dask-kube: deleting half-made cluster %s: its scheduler pod has no Service", name)
        with suppress(Exception):
            await self.runtime.delete_pods(cluster_selector(name))
        return False

    async def close(self, *, detach: bool | None = None):
        """On server stop. Kubernetes clusters are detached (kept running for re-adoption); local ones closed."""
        if detach is None:
            detach = self.runtime.backend == "kubernetes"
        for rec in list(self.records.values()):
            rec.cancel_tasks()
            with suppress(Exception):
                if detach:
                    await rec.cluster.detach()
                else:
                    await rec.cluster._shutdown()
        self.records.clear()
        await self.pod_cache.close()

    # -- groups: which templates and limits ------------------------------------------------------
    async def refresh_access(self):
        """Ask (cached) for the user's hub groups; set the limits that apply. A failed lookup: no groups,
        so default limits and no group-only templates, with the reason in ``groups_problem``."""
        if self.group_source is not None:
            self.groups, self.groups_problem = await self.group_source.lookup()
        self.limits = limits_for(self.default_limits, self.group_limits, self.groups)

    def _visible(self) -> dict[str, ClusterTemplate]:
        return {n: t for n, t in self.templates.items() if visible(t, self.username, self.groups)}

    # -- templates -------------------------------------------------------------------------------
    def template_list(self) -> list[dict]:
        default = self._default_template_name()
        out = []
        for t in self._visible().values():
            d = t.to_json(self.runtime.backend)
            d["default"] = t.name == default
            out.append(d)
        return out

    def _default_template_name(self) -> str | None:
        shown = self._visible()
        if self.default_template and self.default_template in shown:
            return self.default_template
        marked = [t.name for t in shown.values() if t.default]
        if marked:
            return marked[0]
        return next(iter(shown), None)

    # -- limits ----------------------------------------------------------------------------------
    def _live_records(self) -> list[ClusterRecord]:
        """Clusters starting or running: what limits count and default names must differ from."""
        return [r for r in self.records.values() if r.state in ("creating", "ready")]

    def _unused_name(self, base: str) -> str:
        """A default name the user's live clusters do not carry yet ("Small", "Small 2", ...), so cards differ."""
        taken = {r.display_name for r in self._live_records()}
        n = 1
        while (name := base if n == 1 else f"{base} {n}") in taken:
            n += 1
        return name

    def _workers_counted(self, rec: ClusterRecord) -> int:
        """Workers a cluster counts for: what it may run (its count or adapt maximum), or the worker
        pods it has when more (a cluster made from Python scales in its own process, unrecorded)."""
        pods = self._pods_by_cluster().get(rec.id, ((),))[0]
        live = sum(
            1 for p in pods
            if p["metadata"].get("labels", {}).get(LABEL_COMPONENT) == "worker" and not is_terminal(p)
        )
        return max(rec.reserved_workers, live)

    def _check_limits(self, workers: int, cores: float, memory: int | None, exclude: str | None = None):
        lim = self.limits
        if lim.max_workers and workers > lim.max_workers:
            raise ApiError(403, f"{workers} workers is above the limit of {lim.max_workers} workers per cluster")
        others = [(r, self._workers_counted(r)) for r in self._live_records() if r.id != exclude]
        if lim.max_cores:
            used = sum(n * r.cores_per_worker for r, n in others)
            if used + workers * cores > lim.max_cores + 1e-9:
                raise ApiError(
                    403,
                    f"{workers} workers x {cores:g} cores would use {used + workers * cores:g} cores; "
                    f"your limit is {lim.max_cores:g} cores across all clusters ({used:g} in use)",
                )
        if lim.max_memory:
            if memory is None and workers > 0:
                # A worker with no memory size may use a whole node: it cannot be counted against a limit.
                raise ApiError(
                    403,
                    "this template does not say how much memory its workers use (no memory limit or request "
                    "on the worker container, no --memory-limit size), and your memory is limited to "
                    f"{lim.max_memory / 2**30:.3g} GiB across all clusters; pick a memory size or ask your hub admin",
                )
            used = sum(n * (r.memory_per_worker or 0) for r, n in others)
            asked = workers * (memory or 0)
            if used + asked > lim.max_memory:
                gib = 2**30
                raise ApiError(
                    403,
                    f"{workers} workers x {(memory or 0) / gib:.3g} GiB would use {(used + asked) / gib:.3g} GiB; "
                    f"your limit is {lim.max_memory / gib:.3g} GiB across all clusters ({used / gib:.3g} GiB in use)",
                )

    # -- create ----------------------------------------------------------------------------------
    async def create(self, req: CreateRequest) -> dict:
        await self.start()
        await self.refresh_access()
        name = req.template or self._default_template_name()
        if name is None:
            raise ApiError(404, "no cluster templates are configured for you; ask your hub admin"
                           + (f" ({self.groups_problem})" if self.groups_problem else ""))
        tmpl = self.templates.get(name)
        if tmpl is None:
            raise ApiError(404, f"unknown template {name!r}; available: {', '.join(self._visible()) or 'none'}")
        if not visible(tmpl, self.username, self.groups):
            why = f"; {self.groups_problem}" if self.groups_problem else ""
            raise ApiError(403, f"template {name!r} is only for {audience(tmpl)}, and you are not among them{why}")
        try:
            values = tmpl.option_values(req.options)
            applied = tmpl.apply_options(req.options)
            if self.options_handler is not None:
                applied = self.options_handler(applied, values) or applied
        except OptionError as exc:
            raise ApiError(exc.status, exc.message) from None
        except ApiError:
            raise
        except ValueError as exc:  # an options_handler refusing a value
            raise ApiError(400, str(exc)) from None
        adapt = req.adapt if req.adapt is not None else (None if req.workers is not None else tmpl.adapt)
        workers = req.workers if req.workers is not None else (0 if adapt else tmpl.workers)
        if self.limits.max_clusters:
            active = len(self._live_records())
            if active >= self.limits.max_clusters:
                raise ApiError(403, f"you already have {active} cluster(s); the limit is {self.limits.max_clusters}")
        cores, memory = _per_worker(applied)
        self._check_limits(adapt["maximum"] if adapt else workers, cores, memory)

        created = datetime.now(timezone.utc)
        display = req.name or self._unused_name(applied.display_name or applied.name)
        annotations = scheduler_annotations(applied.name, display, workers, adapt, values, created)
        expires = self.lifetimes.expires(created, req.keep)
        owner = None
        if self.owner_pod and not req.keep:
            try:  # no owner, no cluster: one that nobody owns would outlive the server
                owner = await find_owner_pod(self.runtime, self.owner_pod, self.owner_namespace)
            except OwnerPodError as exc:
                raise ApiError(409, f"cluster not created: {exc}") from None
        try:
            cluster = KubeCluster(
                applied.worker,
                scheduler_pod_template=applied.scheduler,
                name=self.name_template,
                runtime=self.runtime,
                pod_cache=self.pod_cache,
                username=self.username,
                annotations=annotations,
                idle_timeout=self.idle_timeout or None,
                start_timeout=self.start_timeout,
                n_workers=adapt["minimum"] if adapt else workers,  # made while the scheduler starts
                asynchronous=True,
                shutdown_on_close=False,
                expires=expires,
                keep=req.keep,
                owner_pod=owner,
                no_client_timeout=self.lifetimes.no_client_timeout,
                network_policy=self.network_policy,
                network_policy_client_selector=self.network_policy_client_selector,
                client_namespace=self.owner_namespace,
                port_forward=self.port_forward,
                tls=self.tls,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        rec = ClusterRecord(
            cluster=cluster,
            template=applied.name,
            display_name=display,
            requested=workers,
            adapt=adapt,
            cores_per_worker=cores,
            memory_per_worker=memory,
            options=values,
            created=created,
            warnings=list(cluster.warnings),
            expires=expires,
            keep=req.keep,
        )
        self.records[rec.id] = rec
        rec.task = asyncio.create_task(self._bring_up(rec))
        return self.model(rec)

    async def _bring_up(self, rec: ClusterRecord, adopt: bool = False):
        c = rec.cluster
        try:
            await c
            if rec.adapt:
                c.adapt(minimum=rec.adapt["minimum"], maximum=rec.adapt["maximum"])
            elif adopt and rec.restore_workers and len(c.worker_spec) != rec.requested:
                # The server died mid-scale (or a worker went meanwhile): back to what the user asked for.
                c.scale(rec.requested)
            rec.state = "ready"
            rec.version_task = asyncio.create_task(self._check_versions(rec))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            rec.state = "failed"
            rec.message = _reason(exc)
            logger.warning("dask-kube: cluster %s failed to %s: %s", rec.id, "adopt" if adopt else "start", rec.message)
            with suppress(Exception):
                # A cluster we only tried to adopt is not ours to delete: let go of it, keep its pods.
                await (c.detach() if adopt else c._shutdown())

    async def _check_versions(self, rec: ClusterRecord):
        """Seed best practice 1: warn when the workers' packages differ from this server's."""
        from distributed.versions import get_versions, error_message

        with suppress(Exception):
            # Waits on the scheduler's push stream: polling identity() here cost 10 RPCs/s per idle cluster.
            await rec.cluster.first_worker.wait()
            comm = rec.cluster.scheduler_comm
            scheduler = await comm.versions()
            workers = await comm.broadcast(msg={"op": "versions"}, on_error="ignore")
            msg = error_message(scheduler=scheduler, workers=workers, source=get_versions(), source_name="Jupyter server")
            if msg.get("warning"):
                rec.warnings.append(readable_mismatch(msg["warning"]))

    # -- read ------------------------------------------------------------------------------------
    def get(self, cluster_id: str) -> ClusterRecord:
        rec = self.records.get(cluster_id)
        if rec is None:
            raise ApiError(404, f"no cluster {cluster_id!r}")
        return rec

    def _pods_by_cluster(self) -> dict[str, tuple[list[dict], tuple]]:
        """Cluster id -> (its pods, their (name, resourceVersion) signature), regrouped only after the pod
        cache changed, so a GET compares signatures it did not have to rebuild (shared: do not modify)."""
        generation = self.pod_cache.generation
        if self._grouped[:1] != (generation,):
            by_cluster: dict[str, list[dict]] = {}
            for p in self.pod_cache.pods.values():  # one pass over the pods, not one per cluster
                by_cluster.setdefault(p["metadata"].get("labels", {}).get(LABEL_CLUSTER, ""), []).append(p)
            grouped = {
                cid: (pods, tuple((p["metadata"].get("name"), p["metadata"].get("resourceVersion")) for p in pods))
                for cid, pods in by_cluster.items()
            }
            self._grouped = (generation, grouped)
        return self._grouped[1]

    def _sorted_records(self) -> list[ClusterRecord]:
        return sorted(self.records.values(), key=lambda r: r.created)

    def list(self) -> list[dict]:
        return [self._model(r)[0] for r in self._sorted_records()]

    def list_json(self) -> str:
        """The list answer as JSON text, built from each cluster's cached JSON."""
        return '{"clusters": [' + ", ".join(self._model(r)[1] for r in self._sorted_records()) + "]}"

    def model(self, rec: ClusterRecord) -> dict:
        """The cluster as the REST API shows it (shared with a cache: do not modify)."""
        return self._model(rec)[0]

    def model_json(self, rec: ClusterRecord) -> str:
        return self._model(rec)[1]

    def _model(self, rec: ClusterRecord) -> tuple[dict, str]:
        """(model, its JSON), rebuilt only when something it shows changed: a GET of 50 clusters then
        costs a key comparison per cluster instead of 50 pod summaries and a JSON encoding."""
        c = rec.cluster
        info = getattr(c, "scheduler_info", None)
        info = info if isinstance(info, dict) else {}
        workers = info.get("workers", {})
        # The worker-status stream records a worker at its "add" (status often still "init"): count them all.
        connected = len(workers)
        cores = sum(w.get("nthreads", 0) for w in workers.values())
        memory = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        pods, signature = self._pods_by_cluster().get(rec.id, ([], ()))
        ready = rec.state == "ready"
        key = (
            rec.state, rec.message, rec.requested, tuple(rec.adapt.values()) if rec.adapt else None, len(rec.warnings),
            c.status, c.problem, len(c.worker_spec), connected, cores, memory, signature,
            tuple(self._recent_losses(c)) if getattr(c, "lost_workers", None) else (),
            # what the dashboard link is made of: it is formatted only when these change
            c.scheduler_address if ready else "", info.get("services", {}).get("dashboard") if ready else None,
        )
        if rec.cached_model[:1] != (key,):
            model = self._build_model(rec, pods, connected, cores, memory)
            rec.cached_model = (key, model, json.dumps(model))
        return rec.cached_model[1], rec.cached_model[2]

    def _build_model(self, rec: ClusterRecord, pods: list[dict], connected: int, cores: float, memory: int) -> dict:
        c = rec.cluster
        pods = [dict(pod_summary(p)) for p in pods]
        pods.sort(key=lambda p: (p["role"] != "scheduler", p["name"]))
        status, message = rec.state, rec.message
        if rec.state == "ready":
            if c.status == Status.failed or c.problem and c.status != Status.running:
                status, message = "failed", c.problem or "cluster failed"
            else:
                target = rec.adapt["minimum"] if rec.adapt else len(c.worker_spec)
                status = "running" if connected >= target else "starting"
                message = c.problem or ""
        elif rec.state == "creating":
            sched = next((p for p in pods if p["role"] == "scheduler"), None)
            status = "starting" if sched and sched["phase"] == "Running" else "pending"
        if not message and status in ("pending", "starting"):
            # pod_wait_message: the first pod not running, with its reason first ("waiting for a node: ...")
            message = next((readable_problem(p) for p in pods if p["reason"] and p["phase"] != "Running"), "")
        address = c.scheduler_address if rec.state == "ready" else ""
        return {
            "id": rec.id,
            "name": rec.display_name,
            "template": rec.template,
            "backend": self.runtime.backend,
            "status": status,
            "message": message,
            "scheduler_address": address or "",
            "dashboard_link": self._dashboard(rec) if rec.state == "ready" else "",
            "workers": connected,
            "requested_workers": len(c.worker_spec) if rec.state == "ready" else rec.requested,
            "cores": cores,
            "memory": memory,
            "adapt": dict(rec.adapt) if rec.adapt else rec.adapt,
            "created": rec.created.isoformat(),
            "pods": pods,
            "warnings": list(rec.warnings) + self._recent_losses(c),
            "expires": rec.expires.isoformat() if rec.expires else None,
            "keep": rec.keep,
            **({"connect_code": connect_code(rec.id, self.runtime.namespace)}
               if self.runtime.backend == "kubernetes" else self._local_connect_code(rec, address)),
        }

    @staticmethod
    def _local_connect_code(rec: ClusterRecord, address: str) -> dict:
        """Local backend with TLS: the snippet the panel inserts connects with the owner-only credential
        files (their paths only: never a key in a REST answer)."""
        directory = rec.cluster.credentials_directory if address else None
        return {"connect_code": tls_connect_code(address, directory)} if directory else {}

    @staticmethod
    def _recent_losses(c: KubeCluster, window: float = LOST_WORKER_WINDOW) -> list[str]:
        """Workers lost lately, with why: a replacement hides an eviction or OOM kill from the pod list."""
        now = time.time()
        recent = [(t, n, r) for t, n, r in getattr(c, "lost_workers", ()) if now - t <= window]
        if not recent:
            return []
        t, name, reason = recent[-1]
        more = f" ({len(recent)} in the last {window / 60:.0f} min)" if len(recent) > 1 else ""
        return [f"Worker {name} was lost {now - t:.0f}s ago: {reason}{more}"]

    def _dashboard(self, rec: ClusterRecord) -> str:
        # Called only when the model is rebuilt, whose key holds what the link is made of.
        try:
            return rec.cluster.dashboard_url(self.base_url)
        except ValueError:  # an admin's distributed.dashboard.link that cannot be formatted
            return ""

    def scheduler_hosts(self) -> set[str]:
        """Hosts of this user's live schedulers: all the dashboard proxy may reach."""
        return {r.cluster.scheduler_host for r in self.records.values() if r.state == "ready"} - {""}

    # -- change ----------------------------------------------------------------------------------
    def _ready(self, cluster_id: str) -> ClusterRecord:
        rec = self.get(cluster_id)
        if rec.state == "creating":
            raise ApiError(409, f"cluster {cluster_id} is still starting; try again when it runs")
        if rec.state != "ready":
            raise ApiError(409, f"cluster {cluster_id} is {rec.state}")
        return rec

    async def scale(self, cluster_id: str, workers: int) -> dict:
        rec = self._ready(cluster_id)
        self._check_limits(workers, rec.cores_per_worker, rec.memory_per_worker, exclude=rec.id)
        c = rec.cluster
        c.stop_adapting()
        c.scale(workers)
        rec.requested, rec.adapt = workers, None
        await self._save(rec)
        return self.model(rec)

    async def adapt(self, cluster_id: str, adapt: dict | None) -> dict:
        rec = self._ready(cluster_id)
        c = rec.cluster
        if adapt is None:
            c.stop_adapting()
            rec.adapt, rec.requested = None, len(c.worker_spec)
        else:
            self._check_limits(adapt["maximum"], rec.cores_per_worker, rec.memory_per_worker, exclude=rec.id)
            c.adapt(minimum=adapt["minimum"], maximum=adapt["maximum"])
            rec.adapt = adapt
        await self._save(rec)
        return self.model(rec)

    async def _save(self, rec: ClusterRecord):
        """Record requested workers and adapt bounds on the scheduler pod, for re-adoption."""
        if rec.cluster.deploy_mode != "remote":
            return
        ann = scheduler_annotations(rec.template, rec.display_name, rec.requested, rec.adapt, rec.options, rec.created)
        ann.update(lifetime_annotations(rec.expires, rec.keep))
        try:
            await self.runtime.annotate_pod(rec.cluster.scheduler.name, ann)
        except (RuntimeAPIError, NotImplementedError) as exc:
            logger.warning("dask-kube: could not record state of %s: %s", rec.id, exc)

    async def delete(self, cluster_id: str):
        rec = self.get(cluster_id)
        if rec.state == "stopping":
            return
        rec.state = "stopping"
        self._deleted.add(cluster_id)
        task = rec.task
        rec.cancel_tasks()
        if task is not None:
            with suppress(BaseException):
                await task
        try:
            await rec.cluster._shutdown()
            # Also when the cluster object had let go (a failed adoption): the user asked for it gone.
            await asyncio.gather(
                self.runtime.delete_pods(f"{LABEL_CLUSTER}={cluster_id}"),
                self.runtime.delete_service(cluster_id),
                *([self.runtime.delete_secret(secret_name(cluster_id))] if rec.cluster.tls else []),
                return_exceptions=True,
            )
        finally:
            self.records.pop(cluster_id, None)

    async def logs(self, cluster_id: str) -> dict[str, str]:
        rec = self.get(cluster_id)
        return await cluster_pod_logs(self.runtime, self.pod_cache.pods, rec.id)

    def _on_pod_event(self, etype: str, pod: dict):
        """A new scheduler pod of this user that we did not make (a KubeCluster from Python): adopt it
        once it runs. Idle-timeout ends: the scheduler exits 0 by itself; forget the cluster."""
        labels = pod["metadata"].get("labels", {})
        rec = self.records.get(labels.get(LABEL_CLUSTER, ""))
        if (
            rec is None
            and self.runtime.backend == "kubernetes"
            and labels.get(LABEL_COMPONENT) == "scheduler"
            and etype != "DELETED"
            and pod.get("status", {}).get("phase") == "Running"
        ):
            self._background(self._adopt(pod, live=True))
            return
        if rec is None or labels.get(LABEL_COMPONENT) != "scheduler" or rec.state != "ready":
            return
        ends_itself = self.idle_timeout or rec.expires or self.lifetimes.no_client_timeout
        if ends_itself and pod.get("status", {}).get("phase") == "Succeeded":
            # The scheduler closed itself (idle, lifetime or no client: its log says which): remove the rest.
            logger.info("dask-kube: cluster %s ended by itself (idle timeout %ss, expiry %s, no-client timeout %ss)",
                        rec.id, self.idle_timeout, rec.expires, self.lifetimes.no_client_timeout)
            self._background(self.delete(rec.id))

    def _background(self, coro):
        """Run a coroutine after this event; keep a reference so it is not garbage-collected mid-way."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- status ----------------------------------------------------------------------------------
    async def status(self) -> dict:
        problems = [f"bad template: {p}" for p in self.template_problems]
        await self.refresh_access()
        if self.groups_problem:
            problems.append(self.groups_problem)
        if self._start_error:
            problems.append(self._start_error)
        can_i = getattr(self.runtime, "can_i", None)
        if can_i is not None:
            now = time.monotonic()
            if self._preflight is None or now - self._preflight[0] > PREFLIGHT_TTL:
                checks = rbac.preflight_checks(self.network_policy and self.runtime.network_policies)
                try:
                    results = await asyncio.gather(*(can_i(v, r, s, g) for g, r, s, v in checks))
                    exists = None
                    if not any(results) and hasattr(self.runtime, "namespace_exists"):
                        exists = await self.runtime.namespace_exists()
                    found = _rbac_problems(checks, results, self.runtime.namespace, exists)
                except RuntimeAPIError as exc:
                    found = [f"Kubernetes API not reachable: {exc.message or exc}"]
                self._preflight = (now, found)
            problems.extend(self._preflight[1])
        if not self.templates:
            problems.append("no cluster templates are configured")
        if self.owner_pod:
            try:
                await find_owner_pod(self.runtime, self.owner_pod, self.owner_namespace)
            except OwnerPodError as exc:
                problems.append(f"clusters cannot follow your server: {exc}")
        return {
            "backend": self.runtime.backend,
            "namespace": self.runtime.namespace,
            "version": __version__,
            "problems": problems,
        }


def _rbac_problems(checks, results, namespace: str, exists: bool | None = None) -> list[str]:
    """The preflight's words for the permissions it found missing. None at all in the namespace (a namespace per
    user that was never made, or made without its RoleBinding) leads with one problem that says what to make;
    ``exists`` (None: unknown, the namespace may not be read) says which of the two it is."""
    missing = [rbac.describe(r, s, v, g) for (g, r, s, v), ok in zip(checks, results) if not ok]
    head = []
    if missing and len(missing) == len(checks):
        what = {False: f"namespace {namespace} does not exist",
                True: f"namespace {namespace} exists but has no RoleBinding for this server's service account",
                None: "the namespace does not exist, or it has no RoleBinding for this server's service account"}
        head = [f"no RBAC permissions in namespace {namespace}: {what[exists]}; ask your hub admin to create "
                "what is missing (README: 'A namespace per user'; Role in deploy/rbac.yaml)"]
    return head + [f"missing RBAC permission: {m} in namespace {namespace}" for m in missing]


def _start_problem(exc: BaseException, namespace: str) -> str:
    """Why the user's pods cannot be watched, worded for the one who can fix it."""
    if isinstance(exc, RuntimeAPIError) and exc.status == 403:
        return (
            f"Forbidden: this Jupyter server may not list pods in namespace {namespace} ({exc.message}); "
            "ask your hub admin to apply the RBAC Role (deploy/rbac.yaml)"
        )
    if isinstance(exc, RuntimeAPIError) and exc.status:
        return f"cannot watch pods: {_reason(exc)}"
    return f"Kubernetes API not reachable: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """A readable one-line reason from an exception chain (the API's or the pod's own words)."""
    while isinstance(exc, RuntimeError) and exc.__cause__ is not None and str(exc).startswith("Cluster failed to start"):
        exc = exc.__cause__
    return readable_error(exc)
