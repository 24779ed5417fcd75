"""What the emulated API server validates on create and update, in the API server's words."""
from __future__ import annotations

import base64
import re
from typing import Any

from .. import netpolicy
from ..objectstore import GENERATE_CHARS, now_iso
from ..quantities import parse_quantity
from .apierrors import invalid
from .routes import Res

__all__ = ["GENERATE_CHARS", "check_labels", "now_iso", "validate"]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def check_labels(labels: Any, causes: list) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append(("metadata.labels", "FieldValueInvalid", "Invalid value: labels must be a map"))
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not LABEL_NAME.match(name):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           f'Invalid value: "{key}": name part must consist of alphanumeric characters, \'-\', '
                           "'_' or '.', and must start and end with an alphanumeric character"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                           "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                           "alphanumeric character" + (" (must be no more than 63 characters)"
                                                       if isinstance(value, str) and len(value) > 63 else "")))


def validate(res: Res, obj: dict) -> None:
    """What the API server refuses on create (422 Invalid with its causes): names, labels, containers, ports,
    quantities, restartPolicy, Service ports."""
    meta = obj["metadata"]
    name = meta.get("name") or ""
    causes: list = []
    if not name:
        causes.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
    elif res.plural == "services":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {DNS1035_MSG}'))
    elif res.plural == "namespaces":
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}'))
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}'))
    check_labels(meta.get("labels"), causes)
    ann = meta.get("annotations")
    if ann is not None and (not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values())):
        causes.append(("metadata.annotations", "FieldValueInvalid", "Invalid value: annotation values must be strings"))
    if res.plural == "pods":
        spec = obj.get("spec")
        containers = spec.get("containers") if isinstance(spec, dict) else None
        if not containers:
            causes.append(("spec.containers", "FieldValueRequired", "Required value"))
        else:
            seen = set()
            for i, c in enumerate(containers):
                cname = c.get("name") if isinstance(c, dict) else None
                if not cname:
                    causes.append((f"spec.containers[{i}].name", "FieldValueRequired", "Required value"))
                elif len(cname) > 63 or not DNS1123_LABEL.match(cname):
                    causes.append((f"spec.containers[{i}].name", "FieldValueInvalid",
                                   f'Invalid value: "{cname}": {LABEL_MSG}'))
                elif cname in seen:
                    causes.append((f"spec.containers[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{cname}"'))
                seen.add(cname)
                if isinstance(c, dict) and not c.get("image"):
                    causes.append((f"spec.containers[{i}].image", "FieldValueRequired", "Required value"))
                for j, p in enumerate((c or {}).get("ports") or []):
                    port = p.get("containerPort")
                    if not isinstance(port, int) or not 0 < port < 65536:
                        causes.append((f"spec.containers[{i}].ports[{j}].containerPort", "FieldValueInvalid",
                                       f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
                for r in ("limits", "requests"):
                    for k, v in (((c or {}).get("resources") or {}).get(r) or {}).items():
                        try:
                            parse_quantity(v)
                        except ValueError:
                            causes.append((f"spec.containers[{i}].resources.{r}[{k}]", "FieldValueInvalid",
                                           f'Invalid value: "{v}": quantities must match the regular '
                                           "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
        volumes = _check_volumes(spec if isinstance(spec, dict) else {}, causes)
        for i, c in enumerate(containers or []):
            for j, m in enumerate((c or {}).get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    causes.append((f"spec.containers[{i}].volumeMounts[{j}].name", "FieldValueNotFound",
                                   f'Not found: "{m.get("name")}"'))
                if not m.get("mountPath"):
                    causes.append((f"spec.containers[{i}].volumeMounts[{j}].mountPath", "FieldValueRequired",
                                   "Required value"))
        if spec and spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
            causes.append(("spec.restartPolicy", "FieldValueNotSupported",
                           f'Unsupported value: "{spec["restartPolicy"]}": supported values: "Always", "Never", "OnFailure"'))
    elif res.plural == "services":
        spec = obj.get("spec") or {}
        if spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None" \
                and not spec.get("ports"):
            causes.append(("spec.ports", "FieldValueRequired", "Required value"))
        for j, p in enumerate(spec.get("ports") or []):
            port = p.get("port")
            if not isinstance(port, int) or not 0 < port < 65536:
                causes.append((f"spec.ports[{j}].port", "FieldValueInvalid",
                               f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
    elif res.plural == "networkpolicies":
        # One rule set for policies (netpolicy.problems): "spec.ingress[0].from[0]: Forbidden: may not ...".
        for problem in netpolicy.problems(obj):
            path, _, rest = problem.partition(": ")
            kind, _, detail = rest.partition(": ")
            causes.append((path, {"Required value": "FieldValueRequired", "Forbidden": "FieldValueForbidden",
                                  "Unsupported value": "FieldValueNotSupported"}.get(kind, "FieldValueInvalid"), rest))
    elif res.plural == "secrets":
        for field in ("data", "stringData"):
            for key, value in (obj.get(field) or {}).items():
                if not SECRET_KEY.match(key) or len(key) > 253:
                    causes.append((f"{field}[{key}]", "FieldValueInvalid", f'Invalid value: "{key}": a valid config '
                                   "key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                                   "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"))
                if field == "data":
                    try:
                        base64.b64decode(value, validate=True)
                    except (ValueError, TypeError):
                        causes.append((f"data[{key}]", "FieldValueInvalid", "Invalid value: illegal base64 data"))
    if causes:
        raise invalid(res.kind, name, causes)


def _check_volumes(spec: dict, causes: list) -> set:
    """Volume names (DNS-1123 labels, unique); a secret volume names its Secret. Returns the names."""
    names: set = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vname = (v or {}).get("name") or ""
        if not vname or len(vname) > 63 or not DNS1123_LABEL.match(vname):
            causes.append((f"spec.volumes[{i}].name", "FieldValueInvalid", f'Invalid value: "{vname}": {LABEL_MSG}'))
        elif vname in names:
            causes.append((f"spec.volumes[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{vname}"'))
        names.add(vname)
        secret = (v or {}).get("secret")
        if isinstance(secret, dict) and not secret.get("secretName"):
            causes.append((f"spec.volumes[{i}].secret.secretName", "FieldValueRequired", "Required value"))
    return names
