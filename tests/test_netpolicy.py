"""The NetworkPolicy evaluator (jupyter_dask_kube/netpolicy.py), rule by rule of the Kubernetes documentation
(https://kubernetes.io/docs/concepts/services-networking/network-policies/), and LabelSelector matching."""
from __future__ import annotations

import pytest

from jupyter_dask_kube.netpolicy import External, Pod, allows, egress_allows, ingress_allows, policy_types, problems
from jupyter_dask_kube.selectors import SelectorError, label_selector_matches

A = Pod("a", "ns1", {"app": "a", "tier": "web"}, "10.0.0.1")
B = Pod("b", "ns1", {"app": "b"}, "10.0.0.2", ports={"http": (8080, "TCP"), "dns": (53, "UDP")})
C = Pod("c", "ns2", {"app": "a"}, "10.0.1.3")
NAMESPACES = {"ns1": {"team": "x"}, "ns2": {"team": "y"}}


def pol(spec, name="p", namespace="ns1"):
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ing(rules, selector=None, **extra):
    return pol({"podSelector": selector if selector is not None else {"matchLabels": {"app": "b"}},
                "ingress": rules, **extra})


def eg(rules, selector=None, **extra):
    return pol({"podSelector": selector if selector is not None else {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"], "egress": rules, **extra})


def ok(src, dst, port, policies, protocol="TCP"):
    return allows(src, dst, port, protocol, policies, NAMESPACES)


# ------------------------------------------------------------------------------------------ label selectors
@pytest.mark.parametrize("selector, labels, expected", [
    ({}, {}, True),                                        # empty selects everything
    ({}, {"a": "1"}, True),
    (None, {"a": "1"}, False),                             # missing selects nothing
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchLabels": {"a": "1"}}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),   # missing: not in
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    # matchLabels and matchExpressions are ANDed
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "", "b": "1"}, True),
])
def test_label_selector_matches(selector, labels, expected):
    assert label_selector_matches(selector, labels) is expected


@pytest.mark.parametrize("selector", [
    {"matchExpressions": [{"key": "a", "operator": "In"}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]},
    {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["1"]}]},
    {"matchLabels": {"a": "not valid!"}},
])
def test_malformed_selectors_raise(selector):
    with pytest.raises(SelectorError):
        label_selector_matches(selector, {"a": "1"})


# -------------------------------------------------------------------------------- isolation and defaults
def test_no_policies_allow_everything():
    assert ok(A, B, 1234, []) and ok(C, B, 1, []) and ok(External("8.8.8.8"), B, 80, [])


@pytest.mark.parametrize("spec, types", [
    ({"podSelector": {}}, ["Ingress"]),
    ({"podSelector": {}, "egress": [{}]}, ["Ingress", "Egress"]),
    ({"podSelector": {}, "egress": []}, ["Ingress"]),       # no egress rules: not an egress policy by default
    ({"podSelector": {}, "policyTypes": ["Egress"]}, ["Egress"]),
])
def test_policy_types_default(spec, types):
    assert policy_types(pol(spec)) == types


def test_policy_with_no_rules_isolates_selected_pods_only():
    deny = ing([])
    assert not ok(A, B, 80, [deny])                  # B selected: isolated, nothing allowed
    assert ok(B, A, 80, [deny])                      # A not selected: open


def test_empty_pod_selector_selects_every_pod_of_its_namespace_only():
    deny_all = pol({"podSelector": {}})
    assert not ok(C, A, 80, [deny_all]) and not ok(C, B, 80, [deny_all])
    assert ok(A, C, 80, [deny_all])                  # C is in ns2: the policy in ns1 does not apply to it


def test_policies_are_additive():
    only_a = ing([{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])
    only_c = ing([{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}], )
    assert ok(A, B, 80, [only_a]) and not ok(C, B, 80, [only_a])
    assert ok(A, B, 80, [only_a, only_c]) and ok(C, B, 80, [only_a, only_c])


def test_ingress_only_policy_does_not_isolate_egress():
    deny_in = pol({"podSelector": {"matchLabels": {"app": "a"}}})
    assert ok(A, B, 80, [deny_in])


def test_both_sides_must_allow():
    in_ok = ing([{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])
    out_deny = eg([])
    assert ok(A, B, 80, [in_ok])
    assert not ok(A, B, 80, [in_ok, out_deny])       # egress of A denies
    out_ok = eg([{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}])
    assert ok(A, B, 80, [in_ok, out_deny, out_ok])
    assert egress_allows(A, B, 80, policies=[out_ok]) and not ingress_allows(A, B, 80, policies=[ing([])])


# ------------------------------------------------------------------------------------------------- peers
def test_missing_or_empty_from_means_every_source():
    assert ok(C, B, 80, [ing([{}])]) and ok(C, B, 80, [ing([{"from": []}])])
    assert ok(External("1.2.3.4"), B, 80, [ing([{}])])


def test_pod_selector_alone_is_the_policys_namespace():
    rule = ing([{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])
    assert ok(A, B, 80, [rule]) and not ok(C, B, 80, [rule])      # C has app=a but is in ns2


def test_namespace_selector_alone_is_every_pod_there():
    rule = ing([{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}])
    assert ok(C, B, 80, [rule]) and not ok(A, B, 80, [rule])
    everywhere = ing([{"from": [{"namespaceSelector": {}}]}])
    assert ok(C, B, 80, [everywhere]) and ok(A, B, 80, [everywhere])
    assert not ok(External("10.0.1.3"), B, 80, [everywhere])       # selectors select pods, not addresses


def test_namespace_and_pod_selector_in_one_peer_are_anded_in_two_peers_ored():
    anded = ing([{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}},
                            "podSelector": {"matchLabels": {"app": "a"}}}]}])
    other = Pod("d", "ns2", {"app": "z"}, "10.0.1.4")
    assert ok(C, B, 80, [anded]) and not ok(other, B, 80, [anded]) and not ok(A, B, 80, [anded])
    ored = ing([{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}},
                          {"podSelector": {"matchLabels": {"app": "a"}}}]}])
    assert ok(C, B, 80, [ored]) and ok(other, B, 80, [ored]) and ok(A, B, 80, [ored])


