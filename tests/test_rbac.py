"""The table of Kubernetes calls (jupyter_dask_kube/rbac.py) against the runtime's code and deploy/rbac.yaml."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from jupyter_dask_kube import rbac
from jupyter_dask_kube.manager import RBAC_VERBS

ROOT = Path(__file__).parents[1]
RUNTIME = ROOT / "jupyter_dask_kube" / "runtimes" / "kubernetes.py"


def shipped_role() -> dict:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    return next(d for d in docs if d["kind"] == "Role")


def client_methods_called() -> set[str]:
    """Attributes the runtime reads on its API objects (``self.core.X``, ``rt.core.X``, ``self.authz.X``,
    ``self.net.X``)."""
    found = set()
    for node in ast.walk(ast.parse(RUNTIME.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("core", "authz", "net"):
            found.add(node.attr)
    return found


def test_table_lists_every_call_the_runtime_makes():
    called = client_methods_called()
    assert called, "no API calls found: the parser lost track of runtimes/kubernetes.py"
    table = {c.method for c in rbac.CALLS}
    assert called - table == set(), "calls missing from rbac.CALLS"
    assert table - called == set(), "rbac.CALLS lists calls the runtime no longer makes"


def test_shipped_role_grants_every_needed_permission_and_nothing_else():
    role = shipped_role()
    assert rbac.missing_from(role) == []
    granted = rbac.role_grants(role)
    assert granted - set(rbac.required_permissions()) == set(), "deploy/rbac.yaml grants more than the runtime uses"


def test_shipped_role_grants_exactly_the_network_policy_calls():
    needed = {(r, v) for r, _, v in rbac.required_permissions(rbac.NETWORKING_GROUP)}
    assert needed == {("networkpolicies", "create"), ("networkpolicies", "get"), ("networkpolicies", "delete")}
    assert rbac.grants_in_group(shipped_role(), rbac.NETWORKING_GROUP) == needed


def test_preflight_checks_network_policies_only_when_clusters_get_one():
    with_policy = rbac.preflight_checks(network_policy=True)
    assert [c for c in with_policy if c[0] == ""] == [("", *p) for p in rbac.required_permissions()]
    assert ("networking.k8s.io", "networkpolicies", "", "create") in with_policy
    assert all(g == "" for g, *_ in rbac.preflight_checks(network_policy=False))
    assert rbac.describe("networkpolicies", "", "create", "networking.k8s.io") == \
        "create networkpolicies.networking.k8s.io"


def test_preflight_checks_exactly_the_table():
    assert RBAC_VERBS == rbac.required_permissions()
    assert ("pods", "", "watch") in RBAC_VERBS and ("pods", "log", "get") in RBAC_VERBS
    # Every authenticated user may create a SelfSubjectAccessReview: checking it would be circular.
    assert all(r != "selfsubjectaccessreviews" for r, _, _ in RBAC_VERBS)


@pytest.mark.parametrize("rules, missing", [
    ([], rbac.required_permissions()),
    ([{"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}], []),
    ([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}], rbac.required_permissions()),
    ([{"apiGroups": [""], "resources": ["pods", "services", "events", "secrets"], "verbs": ["*"]}],
     [("pods", "log", "get"), ("pods", "portforward", "get"), ("pods", "portforward", "create")]),
    ([{"apiGroups": [""], "resources": ["pods", "pods/*", "services", "events", "secrets"], "verbs": ["*"]}], []),
    ([{"apiGroups": [""], "resources": ["pods", "services", "events"], "verbs": ["*"]},
      {"apiGroups": [""], "resources": ["pods/log", "pods/portforward"], "verbs": ["get", "create"]}],
     [("secrets", "", "create"), ("secrets", "", "get"), ("secrets", "", "delete")]),
    ([{"apiGroups": [""], "resources": ["pods", "pods/log", "services", "events", "secrets"],
       "verbs": ["get", "list", "watch"]}],
     [("pods", "", "create"), ("pods", "", "delete"), ("pods", "", "patch"),
      ("pods", "portforward", "get"), ("pods", "portforward", "create"),
      ("services", "", "create"), ("services", "", "delete"), ("secrets", "", "create"), ("secrets", "", "delete")]),
])
def test_missing_from_honours_groups_and_wildcards(rules, missing):
    assert sorted(rbac.missing_from({"rules": rules})) == sorted(missing)


def test_describe():
    assert rbac.describe("pods", "log", "get") == "get pods/log"
    assert rbac.describe("services", "", "watch") == "watch services"


def test_operator_role_grants_exactly_the_operator_calls():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac-operator.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    needed = {(c.resource, c.verb) for c in rbac.OPERATOR_CALLS}
    assert rbac.grants_in_group(role, rbac.OPERATOR_GROUP) == needed


def test_operator_table_lists_every_custom_objects_call():
    source = (ROOT / "jupyter_dask_kube" / "backends" / "operator.py").read_text()
    called = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "custom":
            called.add(node.attr)
    assert called and called == {c.method for c in rbac.OPERATOR_CALLS}


def test_helm_role_grants_exactly_the_helm_calls():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac-helm.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    assert rbac.grants_in_group(role, "apps") == {(c.resource, c.verb) for c in rbac.HELM_CALLS}
    source = (ROOT / "jupyter_dask_kube" / "backends" / "helm.py").read_text()
    called = {n.attr for n in ast.walk(ast.parse(source))
              if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "apps"}
    assert called == {c.method for c in rbac.HELM_CALLS}
