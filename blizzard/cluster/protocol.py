"""The client protocol: length-prefixed binary frames over TCP.

A client sends requests and may send many before reading any response
(pipelining); the server answers each one, possibly out of order, and the
request id pairs them up. Little endian throughout::

    frame    : length u32 | body                      (length <= FRAME_BYTES_MAX)
    request  : version u8 | kind u8 | flags u8 | pad u8 | request id u64 |
               client id u64 | seq u64 | payload
    response : version u8 | status u8 | leader u16 | request id u64 | payload

Request kinds and their payloads:

* ``SUBMIT``: an Op record (:mod:`blizzard.structures.ops`). ``(client id,
  seq)`` is the session of :mod:`blizzard.replication.sessions`: a client
  retrying the same pair -- on this node or another -- has it applied once.
  A client keeps at most one SUBMIT in flight per client id (a later seq
  applied first would make the earlier one look like a stale retry).
* ``READ``: ``read kind u8 | name length u8 | name | args`` (see
  :class:`ReadKind`); linearizable (a read barrier first) unless ``flags``
  has ``STALE``, which reads the node's local state as it is.
* ``STATUS``: no payload; the node's status as JSON.
* ``MEMBERS``: JSON ``{"op": "add" | "remove" | "transfer" | "list", "node":
  id, "raft": "host:port", "client": "host:port"}`` (addresses for ``add``
  only); served by the leader (elsewhere NOT_READY naming it); answers the
  membership as JSON ``{"voters", "learners", "leader"}``. Operations are
  idempotent: a retry after a lost answer does no harm.
* ``AUTH``: a bearer token (bytes); the connection's principal from then on
  (:mod:`blizzard.cluster.access`). OK payload: JSON ``{name, role}``.

Every request but AUTH is checked against the connection's role (a TLS
client certificate's, or a token's) before it is served; a refused one is
answered ERROR with ``AuthenticationError`` or ``AuthorizationError`` and
the connection stays open.

Response statuses: ``OK`` (payload: a result as ``kind u8 | bytes`` from
:func:`~blizzard.replication.sessions.encode_result`, a page, or JSON for
STATUS), ``ERROR`` (payload: ``class name \\0 message``; the request was
refused or failed, retrying will not help), ``NOT_READY`` (payload: ``leader
hint u64 | message``; no leader, no quorum within the deadline, or shutting
down -- retry the same request, here or on another node).

Every response names the leader the node knows of (0: none), so a client
can move to the leader and save writes the follower's forwarding hop.

A page (``SCAN``, ``QUEUE_SCAN``, ``PEEKITEM``) is ``cursor u64 | count u32 |
fields``, each field ``length u32 | bytes``. A map's ``SCAN`` resumes after
the last key it returned (its cursor is ``END`` once the scan is complete,
0 while more may follow); a queue's ``QUEUE_SCAN`` resumes at a sequence
number (the page's cursor is the sequence number of its first value; an
empty page ends the scan). Both cursors name positions in the *data*, not in the
layout, so a scan resumed on another node after a leader change, or after
any number of writes, is exact: whatever was present throughout is returned
once (see :meth:`~blizzard.structures.PHashMap.page` and
:meth:`~blizzard.structures.PQueue.page`).
"""

from __future__ import annotations

import builtins
import enum
import json
import struct
from typing import Any, NamedTuple

from blizzard import exceptions
from blizzard.exceptions import BlizzardError, ProtocolError, RemoteError
from blizzard.exceptions import NoSuchStructureError as NoSuchStructureError  # re-exported
from blizzard.replication.sessions import decode_result, encode_result

VERSION = 2
FRAME = struct.Struct("<I")
REQUEST = struct.Struct("<BBBxQQQ")
RESPONSE = struct.Struct("<BBHQ")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_PAGE = struct.Struct("<QI")
_READ = struct.Struct("<BB")
FRAME_BYTES_MAX = 16 << 20
END = (1 << 64) - 1
NAME_BYTES_MAX = 255

#: ``flags`` bit: serve a READ from this node's local state, without a read barrier.
STALE = 1


class Kind(enum.IntEnum):
    SUBMIT = 1
    READ = 2
    STATUS = 3
    MEMBERS = 4
    AUTH = 5


class Status(enum.IntEnum):
    OK = 0
    ERROR = 1
    NOT_READY = 2


class ReadKind(enum.IntEnum):
    """What a READ asks; args after the structure name."""

    GET = 1  # maps; args: key; result: value or None
    LEN = 3  # any structure; result: int
    SCAN = 4  # maps; args: scan args (below); a page of keys, or of (key, value)
    PEEK = 6  # queues; result: head value or None
    QUEUE_SCAN = 8  # queues; args: start seq u64 (END: the head), limit u32; a page of values
    CHECK = 9  # no name needed: run every structure's and the pool's check(); result: True
    NAMES = 10  # result: JSON {name: kind tag} of every structure
    INFO = 11  # result: JSON {kind, key_codec, value_codec, count[, fanout]} of one structure
    PEEKITEM = 12  # ordered maps; args: index i64; a page [key, value] (IndexError if none)
    BISECT = 13  # ordered maps; args: right u8 | key; result: int
    INDEX = 14  # ordered maps; args: key; result: int (ValueError if absent)


