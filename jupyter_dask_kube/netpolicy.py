"""NetworkPolicy evaluation and validation, by the rules of the Kubernetes documentation
(https://kubernetes.io/docs/concepts/services-networking/network-policies/). Pure: no I/O.

What it answers: may this pod (or outside address) open a connection to that pod on that port? It is how the
tests hold our per-cluster policy and deploy/z2jh-values.yaml against the policies zero-to-jupyterhub ships,
and how the emulated API server validates NetworkPolicies (:func:`problems`).

The rules, as the documentation states them:
- A policy applies to the pods of its own namespace that ``spec.podSelector`` selects (``{}``: all of them).
- ``policyTypes`` missing: ``["Ingress"]``, plus ``"Egress"`` when the policy has egress rules.
- A pod is isolated for ingress (egress) when any policy that applies to it has that policy type; a pod that is
  not isolated in a direction allows everything in that direction.
- An isolated pod allows what the union of the rules of the policies that apply to it allows (additive, no deny).
- A connection happens only when the source's egress side AND the destination's ingress side allow it.
- A rule with no (or empty) ``from``/``to`` matches every peer; with no (or empty) ``ports``, every port.
- A peer: ``podSelector`` alone (pods of the policy's namespace), ``namespaceSelector`` alone (every pod of the
  selected namespaces), both (selected pods in selected namespaces), or ``ipBlock`` (``cidr`` minus ``except``).
- A port: a number or the name of a container port of the destination pod; protocol TCP when missing; ``endPort``
  makes a range (numbers only); a protocol with no port means every port of that protocol.
What the documentation leaves to the network plugin: ipBlock is matched here against pod IPs too (as Calico and
Cilium do), which is what makes zero-to-jupyterhub's ``privateIPs: false`` cut user pods off from other pods.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .selectors import SelectorError, label_selector_matches, selector_problems

__all__ = ["Pod", "External", "policy_types", "applies_to", "allows", "egress_allows", "ingress_allows", "problems",
           "NAMESPACE_NAME_LABEL"]

#: Set on every namespace by the API server (Kubernetes >= 1.21): how a policy selects a namespace by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: where it is, its labels, its IP and its named container ports."""

    name: str
    namespace: str
    labels: dict = field(default_factory=dict, hash=False)
    ip: str = ""
    #: {port name: (number, protocol)}: what a named port in a policy resolves to on this pod.
    ports: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class External:
    """An address outside the pod network (a node, the internet): only ipBlock peers can match it."""

    ip: str


def policy_types(policy: dict) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def applies_to(policy: dict, pod: Pod) -> bool:
    meta = policy.get("metadata") or {}
    if meta.get("namespace", pod.namespace) != pod.namespace:
        return False
    return label_selector_matches((policy.get("spec") or {}).get("podSelector") or {}, pod.labels)


def _namespace_labels(namespaces: dict, name: str) -> dict:
    return {**(namespaces.get(name) or {}), NAMESPACE_NAME_LABEL: name}


def _in_block(ip: str, block: dict) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"], strict=False)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or []
                   if ipaddress.ip_network(e, strict=False).version == addr.version)


def _peer_matches(peer: dict, other, policy_namespace: str, namespaces: dict) -> bool:
    """Whether one from/to entry of a policy in ``policy_namespace`` matches the other end of the connection."""
    if peer.get("ipBlock") is not None:
        return _in_block(other.ip, peer["ipBlock"])
    if not isinstance(other, Pod):
        return False  # selectors select pods only
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_sel is None:
        in_namespace = other.namespace == policy_namespace
    else:
        in_namespace = label_selector_matches(ns_sel, _namespace_labels(namespaces, other.namespace))
    if not in_namespace:
        return False
    return pod_sel is None or label_selector_matches(pod_sel, other.labels)


def _port_matches(rule_port: dict, dest, port: int, protocol: str) -> bool:
    if (rule_port.get("protocol") or "TCP") != protocol:
        return False
    want = rule_port.get("port")
    if want is None:
        return True
    if isinstance(want, str) and not want.isdigit():
        # A named port is looked up on the destination pod: it matches that pod's port of that name and protocol.
        named = dest.ports.get(want) if isinstance(dest, Pod) else None
        return named is not None and named[0] == port and named[1] == protocol
    low = int(want)
    high = rule_port.get("endPort") or low
    return low <= port <= int(high)


def _rule_allows(rule: dict, direction: str, other, dest, port: int, protocol: str, policy_namespace: str,
                 namespaces: dict) -> bool:
    peers = rule.get("from" if direction == "Ingress" else "to") or []
    if peers and not any(_peer_matches(p, other, policy_namespace, namespaces) for p in peers):
        return False
    ports = rule.get("ports") or []
    return not ports or any(_port_matches(p, dest, port, protocol) for p in ports)


def _side_allows(direction: str, pod: Pod, other, dest, port: int, protocol: str, policies, namespaces) -> bool:
    """``pod``'s side of the connection in one direction: not isolated, or some rule allows ``other``."""
    isolated = False
    for pol in policies:
        if direction not in policy_types(pol) or not applies_to(pol, pod):
            continue
        isolated = True
        ns = (pol.get("metadata") or {}).get("namespace", pod.namespace)
        rules = (pol.get("spec") or {}).get("ingress" if direction == "Ingress" else "egress") or []
        if any(_rule_allows(r, direction, other, dest, port, protocol, ns, namespaces) for r in rules):
            return True
    return not isolated


