"""The jupyter_server extension: admin configuration (``c.DaskKube.*``) and handler registration."""
from __future__ import annotations

import asyncio
import os

import dask.config
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Callable, Dict, Float, Int, List, Unicode, Union

from .backends.pods import PodBackend
from .dashboard import host_allowlist
from .handlers import handlers
from .access import check_group_limits
from .hubgroups import HubGroups
from .lifetimes import LifetimePolicy
from .manager import ClusterManager, Limits
from .naming import current_user
from .parity import notebook_image, with_image
from .ownerpod import owner_pod_name, owner_pod_namespace
from .runtimes import make_runtime, resolve_backend
from .templates import TemplateError, load_template, load_templates, parse_memory, template_from_dask_config

BUILTIN_TEMPLATES = os.path.join(os.path.dirname(__file__), "default_templates")


class DaskKube(ExtensionApp):
    """Template-driven Dask clusters on Kubernetes (or local processes) for this server's user."""

    name = "jupyter_dask_kube"

    backend = Unicode(
        None, allow_none=True, config=True,
        help="kubernetes, local, gateway (Dask-Gateway, found through dask config gateway.*), operator (DaskCluster "
        "resources for the Dask Kubernetes operator) or auto (the operator when its CRDs are installed and the user "
        "may create DaskClusters, else Kubernetes pods when in-cluster or a kubeconfig is found, else local). "
        "Default: dask config kubernetes.backend (auto).",
    )
    namespace = Unicode(None, allow_none=True, config=True, help="Namespace for pods. Default: dask config, in-cluster or kubeconfig namespace.")
    template_paths = List(Unicode(), config=True, help="Directories of template YAML files, or YAML files.")
    templates = Union(
        [Dict(), List()], default_value={}, config=True,
        help="Inline templates: {name: template} or [template], each a plain Pod manifest or the template format.",
    )
    default_template = Unicode(None, allow_none=True, config=True, help="Template preselected for users.")
    name_template = Unicode(
        None, allow_none=True, config=True,
        help="Cluster (pod) name template. Default: dask config kubernetes.worker-name, dask-{JUPYTERHUB_USER}-{uuid}.",
    )
    max_clusters = Int(0, config=True, help="Clusters per user (0 = no limit).")
    max_workers = Int(0, config=True, help="Workers per cluster, also the adapt maximum (0 = no limit).")
    max_cores = Float(0, config=True, help="Cores per user across all clusters (0 = no limit).")
    max_memory = Union([Int(), Unicode()], default_value=0, config=True, help='Memory per user across clusters: bytes or "64G" (0 = no limit).')
    idle_timeout = Float(0, config=True, help="Seconds without work after which a cluster shuts down (0 = never).")
    max_lifetime = Float(0, config=True, help="Seconds after which every cluster ends, enforced by its scheduler (0 = never).")
    max_detached_lifetime = Float(
        0, config=True,
        help='Seconds a cluster created with "keep" (it survives the owner\'s server) may live (0 = no bound).',
    )
    no_client_timeout = Float(
        0, config=True, help="Seconds with no client connected after which a cluster's scheduler ends it (0 = never).",
    )
    group_limits = Dict(
        config=True,
        help='Limits per JupyterHub group: {group: {"max_clusters", "max_workers", "max_cores", "max_memory"}}; the most '
        "generous of a user's groups applies (0 = no limit), the defaults above otherwise.",
    )
    groups_ttl = Float(300, config=True, help="Seconds a user's JupyterHub groups are cached.")
    owner_pod = Unicode(
        "auto", config=True,
        help="The notebook pod that owns the clusters (they go when it goes): auto = POD_NAME, else HOSTNAME when "
        "in a Kubernetes pod; '' = off; anything else = the pod's name.",
    )
    start_timeout = Float(600, config=True, help="Seconds a cluster's pods may wait for a node (Unschedulable: a cluster "
                          "autoscaler may add one) before its start fails; it fails at once when nothing can change.")
    helm_releases = Bool(True, config=True, help="Show Dask Helm chart releases (labels app=dask, release, "
                         "component) of the namespace as attached clusters (kubernetes and operator backends).")
    helm_allow_delete = Bool(False, config=True, help="Let users delete attached Helm releases' Deployments "
                             "and Service from the panel (otherwise: use helm uninstall).")
    options_handler = Callable(
        None, allow_none=True, config=True,
        help="Optional f(template, option_values) -> template, to act on options beyond cores, memory and image.",
    )

    def _load_templates(self) -> tuple[list, list[str]]:
        problems, out = [], []
        try:
            out.extend(load_templates(list(self.template_paths)))
        except TemplateError as exc:
            problems.append(str(exc))
        inline = self.templates.items() if isinstance(self.templates, dict) else ((None, t) for t in self.templates)
        for key, spec in inline:
            try:
                out.append(load_template(spec, name=key))
            except TemplateError as exc:
                problems.append(str(exc))
        try:
            from_config = template_from_dask_config()
        except TemplateError as exc:
            problems.append(str(exc))
            from_config = None
        if from_config is not None and from_config.name not in {t.name for t in out}:
            out.append(from_config)
        if not out and not problems:
            out = load_templates([BUILTIN_TEMPLATES])
            image = notebook_image()
            if image:  # under a hub: the workers run the notebook's own image (parity.py)
                out = [with_image(t, image) for t in out]
        names = set()
        unique = []
        for t in out:
            if t.name in names:
                problems.append(f"template {t.name!r} is defined twice; the first one is used")
                continue
            names.add(t.name)
            unique.append(t)
        return unique, problems

    def initialize_settings(self):
        self.manager = None  # the pod backends' ClusterManager
        if (self.backend or dask.config.get("kubernetes.backend", None)) == "gateway":
            from .backends.gateway import GatewayBackend

            self.cluster_backend = GatewayBackend()
            self.settings["dask_kube_backend"] = self.cluster_backend
            self.log.info("dask-kube: gateway backend (dask config gateway.address: %s)",
                          dask.config.get("gateway.address", None))
            return
        templates, problems = self._load_templates()
        for p in problems:
            self.log.error("dask-kube: bad template: %s", p)
        backend = self.backend or dask.config.get("kubernetes.backend", None) or "auto"
        operator = backend == "operator"
        fork_server, self._fork_server = self._fork_server, None
        try:
            local = not operator and resolve_backend(backend) == "local"
            runtime = make_runtime("kubernetes" if operator else backend, self.namespace,
                                   **({"fork_server": fork_server} if local else {}))
        finally:
            if fork_server is not None and not local:
                fork_server.discard()
        if operator or (backend == "auto" and runtime.backend == "kubernetes" and _operator_applies(runtime)):
            from .backends.operator import OperatorBackend

            self.cluster_backend = OperatorBackend(
                runtime, username=current_user(), templates=templates, default_template=self.default_template,
                limits=Limits(self.max_clusters, self.max_workers, self.max_cores,
                              parse_memory(self.max_memory) if self.max_memory else 0),
                name_template=self.name_template, idle_timeout=self.idle_timeout, start_timeout=self.start_timeout,
                base_url=self.serverapp.base_url, options_handler=self.options_handler, template_problems=problems)
            self._attach_helm(runtime)
            self.log.info("dask-kube: operator backend (DaskCluster resources), namespace %s", runtime.namespace)
            return
        max_memory = parse_memory(self.max_memory) if self.max_memory else 0
        try:
            group_limits = check_group_limits(self.group_limits)
        except ValueError as exc:  # reported, and no group gets more than the default
            self.log.error("dask-kube: bad group_limits: %s", exc)
            problems.append(f"group_limits: {exc}")
            group_limits = {}
        self.manager = ClusterManager(
            runtime=runtime,
            username=current_user(),
            templates=templates,
            default_template=self.default_template,
            limits=Limits(self.max_clusters, self.max_workers, self.max_cores, max_memory),
            name_template=self.name_template,
            idle_timeout=self.idle_timeout,
            start_timeout=self.start_timeout,
            base_url=self.serverapp.base_url,
            options_handler=self.options_handler,
            template_problems=problems,
            lifetimes=LifetimePolicy(self.max_lifetime, self.max_detached_lifetime, self.no_client_timeout),
            owner_pod=owner_pod_name(self.owner_pod) if runtime.backend == "kubernetes" else None,
            owner_namespace=owner_pod_namespace(),
            groups=HubGroups.from_environment(ttl=self.groups_ttl),
            group_limits=group_limits,
        )
        self.settings["dask_kube_manager"] = self.manager
        self.cluster_backend = PodBackend(self.manager)
        self._attach_helm(runtime)
        self.log.info(
            "dask-kube: %s backend, namespace %s, %d template(s)", runtime.backend, runtime.namespace, len(templates)
        )

    def _attach_helm(self, runtime):
        """The backend the handlers use: this one, with the namespace's Helm releases beside its clusters."""
        if self.helm_releases and runtime.backend == "kubernetes":
            from .backends.helm import HelmReleases

            self.cluster_backend = HelmReleases(self.cluster_backend, runtime, allow_delete=self.helm_allow_delete,
                                                max_workers=self.max_workers, base_url=self.serverapp.base_url)
        self.settings["dask_kube_backend"] = self.cluster_backend

    def initialize_handlers(self):
        self.handlers.extend(handlers())

    _fork_server = None

    def _link_jupyter_server_extension(self, serverapp):
        super()._link_jupyter_server_extension(serverapp)
        # The local runtime's fork server imports distributed in its own process while this server goes on
        # starting (from here, before the other extensions load), so the first cluster starts as fast as later
        # ones. Unless the backend is plainly Kubernetes; "auto" is resolved later, and the server is then
        # dropped if it is not needed.
        if (self.backend or dask.config.get("kubernetes.backend", "auto")) != "kubernetes" and dask.config.get(
                "kubernetes.local.fork-server", True) and dask.config.get("kubernetes.local.fork-server-at-start", True):
            from .runtimes.forkserver import ForkServer

            self._fork_server = ForkServer()
            try:
                self._fork_server.start(background=True)
            except OSError as exc:
                self.log.warning("dask-kube: fork server could not start (%s); the first pod will try again", exc)
                self._fork_server = None
        # Before jupyter-server-proxy loads: let its /proxy/{host}:{port} reach only our schedulers.
        proxy_cfg = serverapp.config.ServerProxy
        if "host_allowlist" not in proxy_cfg:
            proxy_cfg.host_allowlist = host_allowlist(self._proxy_hosts)

    def _proxy_hosts(self):
        backend = getattr(self, "cluster_backend", None)
        return backend.scheduler_hosts() if backend is not None else ()

    async def _start_jupyter_server_extension(self, serverapp):
        async def start():
            try:
                await self.cluster_backend.start()
            except Exception as exc:  # reported by the status endpoint; the server keeps running
                self.log.error("dask-kube: could not start the cluster manager: %s", exc)

        self._start_task = asyncio.create_task(start())

    async def stop_extension(self):
        await self.cluster_backend.close()


def _operator_applies(runtime) -> bool:
    """backend=auto: the Dask operator's CRDs are served and this user may create DaskClusters (the ONE check)."""
    from .backends.operator import operator_problems_sync

    try:
        return not operator_problems_sync(runtime.api_client, runtime.namespace)
    except Exception:  # noqa: BLE001 (auto falls back to our own pods)
        return False


def _jupyter_server_extension_points():
    return [{"module": "jupyter_dask_kube.extension", "app": DaskKube}]

