"""Pod runtime on a Kubernetes API, through the official ``kubernetes`` client.

The client is blocking: every call runs in a small thread pool so the event loop (Jupyter's, or the
cluster's) never waits on the network. Objects are passed through as the API's JSON (``_preload_content
=False``), which skips the client's model (de)serialization: it is the hot path when scaling to hundreds
of pods, and it keeps runtimes interchangeable (see base.py).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import socket
import threading
import types
import weakref
from collections.abc import AsyncIterator

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from .base import PodRuntime, RuntimeAPIError, WatchEvent

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Server-side watch length: short enough that a closed watcher's thread ends soon, long enough to be cheap.
WATCH_TIMEOUT_SECONDS = 120
RETRY_DELAYS = (0.1, 0.3, 0.9, 2.0)
# Between watch reconnections after a failure (an ERROR event, a dropped or refused connection).
WATCH_RETRY_DELAYS = (0.1, 0.3, 0.9, 2.0, 5.0)
# How long closing a stream waits for its reading thread to finish before going on without it.
STREAM_CLOSE_TIMEOUT = 5.0


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        os.path.join(SERVICE_ACCOUNT_DIR, "token")
    )


def kubeconfig_paths() -> list[str]:
    """Existing kubeconfig files, as the client would look for them (KUBECONFIG, else ~/.kube/config)."""
    env = os.environ.get("KUBECONFIG")
    candidates = env.split(os.pathsep) if env else [os.path.expanduser("~/.kube/config")]
    return [p for p in candidates if p and os.path.isfile(p)]


def kubernetes_available() -> bool:
    """What backend="auto" asks: is there a Kubernetes API configured for this process?"""
    return in_cluster() or bool(kubeconfig_paths())


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    if in_cluster() and not kubeconfig:
        try:
            with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) as f:
                return f.read().strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no usable kubeconfig: the client call will say so
        return "default"


def _handshake_error(exc: ApiException, host: str, pod: str) -> RuntimeAPIError:
    """The client reports a refused WebSocket upgrade as status 0 with the HTTP answer in its text
    ("Handshake status 403 Forbidden -+-+- {headers} -+-+- b'{...Status JSON...}'"): recover the API's words."""
    text = str(exc.reason or exc)
    m = re.search(r"Handshake status (\d+)\s*([^-]*)", text)
    if not m:
        return RuntimeAPIError(0, "Unreachable", f"port-forward to pod {pod} through {host} failed: {text}")
    status, reason, message = int(m.group(1)), m.group(2).strip().replace(" ", "") or "Error", ""
    start, end = text.find("{", text.rfind("-+-+-")), text.rfind("}")
    if start >= 0 and end > start:
        with contextlib.suppress(ValueError, AttributeError):
            body = json.loads(text[start:end + 1])  # the body as text (websocket-client >= 1.8)
            reason, message = body.get("reason") or reason, body.get("message") or ""
    return RuntimeAPIError(status, reason, message or f"port-forward to pod {pod} refused ({status})")


def _api_error(exc: BaseException, host: str) -> RuntimeAPIError:
    """Turn the client's exceptions into the runtime's, keeping the API server's own words."""
    if isinstance(exc, RuntimeAPIError):
        return exc
    if isinstance(exc, ApiException):
        reason, message = exc.reason or "Error", ""
        try:
            body = json.loads(exc.body or "{}")
            reason = body.get("reason") or reason
            message = body.get("message") or ""
        except (TypeError, ValueError):
            message = (exc.body or "").strip() if isinstance(exc.body, str) else ""
        return RuntimeAPIError(exc.status or 0, reason, message or str(exc.reason))
    return RuntimeAPIError(0, "Unreachable", f"Kubernetes API at {host} is unreachable: {exc}")


def _client_sends_as_is(api_client, manifest: dict) -> bool:
    """Whether the client's validation of ``manifest`` (a V1Pod model, serialized back) gives the same
    manifest: then sending it unvalidated sends the same object. Not so when it would fail (then the
    client's own error must be raised, by its own call) or rewrite the body (snake_case keys)."""
    try:
        return api_client.sanitize_for_serialization(k8s.V1Pod.model_validate(manifest)) == manifest
    except Exception:  # noqa: BLE001 - any failure means: let the client's validating call decide
        return False


def _unvalidated(api, method: str):
    """The client's generated method without its pydantic argument check (``raw_function`` of
    ``validate_call``, client >= 35); None for older clients, which do not validate."""
    raw = getattr(getattr(type(api), method, None), "raw_function", None)
    return raw.__get__(api) if raw is not None else None


