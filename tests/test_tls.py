"""TLS per cluster: the credentials (tlscerts.py), the Secret and its mounting (tls.py, runtimes/secretvolumes.py),
and clusters that refuse clients without their credentials, on the local runtime and every Kubernetes target
(the emulator and the real kube-apiserver with the node agent: every object made over HTTP by the official client).
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import os
import stat
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from distributed import Client, Security

from jupyter_dask_kube import KubeCluster
from jupyter_dask_kube import tls as tlsmod
from jupyter_dask_kube.objects import cluster_selector
from jupyter_dask_kube.runtimes import RuntimeAPIError
from jupyter_dask_kube.runtimes import secretvolumes
from jupyter_dask_kube.runtimes.kubernetes import KubernetesRuntime
from jupyter_dask_kube.runtimes.local import LocalRuntime
from jupyter_dask_kube.testing.fixtures import BACKEND_PARAMS, backend_target, kube_api
from jupyter_dask_kube.tlscerts import VALIDITY, make_credentials, scheduler_hosts

from helpers import small_pod, wait_until

ROOT = Path(__file__).parents[1]


# -- credentials (pure) ----------------------------------------------------------------------------
def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except Exception:  # noqa: BLE001 (InvalidSignature)
        return False
    return cert.issuer == ca.subject


def test_credentials_are_valid_signed_by_their_ca_and_fit_their_role():
    now = datetime.datetime.now(datetime.timezone.utc)
    creds = make_credentials("dask-alice-1", scheduler_hosts("dask-alice-1", "ns"), now=now)
    ca, node, client = _cert(creds.ca_cert), _cert(creds.cert), _cert(creds.client_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for cert in (ca, node, client):
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        assert cert.not_valid_after_utc - now >= VALIDITY - datetime.timedelta(seconds=1)
    assert _signed_by(node, ca) and _signed_by(client, ca)
    for cert in (node, client):
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"dask-alice-1", "dask-alice-1.ns", "dask-alice-1.ns.svc"} <= set(san.get_values_for_type(x509.DNSName))
    usages = lambda c: set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
    # a worker is a server (to the scheduler's calls) and a client (of the scheduler); the owner's is a client only
    assert usages(node) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert "PRIVATE KEY" in creds.key and "PRIVATE KEY" in creds.client_key
    assert "PRIVATE KEY" not in repr(creds) and "BEGIN" not in repr(creds)


def test_every_cluster_has_its_own_ca():
    a, b = make_credentials("dask-a-1"), make_credentials("dask-a-1")  # even with the same name
    assert a.ca_cert != b.ca_cert and a.key != b.key and a.client_key != b.client_key
    assert not _signed_by(_cert(a.client_cert), _cert(b.ca_cert))
    assert not _signed_by(_cert(b.cert), _cert(a.ca_cert))


def test_secret_manifest_round_trips_and_is_labelled_and_owned():
    creds = make_credentials("dask-alice-1")
    owner = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dask-alice-1-scheduler", "uid": "u-1"}}
    secret = tlsmod.build_secret("dask-alice-1", "alice", creds, owner=owner)
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "dask-alice-1-tls"
    assert secret["metadata"]["labels"]["dask.org/cluster-name"] == "dask-alice-1"
    assert secret["metadata"]["labels"]["hub.jupyter.org/username"] == "alice"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"}
    assert tlsmod.credentials_from_secret(secret) == creds
    broken = dict(secret, data={k: v for k, v in secret["data"].items() if k != "client.key"})
    with pytest.raises(ValueError, match="client.key"):
        tlsmod.credentials_from_secret(broken)
    with pytest.raises(ValueError, match="garbled"):
        tlsmod.credentials_from_secret(dict(secret, data={**secret["data"], "ca.crt": "%%%"}))


def test_mount_credentials_adds_volume_mounts_and_config_variables():
    pod = small_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "False"},
                                           {"name": "KEEP", "value": "1"}]
    out = tlsmod.mount_credentials(pod, "dask-alice-1")
    assert pod["spec"].get("volumes") is None  # a copy
    (vol,) = out["spec"]["volumes"]
    assert vol["secret"]["secretName"] == "dask-alice-1-tls" and vol["secret"]["defaultMode"] == 0o400
    c = out["spec"]["containers"][0]
    assert c["volumeMounts"] == [{"name": "dask-tls", "mountPath": "/etc/dask-tls", "readOnly": True}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"  # the template cannot turn it off
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/etc/dask-tls/ca.crt"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == "/etc/dask-tls/tls.key" and env["KEEP"] == "1"
    assert tlsmod.mount_credentials(out, "dask-alice-1") == out  # idempotent


def test_tls_switch():
    import dask

    assert tlsmod.tls_enabled() is True
    with dask.config.set({"kubernetes.tls": False}):
        assert tlsmod.tls_enabled() is False
    with dask.config.set({"kubernetes.tls": "false"}):
        assert tlsmod.tls_enabled() is False
    assert tlsmod.tls_enabled(False) is False


def test_connect_code_names_files_not_keys():
    code = tlsmod.connect_code("tls://127.64.0.5:8786", "/run/x/secrets/dask-a-tls")
    assert "PRIVATE" not in code and "'/run/x/secrets/dask-a-tls/client.key'" in code
    assert "Client('tls://127.64.0.5:8786', security=security)" in code
    compile(code, "<connect_code>", "exec")


# -- secret volumes for pods run as processes (pure but for the files) --------------------------
@pytest.mark.asyncio
async def test_materialize_writes_owner_only_files_and_rewrites_paths(tmp_path):
    creds = make_credentials("dask-a-1")
    secret = tlsmod.build_secret("dask-a-1", "a", creds)
    pod = tlsmod.mount_credentials(small_pod(), "dask-a-1")
    pod["metadata"] = {"name": "p", "namespace": "ns"}
    asked = []

    async def read(ns, name):
        asked.append((ns, name))
        return secret if name == "dask-a-1-tls" else None

    mounts = await secretvolumes.materialize(pod, read, str(tmp_path / "pod"))
    assert asked == [("ns", "dask-a-1-tls")]
    (cname,) = mounts
    directory = mounts[cname]["/etc/dask-tls"]
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for f in ("ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"):
        assert stat.S_IMODE(os.stat(os.path.join(directory, f)).st_mode) == 0o600
    assert Path(directory, "tls.key").read_text() == creds.key
    m = mounts[cname]
    assert secretvolumes.rewrite("/etc/dask-tls/ca.crt", m) == f"{directory}/ca.crt"
    assert secretvolumes.rewrite("--tls-ca-file=/etc/dask-tls/ca.crt", m) == f"--tls-ca-file={directory}/ca.crt"
    assert secretvolumes.rewrite("/etc/dask-tlsx/ca.crt", m) == "/etc/dask-tlsx/ca.crt"
    assert secretvolumes.rewrite("tls://10.0.0.1:8786", m) == "tls://10.0.0.1:8786"

    async def missing(ns, name):
        return None

    with pytest.raises(secretvolumes.MountError, match='secret "dask-a-1-tls" not found'):
        await secretvolumes.materialize(pod, missing, str(tmp_path / "pod2"))
    with pytest.raises(secretvolumes.MountError, match="invalid secret item path"):
        secretvolumes.write_files(str(tmp_path / "x"), {"../escape": b"no"})


# -- clusters on every runtime ----------------------------------------------------------------------
@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    return request.param


@pytest.fixture
def target(request, backend):
    return backend_target(request, backend)


@pytest.fixture
def make_runtime(target):
    made = []

    def make(namespace=None, kubeconfig=None):
        rt = LocalRuntime("default") if target is None else KubernetesRuntime(
            namespace or target.namespace, kubeconfig=kubeconfig or target.kubeconfig)
        made.append(rt)
        return rt

    yield make
    loop = asyncio.new_event_loop()
    for rt in made:
        loop.run_until_complete(rt.close())
    loop.close()


async def _refused(address: str, security=None) -> str:
    """Connect a Client as an intruder would; the error it gets (the test fails if it connects)."""
    kwargs = {"security": security} if security is not None else {}
    try:
        client = await Client(address, asynchronous=True, timeout=5, **kwargs)
    except Exception as exc:  # noqa: BLE001 (what matters is that it is refused)
        return f"{type(exc).__name__}: {exc}"
    await client.close()
    raise AssertionError(f"a Client without this cluster's credentials connected to {address}")


def _volume_secret(pod: dict) -> str | None:
    """The Secret the pod's TLS volume mounts (the real API server adds a service-account token volume too)."""
    return next((v["secret"]["secretName"] for v in pod["spec"].get("volumes") or []
                 if v.get("secret") and v["name"] == tlsmod.VOLUME_NAME), None)


