"""templates: loading, validation with precise errors, options, and model round-trips."""
import copy
import json
import math
import os
from pathlib import Path

import dask.config
import pytest
import yaml
from kubernetes.client import V1Container, V1ObjectMeta, V1Pod, V1PodSpec

from jupyter_dask_kube.templates import (
    ClusterTemplate,
    Option,
    OptionError,
    TemplateError,
    load_pod,
    load_template,
    load_templates,
    parse_cores,
    parse_memory,
    template_from_dask_config,
)

from helpers import assert_round_trips

DATA = Path(__file__).parent / "data"
SEED = DATA / "worker-spec.yml"
SMALL = DATA / "templates-small.yaml"

SEED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"labels": {"foo": "bar"}},
    "spec": {
        "restartPolicy": "Never",
        "containers": [
            {
                "image": "daskdev/dask:latest",
                "imagePullPolicy": "IfNotPresent",
                "args": ["dask-worker", "--nthreads", "2", "--no-dashboard", "--memory-limit", "6GB",
                         "--death-timeout", "60"],
                "name": "dask",
                "env": [{"name": "EXTRA_PIP_PACKAGES", "value": "git+https://github.com/dask/distributed"}],
                "resources": {"limits": {"cpu": "2", "memory": "6G"}, "requests": {"cpu": "2", "memory": "6G"}},
            }
        ],
    },
}


def pod(**container):
    c = {"name": "dask", "image": "img:1", "args": ["dask-worker"]}
    c.update(container)
    return {"kind": "Pod", "spec": {"containers": [c]}}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------------------ load_pod

def test_seed_worker_spec_loads_exactly():
    loaded = load_pod(SEED)
    assert loaded == SEED_POD
    model = assert_round_trips(loaded)
    c = model.spec.containers[0]
    assert (c.image, c.image_pull_policy, c.name) == ("daskdev/dask:latest", "IfNotPresent", "dask")
    assert c.resources.limits == {"cpu": "2", "memory": "6G"}
    assert model.spec.restart_policy == "Never" and model.metadata.labels == {"foo": "bar"}


def test_load_pod_from_str_path_dict_and_v1pod():
    assert load_pod(str(SEED)) == SEED_POD
    original = copy.deepcopy(SEED_POD)
    from_dict = load_pod(original)
    assert from_dict == SEED_POD and from_dict is not original
    from_dict["spec"]["containers"][0]["image"] = "changed"
    assert original == SEED_POD  # deep-copied, the caller's dict untouched
    v1 = V1Pod(metadata=V1ObjectMeta(labels={"a": "b"}),
               spec=V1PodSpec(containers=[V1Container(name="dask", image="img:2", args=["dask-worker"])]))
    assert load_pod(v1) == {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}},
                            "spec": {"containers": [{"name": "dask", "image": "img:2", "args": ["dask-worker"]}]}}


def test_load_pod_expands_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("JDK_TEST_IMAGE", "registry.example/dask:7")
    path = write(tmp_path, "p.yaml", "kind: Pod\nspec:\n  containers:\n  - name: dask\n    image: ${JDK_TEST_IMAGE}\n")
    assert load_pod(path)["spec"]["containers"][0]["image"] == "registry.example/dask:7"


