"""TLS contexts and certificate identities for one cluster.

Every certificate of a cluster is signed by the cluster's own CA; what a
certificate may do is read from its subject's common name (CN):

* ``node-<id>``: node ``<id>`` of the cluster. Only such a certificate is
  accepted on a node's replication port, and only for the node id it names
  (a node dialling a peer checks the peer's certificate the same way), so a
  client certificate -- or node 3's -- cannot speak Raft as node 2.
* anything else: a client, whose rights the nodes' ``[auth]`` table gives by
  that name (``blizzard.cluster.access``).

Host names are not checked: nodes are identified by these names, and the
CA is per cluster. Certificate validity dates, the chain to the CA and the
key usages are checked by OpenSSL during the handshake, before any byte of
the protocol is read.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

NODE_PREFIX = "node-"
_NODE_NAME = re.compile(r"node-([1-9][0-9]*)\Z")


def node_name(node_id: int) -> str:
    """The common name of node ``node_id``'s certificate."""
    return f"{NODE_PREFIX}{node_id}"


def common_name(peercert: dict[str, Any] | None) -> str | None:
    """The subject's common name of a verified peer certificate (as
    ``SSLSocket.getpeercert()`` returns it), None if there is none."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def node_of(peercert: dict[str, Any] | None) -> int | None:
    """The node id a peer certificate names, None if it is no node's."""
    name = common_name(peercert)
    match = _NODE_NAME.match(name) if name else None
    return int(match.group(1)) if match else None


def handshake_reason(exc: BaseException) -> str:
    """What a failed TLS handshake says ("tlsv13 alert certificate required"),
    without OpenSSL's library, file and line."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return str(exc) or type(exc).__name__


def server_context(*, ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A listener's context: presents ``cert_file`` and accepts only peers with a
    certificate ``ca_file`` signed (mutual TLS: a peer without one is refused)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(*, ca_file: str, cert_file: str | None, key_file: str | None
                   ) -> ssl.SSLContext:
    """A dialler's context: accepts only a listener whose certificate ``ca_file``
    signed, and presents ``cert_file`` (a listener of this cluster asks for it)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    context.check_hostname = False  # identities are the CN names above, checked by the caller
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_contexts(*, ca_file: str, cert_file: str, key_file: str
                 ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts for mutual TLS between the nodes of one cluster:
    both present ``cert_file`` (a node certificate) and trust only ``ca_file``."""
    return (server_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file),
            client_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file))