@pytest.mark.asyncio
async def test_tls_cluster_serves_its_owner_and_refuses_everyone_else(make_runtime, target):
    rt = make_runtime()
    bob_rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, n_workers=1, asynchronous=True) as cluster, \
            KubeCluster(small_pod(), runtime=bob_rt, username="bob", asynchronous=True) as bobs:
        assert cluster.scheduler_address.startswith("tls://") and bobs.scheduler_address.startswith("tls://")
        assert cluster.security.require_encryption
        async with Client(cluster, asynchronous=True) as client:  # the owner: nothing to pass
            await client.wait_for_workers(1, timeout=120)
            assert await client.submit(lambda x: x + 1, 41) == 42
            (worker,) = await client.run(lambda: 0)
        assert worker.startswith("tls://")
        for address in (cluster.scheduler_address, worker):
            # no credentials at all, plain TCP, and bob's (another user's cluster's) credentials: all refused
            await _refused(address)
            await _refused(address.replace("tls://", "tcp://"))
            await _refused(address, bobs.security)
            await _refused(address, Security(tls_ca_file=cluster._credentials.ca_cert, require_encryption=True))

        # the Secret: there, owned by the scheduler pod, mounted into every pod of the cluster
        secret = await rt.read_secret(f"{cluster.name}-tls")
        sched = await rt.read_pod(f"{cluster.name}-scheduler")
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"]["dask.org/cluster-name"] == cluster.name
        (ref,) = secret["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("Pod", sched["metadata"]["name"], sched["metadata"]["uid"])
        pods = await rt.list_pods(cluster_selector(cluster.name))
        assert len(pods) == 2 and all(_volume_secret(p) == f"{cluster.name}-tls" for p in pods)
        name = cluster.name
        local_dir = cluster.credentials_directory
        if target is None:  # local runtime: owner-only files
            assert stat.S_IMODE(os.stat(local_dir).st_mode) == 0o700
            files = sorted(os.listdir(local_dir))
            assert {"ca.crt", "client.crt", "client.key"} <= set(files)
            assert all(stat.S_IMODE(os.stat(os.path.join(local_dir, f)).st_mode) == 0o600 for f in files)
            # ...and the snippet the panel inserts works from them
            ns: dict = {}
            exec(tlsmod.connect_code(cluster.scheduler_address, local_dir).replace(
                "security=security)", "security=security, asynchronous=True)"), ns)
            client = await ns["client"]
            assert await client.submit(lambda: 7) == 7
            await client.close()
        else:
            assert local_dir is None
    # gone with the cluster, as the API server (or the local store) says
    if target is None:
        assert await rt.read_secret(f"{name}-tls") is None
        assert not os.path.exists(local_dir)
    else:
        api = kube_api(target, no_faults=True)
        try:
            names = await asyncio.to_thread(
                lambda: [s.metadata.name for s in api.list_namespaced_secret(
                    target.namespace, label_selector=cluster_selector(name)).items])
        finally:
            api.api_client.close()
        assert names == []


@pytest.mark.asyncio
async def test_from_name_reads_the_clusters_secret(make_runtime, target, monkeypatch):
    if target is None:
        pytest.skip("from_name attaches to Kubernetes clusters (the local runtime lives in one process)")
    monkeypatch.setenv("KUBECONFIG", target.kubeconfig)
    rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, n_workers=1, asynchronous=True) as cluster:
        attached = await KubeCluster.from_name(cluster.name, namespace=target.namespace, asynchronous=True)
        try:
            assert attached.tls and attached.scheduler_address == cluster.scheduler_address
            async with Client(attached, asynchronous=True) as client:
                await client.wait_for_workers(1, timeout=120)
                assert await client.submit(lambda: 5) == 5
        finally:
            await attached.close()