def test_load_pod_normalizes_scalars():
    loaded = load_pod({"metadata": {"labels": {"n": 1, "b": True}},
                       "spec": {"containers": [{"name": "dask", "image": "i", "args": ["dask-worker", "--nthreads", 2, 1.5],
                                                "env": [{"name": "N", "value": 3}, {"name": "B", "value": False}],
                                                "resources": {"limits": {"cpu": 2, "memory": "1Gi"},
                                                              "requests": {"cpu": 0.5}}}]}})
    c = loaded["spec"]["containers"][0]
    assert c["args"] == ["dask-worker", "--nthreads", "2", "1.5"]
    assert c["env"] == [{"name": "N", "value": "3"}, {"name": "B", "value": "false"}]
    assert c["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "0.5"}}
    assert loaded["metadata"]["labels"] == {"n": "1", "b": "true"}
    assert loaded["apiVersion"] == "v1" and loaded["kind"] == "Pod"
    assert_round_trips(loaded)


def test_load_pod_drops_server_fields():
    raw = pod()
    raw["metadata"] = {"name": "x", "uid": "u", "resourceVersion": "5", "creationTimestamp": "2024-01-01T00:00:00Z"}
    raw["status"] = {"phase": "Running"}
    loaded = load_pod(raw)
    assert loaded["metadata"] == {"name": "x"} and "status" not in loaded


@pytest.mark.parametrize(
    "manifest, message",
    [
        ([1, 2], "<inline pod>: must be a Pod manifest (a path, a dict or a V1Pod), not list"),
        ({"kind": "Deployment", "spec": {}}, "<inline pod>: kind: must be Pod, got 'Deployment'"),
        ({"apiVersion": "apps/v1", "spec": {}}, "<inline pod>: apiVersion: must be v1, got 'apps/v1'"),
        ({"kind": "Pod"}, "<inline pod>: spec: must be a mapping with a containers list"),
        ({"spec": {"containers": []}}, "<inline pod>: spec.containers: must be a non-empty list"),
        ({"spec": {"containers": {"name": "x"}}}, "<inline pod>: spec.containers: must be a non-empty list"),
        ({"spec": {"containers": ["dask"]}}, "<inline pod>: spec.containers[0]: must be a mapping"),
        ({"spec": {"containers": [{"image": "i"}]}},
         "<inline pod>: spec.containers[0].name: must be a DNS-1123 label such as 'dask', got None"),
        ({"spec": {"containers": [{"name": "Dask_1", "image": "i"}]}},
         "<inline pod>: spec.containers[0].name: must be a DNS-1123 label such as 'dask', got 'Dask_1'"),
        ({"spec": {"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]}},
         "<inline pod>: spec.containers[1].name: duplicate container name 'a'"),
        ({"spec": {"containers": [{"name": "dask"}]}}, "<inline pod>: spec.containers[0].image: must be a non-empty string"),
        ({"spec": {"containers": [{"name": "dask", "image": "  "}]}},
         "<inline pod>: spec.containers[0].image: must be a non-empty string"),
        (pod(args="dask-worker --nthreads 2"),
         "<inline pod>: spec.containers[0].args: must be a list of strings, got 'dask-worker --nthreads 2'"),
        (pod(command=["dask", None]), "<inline pod>: spec.containers[0].command[1]: must be a string, got None"),
        (pod(args=["dask-worker", True]), "<inline pod>: spec.containers[0].args[1]: must be a string, got True"),
        (pod(env={"A": "1"}), "<inline pod>: spec.containers[0].env: must be a list of {name, value}"),
        (pod(env=[{"value": "1"}]), "<inline pod>: spec.containers[0].env[0]: must be a mapping with a valid name"),
        (pod(env=[{"name": "A", "value": {"x": 1}}]), "<inline pod>: spec.containers[0].env[0].value: must be a string"),
        (pod(resources={"limits": {"memory": "6GB"}}),
         ("<inline pod>: spec.containers[0].resources.limits.memory: '6GB' is not a Kubernetes quantity "
          "(Kubernetes writes 6G or 6Gi, not 6GB)")),
        (pod(resources={"requests": {"cpu": "two"}}),
         "<inline pod>: spec.containers[0].resources.requests.cpu: 'two' is not a Kubernetes quantity"),
        (pod(resources={"limits": {"cpu": None}}),
         "<inline pod>: spec.containers[0].resources.limits.cpu: must be a quantity, got None"),
        (pod(resources=["cpu"]), "<inline pod>: spec.containers[0].resources: must be a mapping with limits and requests"),
        ({"metadata": {"labels": {"a": ["b"]}}, "spec": {"containers": [{"name": "d", "image": "i"}]}},
         "<inline pod>: metadata.labels.a: must be a string, got ['b']"),
        ({"metadata": [], "spec": {"containers": [{"name": "d", "image": "i"}]}}, "<inline pod>: metadata: must be a mapping"),
        ({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "d", "image": "i"}]}},
         "<inline pod>: spec.initContainers[0].image: must be a non-empty string"),
    ],
)
def test_load_pod_errors_name_source_and_field(manifest, message):
    with pytest.raises(TemplateError) as info:
        load_pod(manifest)
    assert str(info.value).startswith(message), str(info.value)


def test_load_pod_error_names_the_file(tmp_path):
    path = write(tmp_path, "worker-spec.yml", {"kind": "Pod", "spec": {"containers": [{"name": "dask", "image": ""}]}})
    with pytest.raises(TemplateError, match=r"^.*worker-spec\.yml: spec\.containers\[0\]\.image: must be a non-empty string$") as info:
        load_pod(path)
    assert info.value.source == str(path) and info.value.field == "spec.containers[0].image"
    with pytest.raises(TemplateError, match="^worker-spec.yml: spec.containers"):
        load_pod(path, source_name="worker-spec.yml")


