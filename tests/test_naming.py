"""naming: every username gives a valid, distinct DNS-1123 name."""
import hashlib
import itertools
import logging
import re

import dask.config
import pytest

from jupyter_dask_kube import naming
from jupyter_dask_kube.naming import (
    MAX_CLUSTER_NAME_LENGTH,
    current_user,
    format_cluster_name,
    new_uuid,
    new_worker_suffix,
    safe_label_value,
    safe_slug,
    scheduler_pod_name,
    service_name,
    worker_pod_name,
)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
UUID = "0123456789"

HOSTILE_USERS = [
    "Foo!._",
    "jöhn.doe@example.com",
    "UPPER",
    "a_b",
    "--x--",
    "a" * 100,
    "",
    "ünïcødé",
    "user name",
    "1234",
    "a.b",
    "a-b",
    "alice",
    "Alice",
    "ALICE",
    "x",
    "-",
    ".",
    "日本語",
    "😀",
    "a--b",
    "alice-0123abcd",  # looks like an escaped name: must not collide with one
    "a\x00b",
    "user\nname",
    "a" * 30,
    "a" * 31,
    "b" * 63,
    "dask",
    "Robert'); DROP TABLE--",
    "9lives",
    "x-" + "0" * 8,
]


def _hash(value):
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]


# ----------------------------------------------------------------------------- safe_slug

@pytest.mark.parametrize(
    "value, expected",
    [
        ("alice", "alice"),
        ("a-b", "a-b"),
        ("a1", "a1"),
        ("UPPER", "upper-" + _hash("UPPER")),
        ("", "x-" + _hash("")),
        ("1234", "x-1234-" + _hash("1234")),
        ("jöhn.doe@example.com", "john-doe-example-com-" + _hash("jöhn.doe@example.com")),
        ("--x--", "x-" + _hash("--x--")),
        ("a--b", "a-b-" + _hash("a--b")),
        ("a_b", "a-b-" + _hash("a_b")),
        ("a" * 30, "a" * 30),
        ("a" * 31, "a" * 21 + "-" + _hash("a" * 31)),
        ("alice-0123abcd", "alice-0123abcd-" + _hash("alice-0123abcd")),
        ("日本語", "x-" + _hash("日本語")),
    ],
)
def test_safe_slug_table(value, expected):
    assert safe_slug(value) == expected


@pytest.mark.parametrize("value", HOSTILE_USERS)
@pytest.mark.parametrize("max_length", [10, 17, 30, 63])
def test_safe_slug_always_a_short_dns_label(value, max_length):
    slug = safe_slug(value, max_length)
    assert DNS_LABEL.match(slug), slug
    assert len(slug) <= max_length
    # unchanged, or escaped with the hash of the ORIGINAL value (what keeps inputs apart)
    assert slug == value or slug.endswith("-" + _hash(value))


@pytest.mark.parametrize("max_length", [10, 30])
def test_safe_slug_injective_over_hostile_users(max_length):
    slugs = {safe_slug(u, max_length) for u in HOSTILE_USERS}
    assert len(slugs) == len(set(HOSTILE_USERS))


def test_safe_slug_rejects_tiny_max_length_and_non_str():
    with pytest.raises(ValueError, match="max_length must be at least 10"):
        safe_slug("alice", 9)
    with pytest.raises(TypeError, match="needs a str"):
        safe_slug(None)


# ------------------------------------------------------------------------ safe_label_value

@pytest.mark.parametrize(
    "value, expected",
    [
        ("alice", "alice"),
        ("Alice", "Alice"),  # label values are case-sensitive: nothing to escape
        ("a.b_c-D", "a.b_c-D"),
        ("a@b", "a-b-" + _hash("a@b")),
        ("", "x-" + _hash("")),
        ("_x_", "x-" + _hash("_x_")),
        ("b" * 63, "b" * 63),
        ("b" * 64, "b" * 54 + "-" + _hash("b" * 64)),
        ("alice-0123abcd", "alice-0123abcd-" + _hash("alice-0123abcd")),
    ],
)
def test_safe_label_value_table(value, expected):
    assert safe_label_value(value) == expected


