"""The Kubernetes calls the runtime makes, and the RBAC permissions they need: one table, used by the status
preflight (which permissions to check) and by the test that holds ``deploy/rbac.yaml`` to it.

Pure data: no I/O.
"""
from __future__ import annotations

from typing import NamedTuple


class Call(NamedTuple):
    method: str  # the kubernetes client method the runtime calls
    verb: str
    resource: str
    subresource: str = ""
    group: str = ""
    why: str = ""


NETWORKING_GROUP = "networking.k8s.io"

# Every call in runtimes/kubernetes.py (tests/test_rbac.py checks that no call is missing here).
CALLS: tuple[Call, ...] = (
    Call("create_namespaced_pod", "create", "pods", why="scheduler and worker pods"),
    Call("read_namespaced_pod", "get", "pods", why="a create that raced, a pod's state"),
    Call("list_namespaced_pod", "list", "pods", why="the pod cache's listing, clusters made elsewhere"),
    Call("list_namespaced_pod", "watch", "pods", why="the pod cache's watch (watch=True)"),
    Call("delete_namespaced_pod", "delete", "pods", why="scale down, close"),
    Call("patch_namespaced_pod", "patch", "pods", why="re-adoption state in scheduler pod annotations"),
    Call("read_namespaced_pod_log", "get", "pods", "log", why="a failed pod's last lines as its reason"),
    # Port-forward to a scheduler whose Service this process cannot reach (a server or kernel outside the cluster,
    # with a kubeconfig): the client's WebSocket upgrade is a GET; API servers from 1.30 on
    # (AuthorizePodWebsocketUpgradeCreatePermission) also require "create", which kubectl's SPDY POST needs anyway.
    Call("connect_get_namespaced_pod_portforward", "get", "pods", "portforward",
         why="reach the scheduler from outside the cluster (port-forward)"),
    Call("connect_get_namespaced_pod_portforward", "create", "pods", "portforward",
         why="the same, on API servers that authorize WebSocket upgrades as create"),
    Call("create_namespaced_service", "create", "services", why="the scheduler's Service"),
    Call("read_namespaced_service", "get", "services", why="a create that raced"),
    Call("list_namespaced_service", "list", "services", why="half-made clusters, orphans"),
    Call("delete_namespaced_service", "delete", "services", why="close"),
    # networking.k8s.io, through NetworkingV1Api: the per-cluster NetworkPolicy (c.DaskKube.network_policy).
    Call("create_namespaced_network_policy", "create", "networkpolicies", group=NETWORKING_GROUP,
         why="the cluster's NetworkPolicy (only the owner's notebook pod and the cluster's pods may connect)"),
    Call("read_namespaced_network_policy", "get", "networkpolicies", group=NETWORKING_GROUP,
         why="a create that raced"),
    Call("delete_namespaced_network_policy", "delete", "networkpolicies", group=NETWORKING_GROUP, why="close"),
    Call("create_namespaced_secret", "create", "secrets",
         why="a cluster's TLS credentials, owned by its scheduler pod (c.DaskKube.tls)"),
    Call("read_namespaced_secret", "get", "secrets",
         why="a cluster's client credentials: re-adoption, KubeCluster.from_name, a create that raced"),
    Call("delete_namespaced_secret", "delete", "secrets", why="close (garbage collection would too, later)"),
    Call("list_namespaced_event", "list", "events",
         why="an Unschedulable pod's events: the autoscaler's NotTriggerScaleUp fails it at once (without this "
             "permission only the start timeout applies)"),
    # Optional (not in the Role: only a ClusterRole can grant it for a namespace that does not exist yet): lets the
    # preflight say which of "no namespace" and "no RoleBinding" it is; without it, it names both.
    Call("read_namespace", "get", "namespaces",
         why="the preflight, when nothing is allowed in the namespace: does it exist at all?"),
    # Every authenticated user may review its own access (ClusterRole system:basic-user): not in the Role.
    Call("create_self_subject_access_review", "create", "selfsubjectaccessreviews", group="authorization.k8s.io",
         why="the status preflight"),
)

# Granted to every authenticated user by Kubernetes' default ClusterRoles, so not part of deploy/rbac.yaml.
DEFAULT_GRANTED = frozenset({("authorization.k8s.io", "selfsubjectaccessreviews", "", "create")})
# Used when granted, never required: not in deploy/rbac.yaml, not checked by the preflight.
OPTIONAL = frozenset({("", "namespaces", "", "get")})


def required_permissions(group: str = "") -> list[tuple[str, str, str]]:
    """(resource, subresource, verb) the namespace Role must grant in one API group (core by default), in table
    order, without duplicates."""
    seen: list[tuple[str, str, str]] = []
    for c in CALLS:
        if (c.group, c.resource, c.subresource, c.verb) in DEFAULT_GRANTED | OPTIONAL or c.group != group:
            continue
        key = (c.resource, c.subresource, c.verb)
        if key not in seen:
            seen.append(key)
    return seen