def test_load_pod_bad_files(tmp_path):
    with pytest.raises(TemplateError, match="nope.yaml: can not be read"):
        load_pod(tmp_path / "nope.yaml")
    bad = write(tmp_path, "bad.yaml", "kind: Pod\nspec: [unclosed\n")
    with pytest.raises(TemplateError, match="bad.yaml: is not valid YAML"):
        load_pod(bad)
    with pytest.raises(TemplateError, match="a path, a dict or a V1Pod\\), not int"):
        load_pod(42)


# ---------------------------------------------------------------------------- quantities

@pytest.mark.parametrize(
    "q, expected",
    [("2", 2.0), ("500m", 0.5), ("1.5", 1.5), (2, 2.0), (0.25, 0.25), ("0", 0.0), ("2500m", 2.5), (" 3 ", 3.0)],
)
def test_parse_cores(q, expected):
    assert parse_cores(q) == expected


@pytest.mark.parametrize("q", ["two", "2G", "", "-1", "1.2.3", None, True, float("nan"), float("inf"), [], "2 cores"])
def test_parse_cores_rejects(q):
    with pytest.raises(ValueError):
        parse_cores(q)


@pytest.mark.parametrize(
    "q, expected",
    [
        ("6G", 6 * 10**9), ("6GB", 6 * 10**9), ("6gb", 6 * 10**9), ("6Gi", 6 * 2**30), ("6 GiB", 6 * 2**30),
        ("6GiB", 6 * 2**30), ("512M", 512 * 10**6), ("512Mi", 512 * 2**20), ("512MB", 512 * 10**6),
        ("12.7G", 12_700_000_000), ("12.7GB", 12_700_000_000), ("1.5Gi", 1_610_612_736), ("6e9", 6 * 10**9),
        ("1k", 1000), ("1kB", 1000), ("1Ki", 1024), ("1T", 10**12), ("100", 100), ("100B", 100),
        (6_000_000_000, 6 * 10**9), (1.5e9, 1_500_000_000), ("1500m", 2), ("0", 0),
    ],
)
def test_parse_memory(q, expected):
    assert parse_memory(q) == expected
    assert isinstance(parse_memory(q), int)


@pytest.mark.parametrize("q", ["lots", "6X", "6GG", "-1G", "", "G", "6 G B", None, True, float("nan"), "1.2.3G", {}])
def test_parse_memory_rejects(q):
    with pytest.raises(ValueError):
        parse_memory(q)


# ------------------------------------------------------------------------------- options

CORES = Option(name="cores", type="float", default=2, min=1, max=4)
WORKERS = Option(name="threads", type="integer", default=2, min=1, max=8)
MEMORY = Option(name="memory", type="string", default="6G", choices=["4G", "6G", "8G"])
IMAGE = Option(name="image", type="select", default="a:1", choices=["a:1", "a:2"])
GPU = Option(name="gpu", type="bool", default=False)
NOTE = Option(name="note", type="string", default="")
MEMRANGE = Option(name="memory", type="string", default="6G", min="1G", max="8Gi")


