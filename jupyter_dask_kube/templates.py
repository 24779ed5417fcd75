"""Cluster templates: load, validate, and apply users' options (pure; reads template files only).

A template file is either a plain Pod manifest (the seed's ``worker-spec.yml``; the file
name is the template name) or the DESIGN format (``name``, ``display_name``, ``worker``,
``options``, ...). Every error names its source and field, so an admin can fix the YAML
without reading a traceback. Pods are plain dicts in Kubernetes JSON form (camelCase).
"""
from __future__ import annotations

import copy
import dataclasses
import errno
import math
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import dask.config
import yaml

from . import config as _config  # noqa: F401  (kubernetes.* defaults must be loaded)
from .quantities import is_quantity

OPTION_TYPES = ("integer", "float", "select", "bool", "string")
#: Options the template applies itself; any other option is left to the admin's options_handler.
BUILTIN_OPTIONS = {"cores": ("integer", "float"), "memory": ("string", "select"), "image": ("string", "select")}
TEMPLATE_KEYS = {"name", "display_name", "description", "default", "workers", "adapt", "worker", "scheduler", "options",
                 "groups", "users"}
OPTION_KEYS = {"name", "type", "default", "label", "min", "max", "choices", "description"}
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_CONTAINER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
WORKER_COMMANDS = ("dask-worker", "dask-cuda-worker")
SCHEDULER_COMMANDS = ("dask-scheduler",)


class TemplateError(ValueError):
    """A template the admin wrote is invalid; the message names the source and the field."""

    def __init__(self, source: str, field: str | None, problem: str):
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")


class TemplateNotFoundError(TemplateError, FileNotFoundError):
    """A template path that does not exist. Also a FileNotFoundError: classic dask-kubernetes code
    (``KubeCluster.from_yaml``) catches that."""

    def __init__(self, source: str, problem: str):
        TemplateError.__init__(self, source, None, problem)
        self.errno, self.strerror, self.filename = errno.ENOENT, os.strerror(errno.ENOENT), source

    def __str__(self) -> str:  # OSError's would print "[Errno 2] ..." instead of our message
        return self.args[0]


class OptionError(ValueError):
    """A user's option value is refused: status 400 (bad value or type) or 403 (not allowed)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------- quantities

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50, "ei": 2**60,
}
_QUANTITY_RE = re.compile(r"^([+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)$")


def _number(q: Any, what: str) -> Decimal:
    if isinstance(q, bool) or not isinstance(q, (int, float, Decimal)):
        raise ValueError(f"{q!r} is not a {what}")  # noqa: TRY004  (callers catch ValueError only)
    d = Decimal(str(q)) if isinstance(q, float) else Decimal(q)
    if not d.is_finite():
        raise ValueError(f"{q!r} is not a {what}")
    return d


def _format_number(x: Any) -> str:
    """2.0 -> "2", 1.5 -> "1.5": numbers as a person (and a k8s quantity) writes them."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def parse_cores(q: Any) -> float:
    """CPU cores from a number or a Kubernetes quantity ("2", "1.5", "500m")."""
    if isinstance(q, str):
        m = _QUANTITY_RE.match(q.strip())
        if not m or m.group(2) not in ("", "m"):
            raise ValueError(f"{q!r} is not a cpu quantity such as 2, 1.5 or 500m")
        try:
            d = Decimal(m.group(1))
        except InvalidOperation:
            raise ValueError(f"{q!r} is not a cpu quantity such as 2, 1.5 or 500m") from None
        if m.group(2) == "m":
            d /= 1000
    else:
        d = _number(q, "cpu quantity")
    if d < 0:
        raise ValueError(f"{q!r} is negative")
    if not math.isfinite(float(d)):  # "1e999": a float would be inf, which JSON cannot carry
        raise ValueError(f"{q!r} is too large a cpu quantity")
    return float(d)