def preflight_checks(network_policy: bool = True) -> list[tuple[str, str, str, str]]:
    """(group, resource, subresource, verb) the status preflight asks about: the core ones, then the
    NetworkPolicy ones when clusters get a policy (c.DaskKube.network_policy)."""
    out = [("", *p) for p in required_permissions()]
    if network_policy:
        out += [(NETWORKING_GROUP, *p) for p in required_permissions(NETWORKING_GROUP)]
    return out


def describe(resource: str, subresource: str, verb: str, group: str = "") -> str:
    """``"get pods/log"``, ``"create networkpolicies.networking.k8s.io"``: how the preflight names a permission."""
    return f"{verb} {resource}{'.' + group if group else ''}{'/' + subresource if subresource else ''}"


def role_grants(role: dict) -> set[tuple[str, str, str]]:
    """(resource, subresource, verb) a Role's rules grant in the core API group ("*" left as is)."""
    granted = set()
    for rule in role.get("rules") or []:
        if "" not in (rule.get("apiGroups") or []) and "*" not in (rule.get("apiGroups") or []):
            continue
        for res in rule.get("resources") or []:
            resource, _, sub = res.partition("/")
            for verb in rule.get("verbs") or []:
                granted.add((resource, sub, verb))
    return granted


def _covers(grant: tuple[str, str, str], need: tuple[str, str, str]) -> bool:
    (r, s, v), (need_r, need_s, need_v) = grant, need
    return v in (need_v, "*") and (r == "*" or (r == need_r and (s == need_s or (s == "*" and bool(need_s)))))


def missing_from(role: dict) -> list[tuple[str, str, str]]:
    """Required permissions a Role does not grant (wildcards honoured), in table order."""
    granted = role_grants(role)
    return [p for p in required_permissions() if not any(_covers(g, p) for g in granted)]


# The operator backend (backends/operator.py) on the Dask operator's custom resources, through CustomObjectsApi;
# it also reads pods, pods/log and the scheduler Service with the runtime's calls above (same Role).
# deploy/rbac-operator.yaml grants exactly these (tests/test_rbac.py).
OPERATOR_GROUP = "kubernetes.dask.org"
OPERATOR_CALLS: tuple[Call, ...] = (
    Call("list_namespaced_custom_object", "list", "daskclusters", group=OPERATOR_GROUP,
         why="the user's DaskClusters (label hub.jupyter.org/username)"),
    Call("get_namespaced_custom_object", "get", "daskclusters", group=OPERATOR_GROUP, why="one cluster"),
    Call("create_namespaced_custom_object", "create", "daskclusters", group=OPERATOR_GROUP, why="create"),
    Call("patch_namespaced_custom_object", "patch", "daskclusters", group=OPERATOR_GROUP,
         why="scale (spec.worker.replicas), adapt bounds annotation"),
    Call("delete_namespaced_custom_object", "delete", "daskclusters", group=OPERATOR_GROUP, why="delete"),
    Call("get_namespaced_custom_object", "get", "daskworkergroups", group=OPERATOR_GROUP,
         why="the default worker group's replicas (what the operator's autoscaler sets)"),
    Call("patch_namespaced_custom_object", "patch", "daskworkergroups", group=OPERATOR_GROUP,
         why="scale: the default worker group's replicas"),
    Call("get_namespaced_custom_object", "get", "daskautoscalers", group=OPERATOR_GROUP, why="adapt bounds"),
    Call("create_namespaced_custom_object", "create", "daskautoscalers", group=OPERATOR_GROUP, why="adapt"),
    Call("delete_namespaced_custom_object", "delete", "daskautoscalers", group=OPERATOR_GROUP,
         why="scale by hand, adapt off, delete"),
)


def grants_in_group(role: dict, group: str) -> set[tuple[str, str]]:
    """(resource, verb) a Role's rules grant in one API group."""
    granted = set()
    for rule in role.get("rules") or []:
        if group not in (rule.get("apiGroups") or []):
            continue
        for res in rule.get("resources") or []:
            for verb in rule.get("verbs") or []:
                granted.add((res, verb))
    return granted


# Helm releases attached beside the clusters (backends/helm.py), through AppsV1Api; Services and pods are
# read with the runtime's calls above. deploy/rbac-helm.yaml grants exactly these (tests/test_rbac.py).
HELM_CALLS: tuple[Call, ...] = (
    Call("list_namespaced_deployment", "list", "deployments", group="apps",
         why="the namespace's Dask Helm releases (label app=dask)"),
    Call("patch_namespaced_deployment", "patch", "deployments", group="apps", why="scale: the worker Deployment"),
    Call("delete_namespaced_deployment", "delete", "deployments", group="apps",
         why="delete, only with c.DaskKube.helm_allow_delete"),
)
