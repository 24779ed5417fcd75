"""Run a pod's containers as local processes on the pod's own loopback address (a tiny kubelet).

Each container's ``command``/``args`` run in this Python environment (dask entry points are translated),
with Kubernetes semantics for env (``$(VAR)``, ``valueFrom.fieldRef``), restart policies, back-off,
exit reasons and memory limits, and status reported as Kubernetes ``PodStatus`` JSON.

Security: dask listeners are forced onto the pod's address (``--host``, ``--dashboard-address``), so
nothing is reachable on 0.0.0.0 or 127.0.0.1; secrets in this process's environment are not passed on.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import datetime
import functools
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import psutil

from ..quantities import parse_quantity
from . import loopback, secretvolumes
from .forkserver import ForkError, ForkServer, forkable

logger = logging.getLogger(__name__)

LOG_CAP = 2 * 1024 * 1024  # bytes of output kept per container
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY")
_WORKER_ENTRIES = {"dask-worker", "dask-cuda-worker"}
_SCHEDULER_ENTRIES = {"dask-scheduler"}
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_WRAPPERS = {"tini", "dumb-init", "prepare.sh"}  # daskdev/dask's entrypoint: tini -g -- /usr/bin/prepare.sh

try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _child_setup(parent_pid: int) -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the process that runs the pod
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)


# -- command lines -------------------------------------------------------------------------------
class StartError(Exception):
    """The container's process could not be started (Kubernetes reason StartError, exit code 128)."""


