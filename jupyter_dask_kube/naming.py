"""Cluster, pod and label names that Kubernetes accepts for ANY username.

One pure module for one rule set (as kubespawner's ``slugs.py``): a value that is already
safe is used unchanged; anything that had to be escaped, lowercased or truncated gets
``-`` + 8 hex of the sha256 of the ORIGINAL value appended, so two different inputs never
end up with the same name. Unchanged values never end in ``-<8 hex>`` (such values are
hashed too), so an escaped name can not collide with someone's literal username either.
"""
from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import secrets
import string
import unicodedata
import uuid as _uuid
from collections.abc import Mapping

import dask.config

from . import config as _config  # noqa: F401  (kubernetes.* defaults must be loaded)

logger = logging.getLogger(__name__)

#: Longest cluster name, so ``{cluster}-worker-{5 chars}`` (+13) and ``{cluster}-scheduler``
#: (+10) stay within the 63 characters of a DNS-1123 label.
MAX_CLUSTER_NAME_LENGTH = 50
#: Length of a DNS-1123 label and of a label value.
MAX_LABEL_LENGTH = 63
DEFAULT_NAME_TEMPLATE = "dask-{JUPYTERHUB_USER}-{uuid}"
#: What dask-kubernetes (operator) sets as kubernetes.name in dask config when it is imported.
DASK_KUBERNETES_DEFAULT_NAME = "dask-{user}-{uuid}"

HASH_LENGTH = 8
#: Shortest max_length that still leaves room for "x-" + the hash.
MIN_SLUG_LENGTH = HASH_LENGTH + 2

DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
_HASH_SUFFIX_RE = re.compile(rf"-[0-9a-f]{{{HASH_LENGTH}}}$")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


def _ascii(value: str) -> str:
    """Fold accents away ("jöhn" -> "john") so escaped names stay readable."""
    return unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")


def is_dns_label(value: str, max_length: int = MAX_LABEL_LENGTH) -> bool:
    """True for a DNS-1123 label that also starts with a letter (pod and service names)."""
    return isinstance(value, str) and len(value) <= max_length and bool(DNS_LABEL_RE.match(value))


def is_label_value(value: str) -> bool:
    """True for a non-empty Kubernetes label value."""
    return isinstance(value, str) and len(value) <= MAX_LABEL_LENGTH and bool(_LABEL_VALUE_RE.match(value))


def _is_safe_slug(value: str, max_length: int) -> bool:
    return (
        is_dns_label(value, max_length)
        and "--" not in value
        and not _HASH_SUFFIX_RE.search(value)
    )


