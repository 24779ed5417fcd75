"""A fork server for the local runtime: dask pods start from a Python that has already imported distributed.

A fresh ``dask worker`` spends most of its start-up importing distributed (about 0.75 s of CPU here, twice
with a nanny); on 2 cores, a scheduler and four nanny workers starting together queue behind each other.
The fork server imports distributed once; each dask container is then a fork of it that sets up its own
session, environment, working directory and output, and runs the same CLI module as
``python -m distributed.cli.dask_worker`` would (``runpy``, so multiprocessing sees the same ``__main__``).

Protocol, over a ``SOCK_SEQPACKET`` socketpair (one JSON message per packet, boundaries kept):
  runner -> server  ``{"id", "argv", "env", "cwd"}`` with the output pipe's write end attached (SCM_RIGHTS)
  server -> runner  ``{"id", "pid"}`` or ``{"id", "error"}``, then ``{"exited": pid, "code": returncode}``
                    (``code`` as subprocess reports it: negative for a signal)

A nanny's worker process is started from an imported Python too: see :func:`_fork_nanny_workers`.
The server process can be started before any pod (:meth:`ForkServer.start`, as the extension loads).

Children are reaped by the server, which reports every exit in order after the child's start reply.
The server dies with the runner (PDEATHSIG), and each child dies with the server, so pods still end with
the process that runs them.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys

logger = logging.getLogger(__name__)

#: CLI modules a fork can run; ``container_argv`` turns every dask entry point into one of these.
MODULES = ("distributed.cli.dask_worker", "distributed.cli.dask_scheduler")
_PACKET = 1 << 20


def forkable(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2] in MODULES


def pre_spawn_environ() -> dict[str, str]:
    """What a dask Nanny puts in the environment before it starts its worker's Python, computed as
    ``distributed.nanny.Nanny`` does: ``distributed.nanny.pre-spawn-environ`` (env variables win), and a fixed
    PYTHONHASHSEED so that every worker hashes alike (distributed#8400)."""
    from distributed.nanny import _get_env_variables

    env = _get_env_variables("distributed.nanny.pre-spawn-environ")
    if env.get("PYTHONHASHSEED") in (None, "0"):
        env["PYTHONHASHSEED"] = "6640"
    return env


def server_environment(base: dict[str, str]) -> dict[str, str]:
    """The fork server's environment: ``base`` plus the nanny's pre-spawn variables. Those act only as a Python
    starts (glibc's malloc trim threshold, BLAS threads when numpy is imported, the hash seed), and a fork
    inherits them from its server: so a nanny's worker, forked, starts as a spawned one would. (Pods' own
    environments replace os.environ in every fork; these values only shape the interpreter.)"""
    try:
        extra = pre_spawn_environ()
    except Exception as exc:  # a broken dask config: the pods will say so; the server starts without
        logger.warning("fork server: no nanny pre-spawn environment (%r); nanny workers will be spawned", exc)
        extra = {}
    return {**base, **extra}


# -- the runner's side -----------------------------------------------------------------------------
class ForkedProcess:
    """What the pod runner needs of a process: pid, returncode, an ``exited`` future and its output."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader | None, loop: asyncio.AbstractEventLoop):
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = stdout
        self.exited = loop.create_future()

    def _exit(self, code: int) -> None:
        self.returncode = code
        if not self.exited.done():
            self.exited.set_result(None)

    async def wait(self) -> int:
        await asyncio.shield(self.exited)
        return self.returncode


class ForkError(OSError):
    """The fork server refused or failed one request; it still serves others."""


class ForkServer:
    def __init__(self):
        self.forked = 0  # processes started as forks (for diagnostics and tests)
        self._send_lock = asyncio.Lock()
        self._sock: socket.socket | None = None
        self._popen: subprocess.Popen | None = None
        self._reader: asyncio.Task | None = None
        self._starting: dict[int, asyncio.Future] = {}
        self._running: dict[int, ForkedProcess] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.broken: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def usable(self) -> bool:
        """Not broken, and on the event loop it started on (its reader and futures live there)."""
        if self.broken:
            return False
        try:
            return self._loop is None or self._loop is asyncio.get_running_loop()
        except RuntimeError:
            return False

    def start(self, background: bool = False) -> None:
        """Start the server process now; idempotent, needs no event loop. ``background``: nobody waits for it
        yet, so it imports at a lower priority (the extension starts it so as the Jupyter server starts, and the
        first cluster then finds distributed imported)."""
        if self._popen is not None or self.broken:
            return
        from .localpod import _child_setup, base_environment

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), *(["--background"] if background else [])],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                # Forks keep this process's initial environment in /proc/<pid>/environ: no secrets in it.
                # Plus what a nanny sets before its worker's Python starts (see server_environment).
                env=server_environment(base_environment()),
                # the same die-with-the-runner rule as every pod process
                preexec_fn=functools.partial(_child_setup, os.getpid()))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours

    async def _ensure(self) -> None:
        """Started, and read on this event loop."""
        self.start()
        if self._reader is None:
            self._loop = asyncio.get_running_loop()
            self._reader = asyncio.create_task(self._read())

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        async with self._lock:
            await self._ensure()
        rid = next(self._ids)
        rfd, wfd = os.pipe()
        started = self._starting[rid] = loop.create_future()
        try:
            packet = json.dumps({"id": rid, "argv": argv, "env": env, "cwd": cwd}).encode()
            await self._send(packet, wfd)
        except BaseException:
            os.close(rfd)
            self._starting.pop(rid, None)
            raise
        finally:
            os.close(wfd)
        try:
            proc = await started
        except BaseException:
            os.close(rfd)
            raise
        self.forked += 1
        proc.stdout = asyncio.StreamReader(limit=2 ** 16, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(proc.stdout, loop=loop),
                                     os.fdopen(rfd, "rb", 0))
        return proc

    async def _send(self, packet: bytes, fd: int) -> None:
        """Send one request; when many pods start at once the socket fills while the server forks: wait."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:  # one writer callback per socket: waiters take turns
            while True:
                try:
                    socket.send_fds(self._sock, [packet], [fd])
                    return
                except BlockingIOError:
                    writable = loop.create_future()
                    loop.add_writer(self._sock.fileno(), lambda: writable.done() or writable.set_result(None))
                    try:
                        await writable
                    finally:
                        loop.remove_writer(self._sock.fileno())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self._sock, _PACKET)
                if not data:
                    break
                msg = json.loads(data)
                if "exited" in msg:
                    proc = self._running.pop(msg["exited"], None)
                    if proc is not None:
                        proc._exit(msg["code"])
                    continue
                fut = self._starting.pop(msg["id"], None)
                if fut is None or fut.done():
                    continue
                if "error" in msg:
                    fut.set_exception(ForkError(msg["error"]))
                else:
                    # registered before any later packet, which may already report its exit
                    proc = self._running[msg["pid"]] = ForkedProcess(msg["pid"], None, loop)
                    fut.set_result(proc)
        except (OSError, ValueError) as exc:
            self.broken = f"fork server connection failed: {exc!r}"
        finally:
            self.broken = self.broken or "fork server exited"
            for fut in self._starting.values():
                if not fut.done():
                    fut.set_exception(OSError(self.broken))
            # Its children die with it (PDEATHSIG): nobody will report them any more.
            for proc in self._running.values():
                proc._exit(-signal.SIGKILL)
            self._running.clear()

    def discard(self) -> None:
        """Stop a server no pod used yet (no event loop needed). Returns None, so ``x = x.discard()`` drops it."""
        self.broken = self.broken or "discarded"
        if self._sock is not None:
            self._sock.close()
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait(10)

    async def close(self) -> None:
        """Stop the server (its remaining children die with it). Callable from any event loop."""
        if self._sock is not None:
            self._sock.close()
        proc, same_loop = self._popen, self._loop is asyncio.get_running_loop()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        if self._reader is not None and not self._reader.done():
            if same_loop:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
            elif self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._reader.cancel)
            else:
                # Its loop closed first, so it can never finish: no "Task was destroyed" noise when collected.
                self._reader._log_destroy_pending = False