class ConfigError(Exception):
    """The container's configuration cannot be satisfied (reason CreateContainerConfigError)."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are substituted, ``$$`` escapes, others stay."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


def _pop_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """Remove ``name value`` / ``name=value`` from args; the (last) value and the rest."""
    value, out, i = None, [], 0
    while i < len(args):
        a = args[i]
        if a == name and i + 1 < len(args):
            value = args[i + 1]
            i += 2
            continue
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return value, out


def _split_hostport(value: str | None) -> tuple[str, str | None]:
    """``"tls://0.0.0.0:8786"`` -> (``"tls://"``, ``"8786"``); ``":8787"`` -> ("", "8787"); ``"8787"`` -> ("", "8787")."""
    if not value:
        return "", None
    proto = ""
    if "://" in value:
        proto, value = value.split("://", 1)
        proto += "://"
    if value.isdigit():
        return proto, value
    _, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return proto, port
    return proto, None


def _dask_entry(argv: list[str]) -> tuple[str | None, list[str]]:
    if not argv:
        return None, argv
    head = os.path.basename(argv[0])
    if head in _WORKER_ENTRIES:
        return "worker", argv[1:]
    if head in _SCHEDULER_ENTRIES:
        return "scheduler", argv[1:]
    if head == "dask" and len(argv) > 1 and argv[1] in ("worker", "scheduler"):
        return argv[1], argv[2:]
    if _PYTHON.match(head) and len(argv) > 2 and argv[1] == "-m":
        mod = argv[2]
        if mod in ("distributed.cli.dask_worker", "distributed.cli.dask_scheduler"):
            return mod.rsplit("_", 1)[1], argv[3:]
        if mod == "dask" and len(argv) > 3 and argv[3] in ("worker", "scheduler"):
            return argv[3], argv[4:]
    return None, argv


def bind_dask_args(role: str, args: list[str], ip: str) -> list[str]:
    """Force every listener of a dask scheduler/worker (and its nanny) onto ``ip``."""
    host, args = _pop_option(args, "--host")
    _, args = _pop_option(args, "--interface")
    listen, args = _pop_option(args, "--listen-address")
    if listen:  # keep protocol and port, replace the host
        proto, port = _split_hostport(listen)
        args += ["--listen-address", f"{proto or 'tcp://'}{ip}:{port or 0}"]
        contact, args = _pop_option(args, "--contact-address")
        if contact:
            cproto, cport = _split_hostport(contact)
            args += ["--contact-address", f"{cproto or proto or 'tcp://'}{ip}:{cport or port or 0}"]
    else:
        proto, port = _split_hostport(host)
        args += ["--host", f"{proto}{ip}:{port}" if port else f"{proto}{ip}"]
    # Always: with --no-dashboard dask still serves /health and /metrics on that address (0.0.0.0 by default)
    dash, args = _pop_option(args, "--dashboard-address")
    _, port = _split_hostport(dash)
    if port is None:
        port = "8787" if role == "scheduler" else "0"
    args += ["--dashboard-address", f"{ip}:{port}"]
    return args


def container_argv(container: dict, env: dict[str, str], ip: str) -> list[str]:
    """The argv a container runs here: Kubernetes command/args with ``$(VAR)`` expanded, dask entry
    points run by this Python, and dask listeners bound to ``ip``."""
    command = [expand_vars(str(a), env) for a in container.get("command") or []]
    args = [expand_vars(str(a), env) for a in container.get("args") or []]
    argv = command + args if command else args
    while argv and os.path.basename(argv[0]) in _WRAPPERS:  # image entrypoint wrappers
        argv = argv[argv.index("--") + 1:] if "--" in argv[:4] else argv[1:]
        while argv and argv[0].startswith("-"):
            argv = argv[1:]
    # `sh -c "dask-worker ..."`: rewrite a simple shell command too
    if len(argv) == 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        try:
            inner = shlex.split(argv[2])
        except ValueError:
            inner = []
        if inner and _dask_entry(inner)[0] and not any(t in argv[2] for t in (";", "&", "|", "`", "$(")):
            argv = inner
    role, rest = _dask_entry(argv)
    if role:
        module = "distributed.cli.dask_worker" if role == "worker" else "distributed.cli.dask_scheduler"
        return [sys.executable, "-m", module, *bind_dask_args(role, rest, ip)]
    if argv and _PYTHON.match(os.path.basename(argv[0])):
        return [sys.executable, *argv[1:]]
    return argv


# -- environment ---------------------------------------------------------------------------------
def base_environment() -> dict[str, str]:
    """This process's environment without anything secret-looking (tokens must not leak into pods)."""
    env = {k: v for k, v in os.environ.items() if not any(w in k.upper() for w in _SECRET_WORDS)}
    env.pop("DASK_INTERNAL_INHERIT_CONFIG", None)
    return env


def memory_limit(container: dict) -> int | None:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(limit)) if limit not in (None, "") else None


def _field_ref(pod: dict, ip: str, path: str) -> str:
    meta = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    values = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace") or "default",
        "metadata.uid": meta.get("uid", ""), "status.podIP": ip, "status.podIPs": ip,
        "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1",
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName") or "localhost",
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName") or "default",
    }
    if path not in values:
        raise ConfigError(f'unsupported fieldRef "{path}"')
    return str(values[path])


def _resource_ref(container: dict, ref: dict) -> str:
    resource = ref.get("resource", "")
    kind, _, what = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(what)
    if value is None:
        value = psutil.virtual_memory().total if what == "memory" else os.cpu_count()
    divisor = parse_quantity(ref.get("divisor") or 1)
    return str(math.ceil(parse_quantity(value) / divisor))


