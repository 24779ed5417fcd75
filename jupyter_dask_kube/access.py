"""Who sees which template, and which limits apply, from the user's JupyterHub groups (pure).

A template with ``groups`` and/or ``users`` is seen by the users named and the members of the groups named;
without either, by everyone. Limits: ``c.DaskKube.group_limits = {group: {max_clusters, max_workers,
max_cores, max_memory}}``; the most generous of the user's groups applies field by field (0 = no limit is
the most generous), fields a group does not set come from the default, and a user in no listed group
gets the default.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .templates import parse_memory

LIMIT_FIELDS = ("max_clusters", "max_workers", "max_cores", "max_memory")


@dataclass
class Limits:
    max_clusters: int = 0  # 0 = unlimited, for every field
    max_workers: int = 0
    max_cores: float = 0
    max_memory: int = 0


def visible(template, username: str, groups: set[str] | frozenset[str]) -> bool:
    if template.groups is None and template.users is None:
        return True
    return username in (template.users or ()) or bool(set(template.groups or ()) & set(groups))


def audience(template) -> str:
    """Who a template is for, in words (for a refusal)."""
    parts = []
    if template.groups:
        parts.append(f"group{'s' if len(template.groups) > 1 else ''} {', '.join(template.groups)}")
    if template.users:
        parts.append(f"user{'s' if len(template.users) > 1 else ''} {', '.join(template.users)}")
    return " and ".join(parts) or "nobody"


def check_group_limits(group_limits: dict) -> dict[str, Limits]:
    """The admin's ``group_limits`` as Limits (memory parsed), or ValueError naming the bad entry."""
    out = {}
    if not isinstance(group_limits, dict):
        raise ValueError(f"group_limits must be a mapping of group name to limits, not {type(group_limits).__name__}")
    for group, lim in group_limits.items():
        if not isinstance(lim, dict) or set(lim) - set(LIMIT_FIELDS):
            raise ValueError(f"group_limits[{group!r}] must be a mapping with keys among {', '.join(LIMIT_FIELDS)}: {lim!r}")
        values = {}
        for key, value in lim.items():
            if key == "max_memory" and isinstance(value, str):
                value = parse_memory(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"group_limits[{group!r}][{key!r}] must be a number >= 0 (0 = no limit), not {value!r}")
            values[key] = value
        out[group] = values
    return out


def limits_for(default: Limits, group_limits: dict[str, dict], groups) -> Limits:
    """The most generous limits of the user's groups, field by field; the default when in none of them."""
    mine = [g for g in sorted(groups) if g in group_limits]
    if not mine:
        return default
    result = {}
    for f in fields(Limits):
        values = [group_limits[g].get(f.name, getattr(default, f.name)) for g in mine]
        result[f.name] = 0 if any(v == 0 for v in values) else max(values)
    return Limits(**result)
