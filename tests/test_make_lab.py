"""`make lab`, the README's first command, as root (a container, a CI box: as here): JupyterLab starts (Jupyter
alone refuses root without --allow-root), says why it passed --allow-root, listens on 127.0.0.1 and prints the
URL to open, which answers. Run through the very command the Makefile's lab target runs, then stopped by its
process group."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from jupyter_process import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks the start as root")


def lab_command() -> list[str]:
    """What `make lab` runs once set up (`make -n` prints it and runs nothing)."""
    out = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in out.splitlines() if "scripts/lab.sh" in line]
    return line.split()


def test_make_lab_starts_as_root_on_loopback_and_prints_the_url(tmp_path):
    cmd = lab_command()
    assert cmd[:2] == ["sh", "scripts/lab.sh"], cmd
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KUBE"))}
    env.update(PATH=f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}", DASK_CONFIG=str(tmp_path / "dask"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path))
    # the Makefile's command with $(LAB_ARGS) = this test's port and folder (no port or home of anyone else's)
    proc = subprocess.Popen(cmd + [f"--port={port}", "--ServerApp.port_retries=0",
                                   f"--ServerApp.root_dir={tmp_path}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            found = re.search(r"make lab: JupyterLab is up; open (\S+)", "".join(lines))
            url = found and found.group(1)
            assert proc.poll() is None or url, f"make lab exited with {proc.returncode}:\n{''.join(lines)[-3000:]}"
            assert time.monotonic() < deadline, f"no URL printed in 120 s:\n{''.join(lines)[-3000:]}"
            time.sleep(0.2)
        text = "".join(lines)
        assert "running as root" in text and "--allow-root" in text
        assert "Running as root is not recommended" not in text
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/lab\?token=\w+", url), url
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200 and b"JupyterLab" in resp.read()
        # loopback only: every listening socket of the server is on 127.0.0.1
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    finally:
        family = []
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 20
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.cmdline()) for p in left]
    def group():  # what is left in the group, zombies included (an init that does not reap keeps those)
        out = []
        for p in psutil.process_iter(["pid", "status", "cmdline"]):
            try:
                if os.getpgid(p.pid) == proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    out.append((p.pid, p.info["cmdline"]))
            except (ProcessLookupError, psutil.Error):
                pass
        return out

    while group() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group()
