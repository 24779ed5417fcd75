"""KubeCluster: a Dask cluster of pods, on ``distributed.deploy.SpecCluster``.

Written once against the pod runtime interface (runtimes/base.py): the same code drives a real
Kubernetes API and the embedded local runtime. Pod states come from one watch (PodCache), never from
polling, so a scheduler that cannot start is reported with its reason at once instead of hanging
(classic dask-kubernetes #404).
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import ipaddress
import json
import logging
import os
import time
import weakref
from contextlib import suppress
from urllib.parse import urlsplit

import dask.config
from distributed.core import Status
from distributed.comm import connect
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.utils import Log, Logs, get_ip

from . import config  # noqa: F401  (kubernetes.* defaults)
from .attach import service_address
from .dashboard import dashboard_link as format_link
from .naming import (
    current_user,
    format_cluster_name,
    network_policy_name,
    new_worker_suffix,
    scheduler_pod_name,
    service_name,
    worker_pod_name,
)
from .objects import (
    LABEL_COMPONENT,
    build_network_policy,
    build_scheduler_pod,
    build_service,
    client_selector,
    WorkerPodBuilder,
    cluster_selector,
    resource_warnings,
)
from .podcache import PodCache
from .portforward import PortForwarder, port_forward_mode, split_address
from .podlogs import cluster_pod_logs
from .podstatus import (
    final_event,
    is_running,
    is_terminal,
    is_waiting_for_node,
    pod_failure,
    pod_problem,
    pod_summary,
    readable_problem,
)
from .runtimes import PodRuntime, RuntimeAPIError, make_runtime
from .runtimes.base import readable_error
from . import tls as tlsmod
from .tlscerts import make_credentials, scheduler_hosts
from .lifetimes import apply_lifetime, lifetime_annotations, parse_lifetime_annotations
from .statuswatch import PolledWorkerStatus
from .templates import load_pod, template_from_dask_config

logger = logging.getLogger(__name__)

# The worker pod template, kept on the scheduler pod: a restarted server re-adopts the cluster
# (also one made from Python) with exactly the workers it had, whatever the admin changed since.
ANNOTATION_WORKER_TEMPLATE = "dask-kube.jupyter.org/worker-template"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
# Worker failures tolerated within FAILURE_WINDOW before replacements stop (no endless crash loop).
MAX_FAILURES = 5
FAILURE_WINDOW = 120.0
SCHEDULER_SYNC_INTERVAL = 30  # seconds between SpecCluster's cluster-info RPCs to the scheduler
# While pods wait for a node: seconds between looks at their events (the autoscaler's NotTriggerScaleUp).
EVENT_CHECK_INTERVAL = 5.0
# port-forward auto: how long a Running scheduler may refuse direct connections (it may still be starting)
# before a port-forward is tried, and between tries.
FORWARD_AFTER = 1.0


class PodStartError(RuntimeError):
    """A pod could not start; the message is the pod's own reason (Unschedulable, ImagePullBackOff, ...)."""


class SchedulerPod(ProcessInterface):
    """The scheduler as a pod with a Service in front; ``address`` is the Service's clusterIP (what workers
    use); ``external_address``, when set, is the port-forwarded address this process reaches it by."""

    def __init__(self, cluster: KubeCluster, adopt: bool = False):
        self._cluster = weakref.ref(cluster)
        self.adopt = adopt
        self.name = scheduler_pod_name(cluster.name)
        self.pod: dict | None = None
        super().__init__()

    @property
    def cluster(self) -> KubeCluster:
        return self._cluster()

    async def create(self):
        """Make (or, adopting, find) the pod and Service: from then on ``address`` is known."""
        if self.address:
            return
        c = self.cluster
        rt = c.runtime
        if self.adopt:
            pod = c.pod_cache.pods.get(self.name) or await rt.read_pod(self.name)
            svc = await rt.read_service(service_name(c.name))
            if pod is None or svc is None:
                raise PodStartError(f"cluster {c.name} has no scheduler pod or Service to adopt")
            c._take_over(pod)
            await c._read_credentials(pod)
        else:
            pod = await rt.create_pod(c._scheduler_manifest())
            self.pod = pod
            # Service, NetworkPolicy and Secret at once, before any worker exists (one round trip, not three);
            # all finished, whatever happens, so that a failed start's clean-up finds everything that was made
            made = await asyncio.gather(
                rt.create_service(build_service(c.name, c.username, pod)),
                c._create_network_policy(pod),
                *([c._create_secret(pod)] if c.tls else []),
                return_exceptions=True,
            )
            for result in made:
                if isinstance(result, BaseException):
                    raise result
            svc = made[0]
        self.pod = pod
        self.address = service_address(svc, rt.namespace, c.tls)

    async def start(self):
        await self.create()
        reached = await self.cluster._wait_scheduler_ready(self.name, self.address)
        self.external_address = reached if reached and reached != self.address else None
        await super().start()

    async def close(self):
        c = self.cluster
        if c is not None and c._delete_on_close:
            await c._delete_everything()
        await super().close()