@pytest.mark.asyncio
async def test_tls_off(make_runtime):
    rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, tls=False, n_workers=1, asynchronous=True) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        assert await rt.read_secret(f"{cluster.name}-tls") is None
        assert _volume_secret(await rt.read_pod(f"{cluster.name}-scheduler")) is None
        async with Client(cluster.scheduler_address, asynchronous=True) as client:  # anyone may: TLS is off
            await client.wait_for_workers(1, timeout=120)
            assert await client.submit(lambda: 1) == 1


def _objects(target, name) -> dict:
    api = kube_api(target, no_faults=True)
    try:
        sel = cluster_selector(name)
        return {"pods": [p.metadata.name for p in api.list_namespaced_pod(target.namespace, label_selector=sel).items
                         if not p.metadata.deletion_timestamp],
                "services": [s.metadata.name for s in api.list_namespaced_service(target.namespace).items
                             if s.metadata.name == name],
                "secrets": [s.metadata.name for s in api.list_namespaced_secret(target.namespace).items
                            if s.metadata.name.startswith(name)]}
    finally:
        api.api_client.close()


@pytest.mark.asyncio
async def test_secret_that_cannot_be_made_gives_a_reason_and_leaves_nothing(make_runtime, target, backend,
                                                                           request, monkeypatch):
    """The API refuses the Secret: the emulator by an injected RBAC denial, the real API server by a Role
    without "create secrets", the local runtime by a refusing store."""
    if target is None:
        async def refuse(self, manifest):
            raise RuntimeAPIError(403, "Forbidden", 'secrets is forbidden: no secrets here')
        monkeypatch.setattr(LocalRuntime, "create_secret", refuse)
        rt = make_runtime()
    elif backend == "kubernetes":
        target.set_faults(forbidden=[["create", "secrets"]])
        request.addfinalizer(target.clear_faults)
        rt = make_runtime()
    elif backend == "kubernetes-real":
        plane = target.plane
        target = target.in_namespace(f"tls-{uuid.uuid4().hex[:8]}")
        ns = target.namespace
        request.addfinalizer(lambda: plane.delete_namespace(ns))
        docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
        role = next(d for d in docs if d["kind"] == "Role")
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
        path = os.path.join(tempfile.mkdtemp(prefix="jdk-tls-rbac-"), "rbac.yaml")
        Path(path).write_text(yaml.safe_dump_all(docs))
        plane.grant(ns, rbac_yaml=path)
        rt = make_runtime(namespace=ns, kubeconfig=plane.user_kubeconfig_for(ns))
    else:
        pytest.skip("no way to refuse a Secret on this target")
    cluster = KubeCluster(small_pod(), runtime=rt, n_workers=1, asynchronous=True)
    name = cluster.name
    with pytest.raises(RuntimeError) as info:
        await cluster
    message = str(info.value)
    assert f"cannot create the Secret {name}-tls" in message and "orbidden" in message, message
    if target is None:
        await wait_until(lambda: _local_empty(rt, name), 30, what="nothing left")
    else:
        await wait_until(lambda: _kube_empty(target, name), 60, what="nothing left")