PAGED = frozenset({ReadKind.QUEUE_SCAN})

# SCAN args: flags u8 | limit u32 | then, as flags say, the fields (length u32 |
# bytes) after, lo, hi. A hash map takes VALUES and AFTER only.
SCAN_VALUES = 1  # (key, value) pairs, not keys alone
SCAN_AFTER = 2  # resume after this key (exclusive)
SCAN_REVERSE = 4  # ordered maps: descending
SCAN_LO = 8  # ordered maps: a lower bound ...
SCAN_LO_INCLUSIVE = 16  # ... included
SCAN_HI = 32  # ordered maps: an upper bound ...
SCAN_HI_INCLUSIVE = 64  # ... included
_SCAN = struct.Struct("<BI")
_I64 = struct.Struct("<q")


class ScanArgs(NamedTuple):
    values: bool
    after: bytes | None
    limit: int
    lo: bytes | None = None
    hi: bytes | None = None
    lo_inclusive: bool = True
    hi_inclusive: bool = True
    reverse: bool = False


class Request(NamedTuple):
    kind: int
    request_id: int
    client: int = 0
    seq: int = 0
    payload: bytes = b""
    flags: int = 0


class Response(NamedTuple):
    request_id: int
    status: int
    payload: bytes = b""
    leader: int = 0  # the node id of the leader, as far as the answering node knows


class ReadArgs(NamedTuple):
    read: ReadKind
    name: str
    args: bytes


# -- frames ------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    """``body`` with its length prefix."""
    return FRAME.pack(len(body)) + body


def encode_request(request: Request) -> bytes:
    """The whole frame (length prefix included) for ``request``."""
    body = REQUEST.pack(VERSION, request.kind, request.flags, request.request_id,
                        request.client, request.seq) + request.payload
    if len(body) > FRAME_BYTES_MAX:
        raise ValueError(f"a request of {len(body)} bytes exceeds the protocol's frame limit "
                         f"of {FRAME_BYTES_MAX} bytes")
    return FRAME.pack(len(body)) + body


def decode_request(body: bytes) -> Request:
    """The request in a frame body; :class:`ProtocolError` says what is wrong."""
    if len(body) < REQUEST.size:
        raise ProtocolError(f"request of {len(body)} bytes; the header alone is {REQUEST.size}")
    version, kind, flags, request_id, client, seq = REQUEST.unpack_from(body, 0)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this server speaks {VERSION}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown request kind {kind}") from None
    return Request(kind, request_id, client, seq, bytes(body[REQUEST.size:]), flags)


def peek_request_id(body: bytes) -> int | None:
    """The request id of a body too broken to decode, if it has one to answer."""
    return _U64.unpack_from(body, 4)[0] if len(body) >= 12 else None


def encode_response(response: Response) -> bytes:
    leader = response.leader if 0 <= response.leader <= 0xFFFF else 0
    body = RESPONSE.pack(VERSION, response.status, leader, response.request_id) + response.payload
    return FRAME.pack(len(body)) + body


def decode_response(body: bytes) -> Response:
    if len(body) < RESPONSE.size:
        raise ProtocolError(f"response of {len(body)} bytes; the header alone is {RESPONSE.size}")
    version, status, leader, request_id = RESPONSE.unpack_from(body, 0)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this client speaks {VERSION}")
    try:
        status = Status(status)
    except ValueError:
        raise ProtocolError(f"unknown response status {status}") from None
    return Response(request_id, status, bytes(body[RESPONSE.size:]), leader)


# -- payloads ----------------------------------------------------------------------------


def read_payload(read: ReadKind, name: str, args: bytes = b"") -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > NAME_BYTES_MAX:
        raise ValueError(f"structure name of {len(raw)} bytes (at most {NAME_BYTES_MAX})")
    return _READ.pack(read, len(raw)) + raw + args


def page_args(cursor: int, limit: int) -> bytes:
    return _U64.pack(cursor) + _U32.pack(limit)


