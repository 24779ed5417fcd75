"""backends/gateway_models.py (pure): dask-gateway's option fields and cluster reports as our models."""
from datetime import datetime

import pytest

pytest.importorskip("dask_gateway")
from dask_gateway.client import ClusterReport, ClusterStatus  # noqa: E402
from dask_gateway.options import Bool, Float, Integer, Mapping, Options, Select, String  # noqa: E402

from jupyter_dask_kube.backends import gateway_models as gm  # noqa: E402
from jupyter_dask_kube.bodies import ApiError  # noqa: E402


def options():
    return Options(
        Integer("worker_cores", 2, min=1, max=4, label="Worker cores"),
        Float("worker_memory", 4.0, min=1.0, max=16.0, label="Worker memory (GiB)"),
        Select("image", "pangeo/base:latest", options=["pangeo/base:latest", "pangeo/ml:latest"], label="Image"),
        Bool("gpu", False, label="GPU"),
        String("queue", "default", label="Queue"),
        Integer("free", 3),  # no bounds, no label
        Mapping("environment", {}, label="Environment variables"),
    )


def test_fields_map_to_our_option_types_with_the_gateways_bounds():
    t = gm.template(options(), "http://gw")
    assert t["name"] == "gateway" and t["backend"] == "gateway" and t["default"] is True
    assert "http://gw" in t["description"]
    assert t["options"] == [
        {"name": "worker_cores", "label": "Worker cores", "type": "integer", "default": 2, "min": 1, "max": 4},
        {"name": "worker_memory", "label": "Worker memory (GiB)", "type": "float", "default": 4.0, "min": 1.0, "max": 16.0},
        {"name": "image", "label": "Image", "type": "select", "default": "pangeo/base:latest",
         "choices": ["pangeo/base:latest", "pangeo/ml:latest"]},
        {"name": "gpu", "label": "GPU", "type": "bool", "default": False},
        {"name": "queue", "label": "Queue", "type": "string", "default": "default"},
        {"name": "free", "label": "free", "type": "integer", "default": 3},
    ]  # the Mapping field has no form control: left at the gateway's default
    assert t["worker"] == {"cores": 2, "memory": 4 * 2**30, "image": "pangeo/base:latest"}


@pytest.mark.parametrize("value, expected", [
    (4, 4 * 2**30), (0.5, 2**29), ("6G", 6 * 10**9), ("2Gi", 2 * 2**30), (8 * 10**9, 8 * 10**9),
    ("lots", None), (True, None), (None, None),
])
def test_memory_option_in_bytes(value, expected):
    assert gm.memory_bytes(value) == expected


def test_empty_options():
    t = gm.template(Options(), "http://gw")
    assert t["options"] == [] and t["worker"] == {"cores": None, "memory": None, "image": None}


@pytest.mark.parametrize("values, words", [
    ({"worker_cores": 5}, "worker_cores must be <= 4"),
    ({"worker_cores": 0}, "worker_cores must be >= 1"),
    ({"worker_cores": 1.5}, "worker_cores must be an integer"),
    ({"worker_memory": "lots"}, "worker_memory must be a float"),
    ({"image": "evil/miner"}, "'evil/miner' is not a valid option for image"),
    ({"gpu": "yes"}, "gpu must be a bool"),
    ({"queue": 3}, "queue must be a string"),
    ({"environment": {"A": "1"}}, "unknown option 'environment'"),
    ({"cpus": 1}, "unknown option 'cpus'"),
])
def test_values_the_gateways_fields_refuse(values, words):
    with pytest.raises(ApiError) as e:
        gm.apply_options(options(), values)
    assert e.value.status == 400 and words in e.value.message, e.value.message


def test_values_accepted():
    out = gm.apply_options(options(), {"worker_cores": 4, "worker_memory": 8, "gpu": True})
    assert out["worker_cores"] == 4 and out["worker_memory"] == 8.0 and out["gpu"] is True
    assert out["image"] == "pangeo/base:latest"  # untouched fields keep the gateway's default


def report(status, name="abc"):
    running = status == ClusterStatus.RUNNING
    return ClusterReport(
        name=name, options={"worker_cores": 2}, status=status,
        scheduler_address=f"gateway://gw:8786/{name}" if running else None,
        dashboard_link=f"http://gw/clusters/{name}/status" if running else None,
        start_time=datetime(2026, 12, 4, 12, 0), stop_time=None,
    )


WORKERS = {"tls://a": {"nthreads": 2, "memory_limit": 2**30}, "tls://b": {"nthreads": 2, "memory_limit": 2**30}}


@pytest.mark.parametrize("status, workers, requested, adapt, expected", [
    (ClusterStatus.PENDING, {}, 2, None, "pending"),
    (ClusterStatus.RUNNING, None, 2, None, "starting"),  # not read from the scheduler yet
    (ClusterStatus.RUNNING, {"tls://a": WORKERS["tls://a"]}, 2, None, "starting"),
    (ClusterStatus.RUNNING, WORKERS, 2, None, "running"),
    (ClusterStatus.RUNNING, WORKERS, None, None, "running"),  # made elsewhere: no target
    (ClusterStatus.RUNNING, {}, 5, {"minimum": 0, "maximum": 5}, "running"),  # adapt target is the minimum
    (ClusterStatus.STOPPING, {}, 2, None, "stopping"),
    (ClusterStatus.FAILED, {}, 2, None, "failed"),
])
def test_cluster_status(status, workers, requested, adapt, expected):
    m = gm.cluster_model(report(status), workers=workers, requested=requested, adapt=adapt)
    assert m["status"] == expected


def test_cluster_model():
    m = gm.cluster_model(report(ClusterStatus.RUNNING), workers=WORKERS, requested=None, adapt=None,
                         display_name="Mine", warnings=["w"])
    assert m["id"] == "abc" and m["name"] == "Mine" and m["backend"] == "gateway" and m["template"] == "gateway"
    assert m["workers"] == 2 and m["requested_workers"] == 2 and m["cores"] == 4 and m["memory"] == 2 * 2**30
    assert m["scheduler_address"] == "gateway://gw:8786/abc" and m["dashboard_link"] == "http://gw/clusters/abc/status"
    assert m["created"].endswith("+00:00") and m["pods"] == [] and m["warnings"] == ["w"]
    assert m["options"] == {"worker_cores": 2}
    assert set(m) >= {"id", "name", "template", "backend", "status", "message", "scheduler_address", "dashboard_link",
                      "workers", "requested_workers", "cores", "memory", "adapt", "created", "pods", "warnings"}


def test_connect_code_runs_the_gateways_client():
    code = gm.connect_code('we"ird')
    compile(code, "<cell>", "exec")
    assert 'Gateway().connect("we\\"ird")' in code and "cluster.get_client()" in code
