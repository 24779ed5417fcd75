"""Reconnect by name on the emulated Kubernetes API: ``KubeCluster.from_name`` and ``list_clusters`` for a
cluster made through the REST API (what the panel posts), and for one made from Python in another process;
attached from this process and from yet another process (a second kernel), with real dask processes."""
import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from distributed import Client

from jupyter_dask_kube import ClusterNotFound, KubeCluster, list_clusters
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime

from helpers import no_pods, rest_call, tiny_template, wait_model, wait_until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def username(monkeypatch):
    name = f"u{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JUPYTERHUB_USER", name)
    return name


@pytest.fixture
def jp_server_config(username, emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
        "DaskKube": {"backend": "kubernetes", "templates": {"tiny": tiny_template()}},
    }


@pytest.fixture
def runtime(emulated_kubernetes):
    rt = KubernetesRuntime(emulated_kubernetes.namespace, kubeconfig=emulated_kubernetes.kubeconfig)
    yield rt
    asyncio.run(rt.close())


def run_python(code: str, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh Python process (another kernel); it prints one JSON line last: returned."""
    path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def test_from_name_of_a_rest_cluster(jp_fetch, username, runtime):
    code, model = await rest_call(jp_fetch, "POST", "clusters",
                                  body={"template": "tiny", "workers": 1, "name": "Panel made", "keep": True},
                                  expect=201)
    cid = model["id"]
    assert model["keep"] is True and model["expires"] is None  # no lifetime configured
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, what="1 worker")

    listed = await asyncio.to_thread(list_clusters)
    assert [(c["name"], c["display_name"], c["status"]) for c in listed] == [(cid, "Panel made", "running")]
    assert listed[0]["scheduler_address"] == model["scheduler_address"] and listed[0]["workers"] == 1
    assert (listed[0]["keep"], listed[0]["expires"]) == (True, None)

    # by id, and by the name the card shows
    cluster = await KubeCluster.from_name(cid, asynchronous=True)
    try:
        assert cluster.name == cid and cluster.scheduler_address == model["scheduler_address"]
        assert cluster.shutdown_on_close is False and cluster.keep is True
        async with Client(cluster, asynchronous=True) as client:
            assert await client.submit(lambda x: x + 1, 41) == 42
        cluster.scale(2)
        await wait_until(lambda: len(cluster.scheduler_info.get("workers", {})) == 2, 120, what="2 workers")
        logs = await cluster.get_logs()
        assert "Scheduler at" in logs[f"{cid}-scheduler"]
        cluster.adapt(minimum=1, maximum=2)
        assert cluster._adaptive is not None
    finally:
        await cluster.close()
    # close() of an attached cluster lets go: the cluster still runs, the server still shows it
    assert await runtime.read_pod(f"{cid}-scheduler") is not None
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", what="still running after detach")

    again = await KubeCluster.from_name("Panel made", asynchronous=True, shutdown_on_close=True)
    assert again.name == cid
    await again.close()
    await wait_until(lambda: no_pods(runtime, cluster_selector(cid)), 60, what="pods deleted by close()")
    assert await runtime.read_service(cid) is None


async def test_from_name_across_processes(username, runtime, emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    made = run_python("""
        import json
        from jupyter_dask_kube import KubeCluster
        from helpers import small_pod
        cluster = KubeCluster(small_pod(), n_workers=1, name="py-{uuid}")
        cluster.wait_for_workers(1, timeout=120)
        assert cluster.shutdown_on_close is True
        cluster.shutdown_on_close = False  # leave it running when this kernel goes
        print(json.dumps({"name": cluster.name, "address": cluster.scheduler_address}))
    """)
    name = made["name"]
    assert name.startswith("py-")
    assert await runtime.read_pod(f"{name}-scheduler") is not None  # the first process is gone, the cluster stays

    seen = run_python(f"""
        import json
        from distributed import Client
        from jupyter_dask_kube import KubeCluster, list_clusters
        names = [c["name"] for c in list_clusters()]
        cluster = KubeCluster.from_name({name!r})
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
        client = Client(cluster)
        total = client.submit(sum, [1, 2, 3]).result()
        client.close()
        logs = cluster.get_logs()
        cluster.close()
        print(json.dumps({{"names": names, "address": cluster.scheduler_address, "total": total,
                          "logs": sorted(logs)}}))
    """)
    assert seen["names"] == [name] and seen["address"] == made["address"] and seen["total"] == 6
    assert f"{name}-scheduler" in seen["logs"] and len(seen["logs"]) == 3
    assert len(await runtime.list_pods(cluster_selector(name))) == 3  # close() of an attached cluster keeps it

    cluster = await KubeCluster.from_name(name, asynchronous=True)
    await cluster._shutdown()
    await wait_until(lambda: no_pods(runtime, cluster_selector(name)), 60, what="pods deleted by shutdown()")


async def test_from_name_bad_names(username, runtime, emulated_kubernetes, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", emulated_kubernetes.kubeconfig)
    with pytest.raises(ClusterNotFound, match="no Dask cluster named 'dask-nobody-1' .* you have none"):
        await KubeCluster.from_name("dask-nobody-1", asynchronous=True)
    with pytest.raises(ClusterNotFound, match="'My thing'"):
        await KubeCluster.from_name("My thing", asynchronous=True)
    with pytest.raises(ValueError, match="non-empty string"):
        KubeCluster.from_name("", asynchronous=True)
    monkeypatch.delenv("KUBECONFIG")
    with pytest.raises(ValueError, match="no Kubernetes API is configured"):
        KubeCluster.from_name("x", backend="local")
    assert await runtime.list_pods(f"hub.jupyter.org/username={username}") == []  # nothing made on the way


def panel_snippet(cluster: dict) -> str:
    """The code the panel inserts or drops for ``cluster``: labextension/src/format.ts's clientCode, compiled
    with the project's TypeScript and run by node."""
    import shutil
    import tempfile

    tsc = os.path.join(ROOT, "node_modules", ".bin", "tsc")
    if not os.path.exists(tsc) or not shutil.which("node"):
        pytest.skip("needs node and the project's node_modules (npm ci)")
    out = tempfile.mkdtemp(prefix="jdk-format-")
    try:
        subprocess.run([tsc, "--outDir", out, "--module", "commonjs", "--target", "es2019", "--skipLibCheck",
                        os.path.join(ROOT, "labextension", "src", "format.ts")], check=True, capture_output=True,
                       timeout=300)
        code = f"process.stdout.write(require({os.path.join(out, 'format.js')!r}).clientCode({json.dumps(cluster)}))"
        return subprocess.run(["node", "-e", code], check=True, capture_output=True, text=True, timeout=60).stdout
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def test_the_panel_snippet_attaches_by_name(jp_fetch, username, runtime):
    """What the card drops into a notebook, run in another process: it gets the cluster object, by name."""
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, what="1 worker")
    snippet = panel_snippet(model)
    # the server gives the snippet (connect_code, with the namespace spelled out); the panel inserts it as is
    assert snippet == model["connect_code"]
    assert snippet.startswith("from jupyter_dask_kube import KubeCluster\n")
    assert f'from_name("{cid}", namespace="{runtime.namespace}")' in snippet
    local = {k: v for k, v in model.items() if k != "connect_code"}
    assert 'Client("tls://' in panel_snippet({**local, "backend": "local"})  # local clusters: by address
    seen = await asyncio.to_thread(run_python, snippet + textwrap.dedent("""
        import json
        cluster.scale(2)  # the cluster object itself: it scales
        cluster.wait_for_workers(2, timeout=120)
        print(json.dumps({"name": cluster.name, "address": cluster.scheduler_address,
                          "sum": client.submit(sum, [1, 2]).result(), "attached": not cluster.shutdown_on_close,
                          "workers": len(cluster.scheduler_info["workers"])}))
        client.close()
        cluster.close()
    """))
    assert seen == {"name": cid, "address": model["scheduler_address"], "sum": 3, "attached": True, "workers": 2}
    # the server's card follows what the kernel did
    await wait_model(jp_fetch, cid, lambda m: m["workers"] == 2, what="the card to count the kernel's worker")
    await wait_model(jp_fetch, cid, lambda m: m["status"] == "running", what="still running after the kernel closed")
    await rest_call(jp_fetch, "DELETE", "clusters", cid, expect=204)
    await wait_until(lambda: no_pods(runtime, cluster_selector(cid)), 60, what="pods deleted")