def safe_slug(value: str, max_length: int = 30) -> str:
    """A DNS-1123 label starting with a letter, unique per input (see the module docstring).

    >>> safe_slug("alice")
    'alice'
    """
    if not isinstance(value, str):
        raise TypeError(f"safe_slug() needs a str, not {type(value).__name__}")
    if max_length < MIN_SLUG_LENGTH:
        raise ValueError(f"max_length must be at least {MIN_SLUG_LENGTH}, not {max_length}")
    if _is_safe_slug(value, max_length):
        return value
    slug = re.sub(r"[^a-z0-9]+", "-", _ascii(value).lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("x-" + slug).rstrip("-")
    slug = slug[: max_length - HASH_LENGTH - 1].rstrip("-")
    return f"{slug}-{_hash(value)}"


def safe_label_value(value: str) -> str:
    """A valid label value (case kept: label values are case-sensitive), unique per input."""
    if not isinstance(value, str):
        raise TypeError(f"safe_label_value() needs a str, not {type(value).__name__}")
    if is_label_value(value) and not _HASH_SUFFIX_RE.search(value):
        return value
    escaped = re.sub(r"[^A-Za-z0-9._]+", "-", _ascii(value))
    escaped = re.sub(r"^[^A-Za-z0-9]+", "", escaped)
    escaped = escaped[: MAX_LABEL_LENGTH - HASH_LENGTH - 1]
    escaped = re.sub(r"[^A-Za-z0-9]+$", "", escaped) or "x"
    return f"{escaped}-{_hash(value)}"


def current_user(env: Mapping | None = None) -> str:
    """The JupyterHub user if any, else the login name (as classic dask-kubernetes' ``user``)."""
    env = os.environ if env is None else env
    hub_user = env.get("JUPYTERHUB_USER")
    if hub_user:
        return hub_user
    try:
        return getpass.getuser() or "user"
    except (KeyError, OSError, ImportError):  # no USER/LOGNAME, no passwd entry (random uids)
        return "user"


def new_uuid() -> str:
    """10 lowercase hex characters: short, and unique enough per user."""
    return _uuid.uuid4().hex[:10]


def new_worker_suffix() -> str:
    """5 lowercase alphanumerics, like the suffixes Kubernetes gives to generateName."""
    # One draw from the system's generator, not five (a scale(200) makes 200 names): 36**5 is far below 2**64,
    # so the digits of a random 64-bit number are uniform to within 1e-8.
    n = secrets.randbits(64)
    out = []
    for _ in range(5):
        n, r = divmod(n, len(_SUFFIX_ALPHABET))
        out.append(_SUFFIX_ALPHABET[r])
    return "".join(out)


def _template_keys(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"cluster name template {template!r} is malformed: {e}") from None
    keys = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        key = re.split(r"[.\[!:]", field, maxsplit=1)[0]
        if key == "" or key.isdigit():
            raise ValueError(
                f"cluster name template {template!r} has a positional field '{{{field}}}': "
                "use named fields such as {user}, {uuid} or an environment variable"
            )
        if key != field:
            raise ValueError(
                f"cluster name template {template!r} has the field '{{{field}}}': only plain "
                "names such as {user} are allowed, no attribute or index access"
            )
        keys.append(key)
    return keys


def format_cluster_name(
    template: str | None = None,
    *,
    user: str | None = None,
    uuid: str | None = None,
    env: Mapping | None = None,
) -> str:
    """Format the ``kubernetes.worker-name`` template into a DNS-1123 label.

    Values: every environment variable, ``user`` and ``uuid``. ``user`` (when given, it
    also sets ``JUPYTERHUB_USER``: it names the person the cluster is for) and
    ``JUPYTERHUB_USER`` are inserted as :func:`safe_slug`. The result is at most
    :data:`MAX_CLUSTER_NAME_LENGTH` characters; when the formatted value is not a valid
    name it is slugged with the uuid kept at its end.
    """
    if template is None:
        # The classic alias wins when set, but not with dask-kubernetes' own default for it: importing
        # dask-kubernetes puts that into dask config, and it must not override an admin's worker-name.
        alias = dask.config.get("kubernetes.name", None)
        if alias == DASK_KUBERNETES_DEFAULT_NAME:
            alias = None
        template = alias or dask.config.get("kubernetes.worker-name", None) or DEFAULT_NAME_TEMPLATE
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"cluster name template must be a non-empty string, not {template!r}")
    env = os.environ if env is None else env
    values = {str(k): str(v) for k, v in env.items()}
    if user is None:
        user = current_user(env)
        hub_user = env.get("JUPYTERHUB_USER") or user
    else:
        hub_user = user
    values["user"] = safe_slug(user)
    values["JUPYTERHUB_USER"] = safe_slug(hub_user)
    values["uuid"] = uuid = new_uuid() if uuid is None else str(uuid)

    keys = _template_keys(template)
    unknown = sorted({k for k in keys if k not in values})
    if unknown:
        raise ValueError(
            f"cluster name template {template!r} uses unknown key(s) "
            f"{', '.join(unknown)}: available are user, uuid, JUPYTERHUB_USER and environment variables"
        )
    if "uuid" not in keys:
        logger.warning(
            "cluster name template %r has no {uuid}: a user's clusters may get the same name", template
        )
    try:
        name = template.format(**values)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
        raise ValueError(f"cluster name template {template!r} can not be formatted: {e}") from None

    if is_dns_label(name, MAX_CLUSTER_NAME_LENGTH):
        return name
    if "uuid" in keys and re.fullmatch(r"[a-z0-9]{1,20}", uuid) and name.endswith(uuid):
        prefix = name[: -len(uuid)]
        room = MAX_CLUSTER_NAME_LENGTH - len(uuid) - 1
        if prefix.strip("-"):
            return f"{safe_slug(prefix, room)}-{uuid}"
    return safe_slug(name, MAX_CLUSTER_NAME_LENGTH)