def container_env(pod: dict, container: dict, ip: str) -> dict[str, str]:
    """The variables a container declares (``env``), resolved in order as Kubernetes does."""
    declared: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        source = item.get("valueFrom")
        if not source:
            declared[name] = expand_vars(str(item.get("value") or ""), declared)
        elif "fieldRef" in source:
            declared[name] = _field_ref(pod, ip, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            declared[name] = _resource_ref(container, source["resourceFieldRef"])
        else:
            kind, ref = next(iter(source.items()))
            if (ref or {}).get("optional"):
                continue
            what = "secret" if kind == "secretKeyRef" else "configmap"
            raise ConfigError(f'{what} "{(ref or {}).get("name")}" not found')
    return declared


# -- the runner ----------------------------------------------------------------------------------
class _Container:
    def __init__(self, spec: dict):
        self.spec = spec
        self.name = spec.get("name") or "main"
        self.image = spec.get("image") or ""
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.ready = False
        self.proc: asyncio.subprocess.Process | None = None
        self.container_id = ""
        self.oom = False
        self.log = bytearray()
        self.log_path: str | None = None
        self.task: asyncio.Task | None = None
        self.attempted = asyncio.Event()

    def status(self) -> dict:
        return {"name": self.name, "image": self.image, "imageID": "", "containerID": self.container_id,
                "ready": self.ready, "restartCount": self.restart_count, "started": "running" in self.state,
                "state": copy.deepcopy(self.state), "lastState": copy.deepcopy(self.last_state)}


class _Pod:
    def __init__(self, manifest: dict, ip: str, allocated: bool):
        self.manifest = manifest
        self.name = manifest["metadata"]["name"]
        self.ip = ip
        self.allocated = allocated
        spec = manifest.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.containers = [_Container(c) for c in spec.get("containers") or []]
        self.start_time = now()
        self.stopping = False
        self.stop_event = asyncio.Event()
        self.stop_task: asyncio.Task | None = None
        self.workdir: str | None = None
        #: secret volumes: the task writing them (shared by the containers), per container mount path -> directory
        self.mounting: asyncio.Task | None = None
        self.mounts: dict[str, dict[str, str]] = {}
        self.volume_dir: str | None = None
        self.last_status: dict | None = None
        self.cond_times: dict[str, tuple[str, str]] = {}

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the pod is being stopped; True when it is."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        return self.stopping


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s}s" if s else f"{m}m0s"