@pytest.mark.parametrize("value", HOSTILE_USERS)
def test_safe_label_value_always_valid(value):
    v = safe_label_value(value)
    assert LABEL_VALUE.match(v), v
    assert len(v) <= 63


def test_safe_label_value_injective():
    values = {safe_label_value(u) for u in HOSTILE_USERS}
    assert len(values) == len(set(HOSTILE_USERS))


# ---------------------------------------------------------------------------- current_user

def test_current_user_prefers_jupyterhub_user():
    assert current_user({"JUPYTERHUB_USER": "hubby"}) == "hubby"


def test_current_user_falls_back_to_login(monkeypatch):
    monkeypatch.setattr(naming.getpass, "getuser", lambda: "jovyan")
    assert current_user({}) == "jovyan"
    assert current_user({"JUPYTERHUB_USER": ""}) == "jovyan"


def test_current_user_without_login_name(monkeypatch):
    def boom():
        raise KeyError("getpwuid(): uid not found: 1000650000")

    monkeypatch.setattr(naming.getpass, "getuser", boom)
    assert current_user({}) == "user"


def test_current_user_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "from-environ")
    assert current_user() == "from-environ"


# -------------------------------------------------------------------------- random parts

def test_new_uuid_and_worker_suffix_shapes():
    uuids = {new_uuid() for _ in range(200)}
    assert len(uuids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{10}", u) for u in uuids)
    suffixes = [new_worker_suffix() for _ in range(200)]
    assert all(re.fullmatch(r"[a-z0-9]{5}", s) for s in suffixes)
    assert len(set(suffixes)) > 190


def test_object_names():
    assert scheduler_pod_name("dask-a-1") == "dask-a-1-scheduler"
    assert worker_pod_name("dask-a-1", "x1y2z") == "dask-a-1-worker-x1y2z"
    assert service_name("dask-a-1") == "dask-a-1"


# ---------------------------------------------------------------------- format_cluster_name

def _names(cluster):
    return [cluster, scheduler_pod_name(cluster), worker_pod_name(cluster, "abcde"), service_name(cluster)]


@pytest.mark.parametrize("user", HOSTILE_USERS)
@pytest.mark.parametrize(
    "template",
    ["dask-{JUPYTERHUB_USER}-{uuid}", "dask-{user}-{uuid}", "{user}-{uuid}", "Dask_{user}.{uuid}",
     "dask-{user}-{HOSTNAME}-{uuid}", "{user}{uuid}"],
)
def test_every_user_gets_valid_names(user, template):
    env = {"JUPYTERHUB_USER": user, "HOSTNAME": "Jupyter-" + "h" * 40}
    cluster = format_cluster_name(template, uuid=UUID, env=env)
    assert DNS_LABEL.match(cluster), cluster
    assert len(cluster) <= MAX_CLUSTER_NAME_LENGTH
    assert cluster.endswith(UUID)
    for name in _names(cluster):
        assert DNS_LABEL.match(name) and len(name) <= 63, name


@pytest.mark.parametrize(
    "template",
    ["dask-{JUPYTERHUB_USER}-{uuid}", "dask-{user}-{uuid}", "Dask_{user}.{uuid}", "{user}{uuid}"],
)
def test_distinct_users_distinct_names(template):
    names = {format_cluster_name(template, user=u, uuid=UUID, env={}) for u in HOSTILE_USERS}
    assert len(names) == len(set(HOSTILE_USERS))


@pytest.mark.parametrize("a, b", [("Alice", "alice"), ("a.b", "a-b"), ("a_b", "a-b"), ("a--b", "a-b"),
                                  ("ALICE", "Alice"), ("jöhn", "john"), ("", "x")])
def test_collision_pairs(a, b):
    na = format_cluster_name(user=a, uuid=UUID, env={})
    nb = format_cluster_name(user=b, uuid=UUID, env={})
    assert na != nb
    assert DNS_LABEL.match(na) and DNS_LABEL.match(nb)


def test_default_template_and_values():
    assert format_cluster_name(uuid=UUID, env={"JUPYTERHUB_USER": "alice"}) == f"dask-alice-{UUID}"
    # the seed's own example: everyone is jovyan, the hub name tells users apart
    assert format_cluster_name("dask-{user}-{JUPYTERHUB_USER}-{uuid}", uuid=UUID,
                               env={"JUPYTERHUB_USER": "bob"}) == f"dask-bob-bob-{UUID}"


def test_user_argument_names_the_person(monkeypatch):
    # An explicit user wins over JUPYTERHUB_USER, so a manager serving many users never mixes them up.
    env = {"JUPYTERHUB_USER": "tester"}
    assert format_cluster_name("dask-{JUPYTERHUB_USER}-{uuid}", user="carol", uuid=UUID, env=env) == f"dask-carol-{UUID}"
    assert format_cluster_name("dask-{user}-{uuid}", user="carol", uuid=UUID, env=env) == f"dask-carol-{UUID}"


def test_jupyterhub_user_falls_back_to_login(monkeypatch):
    monkeypatch.setattr(naming.getpass, "getuser", lambda: "jovyan")
    assert format_cluster_name("dask-{JUPYTERHUB_USER}-{uuid}", uuid=UUID, env={}) == f"dask-jovyan-{UUID}"


def test_env_values_available_and_uuid_generated():
    name = format_cluster_name("{TEAM}-{uuid}", env={"TEAM": "physics", "JUPYTERHUB_USER": "a"})
    assert re.fullmatch(r"physics-[0-9a-f]{10}", name)
    assert format_cluster_name("{TEAM}-{uuid}", env={"TEAM": "physics"}) != name


def test_uses_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "envuser")
    monkeypatch.setenv("JDK_TEST_TEAM", "teamx")
    assert format_cluster_name("{JDK_TEST_TEAM}-{JUPYTERHUB_USER}-{uuid}", uuid=UUID) == f"teamx-envuser-{UUID}"