def scheduler_pod_name(cluster: str) -> str:
    return f"{cluster}-scheduler"


def worker_pod_name(cluster: str, suffix: str) -> str:
    return f"{cluster}-worker-{suffix}"


def service_name(cluster: str) -> str:
    return cluster


# ---------------------------------------------------------------- how JupyterHub's kubespawner labels user pods
# The ``hub.jupyter.org/username`` label of a notebook pod, so a NetworkPolicy can select the owner's pod. Two
# schemes, re-implemented here (kubespawner is not a dependency) and tested against kubespawner's own examples.

_KS_HASH_LENGTH = 8
_KS_LABEL_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)


def _kubespawner_strip_and_hash(name: str, max_length: int = 32) -> str:
    keep = max_length - (_KS_HASH_LENGTH + 3)
    digest = hashlib.sha256(name.encode("utf8")).hexdigest()[:_KS_HASH_LENGTH]
    safe = re.sub(r"[^a-z0-9]+", "-", name.lower()).lstrip("-")[:keep].rstrip("-")
    if safe and not safe[0] in string.ascii_lowercase:
        safe = "x-" + safe[: keep - 2]
    return f"{safe or 'x'}---{digest}"


def kubespawner_username_label(username: str) -> str:
    """kubespawner >= 7 (zero-to-jupyterhub >= 4): the username itself when it is a valid label value without
    "--", else a lowercase slug, "---" and 8 hex digits of its sha256."""
    valid = not username or (
        len(username) <= MAX_LABEL_LENGTH and username[0].isascii() and username[0].isalnum()
        and username[-1].isascii() and username[-1].isalnum() and bool(_KS_LABEL_RE.match(username))
    )
    if "--" in username or not valid:
        return _kubespawner_strip_and_hash(username)
    return username


def kubespawner_escaped_username(username: str) -> str:
    """kubespawner < 7 (zero-to-jupyterhub 3.x): escapism's escape, lowercased: every character but a-z and 0-9
    becomes "-" and the hex of its UTF-8 bytes ("a.b" -> "a-2eb"; "Alice" -> "-41lice" -> lowercased)."""
    safe = set(string.ascii_lowercase + string.digits)
    out = []
    for ch in username:
        out.append(ch if ch in safe else "".join(f"-{b:X}" for b in ch.encode("utf8")))
    return "".join(out).lower()


def format_namespace(template: str | None, username: str) -> str | None:
    """``c.DaskKube.namespace`` with ``{username}`` replaced by the user's :func:`safe_slug` (a namespace per
    user: "dask-{username}" -> "dask-alice"); a template without it is returned as is. The result must be a
    DNS-1123 label, or ValueError says why."""
    if not template or "{username}" not in template:
        return template
    rest = template.replace("{username}", "")
    room = MAX_LABEL_LENGTH - len(rest) * 1
    if room < MIN_SLUG_LENGTH:
        raise ValueError(f"namespace template {template!r} leaves no room for the username (63 characters at most)")
    name = template.replace("{username}", safe_slug(username, min(room, MAX_LABEL_LENGTH)))
    if not is_dns_label(name):
        raise ValueError(f"namespace template {template!r} gives {name!r} for user {username!r}, which is not a "
                         "DNS-1123 label (lowercase letters, digits and '-', starting with a letter)")
    return name


def network_policy_name(cluster: str) -> str:
    return cluster