# -- the server's side -----------------------------------------------------------------------------
def _run_child(sock: socket.socket, wakeup: int, msg: dict, out: int, ready: int) -> None:
    """In the forked child: become the container's process, run its dask CLI, never return."""
    code = 1
    try:
        sock.close()
        os.close(wakeup)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # its own process group, which the runner signals as a whole
        os.close(ready)  # the server replies with our pid only now: killpg(pid) must find the group
        from .localpod import _child_setup

        _child_setup(os.getppid())
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(devnull)
        os.chdir(msg["cwd"])
        os.environ.clear()
        os.environ.update(msg["env"])

        import runpy

        import dask.config
        from distributed.config import initialize_logging

        # Imported before this pod's environment existed: read DASK_* and logging config again, with the
        # handlers made at import removed first (or every line would be written twice).
        dask.config.refresh()
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in list(getattr(lg, "handlers", ())):
                lg.removeHandler(handler)
        initialize_logging(dask.config.config)
        argv = msg["argv"]
        if argv[2] == "distributed.cli.dask_worker" and "--no-nanny" not in argv:
            _fork_nanny_workers()
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


#: This server's environment as it started (what forks inherit at the interpreter level).
_STARTED_WITH: dict[str, str] = {}


def _fork_nanny_workers() -> bool:
    """In a nanny worker's pod, before the CLI runs: let the nanny start its worker process as a fork of this
    (already imported) process instead of a fresh Python, when that changes nothing the worker would see.

    The means is multiprocessing's own forkserver, whose server process here is a fork of this pod's process made
    now, while it has one thread, instead of a new ``python -c 'from multiprocessing.forkserver import main...'``.
    The nanny's worker then starts exactly as under forkserver: a child of that server, in the pod's process
    group (stopped and memory-limited with the pod), with its environment and dask config sent by the nanny
    (``WorkerProcess._run`` applies ``env`` and ``config``); the nanny kills, restarts and watches it as ever.
    dask's config is left as it was (the worker reads ``multiprocessing-method: spawn`` as under spawn); only
    the nanny's choice of context is switched. Not done when the pod asks for a multiprocessing method, or
    when its pre-spawn variables differ from the ones this server's Python started with.
    """
    import dask.config

    if "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD" in os.environ:
        return False
    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "spawn":
        return False
    try:
        if any(_STARTED_WITH.get(k) != v for k, v in pre_spawn_environ().items()):
            return False
        import multiprocessing
        import multiprocessing.forkserver
        import multiprocessing.util

        import distributed.nanny
        import distributed.process

        # The one variable a nanny sets for its children before each start (distributed.proctitle): the
        # worker forked from the server made now must find it too. Its value is this process's pid either way.
        import distributed.proctitle

        distributed.proctitle.enable_proctitle_on_children()
        spawnv = multiprocessing.util.spawnv_passfds
        multiprocessing.util.spawnv_passfds = functools.partial(_fork_instead_of_spawn, spawnv)
        try:
            multiprocessing.forkserver.ensure_running()  # its resource tracker is forked the same way
        finally:
            multiprocessing.util.spawnv_passfds = spawnv
        context = multiprocessing.get_context("forkserver")
        # where the nanny picks the context of its queues and of its worker's process
        distributed.nanny.get_mp_context = distributed.process.get_mp_context = lambda: context
        return True
    except Exception:  # whatever went wrong, the nanny still spawns its worker as usual
        import traceback

        traceback.print_exc()
        return False