class WorkerPod(ProcessInterface):
    """One worker pod. ``start`` returns once the API holds the pod; the watch reports what follows."""

    def __init__(self, scheduler: str, name: str, cluster: KubeCluster | None = None, adopt: bool = False):
        self._cluster = weakref.ref(cluster)
        self.scheduler = scheduler
        self.name = name
        self.adopt = adopt
        super().__init__(scheduler=scheduler, name=name)

    async def start(self):
        c = self._cluster()
        if not self.adopt:
            try:
                await c._create_worker_pod(self.name, self.scheduler)
            except RuntimeAPIError as err:
                # Refused, or no answer even after the runtime's retries: no pod exists. Forget the worker
                # (the spec must not name a pod that is not there) and let the crash-loop guard decide on a
                # replacement, so an API that comes back completes the scale-up and one that refuses for
                # good ends with a clear problem instead of a cluster waiting forever.
                c._worker_lost(self.name, f"cannot create the pod: {err}", delete=False)
        await super().start()  # SpecCluster expects a started object; a forgotten one is closed next

    async def close(self):
        # Reached when a worker is retired (scale down) or the whole cluster is deleted, never when the cluster
        # is only let go (_close skips SpecCluster's close then): a retired worker's pod always goes.
        c = self._cluster()
        if c is not None:
            c._closing_workers.add(self.name)
            with suppress(Exception):
                await c.runtime.delete_pod(self.name, grace_period_seconds=1)
        await super().close()


class KubeAdaptive(Adaptive):
    """Adaptive that respects the cluster's crash-loop guard (no scale-up while workers keep failing)."""

    async def scale_up(self, n):
        f = self.cluster._scale(n)  # not scale(): that is a user's request and resets the guard
        if inspect.isawaitable(f):
            await f