def decode_read(payload: bytes) -> ReadArgs:
    if len(payload) < _READ.size:
        raise ProtocolError("READ payload truncated before its kind")
    read, n = _READ.unpack_from(payload, 0)
    try:
        read = ReadKind(read)
    except ValueError:
        raise ProtocolError(f"unknown read kind {read}") from None
    if _READ.size + n > len(payload):
        raise ProtocolError("READ payload truncated inside the structure name")
    try:
        name = payload[_READ.size:_READ.size + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("structure name is not UTF-8") from None
    args = payload[_READ.size + n:]
    if read in PAGED and len(args) != 12:
        raise ProtocolError(f"{read.name} takes a cursor u64 and a limit u32, "
                            f"got {len(args)} bytes")
    return ReadArgs(read, name, args)


def decode_page_args(args: bytes) -> tuple[int, int]:
    return _U64.unpack_from(args, 0)[0], _U32.unpack_from(args, 8)[0]


def scan_args(scan: ScanArgs) -> bytes:
    flags = ((SCAN_VALUES if scan.values else 0) | (SCAN_REVERSE if scan.reverse else 0)
             | (SCAN_LO_INCLUSIVE if scan.lo_inclusive else 0)
             | (SCAN_HI_INCLUSIVE if scan.hi_inclusive else 0))
    parts = []
    for flag, field in ((SCAN_AFTER, scan.after), (SCAN_LO, scan.lo), (SCAN_HI, scan.hi)):
        if field is not None:
            flags |= flag
            parts += (_U32.pack(len(field)), bytes(field))
    return _SCAN.pack(flags, scan.limit) + b"".join(parts)


def decode_scan_args(args: bytes) -> ScanArgs:
    if len(args) < _SCAN.size:
        raise ProtocolError(f"SCAN takes flags u8 and a limit u32, got {len(args)} bytes")
    flags, limit = _SCAN.unpack_from(args, 0)
    pos = _SCAN.size
    fields: dict[int, bytes] = {}
    for flag in (SCAN_AFTER, SCAN_LO, SCAN_HI):
        if flags & flag:
            if pos + 4 > len(args):
                raise ProtocolError("SCAN args truncated inside a field length")
            (n,) = _U32.unpack_from(args, pos)
            if pos + 4 + n > len(args):
                raise ProtocolError("SCAN args field runs past the payload")
            fields[flag] = bytes(args[pos + 4:pos + 4 + n])
            pos += 4 + n
    if pos != len(args):
        raise ProtocolError("SCAN args have trailing bytes")
    return ScanArgs(bool(flags & SCAN_VALUES), fields.get(SCAN_AFTER), limit,
                    fields.get(SCAN_LO), fields.get(SCAN_HI), bool(flags & SCAN_LO_INCLUSIVE),
                    bool(flags & SCAN_HI_INCLUSIVE), bool(flags & SCAN_REVERSE))


def index_args(index: int) -> bytes:
    return _I64.pack(index)


def decode_index_args(args: bytes) -> int:
    if len(args) != 8:
        raise ProtocolError(f"PEEKITEM takes an index i64, got {len(args)} bytes")
    return _I64.unpack(args)[0]


def encode_value(value: Any) -> bytes:
    kind, data = encode_result(value)
    return bytes((kind,)) + data


_ERROR_KIND = encode_result(BlizzardError())[0]


def decode_value(payload: bytes) -> Any:
    """A result; an error result becomes an exception instance (not raised)."""
    if not payload:
        raise ProtocolError("empty result payload")
    if payload[0] == _ERROR_KIND:
        return make_error(*decode_error(payload[1:]))
    return decode_result(payload[0], payload[1:])


def make_error(name: str, message: str) -> BaseException:
    """The exception a peer named: Blizzard's own classes, then builtin ones."""
    error = exceptions.from_name(name, message)
    if error is not None:
        return error
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(message)
    return RemoteError(f"{name}: {message}")


def encode_page(cursor: int, fields: list[bytes]) -> bytes:
    parts = [_PAGE.pack(cursor, len(fields))]
    for field in fields:
        parts += (_U32.pack(len(field)), field)
    return b"".join(parts)


def decode_page(payload: bytes) -> tuple[int, list[bytes]]:
    if len(payload) < _PAGE.size:
        raise ProtocolError("page truncated")
    cursor, count = _PAGE.unpack_from(payload, 0)
    pos = _PAGE.size
    fields = []
    for _ in range(count):
        if pos + 4 > len(payload):
            raise ProtocolError("page truncated inside a field length")
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise ProtocolError("page field runs past the payload")
        fields.append(payload[pos:pos + n])
        pos += n
    if pos != len(payload):
        raise ProtocolError("page has trailing bytes")
    return cursor, fields


def encode_error(exc: BaseException) -> bytes:
    return f"{type(exc).__name__}\0{exc}".encode("utf-8", "replace")


def decode_error(payload: bytes) -> tuple[str, str]:
    name, _, message = payload.decode("utf-8", "replace").partition("\0")
    return name, message


def encode_not_ready(leader: int, message: str) -> bytes:
    return _U64.pack(leader) + message.encode("utf-8", "replace")


def decode_not_ready(payload: bytes) -> tuple[int, str]:
    if len(payload) < 8:
        return 0, payload.decode("utf-8", "replace")
    return _U64.unpack_from(payload, 0)[0], payload[8:].decode("utf-8", "replace")


def encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def decode_json(payload: bytes) -> Any:
    return json.loads(payload)