@pytest.mark.parametrize(
    "option, value, expected",
    [
        (CORES, 3, 3.0), (CORES, 1.5, 1.5), (CORES, 4, 4.0), (CORES, 1, 1.0),
        (WORKERS, 8, 8), (WORKERS, 3.0, 3),
        (MEMORY, "8G", "8G"), (MEMORY, " 4G ", "4G"),
        (IMAGE, "a:2", "a:2"), (GPU, True, True), (GPU, False, False),
        (NOTE, "anything", "anything"),
        (MEMRANGE, "8GiB", "8GiB"), (MEMRANGE, "1G", "1G"), (MEMRANGE, "2048Mi", "2048Mi"),
    ],
)
def test_option_accepts(option, value, expected):
    got = option.validate(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "option, value, status, message",
    [
        (CORES, 8, 403, "cores: 8 is above the maximum 4 allowed by the template"),
        (CORES, 4.5, 403, "cores: 4.5 is above the maximum 4 allowed by the template"),
        (CORES, 0.5, 403, "cores: 0.5 is below the minimum 1 allowed by the template"),
        (CORES, 0, 400, "cores: must be above 0, got 0"),
        (CORES, -2, 400, "cores: must be above 0, got -2"),
        (CORES, True, 400, "cores: expected a number, got bool True"),
        (CORES, "3", 400, "cores: expected a number, got str '3'"),
        (CORES, None, 400, "cores: expected a number, got NoneType None"),
        (CORES, float("nan"), 400, "cores: nan is not a finite number"),
        (CORES, float("inf"), 400, "cores: inf is not a finite number"),
        (WORKERS, 2.5, 400, "threads: expected a whole number, got 2.5"),
        (WORKERS, False, 400, "threads: expected a number, got bool False"),
        (WORKERS, 9, 403, "threads: 9 is above the maximum 8 allowed by the template"),
        (MEMORY, "7G", 403, "memory: '7G' is not one of the allowed choices: 4G, 6G, 8G"),
        (MEMORY, "lots", 400, "memory: 'lots' is not a memory size such as 6G, 6Gi or 6GB"),
        (MEMORY, "0", 400, "memory: '0' is not a memory size"),
        (MEMORY, 6, 400, "memory: expected a string, got int 6"),
        (MEMRANGE, "9G", 403, "memory: 9G is above the maximum 8Gi allowed by the template"),
        (MEMRANGE, "512Mi", 403, "memory: 512Mi is below the minimum 1G allowed by the template"),
        (IMAGE, "evil:latest", 403, "image: 'evil:latest' is not one of the allowed choices: a:1, a:2"),
        (IMAGE, 1, 400, "image: expected a string, got int 1"),
        (GPU, 1, 400, "gpu: expected true or false, got 1"),
        (GPU, "true", 400, "gpu: expected true or false, got 'true'"),
        (NOTE, ["x"], 400, "note: expected a string, got list ['x']"),
        (Option(name="image", type="string", default="a"), "has space", 400,
         "image: 'has space' is not a container image name"),
    ],
)
def test_option_rejects(option, value, status, message):
    with pytest.raises(OptionError) as info:
        option.validate(value)
    assert info.value.status == status
    assert info.value.message.startswith(message), info.value.message
    assert str(info.value) == info.value.message


def test_option_to_json():
    assert CORES.to_json() == {"name": "cores", "label": "cores", "type": "float", "default": 2, "min": 1,
                               "max": 4, "description": ""}
    assert IMAGE.to_json() == {"name": "image", "label": "image", "type": "select", "default": "a:1",
                               "choices": ["a:1", "a:2"], "description": ""}
    assert Option(name="gpu", type="bool", default=False, label="GPU").to_json()["label"] == "GPU"


# ------------------------------------------------------------------------ load_template

def test_plain_pod_template_named_after_file():
    t = load_template(SEED)
    assert (t.name, t.display_name, t.default, t.workers, t.adapt, t.options) == ("worker-spec", "worker-spec", False, 0, None, [])
    assert t.worker == SEED_POD and t.scheduler is None and t.source == str(SEED)
    assert t.to_json("kubernetes") == {
        "name": "worker-spec", "display_name": "worker-spec", "description": "", "default": False,
        "backend": "kubernetes", "workers": 0, "adapt": None,
        "worker": {"cores": 2.0, "memory": "6G", "image": "daskdev/dask:latest"}, "options": [],
    }
    assert t.worker_resources() == {"cores": 2.0, "memory": 6 * 10**9, "image": "daskdev/dask:latest"}


def test_design_format_template():
    t = load_template(SMALL)
    assert (t.name, t.display_name, t.default, t.workers) == ("small", "Small (2 cores, 6 GB workers)", True, 2)
    assert t.description == "For exploring data that fits in a few GB."
    assert [o.name for o in t.options] == ["cores", "memory", "image", "gpu"]
    assert t.options[0].default == 2.0 and t.options[0].label == "Cores per worker"
    assert t.scheduler["spec"]["containers"][0]["args"] == ["dask", "scheduler"]
    assert t.worker["metadata"]["labels"] == {"team": "physics"}
    assert_round_trips(t.worker)
    assert_round_trips(t.scheduler)
    j = t.to_json("local")
    assert j["worker"] == {"cores": 2.0, "memory": "6G", "image": "ghcr.io/dask/dask:latest"}
    assert j["options"][0] == {"name": "cores", "label": "Cores per worker", "type": "float", "default": 2.0,
                               "min": 1, "max": 4, "description": ""}
    assert j["options"][3] == {"name": "gpu", "label": "gpu", "type": "bool", "default": False,
                               "description": "Schedule on GPU nodes"}
    json.dumps(j)  # JSON-serializable as the REST API sends it


