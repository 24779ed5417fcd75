"""Kubernetes resource quantities ("500m", "2", "6Gi", "1.5G", "129e6"), as the API server reads them.

Pure and shared: the emulator validates with it, the node agent schedules with it, local pods size their
memory limits with it, and templates check what users type against it.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["QUANTITY_RE", "is_quantity", "parse_quantity"]

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
#: The grammar of resource.Quantity (a number, then a binary or decimal SI suffix or an exponent).
QUANTITY_RE = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def is_quantity(q: Any) -> bool:
    """True when Kubernetes accepts ``q`` (a string) as a resource quantity."""
    return isinstance(q, str) and QUANTITY_RE.match(q) is not None


def parse_quantity(q: Any) -> float:
    """A quantity in base units (cores, bytes); None is 0. Raises ValueError for what Kubernetes refuses."""
    if q is None:
        return 0.0
    if isinstance(q, bool):
        raise ValueError(f"quantities must match the regular expression: {q!r}")
    if isinstance(q, (int, float)):
        return float(q)
    m = QUANTITY_RE.match(str(q).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression: {q!r}")
    number, suffix = m.groups()
    if not suffix:
        return float(number)
    if suffix[0] in "eE":
        return float(number + suffix)
    return float(number) * _SUFFIXES[suffix]
