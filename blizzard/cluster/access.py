"""Who may do what on a node's client port.

A connection's *principal* is established once, when it opens: by its TLS
client certificate (the subject's common name) when the port speaks TLS,
or by a bearer token sent in an ``AUTH`` request (for a port behind a TLS
terminator on the same machine). Its *role* comes from the nodes' ``[auth]``
table:

============  ===================================================
role          requests
============  ===================================================
read-only     READ, STATUS
read-write    READ, STATUS, SUBMIT (every write, create and drop), MEMBERS
============  ===================================================

Every request is checked against the connection's role before it is
served; a refusal is an ERROR response carrying
:class:`~blizzard.exceptions.AuthenticationError` (nobody known) or
:class:`~blizzard.exceptions.AuthorizationError` (known, not allowed), and
the connection stays open.

A port with neither TLS nor tokens is *open*: every connection is
read-write, as it always was. ``blizzard serve`` allows that only on
loopback addresses, or where the config says ``insecure = true``
(:mod:`blizzard.cluster.exposure`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import attrs

from blizzard.cluster.config import AuthConfig
from blizzard.cluster.protocol import Kind
from blizzard.exceptions import AuthenticationError, AuthorizationError
from blizzard.replication.transport.tls import common_name

READ_ONLY = "read-only"
READ_WRITE = "read-write"
TOKEN_BYTES_MAX = 4096

#: The role each request kind needs (AUTH needs none: it is how one gets one).
NEEDS = {Kind.READ: READ_ONLY, Kind.STATUS: READ_ONLY, Kind.SUBMIT: READ_WRITE,
         Kind.MEMBERS: READ_WRITE}
_RANK = {None: 0, READ_ONLY: 1, READ_WRITE: 2}


@attrs.frozen
class Principal:
    """Who a connection is (``name``: a certificate's CN or a token's name), what
    it may do (``role``; None: nothing), and how that was established (``via``:
    ``certificate``, ``token`` or ``open``)."""

    name: str
    role: str | None
    via: str

    def __str__(self) -> str:
        return f"{self.via} {self.name!r}"


ANYONE = Principal("anyone", READ_WRITE, "open")


class AccessPolicy:
    """The rules of one client port: ``[auth]`` and whether the port speaks TLS."""

    def __init__(self, auth: AuthConfig, *, tls: bool) -> None:
        self.auth = auth
        self.tls = tls
        self.open = not tls and not auth.tokens
        self._roles = {**{n: READ_ONLY for n in auth.read_only},
                       **{n: READ_WRITE for n in auth.read_write}}

    def connected(self, peercert: dict[str, Any] | None) -> Principal | None:
        """The principal of a new connection (None: not known until it sends a token)."""
        if self.open:
            return ANYONE
        name = common_name(peercert)
        if name is None:
            return None
        return Principal(name, self._roles.get(name), "certificate")

    def token(self, token: bytes) -> Principal:
        """The principal a token names; :class:`AuthenticationError` if none does."""
        if not self.auth.tokens:
            raise AuthenticationError("this node accepts no tokens (no [[auth.tokens]])")
        if not 0 < len(token) <= TOKEN_BYTES_MAX:
            raise AuthenticationError(f"a token is 1 to {TOKEN_BYTES_MAX} bytes")
        digest = hashlib.sha256(token).hexdigest()
        found = None
        for entry in self.auth.tokens:  # compare with every entry: no early exit to time
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        if found is None:
            raise AuthenticationError("unknown token")
        return Principal(found.name, found.role, "token")

    def check(self, principal: Principal | None, kind: Kind) -> None:
        """Refuse ``kind`` unless ``principal``'s role allows it."""
        needed = NEEDS[kind]
        if principal is None:
            raise AuthenticationError(
                f"{kind.name} refused: not authenticated (this node takes clients with a "
                "certificate of the cluster's CA, or a token sent first)")
        if _RANK[principal.role] < _RANK[needed]:
            rights = principal.role or "no rights (not listed in auth.read_write or " \
                                       "auth.read_only)"
            raise AuthorizationError(f"{kind.name} refused: {principal} has {rights}; "
                                     f"{kind.name} needs {needed}")


def token_digest(token: str | bytes) -> str:
    """The ``sha256`` value of ``[[auth.tokens]]`` for ``token``."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()
