"""Per-cluster TLS credentials: a CA of its own, a certificate for the scheduler and workers, one for clients.

Pure: keys and certificates are made in memory and returned as PEM text; nothing is written anywhere (where
they go is the runtime's business: a Secret on Kubernetes, owner-only files on the local runtime).

Each cluster gets its own CA, so a certificate of one cluster (another user's) is refused by every other
cluster: distributed's TLS requires the peer's certificate to be signed by the CA it was given
(``ssl.CERT_REQUIRED``). The CA's private key is thrown away once both certificates are signed: nothing can
ever be signed by it again, so it is not stored. EC P-256 keys: a cluster's credentials take a few ms.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Long enough for a kept cluster (lifetimes are shorter); a clock a little behind is tolerated.
VALIDITY = datetime.timedelta(days=366)
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True, repr=False)
class ClusterCredentials:
    """PEM text of one cluster's CA certificate, its scheduler/worker certificate and key, its client
    certificate and key. ``repr`` shows no key (it could end up in a log)."""

    ca_cert: str
    cert: str
    key: str
    client_cert: str
    client_key: str

    def __repr__(self) -> str:
        return "ClusterCredentials(<keys hidden>)"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jupyter-dask-kube"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def subject_alt_names(hosts) -> x509.SubjectAlternativeName:
    """IP addresses as IP entries, anything else as DNS names (the test tier's PKI uses it too)."""
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _issue(ca_key, ca_name: x509.Name, subject: str, key, *, usages, hosts=(), now) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    )
    if hosts:
        builder = builder.add_extension(subject_alt_names(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def scheduler_hosts(cluster_name: str, namespace: str) -> list[str]:
    """Names the scheduler is reached by (its Service's DNS names). distributed checks no host name (its
    contexts set ``check_hostname = False``: peers are reached by IP), but a client that does finds them."""
    return [cluster_name, f"{cluster_name}.{namespace}", f"{cluster_name}.{namespace}.svc",
            f"{cluster_name}.{namespace}.svc.cluster.local", "localhost", "127.0.0.1"]


def make_credentials(cluster_name: str, hosts=(), now: datetime.datetime | None = None) -> ClusterCredentials:
    """A fresh CA for ``cluster_name`` and the two certificates it signs.

    - scheduler and workers (one certificate: they are the same trust domain): server and client auth
      (a worker is a server to the scheduler and a client of it), with ``hosts`` as subject alternative names;
    - the client's (the owner's ``Client``): client auth only, so it cannot pose as the scheduler.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ca_key = _key()
    ca_name = _name(f"dask-ca {cluster_name}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    node_key, client_key = _key(), _key()
    node = _issue(ca_key, ca_name, f"dask {cluster_name}", node_key, hosts=hosts, now=now,
                  usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    client = _issue(ca_key, ca_name, f"dask-client {cluster_name}", client_key, now=now,
                    usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    return ClusterCredentials(ca_cert=_pem_cert(ca_cert), cert=_pem_cert(node), key=_pem_key(node_key),
                              client_cert=_pem_cert(client), client_key=_pem_key(client_key))
