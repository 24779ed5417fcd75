"""Hypothesis on the template loader and options: whatever an admin writes or a user sends, the code
answers with a template or a TemplateError / OptionError, never another exception.

Properties:
- load_pod / load_template (dicts and YAML files) on arbitrary YAML-ish data and on near-valid templates
  with arbitrary parts: a result or TemplateError. A result has containers with a non-empty string image
  and, where present, list-of-string args and command, and its sidebar JSON is strict JSON.
- Option definitions (arbitrary name/type/default/min/max/choices): a template or TemplateError;
  Option.validate on arbitrary values: a value or OptionError (status 400 or 403).
- ClusterTemplate.option_values / apply_options on arbitrary user values: a template or OptionError, and
  apply_options changes nothing but the documented fields: the worker container's resources cpu/memory
  (limits and requests), its --nthreads and --memory-limit, and the image of containers; the input template
  is not modified.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from jupyter_dask_kube.templates import (
    OPTION_TYPES,
    ClusterTemplate,
    Option,
    OptionError,
    TemplateError,
    container_argv,
    load_pod,
    load_template,
    worker_container_index,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# -- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "0", "1", "2", "-1", "1.5", "500m", "6G", "6Gi", "6GB", "1e999", "1e-9", "nan", "inf",
                     "dask-worker", "--nthreads", "--memory-limit", "auto", "Pod", "v1"]),
)
# YAML keys may be strings, numbers, booleans or null
keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.booleans(), st.none(),
                 st.sampled_from(["name", "image", "args", "spec", "containers", "kind", "worker", "options"]))
yamlish = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=20,
)


def maybe(valid, junk=yamlish):
    """Mostly a valid value, sometimes (1 in 8) anything."""
    return st.one_of(*([valid] * 7), junk) if JUNK else valid


quantities = st.one_of(
    st.sampled_from(["1", "2", "0.5", "500m", "1G", "2Gi", "512M", "6e9", "0", "1e999", "1.5"]),
    st.integers(0, 64), st.floats(0, 64),
)
args = st.lists(
    st.one_of(st.sampled_from(["dask-worker", "dask", "worker", "--nthreads", "--nthreads=3", "--memory-limit",
                               "--memory-limit=2GB", "--no-dashboard", "4", "6GB", "auto", "0.5", "python"]),
              st.text(max_size=8), st.integers(-3, 10), st.floats(allow_nan=False, allow_infinity=False)),
    max_size=8,
)


def _strategies():
    """(pods, option definitions, templates); built twice: with junk mixed in (JUNK) and without."""
    containers = st.fixed_dictionaries(
        {"name": maybe(st.sampled_from(["dask", "worker", "side-car"])),
         "image": maybe(st.sampled_from(["ghcr.io/dask/dask:latest", "busybox", "img:1"]))},
        optional={
            "args": maybe(args),
            "command": maybe(st.lists(st.sampled_from(["dask-worker", "dask", "worker", "sh", "-c"]), max_size=3)),
            "resources": maybe(st.fixed_dictionaries({}, optional={
                "limits": maybe(st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]),
                                                maybe(quantities), max_size=3)),
                "requests": maybe(st.dictionaries(st.sampled_from(["cpu", "memory"]), maybe(quantities), max_size=2)),
            })),
            "env": maybe(st.lists(st.fixed_dictionaries({"name": maybe(st.sampled_from(["A", "B_1", "x.y"]))},
                                                        optional={"value": maybe(scalars)}), max_size=3)),
            "securityContext": yamlish,
        },
    )
    pods = st.fixed_dictionaries(
        {"spec": maybe(st.fixed_dictionaries({"containers": maybe(st.lists(containers, min_size=1, max_size=3))},
                                             optional={"initContainers": maybe(st.lists(containers, max_size=2)),
                                                       "restartPolicy": yamlish, "hostNetwork": yamlish}))},
        optional={
            "kind": maybe(st.just("Pod")),
            "apiVersion": maybe(st.just("v1")),
            "metadata": maybe(st.fixed_dictionaries({}, optional={
                "labels": maybe(st.dictionaries(st.text(min_size=1, max_size=5), scalars, max_size=3)),
                "annotations": maybe(st.dictionaries(st.text(min_size=1, max_size=5), scalars, max_size=3)),
                "uid": yamlish})),
            "status": yamlish,
        },
    )
    option_defs = st.fixed_dictionaries(
        {"name": maybe(option_names), "type": maybe(st.sampled_from(OPTION_TYPES)), "default": maybe(scalars)},
        optional={
            "min": maybe(quantities), "max": maybe(quantities),
            "choices": maybe(st.lists(st.one_of(quantities, st.sampled_from(["1G", "2G", "img:1", "img:2"]), scalars),
                                      min_size=1, max_size=4)),
            "label": maybe(st.text(max_size=5)), "description": maybe(st.text(max_size=5)),
        },
    )
    templates = st.fixed_dictionaries(
        {"worker": maybe(pods)},
        optional={
            "name": maybe(st.sampled_from(["small", "big.one", "a_b"])),
            "display_name": maybe(st.text(min_size=1, max_size=8)),
            "description": maybe(st.text(max_size=8)),
            "default": maybe(st.booleans()),
            "workers": maybe(st.integers(0, 20)),
            "adapt": maybe(st.fixed_dictionaries({"maximum": st.integers(0, 10)},
                                                 optional={"minimum": st.integers(0, 10)})),
            "scheduler": maybe(st.one_of(st.none(), pods)),
            "options": maybe(st.lists(option_defs, max_size=4)),
        },
    )
    return pods, option_defs, templates


option_names = st.one_of(st.sampled_from(["cores", "memory", "image", "extra", "gpu"]), st.text(max_size=6))
JUNK = True
pods, option_defs, templates = _strategies()
JUNK = False
clean_pods, clean_option_defs, clean_templates = _strategies()
user_values = st.dictionaries(
    st.one_of(st.sampled_from(["cores", "memory", "image", "extra", "gpu"]), st.text(max_size=5)),
    st.one_of(scalars, quantities, st.sampled_from(["1G", "2G", "img:1", "img:2", "6Gi", "4GB"]), yamlish),
    max_size=4,
)

# A template every option can apply to, so apply_options gets exercised on every example.
BASE_OPTIONS = [
    {"name": "cores", "type": "float", "default": 1, "min": 0.5, "max": 8},
    {"name": "memory", "type": "string", "default": "1G", "min": "512M", "max": "16G"},
    {"name": "image", "type": "select", "default": "img:1", "choices": ["img:1", "img:2"]},
    {"name": "extra", "type": "bool", "default": False},
]


# -- checks on a successful result ----------------------------------------------------------------

def check_pod(pod: dict):
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    for key in ("containers", "initContainers"):
        for c in pod["spec"].get(key) or []:
            assert isinstance(c["image"], str) and c["image"].strip()
            for field in ("args", "command"):
                if c.get(field) is not None:
                    assert isinstance(c[field], list) and all(isinstance(a, str) for a in c[field]), c[field]
    for key in ("labels", "annotations"):
        for v in ((pod.get("metadata") or {}).get(key) or {}).values():
            assert isinstance(v, str)
    assert "status" not in pod


def check_template(t: ClusterTemplate):
    assert isinstance(t, ClusterTemplate)
    check_pod(t.worker)
    if t.scheduler is not None:
        check_pod(t.scheduler)
    json.dumps(t.to_json("local"), allow_nan=False)  # the sidebar's JSON: strict, no Infinity/NaN
    res = t.worker_resources()
    for key in ("cores", "memory"):
        v = res[key]
        assert v is None or (isinstance(v, int) and v >= 0) or (isinstance(v, float) and math.isfinite(v) and v >= 0)


def _without_flags(argv: list, flags=("--nthreads", "--memory-limit")) -> list:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        out.append(a)
    return out


def check_only_documented_changes(before: ClusterTemplate, after: ClusterTemplate):
    """apply_options may change resources cpu/memory, --nthreads/--memory-limit and images; nothing else."""
    for pod_b, pod_a, is_worker in ((before.worker, after.worker, True), (before.scheduler, after.scheduler, False)):
        if pod_b is None:
            assert pod_a is None
            continue
        b, a = copy.deepcopy(pod_b), copy.deepcopy(pod_a)
        idx = worker_container_index(b) if is_worker else None
        assert len(a["spec"]["containers"]) == len(b["spec"]["containers"])
        for i, (cb, ca) in enumerate(zip(b["spec"]["containers"], a["spec"]["containers"])):
            cb.pop("image"), ca.pop("image")
            if i == idx:
                for c in (cb, ca):
                    for section in ("limits", "requests"):
                        q = (c.get("resources") or {}).get(section)
                        if isinstance(q, dict):
                            q.pop("cpu", None), q.pop("memory", None)
                            if not q:
                                c["resources"].pop(section)
                    if c.get("resources") == {}:
                        c.pop("resources")
                    for field in ("args", "command"):
                        if c.get(field) is not None:
                            c[field] = _without_flags(c[field])
                    if c.get("args") == []:
                        c.pop("args")
        assert a == b
    assert (after.name, after.display_name, after.workers, after.adapt, after.default) == (
        before.name, before.display_name, before.workers, before.adapt, before.default)


def _load(spec, name="fuzz"):
    try:
        return load_template(spec, name=name)
    except TemplateError as exc:
        event("template refused")
        assert str(exc)
        return None


# -- properties -----------------------------------------------------------------------------------

@FUZZ
@given(yamlish)
def test_arbitrary_structures_load_or_template_error(data):
    for loader in (lambda d: load_pod(d), lambda d: load_template(d, name="fuzz"), lambda d: load_template(d)):
        original = copy.deepcopy(data)
        try:
            result = loader(data)
        except TemplateError:
            pass
        else:
            check_template(result) if isinstance(result, ClusterTemplate) else check_pod(result)
        assert data == original or data != data  # input never modified (NaN never equals itself)


@FUZZ
@given(st.one_of(clean_pods, pods))
@example({"spec": {"containers": [{"name": "dask", "image": "i", "args": ["dask-worker"],
                                   "resources": {"limits": {"cpu": "1e999", "memory": "1e999"}}}]}})
def test_near_valid_pods_load_or_template_error(pod):
    try:
        result = load_pod(pod)
    except TemplateError:
        return
    check_pod(result)
    t = ClusterTemplate(name="t", display_name="t", description="", default=False, worker=result)
    check_template(t)


@FUZZ
@given(st.one_of(clean_templates, templates))
def test_near_valid_templates_load_or_template_error(spec):
    t = _load(spec, name=None if "name" in spec else "fuzz")
    if t is not None:
        check_template(t)


@settings(FUZZ, max_examples=60)
@given(st.one_of(st.text(max_size=200), yamlish.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                 st.one_of(clean_templates, templates).map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_yaml_files_load_or_template_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tmpl") / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        t = load_template(path)
    except TemplateError:
        return
    check_template(t)


@FUZZ
@given(st.one_of(clean_option_defs, option_defs))
def test_option_definitions_load_or_template_error(raw):
    spec = {"name": "t", "worker": {"spec": {"containers": [
        {"name": "dask", "image": "img:1", "args": ["dask-worker", "--nthreads", "1"]}]}}, "options": [raw]}
    t = _load(spec, name="t")
    if t is not None:
        check_template(t)
        (opt,) = t.options
        assert opt.validate(opt.default) == opt.default  # a loaded default is itself valid


def _bounds_for(typ):
    """Bounds as the loader admits them: numbers for numeric options, memory sizes for string options."""
    if typ in ("integer", "float"):
        return st.one_of(st.none(), st.integers(-5, 100), st.floats(-5, 100))
    if typ == "string":
        return st.one_of(st.none(), st.sampled_from(["512M", "1G", "2Gi", "16G", "1e3", "0"]))
    return st.none()


@st.composite
def options_and_values(draw):
    typ = draw(st.sampled_from(OPTION_TYPES))
    name = draw(st.one_of(option_names, st.sampled_from(["cores", "memory", "image"])))
    lo, hi = draw(_bounds_for(typ)), draw(_bounds_for(typ))
    choices = None if typ == "bool" else draw(st.one_of(
        st.none(), st.lists(st.one_of(scalars, quantities), min_size=1, max_size=3)))
    if typ == "select" and choices is None:
        choices = ["a"]
    value = draw(st.one_of(scalars, yamlish, quantities, st.sampled_from(choices or ["x"])))
    return Option(name=name, type=typ, default=None, min=lo, max=hi, choices=choices), value


@FUZZ
@given(options_and_values())
def test_option_validate_value_or_option_error(case):
    opt, value = case
    try:
        out = opt.validate(value)
    except OptionError as exc:
        assert exc.status in (400, 403) and exc.message
        return
    if opt.type in ("integer", "float"):
        assert isinstance(out, (int, float)) and not isinstance(out, bool) and math.isfinite(out)
    elif opt.type == "bool":
        assert isinstance(out, bool)
    else:
        assert isinstance(out, str)


@settings(FUZZ, suppress_health_check=list(HealthCheck))
@given(st.one_of(clean_templates, templates), user_values)
def test_apply_options_only_changes_documented_fields(spec, values):
    t = _load(spec, name=None if "name" in spec else "fuzz")
    assume(t is not None)
    _apply_and_check(t, values)


@settings(FUZZ, suppress_health_check=list(HealthCheck))
@given(st.one_of(clean_pods, pods), st.one_of(st.none(), clean_pods), user_values)
def test_apply_builtin_options_only_changes_documented_fields(worker, scheduler, values):
    spec = {"name": "t", "worker": worker, "scheduler": scheduler, "options": BASE_OPTIONS}
    t = _load(spec, name="t")
    assume(t is not None)
    _apply_and_check(t, values)
    _apply_and_check(t, {"cores": 2.5, "memory": "2Gi", "image": "img:2"})


def _apply_and_check(t: ClusterTemplate, values: dict):
    snapshot = copy.deepcopy(t)
    try:
        t.option_values(values)
    except OptionError as exc:
        event(f"options refused ({exc.status})")
        assert exc.status in (400, 403) and exc.message
        with pytest.raises(OptionError):
            t.apply_options(values)
        assert t == snapshot
        return
    applied = t.apply_options(values)
    event("options applied")
    assert t == snapshot  # the template itself is never changed
    check_template(applied)
    check_only_documented_changes(t, applied)
    chosen = applied.applied_options
    container = applied.worker["spec"]["containers"][worker_container_index(applied.worker)]
    if "image" in chosen:
        for pod in (applied.worker, applied.scheduler):
            for c in (pod or {"spec": {"containers": []}})["spec"]["containers"]:
                assert c["image"] == chosen["image"]
    if "cores" in chosen:
        assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"]
    argv = container_argv(container)
    assert all(isinstance(a, str) for a in argv)