class LocalPodRunner:
    """Runs pods' containers as local process groups, each pod on its own loopback address."""

    def __init__(self, on_status: Callable[[str, dict], None] | None = None, *, run_processes: bool = True,
                 log_dir: str | None = None, enforce_memory_limits: bool = True,
                 image_pull_fail: Callable[[str], bool] | None = None,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, memory_poll_interval: float = 1.0,
                 fork_server: bool | ForkServer | None = None,
                 read_secret: secretvolumes.SecretReader | None = None,
                 volume_root: str | Callable[[], str] | None = None,
                 mount_retry_max: float = 2.0):
        self.on_status = on_status
        #: where Secrets of ``secret`` volumes come from (the API, or the local runtime's store); None: no such volumes
        self.read_secret = read_secret
        #: parent of the per-pod directories that hold mounted Secrets (made 0700); default: the system temp dir
        self.volume_root = volume_root
        self.mount_retry_max = mount_retry_max
        self._secrets_changed = asyncio.Event()
        self.run_processes = run_processes
        self.log_dir = log_dir
        self.enforce_memory_limits = enforce_memory_limits
        self.image_pull_fail = image_pull_fail
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.memory_poll_interval = memory_poll_interval
        self._pods: dict[str, _Pod] = {}
        self.memory_checks = self.pss_checks = 0  # memory-limit polls, and those that had to look at PSS
        if fork_server is None:
            import dask.config

            fork_server = bool(dask.config.get("kubernetes.local.fork-server", True))
        if isinstance(fork_server, ForkServer):  # one started early (the extension does, as it links)
            self.fork_server = fork_server if run_processes else fork_server.discard()
        else:
            self.fork_server = ForkServer() if fork_server and run_processes else None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    # -- public ----------------------------------------------------------------------------------
    def start_fork_server(self) -> bool:
        """Start the fork server now, in the background (its imports run in its own process), so that the
        first pods find distributed imported; True when there is one. Otherwise the first pod starts it."""
        if self.fork_server is None:
            return False
        try:
            self.fork_server.start(background=True)
        except OSError as exc:
            logger.warning("local runtime: fork server could not start (%s); starting processes directly", exc)
            self.fork_server.broken = str(exc)
            return False
        return True

    async def run(self, pod: dict, ip: str | None = None) -> str:
        """Start every container of ``pod``; its IP (allocated when not given)."""
        pod = copy.deepcopy(pod)
        name = pod["metadata"]["name"]
        if name in self._pods:
            raise ValueError(f"pod {name!r} is already running")
        allocated = ip is None
        if allocated:
            ports = {int(p["containerPort"]) for c in (pod.get("spec") or {}).get("containers") or []
                     for p in c.get("ports") or [] if str(p.get("containerPort", "")).isdigit()}
            ip = await asyncio.to_thread(loopback.allocate_address, sorted(ports | {8786, 8787}))
        p = _Pod(pod, ip, allocated)
        self._pods[name] = p
        if not self.run_processes:
            for c in p.containers:
                c.state, c.ready = {"running": {"startedAt": p.start_time}}, True
            self._changed(p)
            return ip
        self._changed(p)  # Pending, with its podIP
        for c in p.containers:
            c.task = asyncio.create_task(self._run_container(p, c))
        if p.containers:
            await asyncio.wait([asyncio.create_task(c.attempted.wait()) for c in p.containers])
        return ip

    def secrets_changed(self) -> None:
        """A Secret was created: pods waiting for one look again at once (the cluster makes its Secret just
        after its scheduler pod, which may already wait for it)."""
        self._secrets_changed.set()
        self._secrets_changed = asyncio.Event()

    def status(self, name: str) -> dict | None:
        p = self._pods.get(name)
        return copy.deepcopy(p.last_status) if p else None

    def names(self) -> list[str]:
        return list(self._pods)

    def pids(self, name: str) -> list[int]:
        """Process ids of the pod's running container leaders (for tests and diagnostics)."""
        p = self._pods.get(name)
        return [c.proc.pid for c in p.containers if c.proc and c.proc.returncode is None] if p else []

    def logs(self, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        p = self._pods.get(name)
        if p is None or not p.containers:
            return ""
        c = next((c for c in p.containers if c.name == container), None) if container else p.containers[0]
        if c is None:
            raise KeyError(f"container {container} is not valid for pod {name}")
        if c.log_path:
            try:
                with open(c.log_path, "rb") as f:
                    f.seek(max(0, os.path.getsize(c.log_path) - 4 * LOG_CAP))
                    data = f.read()
            except OSError:
                data = b""
        else:
            data = bytes(c.log)
        text = data.decode("utf-8", "replace")
        if tail_lines is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail_lines:]) if tail_lines > 0 else ""
        return text

    async def stop(self, name: str, grace_period: float = 5.0) -> None:
        """SIGTERM every container's process group, SIGKILL after ``grace_period``; wait until gone."""
        p = self._pods.get(name)
        if p is None:
            return
        if p.stop_task is None:
            p.stop_task = asyncio.create_task(self._stop(p, grace_period))
        await asyncio.shield(p.stop_task)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(n, 2.0) for n in list(self._pods)), return_exceptions=True)
        if self.fork_server is not None:
            await self.fork_server.close()

    # -- status ----------------------------------------------------------------------------------
    def _phase(self, p: _Pod) -> str:
        policy = "Never" if p.stopping else p.restart_policy
        running = waiting = stopped = succeeded = 0
        for c in p.containers:
            if "running" in c.state:
                running += 1
            elif "terminated" in c.state:
                stopped += 1
                succeeded += c.state["terminated"].get("exitCode") == 0
            elif c.last_state.get("terminated"):
                stopped += 1
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if not stopped:
            return "Pending"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"

    def _condition(self, p: _Pod, type_: str, ok: bool, reason: str = "", message: str = "") -> dict:
        status = "True" if ok else "False"
        prev = p.cond_times.get(type_)
        when = prev[1] if prev and prev[0] == status else now()
        p.cond_times[type_] = (status, when)
        cond = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": when}
        if not ok and reason:
            cond.update(reason=reason, message=message)
        return cond

    def _changed(self, p: _Pod) -> None:
        phase = self._phase(p)
        unready = [c.name for c in p.containers if not c.ready]
        ready = phase == "Running" and not unready
        reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        message = "" if reason == "PodCompleted" else f"containers with unready status: [{' '.join(unready)}]"
        status = {
            "phase": phase, "podIP": p.ip, "podIPs": [{"ip": p.ip}], "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}], "startTime": p.start_time, "qosClass": "BestEffort",
            "conditions": [
                self._condition(p, "PodReadyToStartContainers", True),
                self._condition(p, "Initialized", True),
                self._condition(p, "Ready", ready, reason, message),
                self._condition(p, "ContainersReady", ready, reason, message),
                self._condition(p, "PodScheduled", True),
            ],
            "containerStatuses": [c.status() for c in p.containers],
        }
        if status == p.last_status:
            return
        p.last_status = status
        if self.on_status is not None:
            try:
                self.on_status(p.name, copy.deepcopy(status))
            except Exception:
                logger.exception("on_status callback failed for pod %s", p.name)

    # -- containers ------------------------------------------------------------------------------
    def _environment(self, p: _Pod, c: _Container) -> tuple[list[str], dict[str, str]]:
        declared = container_env(p.manifest, c.spec, p.ip)
        mounts = p.mounts.get(c.name)
        if mounts:  # no mount namespace here: paths under a mount path point at the pod's own copy
            declared = {k: secretvolumes.rewrite(v, mounts) for k, v in declared.items()}
        env = base_environment()
        env.update(POD_IP=p.ip, HOSTNAME=p.name, PYTHONUNBUFFERED="1")
        env.update(declared)
        argv = container_argv(c.spec, declared, p.ip)
        if mounts:
            argv = [secretvolumes.rewrite(a, mounts) for a in argv]
        if not argv:
            raise StartError("no command specified")
        exe = argv[0]
        if "/" in exe:
            if not os.path.exists(exe):
                raise StartError(f'exec: "{exe}": stat {exe}: no such file or directory')
        elif shutil.which(exe, path=env.get("PATH", os.defpath)) is None:
            raise StartError(f'exec: "{exe}": executable file not found in $PATH')
        return argv, env

    async def _spawn(self, p: _Pod, c: _Container, argv, env) -> asyncio.subprocess.Process:
        if p.workdir is None:
            p.workdir = tempfile.mkdtemp(prefix=f"jdk-pod-{p.name[:40]}-")
        cwd = c.spec.get("workingDir")
        cwd = cwd if cwd and os.path.isdir(cwd) else p.workdir
        if self.fork_server is not None and self.fork_server.usable() and forkable(argv):
            try:
                return await self.fork_server.spawn(argv, env, cwd)
            except ForkError as exc:  # this one fork failed (fork() itself, say): start it directly
                logger.warning("local runtime: fork server could not start %s (%s); starting it directly", p.name, exc)
            except OSError as exc:  # the server is gone: say so once, go on without it
                logger.warning("local runtime: fork server unavailable (%s); starting processes directly", exc)
                self.fork_server.broken = str(exc)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(2 ** 16, loop), *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd,
                start_new_session=True, preexec_fn=functools.partial(_child_setup, os.getpid()))
            proc = asyncio.subprocess.Process(transport, protocol, loop)
            proc.exited = protocol.exited
        except FileNotFoundError:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH') from None
        except PermissionError:
            raise StartError(f'exec: "{argv[0]}": permission denied') from None
        return proc

    async def _drain(self, c: _Container, stream: asyncio.StreamReader) -> None:
        f = open(c.log_path, "wb") if c.log_path else None  # noqa: ASYNC230, SIM115 (local file, small writes)
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                if f is not None:
                    f.write(data)
                    f.flush()
                else:
                    c.log += data
                    if len(c.log) > LOG_CAP:
                        cut = len(c.log) - LOG_CAP
                        nl = c.log.find(b"\n", cut)
                        del c.log[:nl + 1 if 0 <= nl < cut + 4096 else cut]
        finally:
            if f is not None:
                f.close()

    async def _watch_memory(self, c: _Container, limit: int) -> None:
        proc = c.proc
        while proc.returncode is None:
            await asyncio.sleep(self.memory_poll_interval)
            try:
                root = psutil.Process(proc.pid)
                members = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            self.memory_checks += 1
            rss = 0
            for q in members:
                with contextlib.suppress(psutil.Error):
                    rss += q.memory_info().rss
            # RSS counts the pages a fork shares (with the fork server, with a nanny's multiprocessing helpers)
            # once per process; a cgroup charges them once: over the limit by RSS, check with PSS (costlier).
            if rss <= limit:
                continue
            self.pss_checks += 1
            if await asyncio.to_thread(_pss, members) <= limit:
                continue
            if proc.returncode is None:
                c.oom = True
                _killpg(proc.pid, signal.SIGKILL)
                return

    async def _mount(self, p: _Pod) -> bool:
        """Write the pod's secret volumes (secretvolumes.py); while a Secret is missing the pod waits in
        ContainerCreating with the kubelet's FailedMount words, and it is tried again. False: stopped first."""
        delay = 0.01
        while not p.stopping:
            changed = self._secrets_changed
            try:
                if self.read_secret is None:
                    raise secretvolumes.MountError("MountVolume.SetUp failed: this runtime cannot read Secrets")
                if p.volume_dir is None:
                    root = self.volume_root() if callable(self.volume_root) else self.volume_root
                    if root:
                        await asyncio.to_thread(os.makedirs, root, 0o700, True)
                    p.volume_dir = await asyncio.to_thread(tempfile.mkdtemp, f"-{p.name[:40]}", "jdk-vol-", root)
                p.mounts = await secretvolumes.materialize(p.manifest, self.read_secret, p.volume_dir)
                return True
            except (secretvolumes.MountError, OSError) as exc:
                message = str(exc)
            for c in p.containers:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": message}}
                c.attempted.set()
            self._changed(p)
            # until the delay passes, a Secret is created here, or the pod is stopped
            waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(p.stop_event.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            delay = min(delay * 2, self.mount_retry_max)
        return False

    async def _run_container(self, p: _Pod, c: _Container) -> None:
        backoff = self.backoff_initial
        try:
            if secretvolumes.secret_volumes(p.manifest):
                if p.mounting is None:
                    p.mounting = asyncio.create_task(self._mount(p))
                if not await asyncio.shield(p.mounting):
                    return
            while not p.stopping:
                if self.image_pull_fail is not None and self.image_pull_fail(c.image):
                    c.state = {"waiting": {"reason": "ErrImagePull", "message":
                               f'failed to pull and unpack image "{c.image}": not found'}}
                    self._changed(p)
                    c.attempted.set()
                    if await p.sleep(min(backoff, 1.0)):
                        break
                    c.state = {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{c.image}"'}}
                    self._changed(p)
                    if await p.sleep(backoff):
                        break
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                started = now()
                t0 = asyncio.get_running_loop().time()
                try:
                    argv, env = self._environment(p, c)
                    c.oom = False
                    if self.log_dir:
                        c.log_path = os.path.join(self.log_dir, f"{p.name}_{c.name}.log")
                    else:
                        c.log = bytearray()
                    proc = await self._spawn(p, c, argv, env)
                except ConfigError as e:
                    c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                    self._changed(p)
                    c.attempted.set()
                    if await p.sleep(backoff):
                        break
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                except StartError as e:
                    term = {"exitCode": 128, "reason": "StartError", "message": str(e),
                            "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now()}
                else:
                    c.proc, c.container_id = proc, f"local://{proc.pid}"
                    if p.stopping:
                        _killpg(proc.pid, signal.SIGTERM)
                    c.state, c.ready = {"running": {"startedAt": started}}, True
                    self._changed(p)
                    c.attempted.set()
                    drain = asyncio.create_task(self._drain(c, proc.stdout))
                    limit = memory_limit(c.spec) if self.enforce_memory_limits else None
                    watcher = asyncio.create_task(self._watch_memory(c, limit)) if limit else None
                    try:
                        # not proc.wait(): it also waits for the pipes, which leftover children may hold
                        await asyncio.shield(proc.exited)
                        rc = proc.returncode
                    finally:
                        _killpg(proc.pid, signal.SIGKILL)  # what is left of the container's group
                        if watcher:
                            watcher.cancel()
                        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                            await asyncio.wait_for(drain, 2)
                        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                            await asyncio.wait_for(proc.wait(), 2)
                    term = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error",
                            "startedAt": started, "finishedAt": now()}
                    if c.oom:
                        term.update(exitCode=137, reason="OOMKilled")
                    elif rc < 0:
                        term["exitCode"] = 128 - rc
                c.ready = False
                c.state = {"terminated": term}
                c.attempted.set()
                exit_code = term["exitCode"]
                if p.stopping or p.restart_policy == "Never" or (p.restart_policy == "OnFailure" and exit_code == 0):
                    break
                self._changed(p)
                if asyncio.get_running_loop().time() - t0 > 10 * self.backoff_max:
                    backoff = self.backoff_initial  # ran fine for a while: forget earlier crashes
                c.last_state = {"terminated": term}
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                           f"back-off {_duration(backoff)} restarting failed container={c.name} pod={p.name}"}}
                self._changed(p)
                if await p.sleep(backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max)
                c.restart_count += 1
        finally:
            c.attempted.set()
            if "running" in c.state or "waiting" in c.state and p.stopping:
                c.ready = False
                c.state = {"terminated": {"exitCode": 0 if "waiting" in c.state else 137, "reason":
                           "Completed" if "waiting" in c.state else "Error", "finishedAt": now()}}
            self._changed(p)

    async def _stop(self, p: _Pod, grace: float) -> None:
        p.stopping = True
        p.stop_event.set()
        procs = [c.proc for c in p.containers if c.proc and c.proc.returncode is None]
        members: list[psutil.Process] = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                members += [root, *root.children(recursive=True)]
            _killpg(proc.pid, signal.SIGTERM)
        tasks = [c.task for c in p.containers if c.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0))
            if pending:
                for c in p.containers:
                    if c.proc and c.proc.returncode is None:
                        _killpg(c.proc.pid, signal.SIGKILL)
                await asyncio.wait(pending)
        if members:  # grandchildren are reaped by init: wait until they are gone (or zombies)
            await asyncio.to_thread(_wait_gone, members, 5.0)
        if not self.run_processes:
            for c in p.containers:
                c.state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": p.start_time,
                                          "finishedAt": now()}}
                c.ready = False
        self._changed(p)
        self._pods.pop(p.name, None)
        if p.allocated:
            loopback.release_address(p.ip)
        if p.workdir:
            await asyncio.to_thread(shutil.rmtree, p.workdir, True)
        if p.volume_dir:  # the Secret's files go with the pod, as a kubelet unmounts its tmpfs
            await asyncio.to_thread(secretvolumes.remove, p.volume_dir)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also tells when the process itself exited (pipes may stay open longer)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop):
        super().__init__(limit=limit, loop=loop)
        self.exited = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        while time.monotonic() < deadline:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)


def _pss(procs: list[psutil.Process]) -> int:
    """Proportional set size of ``procs`` together: each shared page counted once across its sharers."""
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_full_info().pss
    return total


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
