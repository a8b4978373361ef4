"""``blizzard certs create``: a cluster CA and its node and client certificates.

For tests and first deployments (a real deployment may use its own CA: any
CA works, as long as node certificates are named ``node-<id>``, see
:mod:`blizzard.replication.transport.tls`). Written to one directory::

    ca.pem  ca.key                  the cluster's CA (keep ca.key off the nodes)
    node<i>.pem  node<i>.key        node i's certificate, CN node-<i>
    client-rw.pem  client-rw.key    a client allowed to read and write (CN client-rw)
    client-ro.pem  client-ro.key    a client allowed to read only (CN client-ro)

Keys are ECDSA P-256 (cheap handshakes), written with mode 0600. The rights
of the client names are not in the certificates: the nodes' ``[auth]``
table gives them (:func:`config_snippet` prints the tables that go with
these files).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blizzard.exceptions import ConfigError
from blizzard.replication.transport.tls import node_name

DAYS_DEFAULT = 365
NODES_MAX = 1000
READ_WRITE_CLIENT = "client-rw"
READ_ONLY_CLIENT = "client-ro"

Key = ec.EllipticCurvePrivateKey


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(cluster_id: str, *, days: int = DAYS_DEFAULT) -> tuple[x509.Certificate, Key]:
    """A self-signed CA for cluster ``cluster_id``, valid from now for ``days``."""
    key = new_key()
    name = _name(f"blizzard CA {cluster_id}", f"blizzard {cluster_id}")
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca: x509.Certificate, ca_key: Key, common_name: str, *, node: bool,
          not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None,
          days: int = DAYS_DEFAULT) -> tuple[x509.Certificate, Key]:
    """A certificate named ``common_name`` signed by ``ca``: a node's (usable to
    serve and to dial) if ``node``, else a client's (usable to dial only).
    ``not_before``/``not_after`` default to now - 5 minutes and now + ``days``."""
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    not_before = not_before or now - datetime.timedelta(minutes=5)
    not_after = not_after or now + datetime.timedelta(days=days)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if node:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    organisation = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name, organisation)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    return builder.sign(ca_key, hashes.SHA256()), key


def write(directory: Path, stem: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    """``stem.pem`` and ``stem.key`` (mode 0600) in ``directory``."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def load_ca(directory: Path) -> tuple[x509.Certificate, Key]:
    """The CA written by :func:`create` in ``directory``."""
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    return cert, key


def create(directory: str | os.PathLike[str], nodes: int, *, cluster_id: str = "blizzard",
           days: int = DAYS_DEFAULT, force: bool = False) -> list[Path]:
    """Write a CA, ``nodes`` node certificates and the two client certificates
    into ``directory`` (created if needed); the paths written. Refuses to
    overwrite an existing CA unless ``force``."""
    if not 1 <= nodes <= NODES_MAX:
        raise ConfigError(f"--nodes must be 1 to {NODES_MAX}, got {nodes}")
    if days < 1:
        raise ConfigError(f"--days must be at least 1, got {days}")
    directory = Path(directory)
    if (directory / "ca.key").exists() and not force:
        raise ConfigError(f"{directory / 'ca.key'} exists: certificates of a new CA would not "
                          "be trusted by nodes holding the old one (pass --force to replace it)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = new_ca(cluster_id, days=days)
    written = list(write(directory, "ca", ca, ca_key))
    for node_id in range(1, nodes + 1):
        written += write(directory, f"node{node_id}",
                         *issue(ca, ca_key, node_name(node_id), node=True, days=days))
    for client in (READ_WRITE_CLIENT, READ_ONLY_CLIENT):
        written += write(directory, client, *issue(ca, ca_key, client, node=False, days=days))
    return written


def config_snippet(directory: str | os.PathLike[str]) -> str:
    """The ``[tls]`` and ``[auth]`` tables for the files :func:`create` wrote
    (``{node}`` in a path is replaced by the node's id)."""
    d = Path(directory).resolve()
    return tomli_w.dumps({
        "tls": {"ca": str(d / "ca.pem"), "node_cert": str(d / "node{node}.pem"),
                "node_key": str(d / "node{node}.key"),
                "cert": str(d / f"{READ_WRITE_CLIENT}.pem"),
                "key": str(d / f"{READ_WRITE_CLIENT}.key")},
        "auth": {"read_write": [READ_WRITE_CLIENT], "read_only": [READ_ONLY_CLIENT]}})