class KubeCluster(SpecCluster, PolledWorkerStatus):
    """A Dask cluster whose scheduler and workers are pods made from a pod template.

    ``KubeCluster.from_yaml('worker-spec.yml'); cluster.scale(10); cluster.adapt(minimum=1, maximum=100)``
    """

    def __init__(
        self,
        pod_template=None,
        *,
        name: str | None = None,
        namespace: str | None = None,
        n_workers: int | None = None,
        env: dict | None = None,
        scheduler_pod_template=None,
        deploy_mode: str | None = None,
        idle_timeout: float | None = None,
        backend: str | None = None,
        asynchronous: bool = False,
        loop=None,
        runtime: PodRuntime | None = None,
        pod_cache: PodCache | None = None,
        username: str | None = None,
        annotations: dict | None = None,
        adopt: bool = False,
        scheduler_timeout: float | None = None,
        start_timeout: float | None = None,
        shutdown_on_close: bool | None = None,
        expires=None,
        keep: bool = False,
        owner_pod: dict | None = None,
        no_client_timeout: float | None = None,
        network_policy: bool | None = None,
        network_policy_client_selector: dict | None = None,
        client_namespace: str | None = None,
        port_forward: str | bool | None = None,
        tls: bool | None = None,
        **kwargs,
    ):
        if pod_template is None and adopt:
            # Attached by name: the worker template is read from the scheduler pod when it is found (_start).
            self.pod_template = {"kind": "Pod", "spec": {"containers": []}}
        elif pod_template is None:
            tmpl = template_from_dask_config()
            if tmpl is None:
                raise ValueError(
                    "KubeCluster needs a pod template: pass pod_template (path, dict or V1Pod) or set "
                    "kubernetes.worker-template-path / kubernetes.worker-template in dask config"
                )
            self.pod_template = tmpl.worker
            scheduler_pod_template = scheduler_pod_template or tmpl.scheduler
        else:
            self.pod_template = load_pod(pod_template)
        if scheduler_pod_template is None:
            scheduler_pod_template = dask.config.get("kubernetes.scheduler-template", None) or None
        self.scheduler_pod_template = load_pod(scheduler_pod_template) if scheduler_pod_template else None

        self.deploy_mode = deploy_mode or dask.config.get("kubernetes.deploy-mode", "remote")
        if self.deploy_mode not in ("remote", "local"):
            raise ValueError(f"deploy_mode must be 'remote' or 'local', not {self.deploy_mode!r}")
        if n_workers is None:
            n_workers = dask.config.get("kubernetes.count.start", 0) or 0
        if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 0:
            raise ValueError(f"n_workers must be a whole number >= 0, not {n_workers!r}")
        self.username = username or current_user()
        self.env = {**(dask.config.get("kubernetes.env", {}) or {}), **(env or {})}
        self.idle_timeout = idle_timeout if idle_timeout is not None else dask.config.get("kubernetes.idle-timeout", None)
        self.scheduler_timeout = scheduler_timeout or dask.config.get("kubernetes.scheduler-timeout", 120)
        #: How long pods may wait for a node (Unschedulable: an autoscaler may add one) before the start fails.
        self.start_timeout = float(start_timeout or dask.config.get("kubernetes.start-timeout", 600) or 600)
        #: While the scheduler pod waits for a node: why, for the user ("waiting for a node: 0/1 nodes ...").
        self.waiting: str | None = None
        self.annotations = annotations or {}
        # Lifetimes (lifetimes.py): enforced by the scheduler pod itself, not by this process.
        self.expires, self.keep, self.owner_pod = expires, keep, owner_pod
        self.no_client_timeout = (
            no_client_timeout if no_client_timeout is not None else dask.config.get("kubernetes.no-client-timeout", 0)
        )
        # The cluster's NetworkPolicy (objects.build_network_policy): who may connect to its pods.
        self.network_policy = bool(
            network_policy if network_policy is not None else dask.config.get("kubernetes.network-policy", True))
        self.network_policy_client_selector = (
            network_policy_client_selector if network_policy_client_selector is not None
            else dask.config.get("kubernetes.network-policy-client-selector", None))
        # The notebook pod's namespace, when it is not the cluster's (a namespace per user): the downward API's.
        self.client_namespace = client_namespace if client_namespace is not None else os.environ.get("POD_NAMESPACE")
        #: auto | always | never: reach the scheduler through the API server (pods/portforward) when this process
        #: cannot reach the Service (a kubeconfig outside the cluster). See portforward.py.
        self.port_forward = port_forward_mode(
            port_forward if port_forward is not None else dask.config.get("kubernetes.port-forward", "auto"))
        self.forwarder: PortForwarder | None = None
        self._forward_refused: str | None = None
        self._adopt = adopt
        self._n_workers = n_workers
        # An attached cluster must not take the scheduler's one worker-status subscription from the cluster's
        # owner (statuswatch.py): it polls.
        self.poll_worker_status = adopt
        #: TLS per cluster (tls.py): its own CA, credentials in a Secret owned by the scheduler pod; the owner's
        #: client connects with ``security``. An attached cluster learns whether it has TLS from its scheduler pod.
        #: (deploy_mode="local": the scheduler runs in this process with the node certificate in memory; the
        #: Secret, for the worker pods only, has no owner pod and goes with close.)
        self.tls = tlsmod.tls_enabled(tls) and not adopt
        self._credentials = None

        if runtime is None:
            runtime = make_runtime(backend, namespace)
            self._own_runtime = True
        else:
            self._own_runtime = False
        self.runtime = runtime
        self.namespace = runtime.namespace
        self.backend = runtime.backend
        cluster_name = name if adopt and name else format_cluster_name(name, user=self.username)
        self._cluster_name = cluster_name
        self.pod_cache = pod_cache
        self._own_cache = pod_cache is None
        self._unsubscribe = None
        # As the operator's: a cluster you create goes with close(); one you attach to stays.
        if shutdown_on_close is None:
            shutdown_on_close = not adopt
        self._delete_on_close = shutdown_on_close
        self._closing_workers: set[str] = set()
        self._failures: collections.deque = collections.deque()
        #: (unix time, pod name, reason) of the last workers lost (evicted, OOMKilled, deleted...), newest last.
        self.lost_workers: collections.deque = collections.deque(maxlen=20)
        #: Set when the scheduler first reports a worker (pushed by its worker-status stream, not polled).
        self.first_worker = asyncio.Event()
        self.failing = False
        self.problem: str | None = None
        self._tearing_down = False  # our own deletes are under way: their pod events are no loss
        self.warnings = resource_warnings(self.pod_template)
        self._requested = n_workers

        if self.tls and not adopt:
            self._credentials = make_credentials(cluster_name, scheduler_hosts(cluster_name, self.namespace))
            kwargs.setdefault("security", tlsmod.client_security(self._credentials))
        if self.deploy_mode == "remote":
            scheduler = {"cls": SchedulerPod, "options": {"cluster": self, "adopt": adopt}}
        else:
            host = dask.config.get("kubernetes.scheduler-host", None) or self._local_scheduler_host()
            scheduler = {
                "cls": "distributed.scheduler.Scheduler",
                "options": {"host": host, "dashboard_address": f"{host}:0", "idle_timeout": self.idle_timeout},
            }
            if self.tls:
                scheduler["options"]["security"] = tlsmod.scheduler_security(self._credentials)
        worker = {"cls": WorkerPod, "options": {"cluster": self}}
        super().__init__(
            scheduler=scheduler,
            worker=worker,
            workers={},
            name=cluster_name,
            asynchronous=asynchronous,
            loop=loop,
            shutdown_on_close=shutdown_on_close,
            # The cluster info it re-sends never changes; each send is an RPC through the Service. At
            # distributed's 1 s, 50 idle clusters in one Jupyter server cost 50 RPCs a second.
            **{"scheduler_sync_interval": SCHEDULER_SYNC_INTERVAL, **kwargs},
        )

    # -- construction helpers --------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, yaml_path, **kwargs) -> KubeCluster:
        return cls(load_pod(yaml_path), **kwargs)

    @classmethod
    def from_dict(cls, pod_spec: dict, **kwargs) -> KubeCluster:
        return cls(load_pod(pod_spec), **kwargs)

    @classmethod
    def from_name(cls, name: str, *, namespace: str | None = None, backend: str | None = None, **kwargs) -> KubeCluster:
        """Attach to a running cluster of yours by its name (made by the panel, REST or Python elsewhere).

        The cluster object can scale, adapt, ``get_logs()`` and ``close()``; ``close()`` leaves the cluster
        running unless ``shutdown_on_close=True`` (or call ``shutdown()``). The name is the cluster's id
        (``dask-alice-1a2b3c4d``) or the name its card shows. A name that is not there raises
        :class:`ClusterNotFound` (a LookupError) naming the clusters there are.
        """
        from .attach import check_attachable

        check_attachable(name, backend)
        return cls(None, name=name, namespace=namespace, backend=backend, adopt=True, **kwargs)

    def _local_scheduler_host(self) -> str:
        """Where worker pods reach a scheduler in this process: loopback when the pods run on this
        machine (local runtime, or an API server on loopback: the emulator or a test control plane),
        else this machine's address on the pod network."""
        if self.runtime.backend == "local":
            return "127.0.0.1"
        api_host = urlsplit(getattr(self.runtime, "host", "") or "").hostname or ""
        with suppress(ValueError):
            if ipaddress.ip_address(api_host).is_loopback:
                return "127.0.0.1"
        if api_host == "localhost":
            return "127.0.0.1"
        return get_ip()

    def _scheduler_manifest(self) -> dict:
        annotations = {
            **self.annotations,
            ANNOTATION_WORKER_TEMPLATE: json.dumps(self.pod_template, separators=(",", ":")),
        }
        if self.tls:
            annotations[tlsmod.ANNOTATION_TLS] = tlsmod.secret_name(self.name)
        pod = build_scheduler_pod(
            self.scheduler_pod_template,
            self.pod_template,
            cluster_name=self.name,
            username=self.username,
            annotations={**annotations, **lifetime_annotations(self.expires, self.keep)},
            idle_timeout=self.idle_timeout,
            env=self.env,
        )
        if self.tls:
            pod = tlsmod.mount_credentials(pod, self.name)
        return apply_lifetime(pod, expires=self.expires, no_client_timeout=self.no_client_timeout, owner=self.owner_pod)

    def _worker_builder(self, scheduler_address: str) -> WorkerPodBuilder:
        """The cluster's worker pod builder, made again when what it was built from changed."""
        owner = self.scheduler.pod if isinstance(self.scheduler, SchedulerPod) else None
        b = getattr(self, "_builder", None)
        if (b is None or b.template is not self.pod_template or b.kwargs["owner"] is not owner
                or b.kwargs["scheduler_address"] != scheduler_address or b.kwargs["env"] != self.env
                or b.kwargs["cluster_name"] != self.name or b.kwargs["username"] != self.username
                or (b.finish is not None) != self.tls):
            b = self._builder = WorkerPodBuilder(
                self.pod_template,
                cluster_name=self.name,
                username=self.username,
                scheduler_address=scheduler_address,
                owner=owner,
                env=dict(self.env),
                finish=self._mount_credentials if self.tls else None,
            )
        return b

    def _worker_manifest(self, worker_name: str, scheduler_address: str) -> dict:
        return self._worker_builder(scheduler_address)(worker_name)

    async def _create_worker_pod(self, worker_name: str, scheduler_address: str) -> None:
        """Create one worker pod; its answer is not read (the watch reports the pod)."""
        builder = self._worker_builder(scheduler_address)
        await self.runtime.create_worker_pod(builder(worker_name), shape=builder)

    def _mount_credentials(self, pod: dict) -> dict:
        return tlsmod.mount_credentials(pod, self.name)

    async def _create_secret(self, scheduler_pod: dict | None):
        """The cluster's credentials as a Secret owned by its (just created) scheduler pod. The pod is made first
        because the ownerReference needs its uid; it waits for the Secret as a kubelet waits for a missing
        secret volume (ContainerCreating), so nothing of the cluster ever exists without an owner.
        (deploy_mode="local": no scheduler pod, no owner; made before any worker pod, deleted by close.)"""
        secret = tlsmod.build_secret(self.name, self.username, self._credentials, owner=scheduler_pod)
        try:
            await self.runtime.create_secret(secret)
        except (RuntimeAPIError, NotImplementedError) as exc:
            raise PodStartError(f"cannot create the Secret {secret['metadata']['name']} that holds the cluster's "
                                f"TLS credentials: {readable_error(exc)}") from exc

    async def _read_credentials(self, scheduler_pod: dict):
        """Attaching: a cluster whose scheduler pod names a TLS Secret is reached with the credentials in it."""
        name = (scheduler_pod["metadata"].get("annotations") or {}).get(tlsmod.ANNOTATION_TLS)
        self.tls = bool(name)
        if not name:
            return
        try:
            secret = await self.runtime.read_secret(name)
            if secret is None:
                raise PodStartError(f"cluster {self.name} uses TLS but its Secret {name} is not there")
            self._credentials = tlsmod.credentials_from_secret(secret)
        except (RuntimeAPIError, NotImplementedError, ValueError) as exc:
            raise PodStartError(f"cannot read the TLS credentials of cluster {self.name} (Secret {name}): "
                                f"{readable_error(exc)}") from exc
        self.security = tlsmod.client_security(self._credentials)

    async def _create_network_policy(self, scheduler_pod: dict) -> None:
        """The cluster's NetworkPolicy, owned by its scheduler pod; a refusal fails the create with the API's
        reason (and the create's cleanup removes what was made)."""
        if not (self.network_policy and self.runtime.network_policies):
            return
        client = client_selector(self.network_policy_client_selector, self.username)
        manifest = build_network_policy(self.name, self.username, scheduler_pod, client,
                                        client_namespace=self.client_namespace)
        try:
            await self.runtime.create_network_policy(manifest)
        except RuntimeAPIError as exc:
            raise PodStartError(f"the cluster's NetworkPolicy was refused: {exc.reason}: {exc.message}") from None

    def _new_worker_name(self, worker_number):
        return worker_pod_name(self.name, new_worker_suffix())

    @property
    def _delete_on_close(self) -> bool:
        """Whether close() deletes the pods: one flag with SpecCluster's (atexit) ``shutdown_on_close``."""
        return self.shutdown_on_close

    @_delete_on_close.setter
    def _delete_on_close(self, value: bool):
        self.shutdown_on_close = value

    def _take_over(self, scheduler_pod: dict):
        """What an attached cluster learns from its scheduler pod: worker template and lifetimes."""
        ann = scheduler_pod["metadata"].get("annotations") or {}
        self.expires, self.keep = parse_lifetime_annotations(ann)
        if not (self.pod_template.get("spec") or {}).get("containers"):
            try:
                self.pod_template = load_pod(json.loads(ann[ANNOTATION_WORKER_TEMPLATE]))
            except (KeyError, ValueError) as exc:
                raise PodStartError(f"cluster {self.name} records no worker template on its scheduler pod") from exc
            self.warnings = resource_warnings(self.pod_template)

    # -- lifecycle -------------------------------------------------------------------------------
    async def _start(self):
        if self.status == Status.running:
            return
        if self._adopt and not (self.pod_template.get("spec") or {}).get("containers"):
            from .attach import find_cluster

            try:  # by name: resolve the name first, so a wrong one is a LookupError naming what there is
                self._cluster_name = self.name = await find_cluster(self.runtime, self.name, self.username)
            except LookupError:
                await self._release()
                self.status = Status.closed
                raise
        if self.pod_cache is None:
            self.pod_cache = PodCache(self.runtime, cluster_selector(self.name))
        try:
            if self._own_cache:
                await self.pod_cache.start()
            self._unsubscribe = self.pod_cache.subscribe(self._on_pod_event)
            if self.deploy_mode == "remote" and self.scheduler is None:
                await self._start_scheduler_pod()
            elif self.deploy_mode == "local" and self.tls:
                await self._create_secret(None)  # before SpecCluster makes the first worker pods
        except Exception as exc:
            if not self._adopt:
                with suppress(Exception):
                    await self._delete_everything()
            await self._release()
            # SpecCluster never started: nothing of it to close, so close() must return at once.
            self.status = Status.closed
            raise RuntimeError(f"Cluster failed to start: {exc}") from exc
        await super()._start()
        if self._adopt:
            workers = [
                n for n, p in self.pod_cache.pods.items()
                if p["metadata"].get("labels", {}).get(LABEL_COMPONENT) == "worker"
                and p["metadata"]["labels"].get("dask.org/cluster-name") == self.name
                and not is_terminal(p)
            ]
            for n in workers:
                self.worker_spec[n] = {"cls": WorkerPod, "options": {"cluster": self, "adopt": True}}
            self._requested = len(workers)
        elif len(self.worker_spec) < self._requested:
            self._scale(self._requested)  # replace early workers lost while the scheduler started

    async def _start_scheduler_pod(self):
        """Scheduler pod and Service first; the first workers' pods are created while the scheduler
        starts (their address, the Service's, is known at once), which overlaps the two start-ups."""
        sched = SchedulerPod(self, adopt=self._adopt)
        self.scheduler = sched  # SpecCluster._start uses a scheduler a subclass made
        await sched.create()
        early = None
        if not self._adopt and self._n_workers:
            names = []
            while len(names) < self._n_workers:
                name = self._new_worker_name(len(names))
                if name not in names:
                    names.append(name)
            for name in names:
                self.worker_spec[name] = {"cls": WorkerPod, "options": {"cluster": self, "adopt": True}}
            self._requested = self._n_workers
            early = asyncio.gather(*(self._create_worker_pod(n, sched.address) for n in names))
        try:
            await sched
        finally:
            if early is not None:
                await early

    async def _scale_up_refused(self, pod_name: str) -> str | None:
        """The autoscaler's NotTriggerScaleUp for this pod, if it said so: waiting longer is then pointless."""
        pod_events = getattr(self.runtime, "pod_events", None)
        if pod_events is None:
            return None
        try:
            return final_event(await pod_events(pod_name))
        except RuntimeAPIError as err:
            logger.debug("cluster %s: cannot read events of %s: %s", self.name, pod_name, err)
            return None

    async def _wait_scheduler_ready(self, pod_name: str, address: str) -> str:
        """Until the scheduler pod runs and its port answers; raise its reason if it cannot start. Returns the
        address that answered: ``address``, or a port-forwarded one (see ``_reach_scheduler``).

        A pod waiting for a node is not a failure: the wait goes on, with the reason in ``waiting``, up to
        ``start_timeout``, unless the autoscaler says it will not add one (NotTriggerScaleUp)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited_for_node = False
        next_event_check = 0.0
        running_since = None
        self._next_forward_try = 0.0

        def state():
            pod = self.pod_cache.pods.get(pod_name)
            if pod is None:
                return None
            failure = pod_failure(pod)
            if failure or is_terminal(pod):
                summary = pod_summary(pod)
                return ("failed", readable_problem(summary) if failure else
                        f"scheduler pod {pod_name} is {summary['phase']}")
            if is_running(pod):
                return ("running", None)
            if is_waiting_for_node(pod):
                return ("waiting", readable_problem(pod_summary(pod)))
            return ("pending", None)

        try:
            while True:
                st = state()
                kind = st[0] if st else None
                if kind == "failed":
                    raise PodStartError(st[1])
                self.waiting = st[1] if kind == "waiting" else None
                waited_for_node = waited_for_node or kind == "waiting"
                limit = max(self.scheduler_timeout, self.start_timeout) if waited_for_node else self.scheduler_timeout
                remaining = started + limit - loop.time()
                if remaining <= 0:
                    pod = self.pod_cache.pods.get(pod_name)
                    if kind == "waiting":
                        summary = pod_summary(pod)
                        raise PodStartError(f"{summary['reason']}: {summary['message']} (scheduler pod {pod_name}; "
                                            f"no node for it within {limit:.0f}s)")
                    phase = (pod or {}).get("status", {}).get("phase", "missing")
                    if kind == "running" and self._forward_refused:
                        raise PodStartError(f"the scheduler at {address} is not reachable from here, and port-forward "
                                            f"through the API server was refused: {self._forward_refused}")
                    if kind == "running":
                        raise PodStartError(f"scheduler pod {pod_name} runs but {address} did not answer within "
                                            f"{limit:.0f}s")
                    # what it waited on, e.g. ContainerCreating: MountVolume.SetUp failed ... secret ... not found
                    why = readable_problem(pod_summary(pod)) if pod and pod_summary(pod)["reason"] else ""
                    raise PodStartError(f"scheduler pod {pod_name} did not start within {limit:.0f}s (phase {phase})"
                                        + (f": {why}" if why else ""))
                if kind == "running":
                    # the pod runs: wait for the scheduler to listen, without polling the API
                    running_since = running_since if running_since is not None else loop.time()
                    reached = await self._reach_scheduler(pod_name, address, remaining, loop.time() - running_since)
                    if reached:
                        return reached
                    await asyncio.sleep(0.05)
                    continue
                wait = remaining
                if kind == "waiting":
                    if loop.time() >= next_event_check:
                        refused = await self._scale_up_refused(pod_name)
                        if refused:
                            raise PodStartError(f"{refused} (scheduler pod {pod_name})")
                        next_event_check = loop.time() + EVENT_CHECK_INTERVAL
                    wait = min(remaining, max(next_event_check - loop.time(), 0.05))
                try:  # until the pod changes (or it is time to look at its events again)
                    await self.pod_cache.wait_for(lambda: state() != st, wait)
                except TimeoutError:
                    pass
        finally:
            self.waiting = None

    async def _answers(self, address: str, timeout: float) -> bool:
        """Whether a Dask comm to ``address`` opens (the scheduler listens and answers)."""
        try:
            comm = await connect(address, timeout=min(2.0, max(timeout, 0.1)),
                                 **self.security.get_connection_args("client"))
        except OSError:
            return False
        await comm.close()
        return True

    async def _reach_scheduler(self, pod_name: str, address: str, remaining: float, running_for: float) -> str | None:
        """The address by which this process reaches the running scheduler, or None (not yet).

        Directly (the Service) unless ``port_forward`` is "always"; "auto" tries a port-forward when a scheduler
        that has run for ``FORWARD_AFTER`` still does not answer directly (a kubeconfig outside the cluster cannot
        reach clusterIPs), and keeps it only if the direct route still fails once the forwarded one answers."""
        mode = self.port_forward
        if self.deploy_mode != "remote" or not hasattr(self.runtime, "open_port_forward") \
                or (mode == "auto" and getattr(self.runtime, "inside_cluster", False)):
            mode = "never"  # nothing to forward through, or in a pod: the Service is reachable (or nothing is)
        # a cluster of this runtime needed a port-forward already (this process is outside the cluster): skip
        # the wait for a direct route, which is still tried first
        hinted = mode == "auto" and getattr(self.runtime, "port_forward_needed", False)
        if mode != "always":
            if await self._answers(address, remaining if mode == "never" else min(remaining, FORWARD_AFTER)):
                return address
            loop = asyncio.get_running_loop()
            if mode == "never" or self._forward_refused or (running_for < FORWARD_AFTER and not hinted) \
                    or loop.time() < self._next_forward_try:
                return None
            self._next_forward_try = loop.time() + FORWARD_AFTER
        forwarded = await self._forwarded_address(pod_name, address)
        if forwarded is None or not await self._answers(forwarded, remaining):
            return None
        if mode == "auto" and await self._answers(address, min(remaining, FORWARD_AFTER)):
            await self._close_forwarder()  # the scheduler had only just started listening: direct works after all
            return address
        logger.info("cluster %s: scheduler reached through port-forward at %s (%s is not reachable from here)",
                    self.name, forwarded, address)
        if mode == "auto":
            self.runtime.port_forward_needed = True
        return forwarded

    async def _forwarded_address(self, pod_name: str, address: str) -> str | None:
        """Start (once) local listeners port-forwarding to the scheduler pod's comm and dashboard ports; their
        comm address. A refused port-forward: PodStartError ("always"), or remembered and None ("auto")."""
        if self.forwarder is None:
            try:  # one stream first: an API server that refuses (RBAC) says so here, in its own words
                sock = await self.runtime.open_port_forward(pod_name, SCHEDULER_PORT)
                sock.close()
            except RuntimeAPIError as err:
                if err.status == 0:
                    return None  # unreachable for now: try again later
                reason = readable_error(err)
                if self.port_forward == "always":
                    raise PodStartError(f"cannot port-forward to the scheduler pod {pod_name}: {reason}") from None
                self._forward_refused = reason
                logger.warning("cluster %s: %s is not reachable and port-forward was refused: %s", self.name, address,
                               reason)
                return None
            fwd = PortForwarder(self.runtime.open_port_forward, pod_name, [SCHEDULER_PORT, DASHBOARD_PORT])
            await fwd.start()
            self.forwarder = fwd
        return self.forwarder.address(SCHEDULER_PORT, split_address(address)[0])

    async def _close_forwarder(self):
        fwd, self.forwarder = self.forwarder, None
        if fwd is not None:
            await fwd.close()

    def _on_pod_event(self, etype: str, pod: dict):
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if (labels.get("dask.org/cluster-name") != self.name or self.status in (Status.closing, Status.closed)
                or self._tearing_down):
            return
        name = meta["name"]
        component = labels.get(LABEL_COMPONENT)
        gone = etype == "DELETED" or is_terminal(pod)
        if component == "scheduler" and gone and self.status == Status.running and self.deploy_mode == "remote":
            reason = pod_problem(pod) or ("scheduler pod was deleted" if etype == "DELETED" else "scheduler exited")
            self.problem = f"Scheduler lost: {reason}"
            logger.warning("cluster %s: %s", self.name, self.problem)
            self.status = Status.failed
            self.loop.add_callback(self._cleanup_after_scheduler_loss)
        elif (
            component == "worker"
            and gone
            and name in self.worker_spec
            and name not in self._closing_workers
            # after a lost scheduler (failed) or on the way out there is nothing to replace them for
            and self.status in (Status.created, Status.starting, Status.running)
        ):
            reason = pod_problem(pod) or ("pod deleted" if etype == "DELETED" else "pod exited")
            # Workers made while the scheduler starts can die before the cluster runs: count them now,
            # replace them once it runs (end of _start).
            self._worker_lost(name, reason, delete=etype != "DELETED", replace=self.status == Status.running)

    def _update_worker_status(self, op, msg):
        super()._update_worker_status(op, msg)
        if op == "add" and self.scheduler_info.get("workers"):
            self.first_worker.set()

    def _worker_lost(self, name: str, reason: str, delete: bool, replace: bool = True):
        """A worker pod died under us: forget it, and replace it unless workers keep failing."""
        logger.warning("cluster %s: worker %s lost: %s", self.name, name, reason)
        self.lost_workers.append((time.time(), name, reason))
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > FAILURE_WINDOW:
            self._failures.popleft()
        self.worker_spec.pop(name, None)
        w = self.workers.pop(name, None)
        if w is not None:
            w.status = Status.closed
        if delete:
            self.loop.add_callback(self._delete_quietly, name)
        if len(self._failures) >= MAX_FAILURES:
            if not self.failing:
                self.failing = True
                self.problem = (
                    f"Workers keep failing ({len(self._failures)} in {FAILURE_WINDOW:.0f}s); not replacing them. "
                    f"Last: {name}: {reason}"
                )
                logger.error("cluster %s: %s", self.name, self.problem)
            return
        if replace and (self._adaptive is None or not self._adaptive.periodic_callback):
            self._scale(self._requested)  # keep the requested count; Adaptive handles its own minimum

    async def _delete_quietly(self, name: str):
        with suppress(Exception):
            await self.runtime.delete_pod(name, grace_period_seconds=0)

    async def _cleanup_after_scheduler_loss(self):
        with suppress(AttributeError):
            self._adaptive.stop()
        await self._delete_everything()

    def scale(self, n=0, memory=None, cores=None):
        """Ask for n workers (clamped to kubernetes.count.max). A user's request: after a crash loop,
        asking again is how to retry."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"scale() needs a whole number of workers >= 0, not {n!r}")
        self.failing = False
        self._failures.clear()
        return self._scale(n, memory=memory, cores=cores)

    def _scale(self, n, memory=None, cores=None):
        """Scale for the cluster itself (replacements, Adaptive): holds while workers keep failing."""
        maximum = dask.config.get("kubernetes.count.max", None)
        if maximum is not None and n > maximum:
            logger.info("cluster %s: scale(%d) clamped to kubernetes.count.max=%d", self.name, n, maximum)
            n = maximum
        self._requested = n
        if self.failing and n > len(self.worker_spec):
            n = len(self.worker_spec)
        return super().scale(n, memory=memory, cores=cores)

    def adapt(self, *args, minimum: int = 0, maximum: float = float("inf"), **kwargs):
        cap = dask.config.get("kubernetes.count.max", None)
        if cap is not None and maximum > cap:
            logger.info("cluster %s: adapt maximum %s clamped to kubernetes.count.max=%d", self.name, maximum, cap)
            maximum = cap
        minimum = min(minimum, maximum)
        self.failing = False
        self._failures.clear()
        return super().adapt(*args, minimum=minimum, maximum=maximum, Adaptive=KubeAdaptive, **kwargs)

    def stop_adapting(self):
        """Turn adapt off and keep the workers there are now as the requested count."""
        if self._adaptive is not None:
            self._adaptive.stop()
            self._adaptive = None
        self._requested = len(self.worker_spec)

    @property
    def scheduler_host(self) -> str:
        """The host of the scheduler address ("" while there is none)."""
        address = self.scheduler_address or ""
        return address.split("://", 1)[1].rsplit(":", 1)[0] if "://" in address else ""

    def dashboard_url(self, base_url: str | None = None) -> str:
        """The dashboard link (dashboard.py's rules); a Jupyter server passes its base_url for the proxy."""
        try:
            port = self.scheduler_info["services"]["dashboard"]
        except (KeyError, AttributeError, TypeError):
            return ""
        if self.forwarder is not None:  # the local listener that forwards to the pod's dashboard port
            port = self.forwarder.local.get(port, port)
        host = self.scheduler_host
        return format_link(host, port, base_url=base_url) if host else ""

    @property
    def dashboard_link(self) -> str:
        return self.dashboard_url()

    @property
    def credentials_directory(self) -> str | None:
        """Local runtime: the directory (0700, files 0600) of the cluster's credentials, ``ca.crt``,
        ``client.crt`` and ``client.key``, for the owner's notebooks on this machine; else None."""
        where = getattr(self.runtime, "secret_directory", None)
        return where(tlsmod.secret_name(self.name)) if self.tls and where is not None else None

    def pod_problems(self) -> dict[str, str]:
        """Pods of this cluster that are stuck or failed, with their reason."""
        out = {}
        for name, pod in (self.pod_cache.pods if self.pod_cache else {}).items():
            if pod["metadata"].get("labels", {}).get("dask.org/cluster-name") == self.name:
                problem = pod_problem(pod)
                if problem:
                    out[name] = problem
        return out

    async def _wait_for_workers(self, n_workers=0, timeout=None):
        """As distributed's, but fail fast when the missing workers cannot start (a bad image, a config
        error, the autoscaler refusing), and after ``start_timeout`` when they still wait for a node."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_event_check = 0.0
        waiter = asyncio.ensure_future(super()._wait_for_workers(n_workers, timeout=timeout))
        try:
            while not waiter.done():
                await asyncio.wait([waiter], timeout=0.5)
                if waiter.done():
                    break
                if self.failing:
                    raise PodStartError(self.problem)
                pods = self.pod_cache.pods
                pending = [n for n in self.worker_spec if not is_running(pods.get(n, {"status": {}, "metadata": {}}))]
                failed = {n: pod_failure(pods[n]) for n in pending if n in pods and pod_failure(pods[n])}
                waiting = [n for n in pending if n in pods and n not in failed and is_waiting_for_node(pods[n])]
                if not pending or len(failed) + len(waiting) < len(pending):
                    continue
                if failed and not waiting:
                    name = next(iter(failed))
                    raise PodStartError(f"{readable_problem(pod_summary(pods[name]))}; "
                                        f"{len(pending)} worker pod(s) cannot start")
                if loop.time() - started > self.start_timeout:
                    summary = pod_summary(pods[waiting[0]])
                    raise PodStartError(f"{summary['reason']}: {summary['message']} ({len(waiting)} worker pod(s) "
                                        f"got no node within {self.start_timeout:.0f}s)")
                if loop.time() >= next_event_check:
                    next_event_check = loop.time() + EVENT_CHECK_INTERVAL
                    refused = await self._scale_up_refused(waiting[0])
                    if refused:
                        raise PodStartError(f"{refused} (worker pod {waiting[0]}; {len(pending)} worker pod(s) cannot start)")
            return waiter.result()
        finally:
            waiter.cancel()

    async def _get_logs(self, cluster=True, scheduler=True, workers=True):
        """``cluster.get_logs()``: each pod's logs by pod name (the REST logs' own implementation); with
        ``deploy_mode="local"`` the scheduler runs here, and its log is under "Scheduler"."""
        logs = Logs()
        if scheduler and self.deploy_mode == "local" and self.scheduler_comm is not None:
            with suppress(Exception):
                lines = await self.scheduler_comm.get_logs()
                logs["Scheduler"] = Log("\n".join(line for _, line in lines))
        texts = await cluster_pod_logs(
            self.runtime, self.pod_cache.pods if self.pod_cache else {}, self.name,
            scheduler=scheduler, workers=workers, tail_lines=None,
        )
        logs.update((name, Log(text)) for name, text in texts.items())
        return logs

    async def _release(self):
        """Stop watching and drop connections (and port-forward listeners); pods are not touched."""
        await self._close_forwarder()
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        if self._own_cache and self.pod_cache is not None:
            await self.pod_cache.close()
        if self._own_runtime:
            with suppress(Exception):
                await self.runtime.close()

    async def _delete_everything(self):
        """Every pod and the Service of this cluster, at once (processes get a short grace)."""
        self._closing_workers.update(self.worker_spec)
        await asyncio.gather(
            self.runtime.delete_pods(cluster_selector(self.name), grace_period_seconds=1),
            self.runtime.delete_service(service_name(self.name)),
            self.runtime.delete_network_policy(network_policy_name(self.name)),
            # also owned by the scheduler pod (garbage collection would take it), but keys go at once
            *([self.runtime.delete_secret(tlsmod.secret_name(self.name))] if self.tls else []),
            return_exceptions=True,
        )

    async def _close(self):
        if self.status == Status.closed:
            return
        await self._stop_polling()
        if self._delete_on_close and self.status != Status.created:
            with suppress(AttributeError):
                self._adaptive.stop()
            if self.deploy_mode == "remote":
                self._tearing_down = True
                # Take it all down at once rather than retire workers one by one through the scheduler,
                # then tell SpecCluster the scheduler is gone, so it does not wait to reach it.
                await self._delete_everything()
                if isinstance(self.scheduler, SchedulerPod):
                    self.scheduler.status = Status.closed
                self.shutdown_scheduler = False
            await super()._close()
            with suppress(Exception):  # anything a half-made create left
                await self._delete_everything()
        else:
            with suppress(AttributeError):
                self._adaptive.stop()
            if getattr(self, "_sync_cluster_info_task", None) is not None:  # let go quietly: no pending task
                self._sync_cluster_info_task.cancel()
                with suppress(BaseException):
                    await self._sync_cluster_info_task
            for pc in getattr(self, "periodic_callbacks", {}).values():
                pc.stop()
            if self.scheduler_comm is not None:
                with suppress(Exception):
                    await self.scheduler_comm.close_rpc()
            self.status = Status.closed
        await self._release()

    async def _shutdown(self):
        self._delete_on_close = True
        await self._close()

    def shutdown(self):
        """Delete the cluster's pods and Service, whatever ``shutdown_on_close`` says."""
        return self.sync(self._shutdown)

    async def detach(self):
        """Stop managing the cluster without deleting its pods (so a restarted server can re-adopt it)."""
        self._delete_on_close = False
        await self._close()