def test_inline_templates():
    t = load_template({"display_name": "Tiny", "adapt": {"minimum": 0, "maximum": 5}, "worker": pod()}, name="tiny")
    assert (t.name, t.display_name, t.adapt, t.workers, t.source) == ("tiny", "Tiny", {"minimum": 0, "maximum": 5}, 0,
                                                                      "<inline template tiny>")
    plain = load_template(pod(), name="plain")
    assert plain.name == "plain" and plain.worker["spec"]["containers"][0]["image"] == "img:1"
    assert load_template({"name": "named", "worker": pod()}).name == "named"


BASE = {"name": "t", "worker": pod()}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "Big Workers"}, "<inline template Big Workers>: name: must be lowercase letters, digits"),
        ({"name": "-x"}, "name: must be lowercase letters"),
        ({"name": "x" * 64}, "name: must be lowercase letters"),
        ({"colour": "red"}, "<inline template t>: unknown key(s) colour; allowed:"),
        ({"display_name": ""}, "<inline template t>: display_name: must be a non-empty string"),
        ({"description": 5}, "description: must be a string"),
        ({"default": "yes"}, "default: must be true or false, got 'yes'"),
        ({"workers": -1}, "workers: must be a whole number >= 0, got -1"),
        ({"workers": 1.5}, "workers: must be a whole number >= 0, got 1.5"),
        ({"workers": True}, "workers: must be a whole number >= 0, got True"),
        ({"workers": 2, "adapt": {"minimum": 0, "maximum": 2}}, "<inline template t>: set either workers or adapt, not both"),
        ({"adapt": {"minimum": 3, "maximum": 2}}, "adapt: minimum 3 is above maximum 2"),
        ({"adapt": {"minimum": 0}}, "adapt.maximum: must be a whole number >= 0, got None"),
        ({"adapt": {"minimum": -1, "maximum": 2}}, "adapt.minimum: must be a whole number >= 0, got -1"),
        ({"adapt": {"min": 0, "max": 2}}, "adapt: must be a mapping with minimum and maximum"),
        ({"adapt": 5}, "adapt: must be a mapping with minimum and maximum"),
        ({"worker": None}, "<inline template t>: worker: must be a Pod manifest (a mapping), got None"),
        ({"worker": "worker-spec.yml"}, "<inline template t>: worker: must be a Pod manifest (a mapping), got 'worker-spec.yml'"),
        ({"scheduler": ["x"]}, "<inline template t>: scheduler: must be a Pod manifest (a mapping), got ['x']"),
        ({"worker": pod(image="")}, "<inline template t>: worker.spec.containers[0].image: must be a non-empty string"),
        ({"scheduler": {"spec": {"containers": []}}}, "<inline template t>: scheduler.spec.containers: must be a non-empty list"),
        ({"options": {"cores": 2}}, "<inline template t>: options: must be a list"),
        ({"options": ["cores"]}, "options[0]: must be a mapping with name, type and default"),
        ({"options": [{"name": "Cores", "type": "float", "default": 1}]}, "options[0].name: must be a lowercase identifier"),
        ({"options": [{"name": "x", "type": "number", "default": 1}]},
         "options[0] (x).type: must be one of integer, float, select, bool, string, got 'number'"),
        ({"options": [{"name": "x", "type": "float"}]}, "options[0] (x).default: is required"),
        ({"options": [{"name": "x", "type": "float", "default": 1, "step": 1}]}, "options[0]: unknown key(s) step"),
        ({"options": [{"name": "cores", "type": "float", "default": 8, "max": 4}]},
         "options[0] (cores).default: cores: 8 is above the maximum 4 allowed by the template"),
        ({"options": [{"name": "cores", "type": "float", "default": 2, "min": 4, "max": 1}]},
         "options[0] (cores): min 4 is above max 1"),
        ({"options": [{"name": "cores", "type": "string", "default": "2"}]},
         "options[0] (cores).type: option 'cores' must be of type integer or float"),
        ({"options": [{"name": "image", "type": "float", "default": 2}]},
         "options[0] (image).type: option 'image' must be of type string or select"),
        ({"options": [{"name": "cores", "type": "float", "default": 2, "max": "4"}]},
         "options[0] (cores).max: must be a number, got '4'"),
        ({"options": [{"name": "cores", "type": "float", "default": 2, "max": float("nan")}]},
         "options[0] (cores).max: must be a number, got nan"),
        ({"options": [{"name": "image", "type": "select", "default": "a"}]},
         "options[0] (image).choices: is required for a select option"),
        ({"options": [{"name": "image", "type": "select", "default": "a", "choices": []}]},
         "options[0] (image).choices: must be a non-empty list"),
        ({"options": [{"name": "image", "type": "select", "default": "c", "choices": ["a", "b"]}]},
         "options[0] (image).default: image: 'c' is not one of the allowed choices: a, b"),
        ({"options": [{"name": "memory", "type": "select", "default": "6G", "choices": ["6G", "lots"]}]},
         "options[0] (memory).choices[1]: memory: 'lots' is not a memory size"),
        ({"options": [{"name": "gpu", "type": "bool", "default": False, "choices": [True]}]},
         "options[0] (gpu).choices: is not allowed for a bool option"),
        ({"options": [{"name": "gpu", "type": "bool", "default": False, "max": 1}]},
         "options[0] (gpu).max: is not allowed for a bool option"),
        ({"options": [{"name": "gpu", "type": "bool", "default": "no"}]},
         "options[0] (gpu).default: gpu: expected true or false, got 'no'"),
        ({"options": [{"name": "memory", "type": "string", "default": "6G", "max": "big"}]},
         "options[0] (memory).max: bounds of a string option are memory sizes such as 6G, got 'big'"),
        ({"options": [{"name": "x", "type": "bool", "default": True}, {"name": "x", "type": "bool", "default": True}]},
         "options[1].name: duplicate option 'x'"),
        ({"options": [{"name": "x", "type": "bool", "default": True, "label": 3}]}, "options[0] (x).label: must be a string"),
    ],
)
def test_template_errors(changes, message):
    raw = {**copy.deepcopy(BASE), **changes}
    with pytest.raises(TemplateError) as info:
        load_template(raw)
    assert message in str(info.value), str(info.value)


