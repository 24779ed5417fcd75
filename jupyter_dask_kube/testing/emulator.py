"""A Kubernetes API emulator: kmock's KubernetesEmulator with the API server behaviour the project needs.

What is kept from kmock, through its public API only (``kmock.KubernetesEmulator`` and its request entry point,
``kmock.ResourceInfo``, ``kmock.KubernetesError``): API discovery of ``/api``, ``/apis`` and ``/version`` (fed
from ``self.resources``), and kmock's own generic store for any resource not listed in
:data:`BUILTIN_RESOURCES` (custom objects work as in kmock). The resource lists of the built-in group versions
are served here.

What is replaced, for the built-in core resources (pods, services, namespaces, nodes, events, configmaps,
secrets) and SelfSubjectAccessReviews, because kmock's generic path cannot do it (see RECIPES.md):
namespaces from the URL, generateName, uid, a real monotonic resourceVersion (objects, lists and watches),
creationTimestamp, kind/apiVersion, 201/409/404/422 Status answers with Kubernetes' wording,
label and field selectors on list/watch/deletecollection, watch resume and 410 Gone, timeoutSeconds,
graceful pod deletion with a kubelet, ownerReference garbage collection, merge / strategic-merge / JSON patch,
PUT, pods/status, pods/log, Service clusterIP allocation, and fault injection (:class:`EmulatorFaults`).
Objects, resourceVersions, watch history and the owner index live in :class:`..objectstore.ObjectStore` (shared
with the local runtime): O(1) reads and writes, one JSON encoding per watch event shared by all watchers, no
per-version history kept beyond a bounded watch-event window.
Beside this module: ``routes`` (resources, paths), ``validation``, ``patching``, ``apierrors``, ``faults``.
Pods are bound, run and finished by a node agent (``nodeagent``) that reaches this server over HTTP only.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

import aiohttp.web
import attrs
import kmock

from ..objectstore import Gone, ObjectStore, Watcher
from ..quantities import parse_quantity
from ..selectors import SelectorError, parse_field_selector, parse_label_selector
from .apierrors import ApiError, already_exists, bad_request, conflict, forbidden, invalid, not_found
from .faults import NO_FAULTS_HEADER, EmulatorFaults
from .kubeapi import NODE_AGENT_USER_AGENT
from .kubeletserver import CONTROL_HEADER
from .patching import json_merge_patch, json_patch, strategic_merge_patch
from .routes import BUILTIN_RESOURCES, Event, Res, Route, route
from .validation import check_labels, now_iso, validate
from .wire import dumps, loads

log = logging.getLogger("jupyter_dask_kube.testing")

#: What the kubelet's eviction manager writes on a pod it evicted under memory pressure.
EVICTION_MESSAGE = "The node was low on resource: memory. "

__all__ = ["BUILTIN_RESOURCES", "EVICTION_MESSAGE", "NO_FAULTS_HEADER", "ApiError", "EmulatorFaults", "KubeEmulator"]


# ---------------------------------------------------------------------------------------------------------
@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The emulated API server. Serve it with :func:`jupyter_dask_kube.testing.server.serve` or any aiohttp server
    (it is an aiohttp low-level handler: ``aiohttp.web.Server(emu)``); enter it (``async with emu``) first.

    ``namespaces``: namespaces that exist at start ("default" and "kube-system" always do).
    ``watch_history``: how many events per resource are kept for watch resumption (older: 410 Gone).
    ``allocate_ip``: callable giving a Service clusterIP (default: a free loopback address).
    """

    namespaces: list[str] = attrs.field(factory=lambda: ["default"])
    watch_history: int = 2000
    faults: EmulatorFaults = attrs.field(factory=EmulatorFaults)
    allocate_ip: Callable[[], str] | None = None

    store: ObjectStore = attrs.field(init=False)
    #: the node agent's control token, for the evict/oomkill fault hooks on its kubelet port
    node_agent_token: str | None = attrs.field(default=None)
    _rng: random.Random = attrs.field(factory=random.Random, init=False)
    stats: collections.Counter = attrs.field(factory=collections.Counter, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store = ObjectStore(self.watch_history, event_class=Event, rng=self._rng)
        for res in BUILTIN_RESOURCES.values():
            self.resources[f"{res.api_version}/{res.plural}" if res.group else f"v1/{res.plural}"] = \
                kmock.ResourceInfo(namespaced=res.namespaced, kind=res.kind, singular=res.kind.lower(),
                                   verbs=set(res.verbs), shortnames=set(res.short), subresources=set(res.subresources))
        for ns in dict.fromkeys(["default", "kube-system", *self.namespaces]):
            self._insert("namespaces", {"metadata": {"name": ns}}, BUILTIN_RESOURCES[("", "namespaces")])

    def _resource_list(self, group: str, version: str) -> dict | None:
        """The APIResourceList of a group/version whose resources are all built in (served here, not by kmock:
        its answer for the core group says groupVersion "/v1", and kubectl then finds nothing)."""
        mine = [r for r in BUILTIN_RESOURCES.values() if r.group == group and r.version == version]
        if not mine:
            return None
        resources = []
        for r in mine:
            resources.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": sorted(r.verbs), "shortNames": list(r.short)})
            for sub in r.subresources:
                resources.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                                  "kind": "Binding" if sub == "binding" else r.kind,
                                  "verbs": {"log": ["get"], "binding": ["create"], "portforward": ["create", "get"]}
                                  .get(sub, ["get", "patch", "update"])})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    # -- public helpers (in-process use: the kubelet and tests) --------------------------------------------
    @property
    def resource_version(self) -> int:
        return self.store.rv

    def add_hook(self, hook: Callable[[str, str, dict, dict | None], None]) -> None:
        """``hook(plural, event_type, obj, old)`` is called synchronously after every committed change."""
        self.store.hooks.append(hook)

    def get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        return self.store.get(plural, namespace, name)

    def list(self, plural: str, namespace: str | None = None) -> list[dict]:
        return self.store.select(plural, namespace)

    def insert(self, plural: str, obj: dict, namespace: str | None = None) -> dict:
        """Create an object as the API would (generateName, uid, ...); raises ApiError."""
        res = self._res(plural)
        if namespace is not None:
            obj.setdefault("metadata", {})["namespace"] = namespace
        return self._insert(plural, obj, res)

    def update(self, plural: str, namespace: str | None, name: str, mutate: Callable[[dict], Any],
               *, copy: bool = True) -> dict | None:
        """Apply ``mutate(obj)`` to a copy of the stored object and commit it (MODIFIED); None when gone."""
        old = self.store.get(plural, namespace, name)
        if old is None:
            return None
        new = loads(dumps(old)) if copy else old
        if mutate(new) is False:
            return old
        return self._commit_update(plural, old, new)

    def remove(self, plural: str, namespace: str | None, name: str) -> dict | None:
        """Remove at once (DELETED), then garbage-collect dependents. None when gone."""
        obj = self.store.get(plural, namespace, name)
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                return self.update(plural, namespace, name,
                                   lambda o: o["metadata"].__setitem__("deletionTimestamp", now_iso()))
            return obj
        return self._remove(plural, obj)

    def compact(self) -> int:
        """Forget all watch history (like etcd compaction): resuming from an older version answers 410."""
        return self.store.compact()

    def _res(self, plural: str) -> Res:
        for (g, p), r in BUILTIN_RESOURCES.items():
            if p == plural:
                return r
        raise KeyError(plural)

    # -- store internals ---------------------------------------------------------------------------------
    def _insert(self, plural: str, obj: dict, res: Res) -> dict:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = meta.get("namespace") if res.namespaced else None
        if res.namespaced:
            if not ns:
                raise bad_request("the namespace of the object is missing")
            if self.store.get("namespaces", None, ns) is None:
                raise not_found("namespaces", ns)
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["name"] = self.store.generate_name(plural, ns, meta["generateName"])
        validate(res, obj)
        if self.store.get(plural, ns, name) is not None:
            raise already_exists(plural, name, res.group)
        self._defaults(res, obj)
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta.pop("selfLink", None)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        self.stats["created"] += 1
        self.store.add(plural, obj)
        return obj

    def _commit_update(self, plural: str, old: dict, new: dict) -> dict:
        meta = new["metadata"]
        if "deletionTimestamp" in old["metadata"]:
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        new["kind"], new["apiVersion"] = old["kind"], old["apiVersion"]
        self.store.commit(plural, new, old)  # identity fields are immutable: the store keeps old's
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._held_by_kubelet(plural, new):
            self._remove(plural, new)
        return new

    @staticmethod
    def _held_by_kubelet(plural: str, obj: dict) -> bool:
        """A terminating pod bound to a node stays until its kubelet deletes it again with grace 0."""
        return plural == "pods" and bool((obj.get("spec") or {}).get("nodeName"))

    def _remove(self, plural: str, obj: dict, propagation: str = "Background") -> dict:
        meta = obj["metadata"]
        gone = self.store.remove(plural, obj)
        if gone is None:  # not the stored version (already removed or replaced)
            return obj
        self.stats["deleted"] += 1
        if plural == "services" and self.allocate_ip is None:
            from ..runtimes.loopback import release_address
            release_address((obj.get("spec") or {}).get("clusterIP"))
        uid = meta.get("uid")
        dependents = set(self.store.pop_dependents(uid))
        if plural == "namespaces":
            for p, table in self.store.tables.items():
                dependents |= {(p, ns, n) for (ns, n) in table if ns == meta["name"]}
        for dplural, dns, dname in sorted(dependents):
            dep = self.store.get(dplural, dns, dname)
            if dep is None:
                continue
            if propagation == "Orphan":
                self.update(dplural, dns, dname, lambda o, u=uid: o["metadata"].__setitem__(
                    "ownerReferences", [r for r in o["metadata"].get("ownerReferences", []) if r.get("uid") != u])
                    or o["metadata"]["ownerReferences"] or o["metadata"].pop("ownerReferences"))
            else:
                self._delete_object(dplural, dep, None, "Background")
        return gone

    def _delete_object(self, plural: str, obj: dict, grace: int | None, propagation: str | None) -> dict:
        """API deletion semantics: graceful for running pods (the kubelet finishes it), else at once."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        propagation = propagation or "Background"
        # as the real API server: a pod bound to a node and not finished is deleted gracefully (deletionTimestamp
        # set, its kubelet stops it and deletes it again with grace 0); unbound or finished pods go at once
        if plural == "pods" and grace != 0 and (obj.get("spec") or {}).get("nodeName") \
                and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):
                return obj
            if grace is None:
                grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)

            def mark(o):
                o["metadata"]["deletionTimestamp"] = now_iso()
                o["metadata"]["deletionGracePeriodSeconds"] = grace
            return self.update(plural, ns, name, mark)
        if plural == "pods" and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(plural, obj, propagation)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            return self.update(plural, ns, name, lambda o: o["metadata"].__setitem__("deletionTimestamp", now_iso()))
        return self._remove(plural, obj, propagation)

    # -- validation and defaults ---------------------------------------------------------------------------
    def _defaults(self, res: Res, obj: dict) -> None:
        if res.plural == "pods":
            spec = obj["spec"]
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("securityContext", {})
            spec.setdefault("priority", 0)
            spec.setdefault("enableServiceLinks", True)
            qos = []
            for c in spec["containers"] + list(spec.get("initContainers") or []):
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                image = c.get("image", "")
                tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
                c.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
                r = c.setdefault("resources", {})
                if r.get("limits"):  # requests default to limits
                    r["requests"] = {**r["limits"], **(r.get("requests") or {})}
                lim, req = r.get("limits") or {}, r.get("requests") or {}
                qos.append("BestEffort" if not lim and not req else
                           "Guaranteed" if all(k in lim and parse_quantity(lim[k]) == parse_quantity(req.get(k))
                                               for k in ("cpu", "memory")) else "Burstable")
            status = obj.setdefault("status", {})
            status.clear()
            status["phase"] = "Pending"
            status["qosClass"] = ("Guaranteed" if all(q == "Guaranteed" for q in qos) else
                                  "BestEffort" if all(q == "BestEffort" for q in qos) else "Burstable")
        elif res.plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            if spec.get("clusterIP") != "None":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = self._allocate_ip([p.get("port") for p in spec.get("ports") or []])
                spec["clusterIPs"] = [spec["clusterIP"]]
            obj.setdefault("status", {"loadBalancer": {}})
        elif res.plural == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def _allocate_ip(self, ports: list) -> str:
        if self.allocate_ip is not None:
            return self.allocate_ip()
        from ..runtimes.loopback import allocate_address
        return allocate_address([p for p in ports if isinstance(p, int)])

    # -- the HTTP entry point -----------------------------------------------------------------------------
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            return await self._dispatch(raw)
        except ApiError as e:
            return self._error_response(e)
        except kmock.KubernetesError as e:
            return self._error_response(ApiError(e.status, (e.reason or "").replace(" ", ""), e.message or ""))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("emulator failure on %s %s", raw.method, raw.path_qs)
            return self._error_response(ApiError(500, "InternalError", f"an error on the server ({e!r}) has "
                                                 "prevented the request from succeeding",
                                                 {"causes": [{"message": traceback.format_exc()}]}))

    def _error_response(self, e: ApiError) -> aiohttp.web.Response:
        body = e.body() if isinstance(e, ApiError) else ApiError(e.status, e.reason, e.message).body()
        return aiohttp.web.Response(body=dumps(body), status=e.status, content_type="application/json",
                                    headers=getattr(e, "headers", None) or None)

    async def _dispatch(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw.path
        # the node agent's own traffic (heartbeats, status, its watches) is counted apart: the counters measure
        # what the code under test asks of the API server
        node = raw.headers.get("User-Agent", "").startswith(NODE_AGENT_USER_AGENT)
        raw["jdk_node_agent"] = node
        self.stats["node_agent_requests" if node else "requests"] += 1
        if path.startswith("/_emulator/"):
            return await self._serve_private(raw, path[len("/_emulator/"):])
        r = route(path)
        if r is not None and r.plural is None and r.namespace is None and raw.method == "GET":
            listing = self._resource_list(r.group, r.version)
            if listing is not None:
                return self._json(listing)
        if r is None or r.res is None:
            # anything else (discovery of /api, /apis, /version; custom resources) through kmock's public entry
            return await kmock.KubernetesEmulator.__call__(self, raw)
        faults = self.faults
        ns = r.namespace
        if (faults.latency or faults.error_rate or faults.forbidden or faults.quota) \
                and raw.headers.get(NO_FAULTS_HEADER) is None:
            scoped = not faults.namespaces or ns in faults.namespaces
            if scoped:
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                if faults.error_rate and self._rng.random() < faults.error_rate:
                    status = self._rng.choice(faults.error_statuses or (500,))
                    self.stats["faults_injected"] += 1
                    self.stats[f"faults_{status}"] += 1
                    if r.watch_path or raw.query.get("watch") in ("true", "1", "True"):
                        self.stats["faults_on_watch"] += 1
                    reason = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "InternalError")
                    raise ApiError(status, reason, {429: "Too many requests, please try again later.",
                                                    503: "the server is currently unable to handle the request"}
                                   .get(status, "an error on the server (\"injected fault\") has prevented the "
                                        "request from succeeding"),
                                   {"retryAfterSeconds": 1} if status == 429 else None,
                                   headers={"Retry-After": "1"} if status == 429 else None)
                if faults.forbidden:
                    verb = self._verb(raw, r)
                    resource = r.plural + (f"/{r.sub}" if r.sub else "")
                    if faults.is_forbidden(verb, resource):
                        raise forbidden(verb, resource, ns, r.group)
        return await self._serve_builtin(raw, r)

    @staticmethod
    def _verb(raw: aiohttp.web.BaseRequest, r: Route) -> str:
        m = raw.method
        if m == "GET":
            if r.name is None:
                return "watch" if (r.watch_path or raw.query.get("watch") in ("true", "1", "True")) else "list"
            return "watch" if r.watch_path else "get"
        if m == "POST":
            return "create"
        if m == "PUT":
            return "update"
        if m == "PATCH":
            return "patch"
        if m == "DELETE":
            return "delete" if r.name else "deletecollection"
        return m.lower()

    async def _read_json(self, raw: aiohttp.web.BaseRequest, required: bool = True) -> Any:
        body = await raw.read()
        if not body:
            if required:
                raise bad_request("the request body is empty")
            return None
        try:
            return loads(body)
        except ValueError as e:
            if raw.content_type.endswith("yaml"):
                import yaml
                return yaml.safe_load(body)
            raise bad_request(f"the body of the request was in an unknown format: {e}")

    def _json(self, obj: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=dumps(obj), status=status, content_type="application/json")

    # -- built-in resources ------------------------------------------------------------------------------
    async def _serve_builtin(self, raw: aiohttp.web.BaseRequest, r: Route) -> aiohttp.web.StreamResponse:
        res = r.res
        assert res is not None
        method = raw.method
        q = raw.query
        if res.plural == "selfsubjectaccessreviews":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self._serve_ssar(await self._read_json(raw))
        if res.namespaced and r.namespace is None and method not in ("GET",):
            if not (method == "POST" and r.name is None):
                raise not_found(res.plural, r.name or "")
        if not res.namespaced:
            r.namespace = None
        ns = r.namespace
        table = self.store.table(res.plural)

        if r.name is None:  # collection
            if method == "GET":
                if r.watch_path or q.get("watch") in ("true", "1", "True"):
                    return await self._serve_watch(raw, r)
                return self._json(self._list_body(res, ns, q))
            if method == "POST":
                obj = await self._read_json(raw)
                if not isinstance(obj, dict):
                    raise bad_request("the body must be a JSON object")
                meta = obj.setdefault("metadata", {})
                if res.namespaced:
                    body_ns = meta.get("namespace")
                    if ns and body_ns and body_ns != ns:
                        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
                    meta["namespace"] = ns or body_ns or "default"
                    if res.plural == "pods" and self.faults.quota and (not self.faults.namespaces or meta["namespace"] in self.faults.namespaces):
                        self._check_quota(meta["namespace"], meta.get("name") or meta.get("generateName", ""))
                if q.get("dryRun"):  # validated as a real create is, and not stored
                    if not meta.get("name") and meta.get("generateName"):
                        meta["name"] = meta["generateName"] + "xxxxx"
                    validate(res, obj)
                    return self._json(obj, 201)
                created = self._insert(res.plural, obj, res)
                return self._json(created, 201)
            if method == "DELETE":
                opts = await self._read_json(raw, required=False) or {}
                grace = self._grace(q, opts)
                try:
                    victims = self.store.select(res.plural, ns, labels=q.get("labelSelector"),
                                                fields=q.get("fieldSelector"))
                except SelectorError as e:
                    raise bad_request(str(e))
                items = [self._delete_object(res.plural, o, grace, opts.get("propagationPolicy") or q.get("propagationPolicy"))
                         for o in victims]
                return self._json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                   "metadata": {"resourceVersion": str(self.store.rv)}, "items": items})
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

        key = (ns, r.name)
        if r.sub == "binding" and res.plural == "pods" and method == "POST":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name)
            return self._json(self._bind(obj, await self._read_json(raw)), 201)
        if r.sub == "log" and res.plural == "pods":
            if key not in table:
                raise not_found(res.plural, r.name)
            return await self._serve_log(raw, table[key])
        if r.sub == "portforward" and res.plural == "pods":
            if key not in table:
                raise not_found(res.plural, r.name)
            return await self._serve_port_forward(raw, table[key])
        if r.sub not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name, res.group)
            if r.watch_path:
                return await self._serve_watch(raw, r)
            return self._json(obj)
        if method in ("PATCH", "PUT"):
            body = await self._read_json(raw)
            obj = table.get(key)
            if obj is None:
                if method == "PUT" and r.sub is None and isinstance(body, dict):
                    body.setdefault("metadata", {})["namespace"] = ns
                    return self._json(self._insert(res.plural, body, res), 201)
                raise not_found(res.plural, r.name, res.group)
            return self._json(self._apply_change(res, obj, body, method, raw.content_type, r.sub))
        if method == "DELETE":
            obj = table.get(key)
            if obj is None:
                raise not_found(res.plural, r.name, res.group)
            opts = await self._read_json(raw, required=False) or {}
            pre = (opts.get("preconditions") or {})
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Precondition failed: UID in precondition: {pre["uid"]}, UID in '
                               f'object meta: {obj["metadata"]["uid"]}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, r.name)
            if q.get("dryRun") or opts.get("dryRun"):
                return self._json(obj)
            out = self._delete_object(res.plural, obj, self._grace(q, opts),
                                      opts.get("propagationPolicy") or q.get("propagationPolicy"))
            return self._json(out)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _grace(q, opts: dict) -> int | None:
        g = opts.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        return None if g is None else int(g)

    def _check_quota(self, ns: str, name: str) -> None:
        limit = self.faults.quota.get("pods")
        if limit is None:
            return
        used = sum(1 for (ons, _), p in self.store.table("pods").items()
                   if ons == ns and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
        if used + 1 > limit:
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: exceeded quota: compute, requested: '
                           f"pods=1, used: pods={used}, limited: pods={limit}", {"name": name, "kind": "pods"})

    def _apply_change(self, res: Res, obj: dict, body: Any, method: str, ctype: str, sub: str | None) -> dict:
        if method == "PUT":
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, obj["metadata"]["name"])
            new = loads(dumps(body))
            new.setdefault("metadata", {})
        elif "json-patch" in ctype:
            if not isinstance(body, list):
                raise bad_request("json patch must be a list of operations")
            new = json_patch(obj, body)
        elif "apply-patch" in ctype:
            new = strategic_merge_patch(loads(dumps(obj)), body)
        else:
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(res.plural, obj["metadata"]["name"])
            merge = strategic_merge_patch if "strategic" in ctype else json_merge_patch
            new = merge(loads(dumps(obj)), body)
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        # status is set through /status only; the main resource keeps its status (and vice versa for spec)
        if res.plural in ("pods", "services", "nodes", "namespaces"):
            if sub == "status":
                new = dict(obj, status=new.get("status", obj.get("status")),
                           metadata=dict(obj["metadata"], labels=new["metadata"].get("labels"),
                                         annotations=new["metadata"].get("annotations")))
                for k in ("labels", "annotations"):
                    if new["metadata"][k] is None:
                        new["metadata"].pop(k)
                new = loads(dumps(new))
            else:
                if "status" in obj:
                    new["status"] = obj["status"]
                if res.plural == "services":
                    spec = new.setdefault("spec", {})
                    spec["clusterIP"] = obj["spec"].get("clusterIP")
                    if "clusterIPs" in obj["spec"]:
                        spec["clusterIPs"] = obj["spec"]["clusterIPs"]
        causes: list = []
        check_labels(new["metadata"].get("labels"), causes)
        if causes:
            raise invalid(res.kind, obj["metadata"]["name"], causes)
        return self._commit_update(res.plural, obj, new)

    def _label_matcher(self, q):
        try:
            return parse_label_selector(q.get("labelSelector"))
        except SelectorError as e:
            raise bad_request(str(e))

    def _field_matcher(self, q, plural):
        try:
            return parse_field_selector(q.get("fieldSelector"), plural)
        except SelectorError as e:
            raise bad_request(str(e))

    def _matching(self, res: Res, ns: str | None, q) -> list[dict]:
        try:
            out = self.store.select(res.plural, ns, labels=q.get("labelSelector"), fields=q.get("fieldSelector"))
        except SelectorError as e:
            raise bad_request(str(e))
        out.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return out

    def _list_body(self, res: Res, ns: str | None, q) -> dict:
        items = self._matching(res, ns, q)
        limit = q.get("limit")
        meta: dict = {"resourceVersion": str(self.store.rv)}
        cont = q.get("continue")
        if cont:
            try:
                start = int(cont)
            except ValueError:
                raise ApiError(410, "Expired", "The provided continue parameter is too old")
            items = items[start:]
        else:
            start = 0
        if limit and int(limit) > 0 and len(items) > int(limit):
            items = items[: int(limit)]
            meta["continue"] = str(start + int(limit))
            meta["remainingItemCount"] = len(self._matching(res, ns, q)) - start - int(limit)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    # -- watch ------------------------------------------------------------------------------------------
    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, r: Route) -> aiohttp.web.StreamResponse:
        res = r.res
        assert res is not None
        q = raw.query
        ns = r.namespace
        label_m = self._label_matcher(q)
        field_m = self._field_matcher(q, res.plural)
        if r.name is not None:
            name_m = lambda o, n=r.name: o["metadata"]["name"] == n  # noqa: E731
            field_m = name_m if field_m is None else (lambda o, a=field_m, b=name_m: a(o) and b(o))
        timeout = q.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        drop_after = self.faults.drop_watch_after
        drop_at = time.monotonic() + drop_after if drop_after else None

        def matches(o: dict | None) -> bool:
            if o is None:
                return False
            if ns is not None and o["metadata"].get("namespace") != ns:
                return False
            if label_m is not None and not label_m(o["metadata"].get("labels")):
                return False
            return field_m is None or field_m(o)

        def translate(ev: Event) -> bytes | None:
            new_ok = matches(ev.obj)
            if ev.type == "MODIFIED":
                old_ok = matches(ev.old)
                if new_ok and old_ok:
                    return ev.line()
                if new_ok:
                    return ev.line("ADDED")
                if old_ok:
                    return ev.line("DELETED")
                return None
            return ev.line() if new_ok else None

        resp = aiohttp.web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(raw)

        code = self.faults.watch_error_event
        if code and raw.headers.get(NO_FAULTS_HEADER) is None and (not self.faults.namespaces
                                                                   or ns in self.faults.namespaces):
            self.stats["faults_watch_error_event"] += 1
            error = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                 "status": "Failure", "code": int(code), "reason": "InternalError",
                                                 "message": "an error on the server (\"injected watch error\") has "
                                                            "prevented the request from succeeding"}}
            await resp.write(dumps(error) + b"\n")
            await resp.write_eof()
            return resp
        rv_param = q.get("resourceVersion")
        watcher = Watcher()
        backlog: list[bytes] = []
        # Register before reading state: nothing happens between (no await), so no event is lost or doubled.
        if rv_param and rv_param != "0":
            try:
                since = int(rv_param)
            except ValueError:
                raise bad_request(f"invalid resource version: {rv_param}")
            if not raw.get("jdk_node_agent"):
                self.stats["watches_resumed"] += 1
            try:
                events = self.store.events_since(res.plural, since)
            except Gone as gone:
                if not raw.get("jdk_node_agent"):
                    self.stats["watches_gone_410"] += 1
                error = {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": str(gone), "reason": "Expired", "code": 410}}
                await resp.write(dumps(error) + b"\n")
                await resp.write_eof()
                return resp
            for ev in events:
                line = translate(ev)
                if line:
                    backlog.append(line)
        else:
            for o in self._matching(res, ns, q):
                if field_m is None or field_m(o):
                    backlog.append(b'{"type":"ADDED","object":' + dumps(o) + b"}\n")
        self.store.subscribe(res.plural, watcher)
        self.stats["node_agent_watches" if raw.get("jdk_node_agent") else "watches"] += 1
        try:
            if backlog:
                await resp.write(b"".join(backlog))
            while True:
                now = time.monotonic()
                limits = [t for t in (deadline, drop_at) if t is not None]
                wait = min(limits) - now if limits else 5.0
                if limits and wait <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), timeout=min(wait, 5.0))
                except asyncio.TimeoutError:
                    transport = raw.transport
                    if transport is None or transport.is_closing():
                        return resp
                    continue
                lines = []
                while True:
                    line = translate(ev)
                    if line:
                        lines.append(line)
                    if watcher.queue.empty():
                        break
                    ev = watcher.queue.get_nowait()
                if lines:
                    await resp.write(b"".join(lines))
            if drop_at is not None and (deadline is None or drop_at < deadline) and time.monotonic() >= drop_at:
                if not raw.get("jdk_node_agent"):
                    self.stats["watches_dropped"] += 1
                if raw.transport is not None:
                    raw.transport.close()  # an abrupt cut, as a dying connection looks
                return resp
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unsubscribe(res.plural, watcher)
        return resp

    # -- pods/binding (what a scheduler posts) ------------------------------------------------------------
    def _bind(self, pod: dict, body: Any) -> dict:
        name = pod["metadata"]["name"]
        target = (body or {}).get("target") or {} if isinstance(body, dict) else {}
        if not target.get("name"):
            raise invalid("Binding", name, [("target.name", "FieldValueRequired", "Required value")])
        uid = ((body.get("metadata") or {}).get("uid"))
        if uid and uid != pod["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": '
                           f"the UID in the precondition ({uid}) does not match the UID in record "
                           f'({pod["metadata"]["uid"]}). The object might have been deleted and then recreated')
        if pod["metadata"].get("deletionTimestamp"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} '
                           "is being deleted, cannot be assigned to a host")
        if pod["spec"].get("nodeName"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} '
                           f'is already assigned to node "{pod["spec"]["nodeName"]}"')

        def assign(o):
            o["spec"]["nodeName"] = target["name"]
            status = o.setdefault("status", {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"] \
                + [{"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_iso()}]
        self.update("pods", pod["metadata"]["namespace"], name, assign)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- pods/log ---------------------------------------------------------------------------------------
    async def _serve_log(self, raw: aiohttp.web.BaseRequest, pod: dict) -> aiohttp.web.StreamResponse:
        q = raw.query
        container = q.get("container")
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        if container is None:
            if len(containers) > 1:
                raise bad_request(f'a container name must be specified for pod {pod["metadata"]["name"]}, '
                                  f"choose one of: [{' '.join(containers)}]")
            container = containers[0] if containers else None
        elif container not in containers + [c["name"] for c in pod["spec"].get("initContainers") or []]:
            raise bad_request(f'container {container} is not valid for pod {pod["metadata"]["name"]}')
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        cstatus = next((c for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
                        if c.get("name") == container), {})
        state = cstatus.get("state") or {}
        if "running" not in state and "terminated" not in state and not (cstatus.get("lastState") or {}).get("terminated"):
            reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: trying and '
                                  "failing to pull image")
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        # as the real API server: the text comes from the kubelet's HTTPS port on the pod's node
        tail = q.get("tailLines")
        params = {"tailLines": tail} if tail else None
        text = await self._to_kubelet(pod, "GET", f"/containerLogs/{pod['metadata']['namespace']}/{name}/{container}",
                                      params=params, missing_ok=True)
        return aiohttp.web.Response(text=text or "", content_type="text/plain")

    # -- pods/portforward ---------------------------------------------------------------------------------
    async def _serve_port_forward(self, raw: aiohttp.web.BaseRequest, pod: dict) -> aiohttp.web.StreamResponse:
        """As the real API server: the upgrade goes on to the kubelet's ``/portForward/{ns}/{pod}?port=P``, and
        the two WebSockets are joined message for message (the real one joins the two TCP streams)."""
        if raw.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request("Upgrade request required")
        ports = [p for v in raw.query.getall("ports", []) for p in v.split(",") if p]
        if not ports or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
            raise bad_request("at least one valid port is required (query parameter ports)")
        if (pod.get("status") or {}).get("phase") != "Running":
            raise bad_request(f'pod {pod["metadata"]["name"]} is not running (phase {(pod.get("status") or {}).get("phase")})')
        ip, port = self._kubelet_endpoint(pod)
        meta = pod["metadata"]
        url = f"https://{ip}:{port}/portForward/{meta['namespace']}/{meta['name']}"
        protocols = [p.strip() for p in raw.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        session = aiohttp.ClientSession()
        try:
            try:
                upstream = await session.ws_connect(url, params=[("port", p) for p in ports], protocols=protocols,
                                                    ssl=False, max_msg_size=0, autoping=True)
            except aiohttp.WSServerHandshakeError as e:
                raise ApiError(e.status if e.status in (400, 403, 404) else 500, "BadRequest" if e.status == 400 else
                               "InternalError", f"error upgrading connection: {e.message}")
            except aiohttp.ClientError as e:
                raise ApiError(500, "InternalError", f"error dialing backend: {e}")
            ws = aiohttp.web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                               max_msg_size=0, autoping=True)
            await ws.prepare(raw)  # type: ignore[arg-type]

            async def relay(src, dst):
                try:
                    async for msg in src:
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            await dst.send_bytes(msg.data)
                        elif msg.type == aiohttp.WSMsgType.TEXT:
                            await dst.send_str(msg.data)
                except (ConnectionError, RuntimeError):
                    pass
                finally:
                    await dst.close()

            await asyncio.gather(relay(upstream, ws), relay(ws, upstream))
            return ws
        finally:
            await session.close()

    def _kubelet_endpoint(self, pod: dict) -> tuple[str, int]:
        """The kubelet address of the pod's node (status.addresses InternalIP, daemonEndpoints)."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = self.get("nodes", None, node_name) if node_name else None
        if node is None:
            raise bad_request(f'pod "{pod["metadata"]["name"]}" is not bound to a node with a kubelet')
        nstatus = node.get("status") or {}
        ip = next((a["address"] for a in nstatus.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not ip or not port:
            raise bad_request(f'node "{node_name}" has no kubelet endpoint')
        return ip, port

    async def _to_kubelet(self, pod: dict, method: str, path: str, *, params: dict | None = None,
                          json_body: dict | None = None, missing_ok: bool = False) -> Any:
        """A request to the kubelet port of the pod's node (status.addresses InternalIP, daemonEndpoints)."""
        ip, port = self._kubelet_endpoint(pod)
        headers = {CONTROL_HEADER: self.node_agent_token} if self.node_agent_token else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.request(method, f"https://{ip}:{port}{path}", params=params, json=json_body,
                                    headers=headers, ssl=False) as resp:
                text = await resp.text()
                if resp.status == 404 and missing_ok:
                    return ""
                if resp.status >= 400:
                    try:
                        message = loads(text).get("message", text)
                    except ValueError:
                        message = text
                    raise ApiError(resp.status if resp.status in (400, 403, 404) else 500,
                                   "BadRequest" if resp.status == 400 else "InternalError", message)
                return loads(text) if resp.content_type == "application/json" else text
        except aiohttp.ClientError as e:
            raise ApiError(500, "InternalError", f'Get "https://{ip}:{port}{path}": {e}')

    # -- SelfSubjectAccessReview ---------------------------------------------------------------------------
    def _serve_ssar(self, body: dict) -> aiohttp.web.Response:
        attrs_ = ((body or {}).get("spec") or {}).get("resourceAttributes") or {}
        verb = attrs_.get("verb", "")
        resource = attrs_.get("resource", "") + (f"/{attrs_['subresource']}" if attrs_.get("subresource") else "")
        denied = (self.faults.is_forbidden(verb, resource) or
                  self.faults.is_forbidden(verb, resource, self.faults.review_denied))
        status: dict = {"allowed": not denied}
        if denied:
            status["reason"] = "denied by the emulator's configured RBAC faults"
        else:
            status["reason"] = "emulated cluster allows everything by default"
        out = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": (body or {}).get("spec") or {}, "status": status}
        return self._json(out, 201)

    # -- private control endpoints ---------------------------------------------------------------------------
    async def _serve_private(self, raw: aiohttp.web.BaseRequest, what: str) -> aiohttp.web.Response:
        if what == "healthz":
            return self._json({"ok": True, "resourceVersion": self.store.rv})
        if what == "faults":
            if raw.method in ("POST", "PUT"):
                try:
                    self.faults = EmulatorFaults.from_json(await self._read_json(raw, required=False) or {})
                except (TypeError, ValueError) as e:
                    raise bad_request(str(e))
            return self._json(self.faults.to_json())
        m = re.fullmatch(r"pods/([^/]+)/([^/]+)/(evict|oomkill)", what)
        if m and raw.method == "POST":
            ns, name, action = m.groups()
            if self.get("pods", ns, name) is None:
                raise not_found("pods", name)
            body = await self._read_json(raw, required=False) or {}
            if action == "evict":
                body = {"message": body.get("message") or EVICTION_MESSAGE}
            pod = await self._to_kubelet(self.get("pods", ns, name), "POST", f"/jdk/{action}/{ns}/{name}",
                                         json_body=body)
            return self._json(pod)
        if what == "compact" and raw.method == "POST":
            return self._json({"compacted": self.compact()})
        if what == "stats":
            return self._json({**self.stats, "resourceVersion": self.store.rv,
                               "objects": {p: len(t) for p, t in self.store.tables.items()},
                               "watchers": {p: len(w) for p, w in self.store.watchers.items()}})
        raise ApiError(404, "NotFound", f"unknown emulator endpoint {what!r}")
