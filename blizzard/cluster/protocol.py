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

Response statuses: ``OK`` (payload: a result as ``kind u8 | bytes`` from
:func:`~blizzard.replication.sessions.encode_result`, a page, or JSON for
STATUS), ``ERROR`` (payload: ``class name \\0 message``; the request was
refused or failed, retrying will not help), ``NOT_READY`` (payload: ``leader
hint u64 | message``; no leader, no quorum within the deadline, or shutting
down -- retry the same request, here or on another node).

Every response names the leader the node knows of (0: none), so a client
can move to the leader and save writes the follower's forwarding hop.

A page (the ``*_ITEMS``/``*_KEYS`` reads) is ``next cursor u64 | count u32 |
fields``, each field ``length u32 | bytes``; a cursor of :data:`END` means
the scan is complete. Pages of a map are whole hash buckets, so a split
during a scan may repeat a key, never hide one.
"""

from __future__ import annotations

import builtins
import enum
import json
import struct
from typing import Any, NamedTuple

from blizzard import exceptions
from blizzard.exceptions import BlizzardError
from blizzard.replication import sessions
from blizzard.replication.sessions import decode_result, encode_result

VERSION = 1
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


class ProtocolError(BlizzardError, ValueError):
    """A frame that is not a valid request or response of this protocol."""


class NoSuchStructureError(BlizzardError, KeyError):
    """A READ named a structure the node does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RemoteError(BlizzardError):
    """A server-side error of a class this side does not know."""


class Kind(enum.IntEnum):
    SUBMIT = 1
    READ = 2
    STATUS = 3


class Status(enum.IntEnum):
    OK = 0
    ERROR = 1
    NOT_READY = 2


class ReadKind(enum.IntEnum):
    """What a READ asks; args after the structure name."""

    MAP_GET = 1  # args: key; result: value or None
    MAP_CONTAINS = 2  # args: key; result: bool
    MAP_LEN = 3  # result: int
    MAP_ITEMS = 4  # args: cursor u64, limit u32; a page of (key, value)
    MAP_KEYS = 5  # args: cursor u64, limit u32; a page of keys
    QUEUE_PEEK = 6  # result: head value or None
    QUEUE_LEN = 7  # result: int
    QUEUE_ITEMS = 8  # args: cursor u64 (items to skip), limit u32; a page of values
    CHECK = 9  # no name needed: run every structure's and the pool's check(); result: True
    NAMES = 10  # result: JSON list of the structures' names and kinds
    INFO = 11  # result: JSON {kind, key_codec, value_codec, count} of one structure


PAGED = frozenset({ReadKind.MAP_ITEMS, ReadKind.MAP_KEYS, ReadKind.QUEUE_ITEMS})


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
    for where in (exceptions, sessions):
        cls = getattr(where, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls(message)
    cls = globals().get(name) or getattr(builtins, name, None)
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
