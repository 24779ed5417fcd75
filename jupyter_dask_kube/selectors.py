"""Kubernetes label and field selectors (parsing and matching), as the API server reads them.

One implementation for every place that filters objects: the emulated API server, the local runtime's store
and the node agent (Service selectors). Pure."""
from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SelectorError", "parse_label_selector", "parse_field_selector", "label_matcher", "selects", "Matcher",
           "label_selector_matches", "selector_problems"]

Matcher = Callable[[dict], bool]


class SelectorError(ValueError):
    pass


_KEY = r"[A-Za-z0-9./_-]+"
_VALUE = r"[A-Za-z0-9._-]*"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, cur = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in (t.strip() for t in terms) if t]


def parse_label_selector(selector: str | None) -> Matcher | None:
    """A predicate over a labels dict, or None for "everything"."""
    if not selector or not selector.strip():
        return None
    checks: list[Callable[[dict], bool]] = []
    for term in _split_terms(selector):
        if m := _SET_RE.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ_RE.match(term):
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS_RE.match(term):
            neg, key = m.groups()
            if neg:
                checks.append(lambda labels, k=key: k not in labels)
            else:
                checks.append(lambda labels, k=key: k in labels)
        else:
            raise SelectorError(f"unable to parse requirement: found '{term}', expected: identifier")

    def match(labels: dict | None) -> bool:
        labels = labels or {}
        return all(check(labels) for check in checks)

    return match


def label_matcher(selector: str | dict | None) -> Matcher:
    """A predicate over a labels dict for a selector string or a Service's ``{key: value}`` selector
    (empty: everything). Raises :class:`SelectorError` (a ValueError) on a malformed string."""
    if isinstance(selector, dict):
        items = tuple(selector.items())
        return lambda labels: all((labels or {}).get(k) == v for k, v in items)
    return parse_label_selector(selector) or (lambda labels: True)


def selects(selector: dict | None, labels: dict | None) -> bool:
    """Whether a non-empty ``{key: value}`` selector (a Service's, a ReplicaSet's matchLabels) selects these
    labels. An empty or missing selector selects nothing, as for Services."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


#: Field selectors the real API server accepts, per resource (plus metadata.name/namespace everywhere).
FIELD_LABELS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"},
    "namespaces": {"status.phase"},
    "secrets": {"type"},
}


def _get_path(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(selector: str | None, plural: str) -> Callable[[dict], bool] | None:
    """A predicate over a whole object, or None for "everything"."""
    if not selector or not selector.strip():
        return None
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get(plural, set())
    checks = []
    for term in _split_terms(selector):
        m = re.match(r"^\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise SelectorError(f"invalid selector: '{selector}'; can't understand '{term}'")
        field, op, value = m.groups()
        if field not in allowed:
            raise SelectorError(f'field label not supported: {field}')

        def check(obj, f=field, v=value, neg=(op == "!=")):
            got = _get_path(obj, f)
            got = "" if got is None else (str(got).lower() if isinstance(got, bool) else str(got))
            return (got != v) if neg else (got == v)

        checks.append(check)
    return lambda obj: all(c(obj) for c in checks)


_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _label_key_ok(key) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    return (not prefix or (len(prefix) <= 253 and bool(_DNS_SUBDOMAIN_RE.match(prefix)))) and len(name) <= 63 \
        and bool(_LABEL_NAME_RE.match(name))


#: The operators of a LabelSelector's matchExpressions (metav1.LabelSelectorOperator).
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_problems(selector) -> list[str]:
    """Why a LabelSelector object (``{"matchLabels": ..., "matchExpressions": [...]}``) is malformed, as the
    API server says it ("values: Required value: must be specified when `operator` is 'In' or 'NotIn'")."""
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return ["must be an object with matchLabels and/or matchExpressions"]
    out = []
    if not isinstance(selector.get("matchLabels") or {}, dict):
        out.append("matchLabels: must be a map of strings")
    else:
        for key, value in (selector.get("matchLabels") or {}).items():
            if not _label_key_ok(key):
                out.append(f'matchLabels: Invalid value: "{key}": not a valid label key')
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE_RE.match(value):
                out.append(f'matchLabels: Invalid value: "{value}": a valid label must be an empty string or consist '
                           "of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                           "character")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        op = (expr or {}).get("operator")
        values = (expr or {}).get("values") or []
        if not (expr or {}).get("key"):
            out.append(f"matchExpressions[{i}].key: Required value")
        if op not in SELECTOR_OPERATORS:
            out.append(f'matchExpressions[{i}].operator: Invalid value: "{op}": not a valid selector operator')
        elif op in ("In", "NotIn") and not values:
            out.append(f"matchExpressions[{i}].values: Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist") and values:
            out.append(f"matchExpressions[{i}].values: Forbidden: may not be specified when `operator` is 'Exists' or "
                       "'DoesNotExist'")
    return out


def label_selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """Whether a LabelSelector object selects these labels, as metav1.LabelSelectorAsSelector reads it: every
    matchLabels pair and every matchExpression must hold; an empty selector (``{}``) selects everything, a
    missing one (None) nothing. Raises SelectorError on a malformed selector."""
    if selector is None:
        return False
    problems = selector_problems(selector)
    if problems:
        raise SelectorError("; ".join(problems))
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:  # a missing key is "not in"
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
