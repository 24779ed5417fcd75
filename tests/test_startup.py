"""Start-up of a real Jupyter server on the local runtime: the fork server starts as the extension loads (before
any cluster), a cluster of nanny workers comes up from it, and stopping the server leaves no process behind."""
import psutil

from helpers import wait_for
from jupyter_process import JupyterServer, server_config, server_env

NANNY_TEMPLATE = {"nanny": {"workers": 2, "worker": {"kind": "Pod", "spec": {"containers": [{
    "name": "dask", "image": "ghcr.io/dask/dask:latest",
    "args": ["dask-worker", "--nthreads", "1", "--no-dashboard", "--memory-limit", "1GB"]}]}}}}


def fork_servers(pid):
    return [p for p in psutil.Process(pid).children()
            if "jupyter_dask_kube.runtimes.forkserver" in " ".join(p.cmdline())]


def test_fork_server_starts_with_the_extension_and_the_server_leaves_nothing(tmp_path):
    env = server_env(tmp_path, config=server_config(NANNY_TEMPLATE, backend="local"), user="alice")
    server = JupyterServer(tmp_path, env).start()
    try:
        [fork_server] = fork_servers(server.proc.pid)  # no cluster asked for yet
        assert server.clusters() == {}
        _, model = server.call("POST", "clusters", body={"template": "nanny"}, expect=201)
        wait_for(lambda: server.clusters()[model["id"]]["workers"] == 2, 120, what="2 nanny workers")
        family = psutil.Process(server.proc.pid).children(recursive=True)
        forks = fork_server.children(recursive=True)
        # scheduler + 2 x (nanny, its multiprocessing forkserver and resource tracker, worker): all forks
        assert len(forks) >= 7 and all(p.cmdline() == fork_server.cmdline() for p in forks), \
            [p.cmdline() for p in forks]
        assert fork_servers(server.proc.pid) == [fork_server]
    except BaseException:
        server.stop()
        raise
    left = server.stop()
    assert not left, [p.pid for p in left]
    gone = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not gone, [(p.pid, p.cmdline()) for p in gone]


def test_fork_server_at_start_can_be_turned_off(tmp_path):
    env = server_env(tmp_path, config=server_config(NANNY_TEMPLATE, backend="local"), user="alice")
    env["DASK_KUBERNETES__LOCAL__FORK_SERVER_AT_START"] = "false"
    server = JupyterServer(tmp_path, env).start()
    try:
        assert fork_servers(server.proc.pid) == []
        _, model = server.call("POST", "clusters", body={"template": "nanny", "workers": 1}, expect=201)
        wait_for(lambda: server.clusters()[model["id"]]["workers"] == 1, 120, what="1 nanny worker")
        assert len(fork_servers(server.proc.pid)) == 1  # started by the first pod
    finally:
        assert not server.stop()


def test_auto_backend_with_a_kubeconfig_drops_the_early_fork_server(tmp_path):
    # "auto" is only resolved once the extension loads: the fork server started as it linked is then stopped
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: x}}]\n")
    env = server_env(tmp_path, config=server_config(NANNY_TEMPLATE, backend="auto"), user="alice",
                     kubeconfig=str(kubeconfig))
    server = JupyterServer(tmp_path, env).start()
    try:
        _, status = server.call("GET", "status", expect=200)
        assert status["backend"] == "kubernetes"
        children = psutil.Process(server.proc.pid).children()
        assert fork_servers(server.proc.pid) == []
        assert all(p.status() != psutil.STATUS_ZOMBIE for p in children), "the dropped server was reaped"
    finally:
        assert not server.stop()