def test_template_name_conflict_and_missing_worker():
    with pytest.raises(TemplateError, match="'a' differs from the name it is configured under, 'b'"):
        load_template({"name": "a", "worker": pod()}, name="b")
    with pytest.raises(TemplateError, match="<inline template t>: worker: is required"):
        load_template({"name": "t", "display_name": "T"})
    with pytest.raises(TemplateError, match="an inline Pod template needs a name"):
        load_template(pod())
    with pytest.raises(TemplateError, match="a template is a path or a dict, not list"):
        load_template([1])


def test_template_file_not_a_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(TemplateError, match=r"list\.yaml: must be a mapping: a Pod manifest or a template"):
        load_template(path)


def test_template_file_with_uppercase_stem(tmp_path):
    path = write(tmp_path, "Big.yaml", pod())
    with pytest.raises(TemplateError, match=r"Big\.yaml: name: must be lowercase letters.*got 'Big'"):
        load_template(path)
    assert load_template(path, name="big").name == "big"


# ------------------------------------------------------------------------ load_templates

def test_load_templates_directories_and_files(tmp_path):
    d = tmp_path / "templates"
    d.mkdir()
    write(d, "b.yaml", {"name": "zeta", "worker": pod()})
    write(d, "a.yml", pod())
    write(d, "notes.txt", "not a template")
    (d / "sub.yaml").mkdir()  # a directory named like a file is skipped
    extra = write(tmp_path, "extra.yaml", pod())
    templates = load_templates([d, str(extra)])
    assert [t.name for t in templates] == ["a", "zeta", "extra"]
    assert templates[0].source == str(d / "a.yml")
    assert load_templates(str(extra))[0].name == "extra"
    assert load_templates([]) == []


def test_load_templates_duplicates_name_both_sources(tmp_path):
    one = write(tmp_path, "one.yaml", {"name": "same", "worker": pod()})
    two = write(tmp_path, "two.yaml", {"name": "same", "worker": pod()})
    with pytest.raises(TemplateError) as info:
        load_templates([one, two])
    assert str(two) in str(info.value) and str(one) in str(info.value)
    assert "template 'same' is also defined in" in str(info.value)


def test_load_templates_missing_path(tmp_path):
    with pytest.raises(TemplateError, match="missing: does not exist"):
        load_templates([tmp_path / "missing"])


def test_load_templates_error_in_one_file_names_it(tmp_path):
    write(tmp_path, "ok.yaml", pod())
    write(tmp_path, "broken.yaml", pod(image=""))
    with pytest.raises(TemplateError, match=r"broken\.yaml: spec\.containers\[0\]\.image"):
        load_templates([tmp_path])


