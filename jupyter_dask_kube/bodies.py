"""Parse and validate REST request bodies (pure). Bad input raises ApiError with a 4xx and a message."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

# Far above any admin limit, but stops absurd numbers before they reach arithmetic or the API.
HARD_MAX_WORKERS = 10_000
MAX_NAME_LENGTH = 100


class ApiError(Exception):
    """An answer to give the caller: HTTP status and a human message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CreateRequest:
    template: str | None = None
    name: str | None = None
    workers: int | None = None
    adapt: dict | None = None
    options: dict = field(default_factory=dict)
    #: Survive the owner's server (up to c.DaskKube.max_detached_lifetime).
    keep: bool = False


def parse_json(raw: bytes | str) -> dict:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(body).__name__}")
    return body


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{what} must be a whole number, not {json.dumps(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ApiError(400, f"{what} must be a whole number, not {value}")
    value = int(value)
    if value < 0:
        raise ApiError(400, f"{what} must be 0 or more, not {value}")
    if value > HARD_MAX_WORKERS:
        raise ApiError(400, f"{what} {value} is not a sensible number of workers (at most {HARD_MAX_WORKERS})")
    return value


def parse_adapt(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, 'adapt must be an object {"minimum": n, "maximum": m} or null')
    unknown = set(value) - {"minimum", "maximum"}
    if unknown:
        raise ApiError(400, f"adapt has unknown field(s): {', '.join(sorted(unknown))}")
    if "maximum" not in value:
        raise ApiError(400, "adapt needs a maximum")
    minimum = _count(value.get("minimum", 0), "adapt.minimum")
    maximum = _count(value["maximum"], "adapt.maximum")
    if minimum > maximum:
        raise ApiError(400, f"adapt.minimum {minimum} is greater than adapt.maximum {maximum}")
    return {"minimum": minimum, "maximum": maximum}


def parse_create(body: dict) -> CreateRequest:
    unknown = set(body) - {"template", "name", "workers", "adapt", "options", "keep"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    req = CreateRequest()
    if body.get("template") is not None:
        if not isinstance(body["template"], str) or not body["template"]:
            raise ApiError(400, "template must be a template name (a string)")
        req.template = body["template"]
    if body.get("name") is not None:
        name = body["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ApiError(400, f"name must be a printable string of 1 to {MAX_NAME_LENGTH} characters")
        req.name = name.strip()
    if body.get("workers") is not None:
        req.workers = _count(body["workers"], "workers")
    req.adapt = parse_adapt(body.get("adapt"))
    if req.workers is not None and req.adapt is not None:
        raise ApiError(400, "give either workers or adapt, not both")
    keep = body.get("keep", False)
    if not isinstance(keep, bool):
        raise ApiError(400, f"keep must be true or false, not {json.dumps(keep)}")
    req.keep = keep
    options = body.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(400, "options must be an object of option name to value")
        req.options = options
    return req


def parse_patch(body: dict) -> dict:
    """``{"workers": n}`` | ``{"adapt": {...}}`` | ``{"adapt": null}`` -> {"workers": n} or {"adapt": dict|None}."""
    unknown = set(body) - {"workers", "adapt"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    if ("workers" in body) == ("adapt" in body):
        raise ApiError(400, 'give exactly one of "workers" or "adapt"')
    if "workers" in body:
        return {"workers": _count(body["workers"], "workers")}
    return {"adapt": parse_adapt(body["adapt"])}