async def _local_empty(rt, name) -> bool:
    return not await rt.list_pods(cluster_selector(name)) and await rt.read_service(name) is None \
        and await rt.read_secret(f"{name}-tls") is None


async def _kube_empty(target, name) -> bool:
    return await asyncio.to_thread(_objects, target, name) == {"pods": [], "services": [], "secrets": []}


@pytest.mark.asyncio
async def test_pod_waits_for_a_missing_secret_then_runs_with_its_files(make_runtime, target):
    """A kubelet keeps a pod whose secret volume is missing in ContainerCreating (FailedMount); once the Secret
    exists the pod starts and its container reads the keys at the mount path."""
    rt = make_runtime()
    name = f"mnt-{uuid.uuid4().hex[:8]}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
           "spec": {"restartPolicy": "Never",
                    "volumes": [{"name": "creds", "secret": {"secretName": f"{name}-s"}}],
                    "containers": [{"name": "c", "image": "busybox", "command": ["cat", "/etc/creds/token"],
                                    "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}]}]}}
    await rt.create_pod(pod)
    try:
        async def waiting():
            p = await rt.read_pod(name)
            states = [c.get("state", {}) for c in (p.get("status") or {}).get("containerStatuses") or []]
            return any("not found" in (s.get("waiting") or {}).get("message", "") for s in states) and p
        p = await wait_until(waiting, 60, what="FailedMount")
        assert p["status"]["phase"] == "Pending"
        (cs,) = p["status"]["containerStatuses"]
        assert cs["state"]["waiting"]["reason"] == "ContainerCreating"
        assert f'secret "{name}-s" not found' in cs["state"]["waiting"]["message"]
        await rt.create_secret({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-s"},
                                "data": {"token": base64.b64encode(b"s3cr3t-value").decode()}})

        async def done():
            p = await rt.read_pod(name)
            return (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") and p
        p = await wait_until(done, 60, what="pod ran")
        assert p["status"]["phase"] == "Succeeded", p["status"]
        assert "s3cr3t-value" in await rt.pod_logs(name)
    finally:
        await rt.delete_pod(name, grace_period_seconds=0)
        await rt.delete_secret(f"{name}-s")


@pytest.mark.asyncio
async def test_a_secret_that_cannot_be_mounted_fails_the_start_with_the_kubelets_words(monkeypatch):
    """The Secret is accepted but never reaches the pods (here: the local store loses it): the scheduler pod
    waits in ContainerCreating, and the start fails with FailedMount's reason, leaving nothing behind."""
    async def lost(self, manifest):
        return dict(manifest)

    monkeypatch.setattr(LocalRuntime, "create_secret", lost)
    rt = LocalRuntime("default")
    try:
        cluster = KubeCluster(small_pod(), runtime=rt, n_workers=1, scheduler_timeout=3, asynchronous=True)
        with pytest.raises(RuntimeError) as info:
            await cluster
        message = str(info.value)
        assert "did not start within 3s" in message, message
        assert f'secret "{cluster.name}-tls" not found' in message and "ContainerCreating" in message, message
        await wait_until(lambda: _local_empty(rt, cluster.name), 30, what="nothing left")
    finally:
        await rt.close()


def test_the_api_server_validates_secrets_and_volume_mounts(kube_target):
    """What the emulator refuses, the real API server refuses too (422), so the emulator tier cannot pass a
    manifest that a cluster would reject."""
    from kubernetes.client import ApiException

    api = kube_api(kube_target, no_faults=True)
    name = f"v-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(ApiException) as info:
            api.create_namespaced_secret(kube_target.namespace, {
                "metadata": {"name": name}, "data": {"bad key!": base64.b64encode(b"x").decode()}})
        assert info.value.status == 422
        pod = {"metadata": {"name": name}, "spec": {"containers": [{
            "name": "c", "image": "busybox", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}}
        with pytest.raises(ApiException) as info:
            api.create_namespaced_pod(kube_target.namespace, pod)
        assert info.value.status == 422 and "nope" in info.value.body
        pod["spec"]["volumes"] = [{"name": "nope", "secret": {}}]
        with pytest.raises(ApiException) as info:
            api.create_namespaced_pod(kube_target.namespace, pod)
        assert info.value.status == 422 and "secretName" in info.value.body
    finally:
        api.api_client.close()


@pytest.mark.asyncio
async def test_deploy_mode_local_has_tls_too(make_runtime, target):
    """The scheduler in this process listens on tls:// with the node certificate; the worker pods mount a
    Secret that has no owner pod, so close deletes it."""
    rt = make_runtime()
    async with KubeCluster(small_pod(), runtime=rt, n_workers=1, deploy_mode="local", asynchronous=True) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=120)
            assert await client.submit(lambda: 3) == 3
            (worker,) = await client.run(lambda: 0)
        for address in (cluster.scheduler_address, worker):
            await _refused(address)
            await _refused(address, make_credentials_security())
        secret = await rt.read_secret(f"{cluster.name}-tls")
        assert secret is not None and not secret["metadata"].get("ownerReferences")
        name = cluster.name
    assert await rt.read_secret(f"{name}-tls") is None


def make_credentials_security():
    """A Security of some other cluster (another CA)."""
    return tlsmod.client_security(make_credentials("dask-someone-else"))


@pytest.mark.asyncio
async def test_the_manager_follows_the_tls_switch():
    """c.DaskKube.tls reaches the clusters the server makes: on, a tls:// address and (local backend) the
    connect code with the owner-only files; off, plain TCP, no Secret, the panel's default snippet."""
    from jupyter_dask_kube.bodies import CreateRequest
    from jupyter_dask_kube.manager import ClusterManager
    from jupyter_dask_kube.templates import load_template

    rt = LocalRuntime("default")
    template = load_template({"workers": 0, "worker": small_pod()}, name="zero")
    try:
        for tls in (True, False):
            manager = ClusterManager(runtime=rt, username=f"u{uuid.uuid4().hex[:6]}", templates=[template], tls=tls)
            try:
                cid = (await manager.create(CreateRequest(template="zero")))["id"]
                model = await wait_until(lambda: manager.model(manager.get(cid))["status"] == "running"
                                         and manager.model(manager.get(cid)), 60, what="running")
                assert model["scheduler_address"].startswith("tls://" if tls else "tcp://")
                assert (await rt.read_secret(f"{cid}-tls") is not None) is tls
                if tls:
                    assert "client.key" in model["connect_code"] and "PRIVATE" not in model["connect_code"]
                else:
                    assert "connect_code" not in model
                await manager.delete(cid)
                assert await rt.read_secret(f"{cid}-tls") is None
            finally:
                await manager.close(detach=False)
    finally:
        await rt.close()