def test_dask_config_worker_name_and_alias():
    env = {"JUPYTERHUB_USER": "alice"}
    with dask.config.set({"kubernetes.worker-name": "wn-{user}-{uuid}", "kubernetes.name": None}):
        assert format_cluster_name(uuid=UUID, env=env) == f"wn-alice-{UUID}"
    with dask.config.set({"kubernetes.worker-name": "wn-{user}-{uuid}", "kubernetes.name": "alias-{user}-{uuid}"}):
        assert format_cluster_name(uuid=UUID, env=env) == f"alias-alice-{UUID}"


@pytest.mark.parametrize(
    "template, match",
    [
        ("dask-{nope}-{uuid}", "unknown key.*nope"),
        ("dask-{}-{uuid}", "positional field"),
        ("dask-{0}-{uuid}", "positional field"),
        ("dask-{uuid", "malformed"),
        ("", "non-empty string"),
        ("   ", "non-empty string"),
        ("dask-{user.upper}-{uuid}", "only plain names"),
        ("dask-{user[0]}-{uuid}", "only plain names"),
        ("dask-{uuid:d}", "can not be formatted"),
    ],
)
def test_bad_templates(template, match):
    with pytest.raises(ValueError, match=match):
        format_cluster_name(template, uuid=UUID, env={"JUPYTERHUB_USER": "alice"})


def test_template_without_uuid_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="jupyter_dask_kube.naming"):
        assert format_cluster_name("dask-{user}", user="alice", env={}) == "dask-alice"
    assert "has no {uuid}" in caplog.text


def test_template_without_uuid_too_long_is_slugged():
    name = format_cluster_name("dask-{LONG}", user="alice", env={"LONG": "z" * 80})
    assert DNS_LABEL.match(name) and len(name) <= MAX_CLUSTER_NAME_LENGTH