def _fork_instead_of_spawn(spawnv, path: str, args: list[str], passfds) -> int:
    """``multiprocessing.util.spawnv_passfds`` for multiprocessing's own helper servers (``python -c 'from
    multiprocessing.<module> import main; main(...)'``): run that code in a fork, holding only ``passfds``
    and stdio as the new process would. Anything else is spawned as asked."""
    code = args[-1] if len(args) >= 2 and args[-2] == "-c" else ""
    if not code.startswith("from multiprocessing."):
        return spawnv(path, args, passfds)
    keep = {0, 1, 2, *map(int, passfds)}
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        exec(code, {"__name__": "__mp_server__"})  # noqa: S102 (multiprocessing's own one-liner)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(status)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            sock.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def _preload() -> None:
    """The point of this process: pay once for the imports every dask container makes at start."""
    import importlib

    for module in MODULES:
        importlib.import_module(module)
    import dask.config

    # Every scheduler (and every worker with a dashboard) also imports its dashboard, i.e. bokeh (~0.5 s of
    # CPU here), and its HTTP routes. Optional: without bokeh the dask processes do without, too.
    optional = ["distributed.dashboard.scheduler", "distributed.dashboard.worker",
                *dask.config.get("distributed.scheduler.http.routes", []),
                *dask.config.get("distributed.worker.http.routes", [])]
    for module in optional:
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def _preload_in_background(sock: socket.socket | None = None, niceness: int = 10) -> None:
    """:func:`_preload` at a lower priority: started as the Jupyter server starts, these imports should take only
    the CPU it leaves. In a thread of its own, because on Linux nice is per thread: the thread has ended before
    any fork, so pods run at this process's normal priority.

    Once a pod is asked for, the rest of the imports no longer yield: the thread gets this process's priority
    back. (Not earlier: full-priority imports as the Jupyter server starts slowed its start-up, see
    benchmarks/README.md.) Lowering a nice value needs privileges (root, CAP_SYS_NICE or RLIMIT_NICE); without
    them the imports stay niced to the end, as before."""
    import threading

    failed: list[BaseException] = []
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    tid: list[int] = []

    def run():
        tid.append(threading.get_native_id())
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid[0], min(19, ours + niceness))
        try:
            _preload()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="preload")
    thread.start()
    while sock is not None and thread.is_alive():
        ready, _, _ = select.select([sock], [], [], 0.5)
        if ready:  # a request is waiting (read later, by serve): no more yielding
            with contextlib.suppress(OSError, IndexError):
                os.setpriority(os.PRIO_PROCESS, tid[0], ours)
            break
    thread.join()
    if failed:  # e.g. a module that wants the main thread: import here as before
        _preload()