async def test_an_attached_kernel_does_not_freeze_the_servers_worker_count(jp_fetch, username, runtime):
    """The scheduler keeps ONE worker-status subscriber: a kernel attaching by name must not take it from the
    server, whose card would stop following the workers. The kernel runs the card's snippet and stays attached
    while the server scales; both views must follow."""
    code, model = await rest_call(jp_fetch, "POST", "clusters", body={"template": "tiny", "workers": 1}, expect=201)
    cid = model["id"]
    model = await wait_model(jp_fetch, cid, lambda m: m["status"] == "running" and m["workers"] == 1, what="1 worker")
    path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
    kernel = await asyncio.create_subprocess_exec(
        sys.executable, "-c", model["connect_code"] + textwrap.dedent("""
            import json, sys, time
            print(json.dumps({"attached": cluster.name, "sum": client.submit(sum, [1, 2]).result()}), flush=True)
            sys.stdin.readline()  # the server scales to 2 meanwhile
            deadline = time.time() + 60
            while len(cluster.scheduler_info["workers"]) != 2 and time.time() < deadline:
                time.sleep(0.1)
            print(json.dumps({"workers": len(cluster.scheduler_info["workers"]),
                              "sum": client.submit(sum, [3, 4]).result()}), flush=True)
            client.close()
            cluster.close()
        """),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        line = await asyncio.wait_for(kernel.stdout.readline(), 120)
        assert json.loads(line or b"null") == {"attached": cid, "sum": 3}, (await kernel.stderr.read())[-3000:]
        await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 2}, expect=200)
        # the server's own view follows: its subscription was not replaced by the kernel's
        await wait_model(jp_fetch, cid, lambda m: m["workers"] == 2 and m["status"] == "running", 120,
                         what="the server's card to count 2 workers while a kernel is attached")
        await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 1}, expect=200)
        await wait_model(jp_fetch, cid, lambda m: m["workers"] == 1, 120, what="the card to count 1 worker again")
        await rest_call(jp_fetch, "PATCH", "clusters", cid, body={"workers": 2}, expect=200)
        kernel.stdin.write(b"go\n")
        await kernel.stdin.drain()
        line = await asyncio.wait_for(kernel.stdout.readline(), 120)
        assert json.loads(line or b"null") == {"workers": 2, "sum": 7}, (await kernel.stderr.read())[-3000:]
        assert await asyncio.wait_for(kernel.wait(), 60) == 0
    finally:
        if kernel.returncode is None:
            kernel.kill()
            await kernel.wait()
    await rest_call(jp_fetch, "DELETE", "clusters", cid, expect=204)
    await wait_until(lambda: no_pods(runtime, cluster_selector(cid)), 60, what="pods deleted")
