"""Kubernetes Status failure answers, worded as the API server words them."""
from __future__ import annotations

import attrs
import kmock

__all__ = ["ApiError", "already_exists", "bad_request", "conflict", "forbidden", "invalid", "not_found"]


@attrs.frozen
class ApiError(kmock.KubernetesError):
    """A Kubernetes Status failure answer."""

    headers: dict | None = None

    def body(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message or "", "reason": self.reason or "", "code": self.status}
        if self.details:
            out["details"] = self.details
        return out


def _kind_ref(plural: str, name: str | None, group: str = "") -> dict:
    d = {"kind": plural}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    return d


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found', _kind_ref(plural, name, group))


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', _kind_ref(plural, name, group))


def conflict(plural: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    _kind_ref(plural, name))


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason word, detail), e.g. ("spec.containers", "FieldValueRequired", "Required value")."""
    parts = [f"{field}: {detail}" for field, _, detail in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', {
        "name": name, "kind": kind.lower() + "s" if False else kind,
        "causes": [{"reason": r, "message": d, "field": f} for f, r, d in causes]})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(verb: str, resource: str, namespace: str | None, group: str = "") -> ApiError:
    base, _, sub = resource.partition("/")
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    sub_text = f'resource "{base}/{sub}"' if sub else f'resource "{base}"'
    return ApiError(403, "Forbidden",
                    f'{resource} is forbidden: User "system:serviceaccount:default:jupyter" cannot {verb} '
                    f'{sub_text} in API group "{group}"{where}', _kind_ref(base, None, group))
