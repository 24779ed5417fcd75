"""JSON merge patch (RFC 7386), strategic merge patch (the fields that matter here) and JSON patch (RFC 6902)."""
from __future__ import annotations

from typing import Any

from .apierrors import ApiError, bad_request
from .wire import dumps, loads

__all__ = ["json_merge_patch", "json_patch", "strategic_merge_patch"]


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


#: list fields merged by a key in strategic merge patch (the ones on pods and services that matter here)
STRATEGIC_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
                  "ports": None, "volumes": "name", "volumeMounts": "mountPath", "conditions": "type",
                  "containerStatuses": "name", "initContainerStatuses": "name", "ownerReferences": "uid",
                  "imagePullSecrets": "name", "tolerations": None, "finalizers": "$set"}


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(patch, list):
        key = STRATEGIC_KEYS.get(field or "")
        if key == "$set" and isinstance(target, list):
            return list(dict.fromkeys([*target, *patch]))
        if field == "ports" and isinstance(target, list):
            key = "containerPort" if any("containerPort" in p for p in patch if isinstance(p, dict)) else "port"
        if not key or not isinstance(target, list) or not all(isinstance(p, dict) for p in patch):
            return [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "delete")]
        out = [dict(t) for t in target]
        for item in patch:
            match = next((i for i, t in enumerate(out) if t.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if match is not None:
                    out.pop(match)
            elif match is None:
                out.append(item)
            else:
                out[match] = strategic_merge_patch(out[match], item)
        return out
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic_merge_patch(out.get(key), value, key)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    doc = loads(dumps(doc))

    def walk(parts):
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    try:
        for op in ops:
            kind, parts = op["op"], _pointer(op["path"])
            if kind in ("add", "replace"):
                parent, last = walk(parts)
                if isinstance(parent, list):
                    idx = len(parent) if last == "-" else int(last)
                    parent.insert(idx, op["value"]) if kind == "add" else parent.__setitem__(idx, op["value"])
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                parent, last = walk(parts)
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind in ("move", "copy"):
                src_parent, src_last = walk(_pointer(op["from"]))
                value = src_parent[int(src_last) if isinstance(src_parent, list) else src_last]
                if kind == "move":
                    del src_parent[int(src_last) if isinstance(src_parent, list) else src_last]
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            elif kind == "test":
                parent, last = walk(parts)
                if parent[int(last) if isinstance(parent, list) else last] != op["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: test operation failed at {op['path']}")
            else:
                raise bad_request(f"unknown JSON patch op {kind!r}")
    except ApiError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e!r}")
    return doc