def egress_allows(src: Pod, dest, port: int, protocol: str = "TCP", policies=(), namespaces=None) -> bool:
    return _side_allows("Egress", src, dest, dest, port, protocol, policies, namespaces or {})


def ingress_allows(src, dest: Pod, port: int, protocol: str = "TCP", policies=(), namespaces=None) -> bool:
    return _side_allows("Ingress", dest, src, dest, port, protocol, policies, namespaces or {})


def allows(src, dest, port: int, protocol: str = "TCP", policies=(), namespaces=None) -> bool:
    """Whether ``src`` (a Pod or an External address) may connect to ``dest`` on ``port``/``protocol``.

    ``namespaces``: {name: labels} (each also gets its ``kubernetes.io/metadata.name`` label). An External end
    has no policies of its own: only the pod end's side counts for it."""
    namespaces = namespaces or {}
    for pol in policies:
        bad = problems(pol)
        if bad:
            raise ValueError(f"invalid NetworkPolicy {(pol.get('metadata') or {}).get('name')}: {'; '.join(bad)}")
    if isinstance(src, Pod) and not egress_allows(src, dest, port, protocol, policies, namespaces):
        return False
    if isinstance(dest, Pod) and not ingress_allows(src, dest, port, protocol, policies, namespaces):
        return False
    return True


# ---------------------------------------------------------------------------------------------- validation

def _cidr(value) -> ipaddress._BaseNetwork | None:
    try:
        return ipaddress.ip_network(value, strict=False) if isinstance(value, str) and "/" in value else None
    except ValueError:
        return None


def _peer_problems(peer, path: str) -> list[str]:
    if not isinstance(peer, dict):
        return [f"{path}: Invalid value: must be an object"]
    out = []
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not kinds:
        out.append(f"{path}: Required value: must specify a peer")
    elif len(kinds) > 1 and "ipBlock" in kinds:
        out.append(f"{path}: Forbidden: may not specify both ipBlock and another peer")
    for k in ("podSelector", "namespaceSelector"):
        out.extend(f"{path}.{k}.{p}" for p in selector_problems(peer.get(k)))
    block = peer.get("ipBlock")
    if block is not None:
        cidr = _cidr((block or {}).get("cidr"))
        if not (block or {}).get("cidr"):
            out.append(f"{path}.ipBlock.cidr: Required value")
        elif cidr is None:
            out.append(f'{path}.ipBlock.cidr: Invalid value: "{block["cidr"]}": not a valid CIDR')
        for i, e in enumerate(block.get("except") or []):
            sub = _cidr(e)
            if sub is None:
                out.append(f'{path}.ipBlock.except[{i}]: Invalid value: "{e}": not a valid CIDR')
            elif cidr is not None and (sub.version != cidr.version or not sub.subnet_of(cidr) or sub == cidr):
                out.append(f'{path}.ipBlock.except[{i}]: Invalid value: "{e}": must be a strict subset of `cidr`')
    return out


def _port_problems(port, path: str) -> list[str]:
    if not isinstance(port, dict):
        return [f"{path}: Invalid value: must be an object"]
    out = []
    proto = port.get("protocol")
    if proto is not None and proto not in PROTOCOLS:
        out.append(f'{path}.protocol: Unsupported value: "{proto}": supported values: "TCP", "UDP", "SCTP"')
    value = port.get("port")
    if isinstance(value, bool) or (value is not None and not isinstance(value, (int, str))):
        out.append(f"{path}.port: Invalid value: must be a number or a port name")
    elif isinstance(value, int) and not 0 < value < 65536:
        out.append(f"{path}.port: Invalid value: {value}: must be between 1 and 65535, inclusive")
    elif isinstance(value, str) and (len(value) > 15 or not _PORT_NAME.match(value) or "--" in value
                                     or not re.search("[a-z]", value)):
        out.append(f'{path}.port: Invalid value: "{value}": must be a valid port name (IANA_SVC_NAME)')
    end = port.get("endPort")
    if end is not None:
        if not isinstance(value, int):
            out.append(f"{path}.endPort: Invalid value: {end}: may not be specified when `port` is non-numeric"
                       if value is not None else f"{path}.endPort: Required value: when endPort is specified, "
                       "port must be specified")
        elif not isinstance(end, int) or end < value:
            out.append(f"{path}.endPort: Invalid value: {end}: must be greater than or equal to `port`")
    return out


def problems(policy: dict) -> list[str]:
    """Why the API server would refuse this NetworkPolicy (field path and reason, in its words); [] when valid."""
    spec = policy.get("spec")
    if not isinstance(spec, dict):
        return ["spec: Required value"]
    out = [f"spec.podSelector.{p}" for p in selector_problems(spec.get("podSelector") or {})]
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        out.append("spec.policyTypes: Invalid value: may not specify more than two policyTypes")
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            out.append(f'spec.policyTypes[{i}]: Unsupported value: "{t}": supported values: "Ingress", "Egress"')
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            rule = rule or {}
            for j, port in enumerate(rule.get("ports") or []):
                out.extend(_port_problems(port, f"spec.{direction}[{i}].ports[{j}]"))
            for j, peer in enumerate(rule.get(peers_key) or []):
                out.extend(_peer_problems(peer, f"spec.{direction}[{i}].{peers_key}[{j}]"))
    return out


def is_valid(policy: dict) -> bool:
    try:
        return not problems(policy)
    except SelectorError:
        return False