def serve(fd: int, background: bool = False) -> None:
    _STARTED_WITH.update(os.environ)
    sock = socket.socket(fileno=fd)
    if background:
        _preload_in_background(sock)
    else:
        _preload()
    # Forks share this process's memory until they write to it, and a garbage collection in a fork writes to
    # every object it scans (its gc header): a full collection in a pod scanned all of distributed and bokeh
    # (110 ms of CPU here) and copied most of their pages. Objects frozen here are not scanned in forks.
    gc.collect()
    gc.freeze()
    rd, wakeup = os.pipe()
    os.set_blocking(wakeup, False)
    signal.set_wakeup_fd(wakeup)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    while True:
        ready, _, _ = select.select([sock, rd], [], [], 1.0)
        if rd in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(rd, 4096)
        _reap(sock)
        if sock not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, _PACKET, 1)
        except OSError:
            return
        if not data:
            return  # the runner is gone
        msg = json.loads(data)
        if len(fds) != 1 or not forkable(msg.get("argv", [])):
            for f in fds:
                os.close(f)
            sock.send(json.dumps({"id": msg.get("id"), "error": "not a dask CLI command"}).encode())
            continue
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for f in (fds[0], ready_r, ready_w):
                os.close(f)
            sock.send(json.dumps({"id": msg["id"], "error": str(exc)}).encode())
            continue
        if pid == 0:
            os.close(rd)
            os.close(ready_r)
            _run_child(sock, wakeup, msg, fds[0], ready_w)
        os.close(fds[0])
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF once the child has its own session (or died trying)
        os.close(ready_r)
        sock.send(json.dumps({"id": msg["id"], "pid": pid}).encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]), background="--background" in sys.argv[2:])
