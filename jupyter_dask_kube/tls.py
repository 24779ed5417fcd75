"""TLS for a cluster's pods: the Secret that holds its credentials, the volume and variables that make its
scheduler and workers use them, and the client's ``distributed.Security`` (pure: no I/O).

The pods are told through distributed's own config variables, not command-line flags, so any template's
args work unchanged (``dask scheduler``, ``dask-worker $(DASK_SCHEDULER_ADDRESS)``, a custom entry point):
``require-encryption`` makes every listener ``tls://`` and refuses plain TCP, and the TLS context requires
a peer certificate signed by the cluster's CA (distributed sets ``ssl.CERT_REQUIRED``).
"""
from __future__ import annotations

import base64
import copy

import dask.config
from distributed import Security

from .objects import labels, owner_reference
from .tlscerts import ClusterCredentials

#: Keys of the Secret, file names in the mounted volume.
CA_FILE, CERT_FILE, KEY_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE = (
    "ca.crt", "tls.crt", "tls.key", "client.crt", "client.key")
_FIELDS = {CA_FILE: "ca_cert", CERT_FILE: "cert", KEY_FILE: "key", CLIENT_CERT_FILE: "client_cert",
           CLIENT_KEY_FILE: "client_key"}
MOUNT_PATH = "/etc/dask-tls"
VOLUME_NAME = "dask-tls"
#: On the scheduler pod: the cluster has TLS, its credentials are in the Secret named by the value.
ANNOTATION_TLS = "dask-kube.jupyter.org/tls-secret"


def secret_name(cluster_name: str) -> str:
    return f"{cluster_name}-tls"


def tls_enabled(value: bool | None = None) -> bool:
    """An explicit ``value``, else dask config ``kubernetes.tls`` (default true)."""
    if value is None:
        value = dask.config.get("kubernetes.tls", True)
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def build_secret(cluster_name: str, username: str, creds: ClusterCredentials, owner: dict | None = None) -> dict:
    """The Secret (Opaque) holding a cluster's credentials, labelled like its other objects; owned by the
    scheduler pod when ``owner`` is given (so garbage collection removes it with the cluster)."""
    metadata = {"name": secret_name(cluster_name), "labels": labels(cluster_name, "scheduler", username)}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {k: base64.b64encode(getattr(creds, f).encode()).decode() for k, f in _FIELDS.items()},
    }


def credentials_from_secret(secret: dict) -> ClusterCredentials:
    """The credentials a Secret of :func:`build_secret` holds; ValueError naming what is missing."""
    data = (secret or {}).get("data") or {}
    missing = [k for k in _FIELDS if not data.get(k)]
    if missing:
        raise ValueError(f"Secret {secret.get('metadata', {}).get('name')} lacks {', '.join(missing)}")
    try:
        values = {f: base64.b64decode(data[k], validate=True).decode() for k, f in _FIELDS.items()}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"Secret {secret.get('metadata', {}).get('name')} holds garbled data: {exc}") from None
    bad = [k for k, f in _FIELDS.items() if not values[f].lstrip().startswith("-----BEGIN ")]
    if bad:
        raise ValueError(f"Secret {secret.get('metadata', {}).get('name')} holds garbled data: {', '.join(bad)} "
                         "is not PEM")
    return ClusterCredentials(**values)


def pod_environment(mount_path: str = MOUNT_PATH) -> dict[str, str]:
    """distributed config variables that make a pod's dask processes use the mounted credentials (the
    in-pod client, e.g. ``get_client()`` in a task, uses the node certificate: it may act as a client)."""
    ca, cert, key = (f"{mount_path}/{f}" for f in (CA_FILE, CERT_FILE, KEY_FILE))
    prefix = "DASK_DISTRIBUTED__COMM__"
    env = {prefix + "REQUIRE_ENCRYPTION": "True", prefix + "DEFAULT_SCHEME": "tls", prefix + "TLS__CA_FILE": ca}
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"{prefix}TLS__{role}__CERT"] = cert
        env[f"{prefix}TLS__{role}__KEY"] = key
    return env


def mount_credentials(pod: dict, cluster_name: str) -> dict:
    """A copy of ``pod`` with the cluster's Secret mounted read-only (owner-read files) into every container,
    and the variables of :func:`pod_environment` set (replacing same-named template entries)."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    spec["volumes"] = [v for v in spec.get("volumes") or [] if v.get("name") != VOLUME_NAME] + [
        {"name": VOLUME_NAME, "secret": {"secretName": secret_name(cluster_name), "defaultMode": 0o400}}]
    env = pod_environment()
    for c in spec.get("containers") or []:
        mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") != VOLUME_NAME]
        c["volumeMounts"] = mounts + [{"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": True}]
        c["env"] = [{"name": k, "value": v} for k, v in env.items()] + [
            e for e in c.get("env") or [] if e.get("name") not in env]
    return pod


class ClusterSecurity(Security):
    """distributed makes a new SSL context at every ``get_connection_args`` call, and for in-memory PEM writes
    the key to a temporary file each time (~2 ms): made once per role here, then shared (an SSLContext serves
    any number of connections)."""

    def get_connection_args(self, role):
        cache = self.__dict__.setdefault("_connection_args", {})
        if role not in cache:
            cache[role] = super().get_connection_args(role)
        return dict(cache[role])


def client_security(creds: ClusterCredentials) -> ClusterSecurity:
    """The owner's ``distributed.Security``: the client certificate, and the cluster's CA to check the
    scheduler with. PEM text in memory (distributed accepts it): no file is needed in the client process."""
    return ClusterSecurity(tls_ca_file=creds.ca_cert, tls_client_cert=creds.client_cert,
                           tls_client_key=creds.client_key, require_encryption=True)


def scheduler_security(creds: ClusterCredentials) -> Security:
    """For a scheduler in this process (``deploy_mode="local"``): it listens with the node certificate."""
    return Security(tls_ca_file=creds.ca_cert, tls_scheduler_cert=creds.cert, tls_scheduler_key=creds.key,
                    tls_client_cert=creds.client_cert, tls_client_key=creds.client_key, require_encryption=True)


def connect_code(scheduler_address: str, directory: str) -> str:
    """Python that connects a notebook to a cluster whose client credentials are files in ``directory``
    (the local runtime's owner-only copy): paths only, never the keys."""
    return (
        "from distributed import Client, Security\n"
        "security = Security(\n"
        f"    tls_ca_file={directory + '/' + CA_FILE!r},\n"
        f"    tls_client_cert={directory + '/' + CLIENT_CERT_FILE!r},\n"
        f"    tls_client_key={directory + '/' + CLIENT_KEY_FILE!r},\n"
        "    require_encryption=True,\n"
        ")\n"
        f"client = Client({scheduler_address!r}, security=security)\n"
        "client"
    )


__all__ = ["ANNOTATION_TLS", "ClusterSecurity", "CA_FILE", "CERT_FILE", "CLIENT_CERT_FILE", "CLIENT_KEY_FILE", "KEY_FILE",
           "MOUNT_PATH", "VOLUME_NAME", "build_secret", "client_security", "connect_code", "credentials_from_secret",
           "mount_credentials", "pod_environment", "secret_name", "tls_enabled"]