class _WatchStream:
    """One watch request, read by its own thread. Everything it reports to the reader is tagged with
    it, so the reader drops what a stream it already replaced still says."""

    def __init__(self, runtime: KubernetesRuntime, label_selector: str, rv: str | None, loop, queue: asyncio.Queue):
        self.runtime = runtime
        self.label_selector = label_selector
        self.rv = rv
        self.loop = loop
        self.queue = queue
        self.stop = threading.Event()
        self.resp = None
        self.finished = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="k8s-watch")
        # Events read but not yet handed to the loop. One loop callback takes all there are, so a burst
        # (600 events for scale(200)) wakes the loop a few times instead of once per event.
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()

    def start(self):
        rt = self.runtime
        with rt._streams_lock:
            rt._streams.add(self)
            stats = rt.watch_stats
            stats["started"] += 1
            stats["open"] = len(rt._streams)
            stats["peak"] = max(stats["peak"], stats["open"])
        self.thread.start()

    def _tell(self, callback, *args):
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _event(self, event: dict):
        with self._pending_lock:
            first = not self._pending
            self._pending.append(event)
        if first:  # else a hand-over is already scheduled, and will take this one too
            self._tell(self._hand_over)

    def _hand_over(self):
        """On the loop: queue every event read so far, in order, as one batch."""
        with self._pending_lock:
            events, self._pending = self._pending, []
        if events:
            self.queue.put_nowait((self, "events", events))

    def _run(self):
        rt = self.runtime
        outcome = ("end", None)
        try:
            resp = rt.core.list_namespaced_pod(
                rt.namespace,
                label_selector=self.label_selector,
                watch=True,
                resource_version=self.rv,
                timeout_seconds=rt.watch_timeout,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(10, rt.watch_timeout + 30),
            )
            self.resp = resp
            if self.stop.is_set():  # closed while connecting: close() did not see the response yet
                self.shutdown()
            try:
                for line in iter_resp_lines(resp):
                    if self.stop.is_set():
                        break
                    if line:
                        self._event(json.loads(line))
            finally:
                resp.release_conn()
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which decides
            outcome = ("error", exc)
        finally:
            with rt._streams_lock:
                rt._streams.discard(self)
                rt.watch_stats["open"] = len(rt._streams)
            if not self.stop.is_set():
                self._tell(self._hand_over)  # (already done, unless the loop has not run it yet)
                self._tell(self.queue.put_nowait, (self, *outcome))
            self._tell(self.finished.set)

    def shutdown(self):
        """Stop reading; unblocks the thread's read at once (urllib3 >= 2.3)."""
        self.stop.set()
        resp = self.resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:
                pass

    async def close(self):
        """Stop reading and wait for the thread to finish, so the next stream is the only one."""
        self.shutdown()
        try:
            await asyncio.wait_for(self.finished.wait(), STREAM_CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("pod watch thread did not end within %ss", STREAM_CLOSE_TIMEOUT)


class KubernetesRuntime(PodRuntime):
    backend = "kubernetes"

    def __init__(
        self,
        namespace: str | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        max_threads: int = 16,
    ):
        cfg = k8s.Configuration()
        # The client reads KUBECONFIG once, at import: read it now so a later setting counts.
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        #: In a pod with its service account: Services and pods are reachable, port-forward is never needed.
        self.inside_cluster = not kubeconfig and in_cluster()
        if not self.inside_cluster:
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        else:
            k8s_config.load_incluster_config(client_configuration=cfg)
        # One pooled connection per thread, so parallel creates do not queue on the pool.
        cfg.connection_pool_maxsize = max_threads
        self.host = cfg.host
        self._cfg = cfg
        self.api_client = k8s.ApiClient(configuration=cfg)
        self.core = k8s.CoreV1Api(self.api_client)
        self.authz = k8s.AuthorizationV1Api(self.api_client)
        self.net = k8s.NetworkingV1Api(self.api_client)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="k8s-api")
        # create_worker_pod: the client's create without its per-call validation, and which shapes it checked
        self._create_pod_unchecked = _unvalidated(self.core, "create_namespaced_pod")
        self._checked_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: Server-side length of one watch request (seconds); tests shorten it to provoke reconnections.
        self.watch_timeout = WATCH_TIMEOUT_SECONDS
        #: Watch counters: streams started, open now and at most at once, ERROR events, stream errors,
        #: relists, and messages dropped from streams already replaced.
        self.watch_stats: collections.Counter = collections.Counter()
        self._streams: set[_WatchStream] = set()
        self._streams_lock = threading.Lock()
        # port-forward: the client's stream() swaps its ApiClient's request method during the call, so it gets
        # an ApiClient of its own, one call at a time (never the shared one other threads are using)
        self.pf = types.SimpleNamespace(core=None)  # its CoreV1Api, made on first use
        self._pf_lock = threading.Lock()
        self._forwards: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        super().__init__(namespace or _default_namespace(kubeconfig, context))

    # -- plumbing --------------------------------------------------------------------------------
    async def _call(self, fn, *args, retry: bool = True, **kwargs):
        """Run a blocking client call in the pool; retry transient failures (429, 5xx, unreachable)."""
        loop = asyncio.get_running_loop()
        delays = RETRY_DELAYS if retry else ()
        attempt = 0

        def run():
            resp = fn(*args, **kwargs)
            # With _preload_content=False the body is still on the socket: read it here, in the pool
            # thread. Unread (deletes) or read later on the event loop (JSON), the connection stays out
            # of the pool, so the next call opens a new TCP connection (184 connects for 200 deletes,
            # benchmarks/control_plane.py) and the event loop does blocking socket reads.
            if kwargs.get("_preload_content") is False:
                getattr(resp, "data", None)  # cached by urllib3: later .data reads cost nothing
            return resp

        while True:
            try:
                return await loop.run_in_executor(self._pool, run)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                err = _api_error(exc, self.host)
                err.attempts = attempt
                if not err.retriable or attempt >= len(delays):
                    raise err from None
                logger.debug("retrying %s after %s", getattr(fn, "__name__", fn), err)
                await asyncio.sleep(delays[attempt])
                attempt += 1

    @staticmethod
    def _json(resp) -> dict:
        return json.loads(resp.data)

    async def _unless_missing(self, fn, *args, **kwargs):
        """The call's raw answer, or None when the object is not there (404)."""
        try:
            return await self._call(fn, *args, _preload_content=False, **kwargs)
        except RuntimeAPIError as err:
            if err.status == 404:
                return None
            raise

    async def _create(self, create_fn, read_fn, manifest: dict, answer: bool = True) -> dict | None:
        name = manifest.get("metadata", {}).get("name")
        try:
            resp = await self._call(create_fn, self.namespace, manifest, _preload_content=False)
        except RuntimeAPIError as err:
            # A create retried after a lost answer finds its own object: that is success, not a clash.
            if err.status == 409 and name and getattr(err, "attempts", 0):
                return await read_fn(name) if answer else None
            raise
        return self._json(resp) if answer else None

    # -- pods ------------------------------------------------------------------------------------
    async def create_pod(self, manifest: dict) -> dict:
        return await self._create(self.core.create_namespaced_pod, self.read_pod, manifest)

    async def create_worker_pod(self, manifest: dict, shape: object = None) -> None:
        """As create_pod, without parsing the answer, and with the client's own check of the body done once
        per ``shape``: the client (>= 35) validates every body into a V1Pod model and serializes it back
        (~0.1 ms of CPU per pod, a sixth of a create), and these manifests differ only in names."""
        create = self.core.create_namespaced_pod
        if shape is not None and self._create_pod_unchecked is not None:
            try:
                sends_as_is = self._checked_shapes[shape]
            except KeyError:
                sends_as_is = self._checked_shapes[shape] = _client_sends_as_is(self.api_client, manifest)
            except TypeError:  # not hashable, or not weakly referenceable: check per pod
                sends_as_is = False
            if sends_as_is:
                create = self._create_pod_unchecked
        await self._create(create, self.read_pod, manifest, answer=False)

    async def read_pod(self, name: str) -> dict | None:
        resp = await self._unless_missing(self.core.read_namespaced_pod, name, self.namespace)
        return None if resp is None else self._json(resp)

    async def list_pods(self, label_selector: str = "") -> list[dict]:
        return (await self._list_pods_raw(label_selector))["items"]

    async def _list_pods_raw(self, label_selector: str) -> dict:
        resp = await self._call(
            self.core.list_namespaced_pod, self.namespace, label_selector=label_selector, _preload_content=False
        )
        return self._json(resp)

    async def delete_pod(self, name: str, grace_period_seconds: int | None = None) -> bool:
        resp = await self._unless_missing(
            self.core.delete_namespaced_pod,
            name,
            self.namespace,
            grace_period_seconds=grace_period_seconds,
            propagation_policy="Background",
        )
        return resp is not None

    async def annotate_pod(self, name: str, annotations: dict[str, str | None]) -> None:
        await self._call(
            self.core.patch_namespaced_pod,
            name,
            self.namespace,
            {"metadata": {"annotations": annotations}},
            _preload_content=False,
        )

    async def pod_logs(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        kwargs = {"_preload_content": False}
        if container:
            kwargs["container"] = container
        if tail_lines:
            kwargs["tail_lines"] = tail_lines
        resp = await self._call(self.core.read_namespaced_pod_log, name, self.namespace, **kwargs)
        return resp.data.decode("utf-8", errors="replace")

    def _watch_delay(self, failures: int) -> float:
        return WATCH_RETRY_DELAYS[min(failures, len(WATCH_RETRY_DELAYS)) - 1] if failures else 0.0

    async def watch_pods(self, label_selector: str = "", resource_version: str | None = None) -> AsyncIterator[WatchEvent]:
        """List then watch, resuming from the last resourceVersion; relist on 410 Gone.

        A relist after 410 is diffed against what this watcher has seen, so callers still get one
        consistent stream of ADDED/MODIFIED/DELETED. One watch request is open at a time: a stream that
        ended (ERROR event, dropped connection) is closed and its thread finished before the next one
        starts, and whatever it still sends is dropped. Every interruption but a clean server-side end
        backs off before reconnecting, so an API server that keeps failing is not hammered.
        """
        known: dict[str, dict] = {}
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stats = self.watch_stats
        current: list[_WatchStream] = []

        async def relist():
            listing = await self._list_pods_raw(label_selector)
            stats["relists"] += 1
            seen = set()
            events = []
            for pod in listing["items"]:
                name = pod["metadata"]["name"]
                seen.add(name)
                old = known.get(name)
                if old is None:
                    events.append(WatchEvent("ADDED", pod))
                elif old["metadata"].get("resourceVersion") != pod["metadata"].get("resourceVersion"):
                    events.append(WatchEvent("MODIFIED", pod))
            for name in set(known) - seen:
                events.append(WatchEvent("DELETED", known[name]))
            return listing["metadata"].get("resourceVersion"), events

        def apply(ev: WatchEvent) -> WatchEvent:
            name = ev.object["metadata"]["name"]
            if ev.type == "DELETED":
                known.pop(name, None)
            else:
                known[name] = ev.object
            return ev

        rv = resource_version
        failures = 0
        try:
            if rv is None:
                rv, events = await relist()
                for ev in events:
                    yield apply(ev)
                yield WatchEvent("SYNCED", {})
            while True:
                s = _WatchStream(self, label_selector, rv, loop, queue)
                current[:] = [s]
                s.start()
                got_events = False
                started = loop.time()
                while True:
                    source, kind, payload = await queue.get()
                    if source is not s:  # a closed stream's late words (its "end" once restarted a watch)
                        stats["stale_dropped"] += len(payload) if kind == "events" else 1
                        continue
                    if kind == "events":
                        interrupted = False
                        for i, event in enumerate(payload):
                            etype, obj = event.get("type"), event.get("object") or {}
                            if etype == "ERROR":
                                stats["error_events"] += 1
                                failures += 1
                                if obj.get("code") == 410:
                                    rv = None  # too old: relist below
                                logger.warning("pod watch ERROR %s %s: %s", obj.get("code"), obj.get("reason"), obj.get("message"))
                                interrupted = True
                                stats["stale_dropped"] += len(payload) - i - 1  # as if read after the ERROR
                                break
                            new_rv = obj.get("metadata", {}).get("resourceVersion")
                            if new_rv:
                                rv = new_rv
                            got_events = True
                            failures = 0
                            if etype == "BOOKMARK":
                                continue
                            yield apply(WatchEvent(etype, obj))
                        if interrupted:
                            break
                    elif kind == "end":
                        # A clean end (the server's timeoutSeconds) resumes at once; one that came with
                        # nothing and at once is a failure in disguise (a proxy closing the stream).
                        if not got_events and loop.time() - started < 1.0:
                            failures += 1
                        break
                    else:  # error: back off, then resume from the last version seen
                        err = _api_error(payload, self.host)
                        stats["errors"] += 1
                        if err.status == 410:
                            rv = None
                        failures += 1
                        logger.warning("pod watch interrupted (%s); resuming", err)
                        break
                await s.close()
                current.clear()
                if failures:
                    await asyncio.sleep(self._watch_delay(failures))
                while rv is None:  # relist until it works: a cache that stops updating would be worse
                    try:
                        rv, events = await relist()
                    except RuntimeAPIError as err:
                        failures += 1
                        logger.warning("pod relist failed (%s); retrying", err)
                        await asyncio.sleep(self._watch_delay(failures))
                        continue
                    for ev in events:
                        yield apply(ev)
        finally:
            for s in current:
                s.shutdown()

    async def pod_events(self, name: str) -> list[dict]:
        """Events about one pod (the scheduler's and the autoscaler's words); [] when events may not be read:
        they only ever end a wait early, so a Role without them costs nothing but that."""
        try:
            resp = await self._call(
                self.core.list_namespaced_event,
                self.namespace,
                field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
                _preload_content=False,
            )
        except RuntimeAPIError as err:
            if err.status in (403, 404):
                return []
            raise
        return self._json(resp).get("items") or []

    # -- services --------------------------------------------------------------------------------
    async def create_service(self, manifest: dict) -> dict:
        return await self._create(self.core.create_namespaced_service, self.read_service, manifest)

    async def read_service(self, name: str) -> dict | None:
        resp = await self._unless_missing(self.core.read_namespaced_service, name, self.namespace)
        return None if resp is None else self._json(resp)

    async def list_services(self, label_selector: str = "") -> list[dict]:
        resp = await self._call(
            self.core.list_namespaced_service, self.namespace, label_selector=label_selector, _preload_content=False
        )
        return self._json(resp)["items"]

    async def delete_service(self, name: str) -> bool:
        resp = await self._unless_missing(self.core.delete_namespaced_service, name, self.namespace)
        return resp is not None

    # -- network policies ------------------------------------------------------------------------
    network_policies = True

    async def create_network_policy(self, manifest: dict) -> dict:
        return await self._create(self.net.create_namespaced_network_policy, self.read_network_policy, manifest)

    async def read_network_policy(self, name: str) -> dict | None:
        resp = await self._unless_missing(self.net.read_namespaced_network_policy, name, self.namespace)
        return None if resp is None else self._json(resp)

    async def delete_network_policy(self, name: str) -> bool:
        resp = await self._unless_missing(self.net.delete_namespaced_network_policy, name, self.namespace)
        return resp is not None

    async def namespace_exists(self) -> bool | None:
        """Whether our namespace exists; None when we may not read it (most service accounts may not)."""
        try:
            return await self._unless_missing(self.core.read_namespace, self.namespace) is not None
        except RuntimeAPIError as err:
            if err.status == 403:
                return None
            raise

    # -- port-forward ----------------------------------------------------------------------------------
    async def open_port_forward(self, pod: str, port: int) -> socket.socket:
        """A socket connected to ``port`` of the pod through the API server (``pods/portforward``, WebSocket).

        One stream per call, as the client makes them. Refusals (RBAC, pod not running) raise
        :class:`RuntimeAPIError` with the API server's words; a failure to reach the pod's port (nothing
        listening) shows as the socket closing, its reason in the kubelet's error channel (logged)."""
        from kubernetes.stream import portforward

        def run():
            with self._pf_lock:
                if self.pf.core is None:
                    self.pf.core = k8s.CoreV1Api(k8s.ApiClient(configuration=self._cfg))
                pf = portforward(self.pf.core.connect_get_namespaced_pod_portforward, pod, self.namespace,
                                 ports=str(port))
            sock = pf.socket(port)._socket
            # the PortForward object (its thread and websocket) lives as long as the socket is used
            self._forwards[sock.fileno()] = pf
            return sock

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, run)
        except ApiException as exc:
            raise _handshake_error(exc, self.host, pod) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _api_error(exc, self.host) from None

    # -- secrets ---------------------------------------------------------------------------------
    async def create_secret(self, manifest: dict) -> dict:
        return await self._create(self.core.create_namespaced_secret, self.read_secret, manifest)

    async def read_secret(self, name: str) -> dict | None:
        resp = await self._unless_missing(self.core.read_namespaced_secret, name, self.namespace)
        return None if resp is None else self._json(resp)

    async def delete_secret(self, name: str) -> bool:
        resp = await self._unless_missing(self.core.delete_namespaced_secret, name, self.namespace)
        return resp is not None

    # -- permissions -----------------------------------------------------------------------------
    async def can_i(self, verb: str, resource: str, subresource: str = "", group: str = "") -> bool:
        """SelfSubjectAccessReview for one verb on one resource (core API group by default) in our namespace."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": verb,
                    "resource": resource,
                    "subresource": subresource or None,
                    "group": group,
                }
            },
        }
        resp = await self._call(self.authz.create_self_subject_access_review, body, _preload_content=False)
        return bool(self._json(resp).get("status", {}).get("allowed"))

    async def close(self) -> None:
        for s in list(self._streams):
            s.shutdown()
        for pf in list(self._forwards.values()):
            with contextlib.suppress(Exception):
                pf.close()
        self._forwards.clear()
        pf_api = self.pf.core
        if pf_api is not None:
            await asyncio.to_thread(pf_api.api_client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.api_client.close)