def parse_memory(q: Any) -> int:
    """Bytes from a number or a quantity: Kubernetes ("6G", "6Gi", "512M", "6e9", "500m"
    millibytes) or dask style ("6GB", "6 GiB", "6gb"). Exact, no float rounding."""
    if isinstance(q, str):
        m = _QUANTITY_RE.match(q.strip())
        unit = m.group(2) if m else ""
        lowered = unit.lower()
        if lowered.endswith("b") and lowered not in ("b", "bb"):
            lowered = lowered[:-1]  # dask style: "GB" is "G", "GiB" is "Gi"
        if m and unit == "m":  # Kubernetes millibytes; "mb"/"MB" still mean megabytes
            factor = Decimal(1) / 1000
        elif m and lowered in _BYTE_UNITS:
            factor = Decimal(_BYTE_UNITS[lowered])
        else:
            raise ValueError(f"{q!r} is not a memory quantity such as 6G, 6Gi, 512M or 6GB")
        d = Decimal(m.group(1)) * factor
    else:
        d = _number(q, "memory quantity")
    if d < 0:
        raise ValueError(f"{q!r} is negative")
    return int(d.to_integral_value(rounding="ROUND_CEILING"))


def is_k8s_quantity(q: Any) -> bool:
    """True when Kubernetes itself accepts ``q`` as a resource quantity."""
    return is_quantity(q)


# ----------------------------------------------------------------------- dask arguments

def _flag_index(args: list, flag: str) -> tuple[int, bool] | None:
    for i, a in enumerate(args):
        if a == flag:
            return i, False
        if isinstance(a, str) and a.startswith(flag + "="):
            return i, True
    return None


def has_flag(args: list | None, flag: str) -> bool:
    """True when ``--flag`` or ``--flag=value`` is in ``args``."""
    return _flag_index(list(args or []), flag) is not None


def get_arg(args: list | None, flag: str) -> str | None:
    """The value of ``--flag value`` or ``--flag=value``; None when absent or valueless."""
    args = list(args or [])
    found = _flag_index(args, flag)
    if found is None:
        return None
    i, inline = found
    if inline:
        return args[i].split("=", 1)[1]
    return str(args[i + 1]) if i + 1 < len(args) else None


def set_arg(args: list | None, flag: str, value: Any) -> list:
    """A new list with ``flag`` set to ``value``: replaced in place, else appended."""
    args = list(args or [])
    found = _flag_index(args, flag)
    value = str(value)
    if found is None:
        return args + [flag, value]
    i, inline = found
    if inline:
        args[i] = f"{flag}={value}"
    elif i + 1 < len(args):
        args[i + 1] = value
    else:
        args.append(value)
    return args


def set_container_arg(container: dict, flag: str, value: Any) -> None:
    """Set a dask flag where the container already has it (command or args), else in args
    (Kubernetes runs ``command + args``, so appending to args works in both cases)."""
    key = "command" if has_flag(container.get("command"), flag) else "args"
    container[key] = set_arg(container.get(key), flag, value)


def container_argv(container: dict) -> list[str]:
    """What the container runs, as far as the manifest says: ``command + args``."""
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _dask_subcommand(argv: list[str]) -> str | None:
    if not argv:
        return None
    first = os.path.basename(argv[0])
    if first in WORKER_COMMANDS:
        return "worker"
    if first in SCHEDULER_COMMANDS:
        return "scheduler"
    if first == "dask" and len(argv) > 1:
        if argv[1] == "worker" or argv[1:3] == ["cuda", "worker"]:
            return "worker"
        if argv[1] == "scheduler":
            return "scheduler"
    return None


def is_dask_worker(container: dict) -> bool:
    """True when the container runs ``dask-worker``, ``dask worker`` or ``dask-cuda-worker``."""
    return _dask_subcommand(container_argv(container)) == "worker"


def is_dask_scheduler(container: dict) -> bool:
    return _dask_subcommand(container_argv(container)) == "scheduler"