def test_long_uuid_still_valid():
    name = format_cluster_name("dask-{user}-{uuid}", user="alice", uuid="f" * 45, env={})
    assert DNS_LABEL.match(name) and len(name) <= MAX_CLUSTER_NAME_LENGTH


def test_unsafe_uuid_is_slugged():
    name = format_cluster_name("dask-{user}-{uuid}", user="alice", uuid="NOT_SAFE", env={})
    assert DNS_LABEL.match(name) and len(name) <= MAX_CLUSTER_NAME_LENGTH


def test_uuid_kept_when_long_prefix_is_cut():
    a = format_cluster_name("{A}-{uuid}", uuid=UUID, env={"A": "p" * 60 + "1"})
    b = format_cluster_name("{A}-{uuid}", uuid=UUID, env={"A": "p" * 60 + "2"})
    assert a.endswith("-" + UUID) and b.endswith("-" + UUID) and a != b
    assert len(a) == MAX_CLUSTER_NAME_LENGTH


def test_many_random_users_never_collide():
    users = ["".join(p) for p in itertools.product("aA._-ö1", repeat=4)]
    names = {format_cluster_name(user=u, uuid=UUID, env={}) for u in users}
    assert len(names) == len(users)
    assert all(DNS_LABEL.match(n) and len(n) <= MAX_CLUSTER_NAME_LENGTH for n in names)


# -- the API server's own verdict -----------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["dask-{JUPYTERHUB_USER}-{uuid}", "{user}{uuid}", "Dask_{user}.{uuid}"])
def test_hostile_users_objects_accepted_by_the_api_server(kube_target, template):
    """Every object a hostile username's cluster is made of (scheduler pod, worker pod, Service, their labels)
    is accepted by each Kubernetes target's own validation (a server-side dry run: nothing is stored), and the
    user's label selector is one the API server parses."""
    from kubernetes.client import ApiException

    from jupyter_dask_kube.objects import build_scheduler_pod, build_service, build_worker_pod, user_selector
    from jupyter_dask_kube.testing.fixtures import kube_api

    from helpers import small_pod

    api = kube_api(kube_target)
    ns = kube_target.namespace
    refused = []
    try:
        for user in HOSTILE_USERS:
            cluster = format_cluster_name(template, uuid=UUID, env={"JUPYTERHUB_USER": user})
            sched = build_scheduler_pod(None, small_pod(), cluster_name=cluster, username=user)
            worker = build_worker_pod(small_pod(), cluster_name=cluster, username=user,
                                      worker_name=worker_pod_name(cluster, "abcde"),
                                      scheduler_address=f"tcp://{service_name(cluster)}:8786")
            for create, body in ((api.create_namespaced_pod, sched), (api.create_namespaced_pod, worker),
                                 (api.create_namespaced_service, build_service(cluster, user, sched))):
                try:
                    create(ns, body, dry_run="All")
                except ApiException as e:
                    refused.append(f"{user!r}: {body['metadata']['name']}: {e.status} {e.body}")
            api.list_namespaced_pod(ns, label_selector=user_selector(user), limit=1)
    finally:
        api.api_client.close()
    assert not refused, "\n".join(refused)
    # and the dry runs left nothing behind
    assert not [p for p in kube_api(kube_target).list_namespaced_pod(ns).items
                if p.metadata.name.endswith(("-scheduler", "-worker-abcde")) and UUID in p.metadata.name]


def test_api_server_refuses_an_invalid_name(kube_target):
    """The check above can fail: an unslugged name is refused by the same dry run."""
    from kubernetes.client import ApiException

    from jupyter_dask_kube.testing.fixtures import kube_api

    from helpers import small_pod

    api = kube_api(kube_target)
    try:
        with pytest.raises(ApiException) as e:
            api.create_namespaced_pod(kube_target.namespace, {**small_pod(), "metadata": {
                "name": "Dask_Jöhn.Doe-scheduler", "labels": {"hub.jupyter.org/username": "jöhn.doe@example.com"}}},
                dry_run="All")
        assert e.value.status == 422
    finally:
        api.api_client.close()