# ------------------------------------------------------------------- dask config templates

def test_template_from_dask_config_none():
    with dask.config.set({"kubernetes.worker-template-path": None, "kubernetes.worker-template": {}}):
        assert template_from_dask_config() is None


def test_template_from_dask_config_path():
    with dask.config.set({"kubernetes.worker-template-path": str(SEED), "kubernetes.worker-template": {},
                          "kubernetes.scheduler-template": {}, "kubernetes.count.start": 3}):
        t = template_from_dask_config()
    assert (t.name, t.display_name, t.default, t.workers) == ("default", "Default (dask config)", True, 3)
    assert t.worker == SEED_POD and t.scheduler is None


def test_template_from_dask_config_inline_and_scheduler():
    sched = {"spec": {"containers": [{"name": "s", "image": "img:s", "args": ["dask", "scheduler"]}]}}
    with dask.config.set({"kubernetes.worker-template-path": None, "kubernetes.worker-template": pod(),
                          "kubernetes.scheduler-template": sched}):
        t = template_from_dask_config()
    assert t.worker["spec"]["containers"][0]["image"] == "img:1"
    assert t.scheduler["spec"]["containers"][0]["image"] == "img:s"
    bad = {"kubernetes.worker-template-path": None, "kubernetes.worker-template": pod(image="")}
    with dask.config.set(bad), pytest.raises(TemplateError, match="^kubernetes.worker-template: spec.containers"):
        template_from_dask_config()


# --------------------------------------------------------------- option values, apply

@pytest.fixture
def small():
    return load_template(SMALL)


def test_option_values(small):
    assert small.option_values(None) == {"cores": 2.0, "memory": "6G", "image": "ghcr.io/dask/dask:latest", "gpu": False}
    assert small.option_values({"cores": 3, "gpu": True})["cores"] == 3.0
    with pytest.raises(OptionError) as info:
        small.option_values({"x": 1})
    assert info.value.status == 400
    assert info.value.message == "unknown option 'x'; this template offers: cores, memory, image, gpu"
    with pytest.raises(OptionError, match="this template offers: no options"):
        load_template(SEED).option_values({"cores": 1})
    with pytest.raises(OptionError, match="options must be an object, got list"):
        small.option_values([1])
    with pytest.raises(OptionError) as info:
        small.option_values({"cores": 8})
    assert info.value.status == 403


def test_apply_options_sets_resources_args_and_image(small):
    before = copy.deepcopy(small)
    t = small.apply_options({"cores": 3.5, "memory": "8G", "image": "ghcr.io/dask/dask:2026.8.0-py3.11", "gpu": True})
    assert small == before  # the original template is untouched
    c = t.worker["spec"]["containers"][0]
    assert c["resources"] == {"limits": {"cpu": "3.5", "memory": "8G"}, "requests": {"cpu": "3.5", "memory": "8G"}}
    assert c["args"] == ["dask-worker", "--nthreads", "3", "--memory-limit", "8000000000", "--death-timeout", "60"]
    assert c["image"] == "ghcr.io/dask/dask:2026.8.0-py3.11"
    assert t.scheduler["spec"]["containers"][0]["image"] == "ghcr.io/dask/dask:2026.8.0-py3.11"
    assert t.extra_options == {"gpu": True}
    assert t.applied_options == {"cores": 3.5, "memory": "8G", "image": "ghcr.io/dask/dask:2026.8.0-py3.11", "gpu": True}
    assert t.worker_resources() == {"cores": 3.5, "memory": 8 * 10**9, "image": "ghcr.io/dask/dask:2026.8.0-py3.11"}
    assert t.to_json("local")["worker"] == {"cores": 3.5, "memory": "8G", "image": "ghcr.io/dask/dask:2026.8.0-py3.11"}
    assert_round_trips(t.worker)
    assert_round_trips(t.scheduler)