def worker_container_index(pod: dict) -> int:
    """The container that runs the dask worker: the first one that does, else the first."""
    containers = (pod.get("spec") or {}).get("containers") or []
    for i, c in enumerate(containers):
        if is_dask_worker(c):
            return i
    return 0


# ------------------------------------------------------------------------------ options

@dataclass
class Option:
    """A field users may set when creating a cluster, within the admin's bounds."""

    name: str
    type: str
    default: Any
    label: str | None = None
    min: Any = None
    max: Any = None
    choices: list | None = None
    description: str = ""

    def _check_bounds(self, value: Any, shown: Any) -> None:
        key = parse_memory if self.type == "string" else (lambda x: x)
        if self.type == "string" and (self.min is not None or self.max is not None):
            try:  # bounds of a string option are memory sizes: so must the value be
                parse_memory(value)
            except ValueError:
                raise OptionError(f"{self.name}: {value!r} is not a memory size such as 6G, 6Gi or 6GB") from None
        if self.min is not None and key(value) < key(self.min):
            raise OptionError(
                f"{self.name}: {_format_number(shown)} is below the minimum "
                f"{_format_number(self.min)} allowed by the template", 403)
        if self.max is not None and key(value) > key(self.max):
            raise OptionError(
                f"{self.name}: {_format_number(shown)} is above the maximum "
                f"{_format_number(self.max)} allowed by the template", 403)

    def _check_choices(self, value: Any) -> None:
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise OptionError(f"{self.name}: {value!r} is not one of the allowed choices: {allowed}", 403)

    def validate(self, value: Any) -> Any:
        """The value coerced to the option's type, or OptionError (400 bad, 403 not allowed)."""
        n = self.name
        if self.type in ("integer", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(f"{n}: expected a number, got {type(value).__name__} {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise OptionError(f"{n}: {value!r} is not a finite number")
            if self.type == "integer":
                if isinstance(value, float) and not value.is_integer():
                    raise OptionError(f"{n}: expected a whole number, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            if n == "cores" and value <= 0:
                raise OptionError(f"{n}: must be above 0, got {_format_number(value)}")
            self._check_choices(value)
            self._check_bounds(value, value)
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise OptionError(f"{n}: expected true or false, got {value!r}")
            return value
        # string and select
        if not isinstance(value, str):
            raise OptionError(f"{n}: expected a string, got {type(value).__name__} {value!r}")
        value = value.strip()
        if n == "memory":
            try:
                if parse_memory(value) <= 0:
                    raise ValueError
            except ValueError:
                raise OptionError(f"{n}: {value!r} is not a memory size such as 6G, 6Gi or 6GB") from None
        if n == "image" and (not value or any(c.isspace() for c in value)):
            raise OptionError(f"{n}: {value!r} is not a container image name")
        self._check_choices(value)
        if self.type == "string":
            self._check_bounds(value, value)
        return value

    def to_json(self) -> dict:
        out = {"name": self.name, "label": self.label or self.name, "type": self.type,
               "default": self.default, "description": self.description}
        for key in ("min", "max", "choices"):
            if getattr(self, key) is not None:
                out[key] = copy.deepcopy(getattr(self, key))
        return out


def _load_option(raw: Any, source: str, where: str) -> Option:
    if not isinstance(raw, dict):
        raise TemplateError(source, where, "must be a mapping with name, type and default")
    unknown = sorted(str(k) for k in set(raw) - OPTION_KEYS)  # YAML keys may be numbers or null
    if unknown:
        raise TemplateError(source, where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(OPTION_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise TemplateError(source, f"{where}.name", f"must be a lowercase identifier, got {name!r}")
    where = f"{where} ({name})"
    typ = raw.get("type")
    if typ not in OPTION_TYPES:
        raise TemplateError(source, f"{where}.type", f"must be one of {', '.join(OPTION_TYPES)}, got {typ!r}")
    if name in BUILTIN_OPTIONS and typ not in BUILTIN_OPTIONS[name]:
        raise TemplateError(source, f"{where}.type", f"option {name!r} must be of type {' or '.join(BUILTIN_OPTIONS[name])}")
    if "default" not in raw:
        raise TemplateError(source, f"{where}.default", "is required")
    for key in ("label", "description"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise TemplateError(source, f"{where}.{key}", "must be a string")
    choices = raw.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices:
            raise TemplateError(source, f"{where}.choices", "must be a non-empty list")
        if typ == "bool":
            raise TemplateError(source, f"{where}.choices", "is not allowed for a bool option")
    elif typ == "select":
        raise TemplateError(source, f"{where}.choices", "is required for a select option")
    for key in ("min", "max"):
        bound = raw.get(key)
        if bound is None:
            continue
        if typ in ("integer", "float"):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise TemplateError(source, f"{where}.{key}", f"must be a number, got {bound!r}")
        elif typ == "string":
            try:
                parse_memory(bound)
            except ValueError:
                raise TemplateError(source, f"{where}.{key}",
                                    f"bounds of a string option are memory sizes such as 6G, got {bound!r}") from None
        else:
            raise TemplateError(source, f"{where}.{key}", f"is not allowed for a {typ} option")
    if raw.get("min") is not None and raw.get("max") is not None:
        lo, hi = raw["min"], raw["max"]
        if (parse_memory(lo) > parse_memory(hi)) if typ == "string" else lo > hi:
            raise TemplateError(source, where, f"min {lo!r} is above max {hi!r}")
    option = Option(name=name, type=typ, default=raw["default"], label=raw.get("label"),
                    min=raw.get("min"), max=raw.get("max"),
                    choices=copy.deepcopy(choices), description=raw.get("description") or "")
    if choices is not None:
        for i, choice in enumerate(choices):
            try:
                Option(name=name, type=typ, default=None).validate(choice)
            except OptionError as e:
                raise TemplateError(source, f"{where}.choices[{i}]", e.message) from None
    try:
        option.default = option.validate(raw["default"])
    except OptionError as e:
        raise TemplateError(source, f"{where}.default", e.message) from None
    return option


# -------------------------------------------------------------------------------- pods

def _api_client():
    from kubernetes.client import ApiClient

    return ApiClient()


def _read_yaml(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise TemplateNotFoundError(str(path), f"can not be read: {e.strerror or e}") from None
    except OSError as e:
        raise TemplateError(str(path), None, f"can not be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise TemplateError(str(path), None, f"is not valid YAML: {e}") from None
    return dask.config.expand_environment_variables(data)


def _str_list(value: Any, source: str, where: str) -> list[str]:
    if not isinstance(value, list):
        raise TemplateError(source, where, f"must be a list of strings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or item is None or not isinstance(item, (str, int, float)):
            raise TemplateError(source, f"{where}[{i}]", f"must be a string, got {item!r}")
        out.append(item if isinstance(item, str) else _format_number(item))
    return out


def _check_pod(pod: dict, source: str, prefix: str) -> dict:
    def at(path: str) -> str:
        return f"{prefix}{path}"

    kind = pod.get("kind")
    if kind not in (None, "Pod"):
        raise TemplateError(source, at("kind"), f"must be Pod, got {kind!r}")
    if pod.get("apiVersion") not in (None, "v1"):
        raise TemplateError(source, at("apiVersion"), f"must be v1, got {pod.get('apiVersion')!r}")
    metadata = pod.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TemplateError(source, at("metadata"), "must be a mapping")
    for key in ("labels", "annotations"):
        values = metadata.get(key)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise TemplateError(source, at(f"metadata.{key}"), "must be a mapping of strings")
        for k, v in list(values.items()):
            if isinstance(v, (dict, list)) or v is None:
                raise TemplateError(source, at(f"metadata.{key}.{k}"), f"must be a string, got {v!r}")
            values[k] = v if isinstance(v, str) else (str(v).lower() if isinstance(v, bool) else _format_number(v))
    for key in ("uid", "resourceVersion", "creationTimestamp", "selfLink", "managedFields", "generation"):
        metadata.pop(key, None)
    pod.pop("status", None)

    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise TemplateError(source, at("spec"), "must be a mapping with a containers list")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise TemplateError(source, at("spec.containers"), "must be a non-empty list")
    for kind_ in ("initContainers", "containers"):
        items = spec.get(kind_)
        if items is None:
            continue
        if not isinstance(items, list):
            raise TemplateError(source, at(f"spec.{kind_}"), "must be a list")
        names = set()
        for i, c in enumerate(items):
            where = at(f"spec.{kind_}[{i}]")
            if not isinstance(c, dict):
                raise TemplateError(source, where, "must be a mapping")
            name = c.get("name")
            if not isinstance(name, str) or not _CONTAINER_NAME_RE.match(name) or len(name) > 63:
                raise TemplateError(source, f"{where}.name",
                                    f"must be a DNS-1123 label such as 'dask', got {name!r}")
            if name in names:
                raise TemplateError(source, f"{where}.name", f"duplicate container name {name!r}")
            names.add(name)
            image = c.get("image")
            if not isinstance(image, str) or not image.strip():
                raise TemplateError(source, f"{where}.image", "must be a non-empty string")
            for key in ("args", "command"):
                if c.get(key) is not None:
                    c[key] = _str_list(c[key], source, f"{where}.{key}")
            env = c.get("env")
            if env is not None:
                if not isinstance(env, list):
                    raise TemplateError(source, f"{where}.env", "must be a list of {name, value}")
                for j, e in enumerate(env):
                    ew = f"{where}.env[{j}]"
                    if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not _ENV_NAME_RE.match(e["name"]):
                        raise TemplateError(source, ew, f"must be a mapping with a valid name, got {e!r}")
                    if "value" in e and e["value"] is not None:
                        v = e["value"]
                        if isinstance(v, (dict, list)):
                            raise TemplateError(source, f"{ew}.value", f"must be a string, got {v!r}")
                        e["value"] = v if isinstance(v, str) else (str(v).lower() if isinstance(v, bool) else _format_number(v))
                    elif "valueFrom" in e and not isinstance(e["valueFrom"], dict):
                        raise TemplateError(source, f"{ew}.valueFrom", "must be a mapping")
            resources = c.get("resources")
            if resources is not None:
                if not isinstance(resources, dict):
                    raise TemplateError(source, f"{where}.resources", "must be a mapping with limits and requests")
                for section in ("limits", "requests"):
                    quantities = resources.get(section)
                    if quantities is None:
                        continue
                    if not isinstance(quantities, dict):
                        raise TemplateError(source, f"{where}.resources.{section}", "must be a mapping")
                    for rname, q in list(quantities.items()):
                        rw = f"{where}.resources.{section}.{rname}"
                        if isinstance(q, bool) or not isinstance(q, (str, int, float)):
                            raise TemplateError(source, rw, f"must be a quantity, got {q!r}")
                        q = q if isinstance(q, str) else _format_number(q)
                        if not is_k8s_quantity(q):
                            hint = " (Kubernetes writes 6G or 6Gi, not 6GB)" if re.search(r"[iI]?[bB]$", q) else ""
                            raise TemplateError(source, rw, f"{q!r} is not a Kubernetes quantity{hint}")
                        quantities[rname] = q
    out = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    for key, value in pod.items():
        if key not in out:
            out[key] = value
    return out


def load_pod(source: Any, *, source_name: str | None = None, _prefix: str = "") -> dict:
    """A validated Pod manifest dict from a YAML path, a dict or a V1Pod (input not modified)."""
    from kubernetes.client import V1Pod

    if isinstance(source, (str, os.PathLike)):
        name = source_name or str(source)
        data = _read_yaml(source)
    elif isinstance(source, dict):
        name = source_name or "<inline pod>"
        data = copy.deepcopy(source)
    elif isinstance(source, V1Pod):
        name = source_name or "<V1Pod>"
        data = _api_client().sanitize_for_serialization(source)
    else:
        raise TemplateError(source_name or "<inline pod>", _prefix.rstrip(".") or None,
                            f"must be a Pod manifest (a path, a dict or a V1Pod), not {type(source).__name__}")
    if not isinstance(data, dict):
        raise TemplateError(name, _prefix.rstrip(".") or None, "must be a Pod manifest (a mapping)")
    return _check_pod(data, name, _prefix)


# --------------------------------------------------------------------------- templates

def _first(pod: dict) -> dict:
    return pod["spec"]["containers"][worker_container_index(pod)]


@dataclass
class ClusterTemplate:
    """What a user picks in the sidebar: a worker pod (+ optional scheduler pod) and options."""

    name: str
    display_name: str
    description: str
    default: bool
    worker: dict
    scheduler: dict | None = None
    workers: int = 0
    adapt: dict | None = None
    options: list[Option] = field(default_factory=list)
    source: str | None = None
    #: Values of options other than cores/memory/image, for the admin's options_handler.
    extra_options: dict = field(default_factory=dict)
    #: Every option value apply_options() used (defaults included), for the scheduler annotation.
    applied_options: dict = field(default_factory=dict)
    #: Who sees it (access.py): JupyterHub groups and user names; None = everyone.
    groups: list[str] | None = None
    users: list[str] | None = None

    def worker_resources(self) -> dict:
        """Cores, memory bytes and image of one worker: limits first, else the dask args."""
        container = _first(self.worker)
        limits = (container.get("resources") or {}).get("limits") or {}
        argv = container_argv(container)
        cores = memory = None
        try:
            if limits.get("cpu") is not None:
                cores = parse_cores(limits["cpu"])
            elif get_arg(argv, "--nthreads") is not None:
                cores = float(parse_cores(get_arg(argv, "--nthreads")))
        except ValueError:
            cores = None
        # Memory: the container limit, else dask's absolute --memory-limit, else the container request.
        # "auto", 0 and fractions are shares of the node, not a size: unknown (None), which the limits
        # refuse rather than count as 0 bytes (see ClusterManager._check_limits).
        requests = (container.get("resources") or {}).get("requests") or {}
        try:
            if limits.get("memory") is not None:
                memory = parse_memory(limits["memory"])
            else:
                arg = get_arg(argv, "--memory-limit")
                if arg is not None and arg not in ("auto", "0") and not re.fullmatch(r"0?\.\d+|1\.0*", arg):
                    memory = parse_memory(arg) or None
                elif requests.get("memory") is not None:
                    memory = parse_memory(requests["memory"]) or None
        except ValueError:
            memory = None
        return {"cores": cores, "memory": memory, "image": container.get("image")}

    def to_json(self, backend: str) -> dict:
        """The DESIGN "Template" JSON the sidebar shows."""
        container = _first(self.worker)
        limits = (container.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        if memory is None:
            arg = get_arg(container_argv(container), "--memory-limit")
            memory = arg if arg not in (None, "auto", "0") else None
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "default": self.default,
            "backend": backend,
            "workers": self.workers,
            "adapt": copy.deepcopy(self.adapt),
            "worker": {"cores": self.worker_resources()["cores"],
                       "memory": None if memory is None else str(memory),
                       "image": container.get("image")},
            "options": [o.to_json() for o in self.options],
        }

    def option_values(self, user_values: dict | None) -> dict:
        """Defaults merged with the user's validated values; OptionError for anything else."""
        if user_values is None:
            user_values = {}
        if not isinstance(user_values, dict):
            raise OptionError(f"options must be an object, got {type(user_values).__name__}")
        by_name = {o.name: o for o in self.options}
        values = {o.name: copy.deepcopy(o.default) for o in self.options}
        for key, value in user_values.items():
            if key not in by_name:
                offered = ", ".join(by_name) if by_name else "no options"
                raise OptionError(f"unknown option {key!r}; this template offers: {offered}")
            values[key] = by_name[key].validate(value)
        return values

    def apply_options(self, user_values: dict | None) -> ClusterTemplate:
        """A new template with the option values written into its pods (seed best practice 2:
        limits, requests, ``--nthreads`` and ``--memory-limit`` kept in agreement)."""
        values = self.option_values(user_values)
        worker = copy.deepcopy(self.worker)
        scheduler = copy.deepcopy(self.scheduler)
        container = _first(worker)
        runs_worker = is_dask_worker(container)

        def set_flag(flag: str, value: Any) -> None:
            if runs_worker:  # never turn an image's own entrypoint into a dask command
                set_container_arg(container, flag, value)

        if "cores" in values:
            cores = values["cores"]
            q = _format_number(cores)
            resources = container.setdefault("resources", {})
            resources.setdefault("limits", {})["cpu"] = q
            resources.setdefault("requests", {})["cpu"] = q
            set_flag("--nthreads", max(1, math.floor(cores)))
        if "memory" in values:
            memory = values["memory"]
            nbytes = parse_memory(memory)
            q = memory if is_k8s_quantity(memory) else str(nbytes)
            resources = container.setdefault("resources", {})
            resources.setdefault("limits", {})["memory"] = q
            resources.setdefault("requests", {})["memory"] = q
            set_flag("--memory-limit", nbytes)
        if "image" in values:
            for pod in (worker, scheduler):
                if pod is not None:
                    for c in pod["spec"]["containers"]:
                        c["image"] = values["image"]
        return dataclasses.replace(
            self,
            worker=worker,
            scheduler=scheduler,
            adapt=copy.deepcopy(self.adapt),
            options=copy.deepcopy(self.options),
            extra_options={k: v for k, v in values.items() if k not in BUILTIN_OPTIONS},
            applied_options=values,
        )


def _is_pod_manifest(data: dict) -> bool:
    return "kind" in data or "spec" in data or "apiVersion" in data


def _int(value: Any, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TemplateError(source, where, f"must be a whole number >= 0, got {value!r}")
    return value


def _check_name(name: Any, source: str, where: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not _NAME_RE.match(name):
        raise TemplateError(source, where,
                            f"must be lowercase letters, digits, '-', '_' or '.' (at most 63), got {name!r}")
    return name


def load_template(source: str | os.PathLike | dict, *, name: str | None = None) -> ClusterTemplate:
    """A ClusterTemplate from a YAML file or a dict, in the plain-Pod or the DESIGN format."""
    if isinstance(source, (str, os.PathLike)):
        src = str(source)
        stem = Path(source).stem
        data = _read_yaml(source)
    elif isinstance(source, dict):
        src = f"<inline template {name or source.get('name') or '?'}>"
        stem = None
        data = copy.deepcopy(source)
    else:
        raise TemplateError("<template>", None, f"a template is a path or a dict, not {type(source).__name__}")
    if not isinstance(data, dict):
        raise TemplateError(src, None, "must be a mapping: a Pod manifest or a template with a worker Pod")

    if _is_pod_manifest(data):
        tname = _check_name(name or stem, src, "name") if (name or stem) else None
        if tname is None:
            raise TemplateError(src, "name", "an inline Pod template needs a name")
        worker = load_pod(data, source_name=src)
        return ClusterTemplate(name=tname, display_name=tname, description="", default=False,
                               worker=worker, source=src)

    unknown = sorted(str(k) for k in set(data) - TEMPLATE_KEYS)  # YAML keys may be numbers or null
    if unknown:
        raise TemplateError(src, None, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(TEMPLATE_KEYS))}")
    if "name" in data and name is not None and data["name"] != name:
        raise TemplateError(src, "name", f"{data['name']!r} differs from the name it is configured under, {name!r}")
    tname = _check_name(data.get("name") or name or stem, src, "name")
    display_name = data.get("display_name", tname)
    if not isinstance(display_name, str) or not display_name.strip():
        raise TemplateError(src, "display_name", "must be a non-empty string")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise TemplateError(src, "description", "must be a string")
    default = data.get("default", False)
    if not isinstance(default, bool):
        raise TemplateError(src, "default", f"must be true or false, got {default!r}")
    workers = _int(data.get("workers", 0), src, "workers")
    adapt = data.get("adapt")
    if adapt is not None:
        if "workers" in data:
            raise TemplateError(src, None, "set either workers or adapt, not both")
        if not isinstance(adapt, dict) or set(adapt) - {"minimum", "maximum"}:
            raise TemplateError(src, "adapt", f"must be a mapping with minimum and maximum, got {adapt!r}")
        adapt = {"minimum": _int(adapt.get("minimum", 0), src, "adapt.minimum"),
                 "maximum": _int(adapt.get("maximum"), src, "adapt.maximum")}
        if adapt["minimum"] > adapt["maximum"]:
            raise TemplateError(src, "adapt", f"minimum {adapt['minimum']} is above maximum {adapt['maximum']}")
    if "worker" not in data:
        raise TemplateError(src, "worker", "is required: the worker Pod manifest")
    for key in ("worker", "scheduler"):
        if key in data and not isinstance(data[key], dict) and not (key == "scheduler" and data[key] is None):
            raise TemplateError(src, key, f"must be a Pod manifest (a mapping), got {data[key]!r}")
    worker = load_pod(data["worker"], source_name=src, _prefix="worker.")
    scheduler = None
    if data.get("scheduler") is not None:
        scheduler = load_pod(data["scheduler"], source_name=src, _prefix="scheduler.")
    raw_options = data.get("options") or []
    if not isinstance(raw_options, list):
        raise TemplateError(src, "options", "must be a list")
    options: list[Option] = []
    for i, raw in enumerate(raw_options):
        option = _load_option(raw, src, f"options[{i}]")
        if any(o.name == option.name for o in options):
            raise TemplateError(src, f"options[{i}].name", f"duplicate option {option.name!r}")
        options.append(option)
    audience = {key: _str_list(data[key], src, key) if data.get(key) is not None else None
                for key in ("groups", "users")}
    return ClusterTemplate(name=tname, display_name=display_name, description=description,
                           default=default, worker=worker, scheduler=scheduler, workers=workers,
                           adapt=adapt, options=options, source=src, **audience)


def load_templates(paths: list) -> list[ClusterTemplate]:
    """Templates from files and directories (``*.yaml``/``*.yml``, sorted); names unique."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    templates: list[ClusterTemplate] = []
    seen: dict[str, str] = {}
    for path in paths:
        p = Path(path).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.exists():
            files = [p]
        else:
            raise TemplateError(str(path), None, "does not exist")
        for f in files:
            t = load_template(f)
            if t.name in seen:
                raise TemplateError(str(f), "name",
                                    f"template {t.name!r} is also defined in {seen[t.name]}")
            seen[t.name] = str(f)
            templates.append(t)
    return templates


def template_from_dask_config() -> ClusterTemplate | None:
    """The seed's ``kubernetes.worker-template-path`` / ``worker-template`` as a template."""
    path = dask.config.get("kubernetes.worker-template-path", None)
    inline = dask.config.get("kubernetes.worker-template", None)
    if path:
        worker = load_pod(os.path.expanduser(str(path)))
        source = str(path)
    elif inline:
        worker = load_pod(inline, source_name="kubernetes.worker-template")
        source = "kubernetes.worker-template"
    else:
        return None
    scheduler = None
    sched = dask.config.get("kubernetes.scheduler-template", None)
    if sched:
        scheduler = load_pod(sched, source_name="kubernetes.scheduler-template")
    try:
        workers = max(0, int(dask.config.get("kubernetes.count.start", 0) or 0))
    except (TypeError, ValueError):
        workers = 0
    return ClusterTemplate(name="default", display_name="Default (dask config)",
                           description=f"The worker pod from dask config ({source})", default=True,
                           worker=worker, scheduler=scheduler, workers=workers, source=source)
