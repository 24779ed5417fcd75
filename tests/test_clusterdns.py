"""testing/clusterdns.py: Service names to clusterIPs, as cluster DNS answers (pure)."""
from jupyter_dask_kube.testing import clusterdns

SERVICES = [{"metadata": {"namespace": "ns1", "name": "dask-a-scheduler"}, "spec": {"clusterIP": "127.200.0.7"}},
            {"metadata": {"namespace": "ns1", "name": "headless"}, "spec": {"clusterIP": "None"}}]
IPS = clusterdns.service_ips(SERVICES)


def test_resolve_every_form():
    assert IPS == {("ns1", "dask-a-scheduler"): "127.200.0.7"}
    for host in ("dask-a-scheduler.ns1", "dask-a-scheduler.ns1.svc", "dask-a-scheduler.ns1.svc.cluster.local",
                 "dask-a-scheduler.ns1.svc.cluster.local."):
        assert clusterdns.resolve(host, IPS) == "127.200.0.7", host
    assert clusterdns.resolve("dask-a-scheduler", IPS, namespace="ns1") == "127.200.0.7"
    assert clusterdns.resolve("dask-a-scheduler", IPS) is None
    assert clusterdns.resolve("other.ns1", IPS) is None and clusterdns.resolve("headless.ns1", IPS) is None


def test_rewrite_pod_env_and_args():
    pod = {"spec": {"containers": [{"name": "w", "args": ["dask", "worker", "tcp://dask-a-scheduler.ns1:8786"],
                                    "env": [{"name": "DASK_SCHEDULER_ADDRESS",
                                             "value": "tcp://dask-a-scheduler.ns1.svc.cluster.local:8786"},
                                            {"name": "X", "value": "dask.org/cluster-name"},
                                            {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}
    c = clusterdns.rewrite_pod(pod, IPS)["spec"]["containers"][0]
    assert c["args"][-1] == "tcp://127.200.0.7:8786"
    assert c["env"][0]["value"] == "tcp://127.200.0.7:8786"
    assert c["env"][1]["value"] == "dask.org/cluster-name"  # no such Service: untouched
    assert "value" not in c["env"][2]


def test_install_resolver_answers_service_names(monkeypatch):
    import socket

    calls = []
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)  # restored after the test
    clusterdns.install_resolver(lambda: calls.append(1) or SERVICES, refresh=0)
    info = socket.getaddrinfo("dask-a-scheduler.ns1.svc.cluster.local", 8786, type=socket.SOCK_STREAM)
    assert info[0][4] == ("127.200.0.7", 8786) and calls
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)


def test_bare_service_name_with_port_in_the_pods_namespace():
    pod = {"metadata": {"namespace": "ns1"},
           "spec": {"containers": [{"name": "w", "args": ["dask-worker", "dask-a-scheduler:8786", "x.dask-a-scheduler:1",
                                                          "unknown:8786"]}]}}
    args = clusterdns.rewrite_pod(pod, IPS)["spec"]["containers"][0]["args"]
    assert args == ["dask-worker", "127.200.0.7:8786", "x.dask-a-scheduler:1", "unknown:8786"]
    other_ns = {"metadata": {"namespace": "ns2"}, "spec": {"containers": [{"name": "w", "args": ["dask-a-scheduler:8786"]}]}}
    assert clusterdns.rewrite_pod(other_ns, IPS)["spec"]["containers"][0]["args"] == ["dask-a-scheduler:8786"]
