"""Faults the emulated API server injects (:class:`EmulatorFaults`), and the header that exempts a request."""
from __future__ import annotations

import dataclasses

__all__ = ["NO_FAULTS_HEADER", "EmulatorFaults"]

#: A request carrying this header (any value) is never given an injected fault: lets a test check the API's
#: state through a second client while faults stay on for the code under test.
NO_FAULTS_HEADER = "X-Emulator-No-Faults"


@dataclasses.dataclass
class EmulatorFaults:
    """Faults injected into API answers. Empty (no fault) by default.

    - ``error_rate``: fraction (0..1) of API requests answered with one of ``error_statuses``.
    - ``latency``: seconds added before every API answer.
    - ``drop_watch_after``: seconds after which every watch connection is cut (no clean end).
    - ``forbidden``: ``{(verb, resource)}`` answered 403 like RBAC does (and reported by SelfSubjectAccessReview);
      resource may carry a subresource (``"pods/log"``); ``"*"`` matches any verb or resource.
    - ``review_denied``: ``{(verb, resource)}`` that SelfSubjectAccessReview reports as not allowed, without
      enforcing it (to test RBAC preflight alone).
    - ``quota``: ``{"pods": 10}`` per namespace; creating beyond it answers 403 "exceeded quota".
    - ``namespaces``: when non-empty, faults apply only to requests in these namespaces.
    - ``watch_error_event``: an HTTP status; every new watch answers 200 with one ``ERROR`` event carrying a
      Status of that code, then ends (as kube-apiserver does on an internal error mid-watch).
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503, 429)
    latency: float = 0.0
    drop_watch_after: float | None = None
    forbidden: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    review_denied: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    quota: dict[str, int] = dataclasses.field(default_factory=dict)
    namespaces: set[str] = dataclasses.field(default_factory=set)
    watch_error_event: int | None = None

    def to_json(self) -> dict:
        return {
            "error_rate": self.error_rate, "error_statuses": list(self.error_statuses), "latency": self.latency,
            "drop_watch_after": self.drop_watch_after, "forbidden": sorted(map(list, self.forbidden)),
            "review_denied": sorted(map(list, self.review_denied)), "quota": dict(self.quota),
            "namespaces": sorted(self.namespaces), "watch_error_event": self.watch_error_event,
        }

    @classmethod
    def from_json(cls, data: dict) -> EmulatorFaults:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "error_statuses" in data:
            data["error_statuses"] = tuple(int(s) for s in data["error_statuses"])
        for key in ("forbidden", "review_denied"):
            if key in data:
                data[key] = {tuple(pair) for pair in data[key]}
        if "namespaces" in data:
            data["namespaces"] = set(data["namespaces"])
        return cls(**data)

    def is_forbidden(self, verb: str, resource: str, pairs: set | None = None) -> bool:
        pairs = self.forbidden if pairs is None else pairs
        if not pairs:
            return False
        base = resource.split("/")[0]
        for v, r in pairs:
            if v in (verb, "*") and r in (resource, base if "/" not in r else resource, "*"):
                return True
        return False