def test_apply_options_defaults_and_small_cores(small):
    t = small.apply_options({"cores": 1.0})
    assert get_args(t)[get_args(t).index("--nthreads") + 1] == "1"
    assert t.worker["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    assert small.apply_options(None).extra_options == {"gpu": False}


def get_args(t):
    return t.worker["spec"]["containers"][0]["args"]


def test_apply_options_dask_style_memory_becomes_bytes():
    t = load_template({"name": "m", "worker": pod(),
                       "options": [{"name": "memory", "type": "string", "default": "6GB", "max": "16GiB"},
                                   {"name": "cores", "type": "integer", "default": 2}]})
    t2 = t.apply_options({"memory": "2 GiB"})
    c = t2.worker["spec"]["containers"][0]
    assert c["resources"]["limits"]["memory"] == str(2 * 2**30)  # "2 GiB" is no Kubernetes quantity
    assert c["args"] == ["dask-worker", "--nthreads", "2", "--memory-limit", str(2 * 2**30)]
    assert_round_trips(t2.worker)


def test_apply_options_replaces_inline_flags_and_command():
    t = load_template({"name": "m", "worker": pod(command=["dask", "worker", "--nthreads=8"], args=["--no-dashboard"]),
                       "options": [{"name": "cores", "type": "float", "default": 2}]})
    c = t.apply_options({}).worker["spec"]["containers"][0]
    assert c["command"] == ["dask", "worker", "--nthreads=2"]
    assert c["args"] == ["--no-dashboard"]


def test_apply_options_leaves_non_dask_entrypoints_alone():
    t = load_template({"name": "m", "worker": {"spec": {"containers": [{"name": "c", "image": "custom:1"}]}},
                       "options": [{"name": "cores", "type": "float", "default": 2}]})
    c = t.apply_options({}).worker["spec"]["containers"][0]
    assert "args" not in c and c["resources"]["limits"]["cpu"] == "2"


def test_apply_options_picks_the_worker_container_not_a_sidecar():
    raw = {"spec": {"containers": [{"name": "proxy", "image": "envoy:1"},
                                   {"name": "dask", "image": "d:1", "args": ["dask-worker"]}]}}
    t = load_template({"name": "m", "worker": raw, "options": [{"name": "cores", "type": "integer", "default": 3}]})
    proxy, dask_c = t.apply_options({}).worker["spec"]["containers"]
    assert "resources" not in proxy
    assert dask_c["args"] == ["dask-worker", "--nthreads", "3"]
    assert t.worker_resources()["image"] == "d:1"


@pytest.mark.parametrize(
    "container, expected",
    [
        ({"args": ["dask-worker", "--nthreads", "3", "--memory-limit", "4GiB"]}, {"cores": 3.0, "memory": 4 * 2**30}),
        ({"args": ["dask-worker", "--memory-limit", "auto"]}, {"cores": None, "memory": None}),
        ({"args": ["dask-worker", "--memory-limit", "0.5"]}, {"cores": None, "memory": None}),
        ({"args": ["dask-worker"], "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
         {"cores": 0.5, "memory": 2**30}),
        ({"args": ["dask-worker", "--nthreads", "x"]}, {"cores": None, "memory": None}),
    ],
)
def test_worker_resources(container, expected):
    t = ClusterTemplate(name="t", display_name="t", description="", default=False,
                        worker=load_pod(pod(**container)))
    assert {k: v for k, v in t.worker_resources().items() if k != "image"} == expected


def test_every_float_is_finite_in_json(small):
    j = small.to_json("local")
    assert all(not isinstance(v, float) or math.isfinite(v) for v in j["worker"].values())


def test_seed_file_is_faithful():
    text = SEED.read_text()
    assert "args: [dask-worker, --nthreads, '2', --no-dashboard, --memory-limit, 6GB, --death-timeout, '60']" in text
    assert yaml.safe_load(text)["spec"]["containers"][0]["env"][0]["name"] == "EXTRA_PIP_PACKAGES"
    assert os.path.basename(SEED) == "worker-spec.yml"


def test_from_yaml_missing_file_is_file_not_found(tmp_path):
    """Classic dask-kubernetes code catches FileNotFoundError around KubeCluster.from_yaml; it stays a
    TemplateError (a ValueError) too, with the path in the message."""
    from jupyter_dask_kube import KubeCluster
    from jupyter_dask_kube.templates import TemplateError, load_pod

    missing = tmp_path / "nope" / "worker-spec.yml"
    with pytest.raises(FileNotFoundError) as info:
        KubeCluster.from_yaml(str(missing), backend="local")
    assert isinstance(info.value, TemplateError) and isinstance(info.value, ValueError)
    assert str(missing) in str(info.value) and "can not be read" in str(info.value)
    assert info.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        load_pod(missing)
    # An unreadable path that exists is a TemplateError, not a FileNotFoundError.
    with pytest.raises(TemplateError) as info:
        load_pod(tmp_path)
    assert not isinstance(info.value, FileNotFoundError)