def test_namespace_selected_by_its_name_label():
    rule = ing([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns2"}}}]}])
    assert ok(C, B, 80, [rule]) and not ok(A, B, 80, [rule])


def test_ip_block_with_except():
    rule = ing([{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}]}])
    assert ok(A, B, 80, [rule])                                     # 10.0.0.1: in, not excepted
    assert not ok(C, B, 80, [rule])                                 # 10.0.1.3: excepted
    assert not ok(External("192.168.1.1"), B, 80, [rule])
    assert ok(External("10.0.2.2"), B, 80, [rule])
    v6 = ing([{"from": [{"ipBlock": {"cidr": "::/0"}}]}])
    assert not ok(A, B, 80, [v6])                                   # other address family


def test_egress_to_ip_block_matches_pod_ips():
    """What zero-to-jupyterhub's privateIPs: false relies on: egress by ipBlock is matched on pod IPs too."""
    public_only = eg([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}])
    assert not ok(A, B, 80, [public_only]) and ok(A, External("8.8.8.8"), 443, [public_only])


# ------------------------------------------------------------------------------------------------- ports
def test_ports_number_and_default_protocol():
    rule = ing([{"ports": [{"port": 8786}]}])
    assert ok(A, B, 8786, [rule]) and not ok(A, B, 8787, [rule])
    assert not ok(A, B, 8786, [rule], protocol="UDP")               # missing protocol is TCP


def test_protocol_without_port_is_every_port_of_it():
    rule = ing([{"ports": [{"protocol": "UDP"}]}])
    assert ok(A, B, 53, [rule], protocol="UDP") and ok(A, B, 9999, [rule], protocol="UDP")
    assert not ok(A, B, 53, [rule])


def test_end_port_range():
    rule = ing([{"ports": [{"port": 30000, "endPort": 30010}]}])
    assert ok(A, B, 30000, [rule]) and ok(A, B, 30010, [rule]) and not ok(A, B, 30011, [rule])
    assert not ok(A, B, 29999, [rule])


def test_named_port_resolves_on_the_destination_pod():
    rule = ing([{"ports": [{"port": "http"}]}])
    assert ok(A, B, 8080, [rule]) and not ok(A, B, 80, [rule])
    udp = ing([{"ports": [{"port": "dns", "protocol": "UDP"}]}])
    assert ok(A, B, 53, [udp], protocol="UDP")
    assert not ok(A, B, 53, [ing([{"ports": [{"port": "dns"}]}])], protocol="UDP")   # TCP asked, port is UDP
    # egress: the name is looked up on the destination, which has no such port here
    assert not ok(B, A, 8080, [eg([{"ports": [{"port": "http"}]}], selector={"matchLabels": {"app": "b"}})])


def test_ports_and_peers_are_anded_within_a_rule():
    rule = ing([{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}])
    assert ok(A, B, 80, [rule]) and not ok(A, B, 81, [rule]) and not ok(C, B, 80, [rule])


# ----------------------------------------------------------------------------------------------- validity
@pytest.mark.parametrize("spec, needle", [
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "must specify a peer"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "may not specify both ipBlock and another peer"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}, "not a valid CIDR"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
     "strict subset"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}, "between 1 and 65535"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "Not_A_Name"}]}]}, "valid port name"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, "Unsupported value"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "non-numeric"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "greater than or equal"),
    ({"podSelector": {}, "policyTypes": ["Sideways"]}, "Unsupported value"),
    ({"podSelector": {"matchLabels": {"a": "bad value"}}}, "spec.podSelector.matchLabels"),
])
def test_problems_name_the_field(spec, needle):
    found = problems(pol(spec))
    assert any(needle in p for p in found), found
    with pytest.raises(ValueError):
        allows(A, B, 80, policies=[pol(spec)])


def test_valid_policy_has_no_problems():
    assert problems(pol({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [
        {"port": 80}, {"port": "http"}, {"protocol": "UDP"}, {"port": 1, "endPort": 2}]}]})) == []
