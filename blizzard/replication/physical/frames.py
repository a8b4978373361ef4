"""The mirror's wire format: messages between a primary and its backups.

Pure encoding and decoding, no I/O. A channel carries whole messages (its
own framing delimits them); every message starts with its kind byte. All
integers little endian.

Primary -> backup::

    HELLO        kind | magic b"BLZM" | version u8 | sender node u64 | epoch u64 |
                 pool size u64 | cluster id length u8 | cluster id (UTF-8)
    BATCH        kind | epoch u64 | seq u64 | final u8 | ranges...
                 range: off u64 | len u32 | bytes
    RESYNC_BEGIN kind | epoch u64 | pool size u64 | block size u32 | whole u8
    BLOCK        kind | off u64 | bytes            (resync data, any order)
    RESYNC_END   kind | epoch u64 | base seq u64 | consistent seq u64

Backup -> primary::

    STATE        kind | status u8 | node u64 | epoch u64 | position epoch u64 |
                 position seq u64 | flags u8 | pool size u64 | text (UTF-8)
    ACK          kind | seq u64
    DIGESTS      kind | block size u32 | 16-byte digest per block

Control (an operator's command, or a promoting backup, to a backup)::

    STATUS       kind                               -> STATE
    FENCE_EPOCH  kind | epoch u64                   -> STATE
    PROMOTE      kind                               -> STATE (or ERROR)
    ERROR        kind | text (UTF-8)

One fence is one BATCH (``final`` = 1) unless its ranges exceed
``batch_bytes_max``: it is then split into several BATCH messages with the
same seq, only the last one final, and the backup fences once, at the final
part. Ranges of different fences are never in one message: each fence is a
separate ordering point on the backup, as on the primary.

A backup's *position* is ``(epoch, seq)``: the epoch of the primary whose
stream it applied and the seq of the last fence it made durable. Positions
compare lexicographically.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

import attrs

from blizzard.exceptions import MirrorProtocolError

MAGIC = b"BLZM"
VERSION = 1
CLUSTER_ID_BYTES_MAX = 255
#: One BATCH message carries at most this many range bytes (a fence that
#: flushed more is split into parts).
BATCH_BYTES_MAX = 4 << 20
#: Resynchronisation compares images in blocks of this size (one digest each).
BLOCK_SIZE = 64 << 10
DIGEST_SIZE = 16

FLAG_IN_SYNC = 1  # the backup's image is a crash image of the primary at its position
FLAG_PRIMARY = 2  # the node serves as primary


class Kind(enum.IntEnum):
    HELLO = 1
    BATCH = 2
    RESYNC_BEGIN = 3
    BLOCK = 4
    RESYNC_END = 5
    STATE = 16
    ACK = 17
    DIGESTS = 18
    STATUS = 32
    FENCE_EPOCH = 33
    PROMOTE = 34
    ERROR = 48


class Status(enum.IntEnum):
    OK = 0
    OLDER_EPOCH = 1  # the sender's epoch is older than the one the backup promised
    BAD_HELLO = 2  # wrong magic, version or cluster id
    REFUSED = 3  # see the text


_KIND = struct.Struct("<B")
_HELLO = struct.Struct("<B4sBQQQB")
_BATCH = struct.Struct("<BQQB")
_RANGE = struct.Struct("<QI")
_RESYNC_BEGIN = struct.Struct("<BQQIB")
_BLOCK = struct.Struct("<BQ")
_RESYNC_END = struct.Struct("<BQQQ")
_STATE = struct.Struct("<BBQQQQBQ")
_ACK = struct.Struct("<BQ")
_DIGESTS = struct.Struct("<BI")
_EPOCH = struct.Struct("<BQ")

BATCH_HEADER_SIZE = _BATCH.size
RANGE_HEADER_SIZE = _RANGE.size
pack_range_header = _RANGE.pack


def kind_of(message: bytes | memoryview) -> int:
    if not message:
        raise MirrorProtocolError("empty message")
    return message[0]


def _expect(message: bytes | memoryview, kind: Kind, size: int) -> None:
    if len(message) < size or message[0] != kind:
        got = Kind(message[0]).name if message and message[0] in Kind._value2member_map_ else (
            message[0] if message else "nothing")
        raise MirrorProtocolError(f"expected a {kind.name} message, got {got} "
                                  f"({len(message)} bytes)")


# -- HELLO ------------------------------------------------------------------------------


@attrs.frozen
class Hello:
    node: int
    epoch: int
    pool_size: int
    cluster_id: str


def hello(node: int, epoch: int, pool_size: int, cluster_id: str) -> bytes:
    raw = cluster_id.encode()
    if not 0 < len(raw) <= CLUSTER_ID_BYTES_MAX:
        raise ValueError(f"cluster id must be 1 to {CLUSTER_ID_BYTES_MAX} UTF-8 bytes")
    return _HELLO.pack(Kind.HELLO, MAGIC, VERSION, node, epoch, pool_size, len(raw)) + raw


def parse_hello(message: bytes | memoryview) -> Hello:
    _expect(message, Kind.HELLO, _HELLO.size)
    _, magic, version, node, epoch, pool_size, n = _HELLO.unpack_from(message)
    if magic != MAGIC or version != VERSION:
        raise MirrorProtocolError(f"bad magic or version ({bytes(magic)!r}, {version})")
    if len(message) != _HELLO.size + n:
        raise MirrorProtocolError("HELLO: cluster id length does not match the message")
    cluster_id = bytes(message[_HELLO.size:]).decode("utf-8", "replace")
    return Hello(node, epoch, pool_size, cluster_id)


# -- STATE --------------------------------------------------------------------------------


@attrs.frozen
class State:
    status: int
    node: int
    epoch: int  # the highest epoch this node accepted or promised
    position: tuple[int, int]  # (epoch, seq) of the last fence its pool made durable
    flags: int
    pool_size: int
    text: str = ""

    @property
    def in_sync(self) -> bool:
        return bool(self.flags & FLAG_IN_SYNC)

    @property
    def primary(self) -> bool:
        return bool(self.flags & FLAG_PRIMARY)


def state(s: State) -> bytes:
    return _STATE.pack(Kind.STATE, s.status, s.node, s.epoch, s.position[0], s.position[1],
                       s.flags, s.pool_size) + s.text.encode()


def parse_state(message: bytes | memoryview) -> State:
    if message and message[0] == Kind.ERROR:
        raise MirrorProtocolError(parse_error(message))
    _expect(message, Kind.STATE, _STATE.size)
    _, status, node, epoch, pe, ps, flags, size = _STATE.unpack_from(message)
    text = bytes(message[_STATE.size:]).decode("utf-8", "replace")
    return State(status, node, epoch, (pe, ps), flags, size, text)


# -- BATCH --------------------------------------------------------------------------------


def batch_header(epoch: int, seq: int, final: bool) -> bytes:
    return _BATCH.pack(Kind.BATCH, epoch, seq, final)


def parse_batch(message: memoryview) -> tuple[int, int, bool]:
    """``(epoch, seq, final)``; the ranges follow at ``BATCH_HEADER_SIZE``."""
    _expect(message, Kind.BATCH, _BATCH.size)
    _, epoch, seq, final = _BATCH.unpack_from(message)
    return epoch, seq, bool(final)


def iter_ranges(message: memoryview, start: int = BATCH_HEADER_SIZE
                ) -> Iterator[tuple[int, memoryview]]:
    """``(off, data)`` for every range of a BATCH, in order; data is a view of the message."""
    end = len(message)
    pos = start
    unpack = _RANGE.unpack_from
    while pos < end:
        if pos + RANGE_HEADER_SIZE > end:
            raise MirrorProtocolError("BATCH: truncated range header")
        off, n = unpack(message, pos)
        pos += RANGE_HEADER_SIZE
        if pos + n > end:
            raise MirrorProtocolError(f"BATCH: range [{off}, {off + n}) runs past the message")
        yield off, message[pos:pos + n]
        pos += n


# -- resynchronisation ----------------------------------------------------------------------


def resync_begin(epoch: int, pool_size: int, block_size: int, whole: bool) -> bytes:
    return _RESYNC_BEGIN.pack(Kind.RESYNC_BEGIN, epoch, pool_size, block_size, whole)


def parse_resync_begin(message: bytes | memoryview) -> tuple[int, int, int, bool]:
    """``(epoch, pool size, block size, whole)``: with ``whole`` the backup answers DIGESTS."""
    _expect(message, Kind.RESYNC_BEGIN, _RESYNC_BEGIN.size)
    _, epoch, size, block, whole = _RESYNC_BEGIN.unpack_from(message)
    if block <= 0:
        raise MirrorProtocolError("RESYNC_BEGIN: block size 0")
    return epoch, size, block, bool(whole)


def block(off: int, data: bytes | memoryview) -> list[bytes | memoryview]:
    return [_BLOCK.pack(Kind.BLOCK, off), data]


def parse_block(message: memoryview) -> tuple[int, memoryview]:
    _expect(message, Kind.BLOCK, _BLOCK.size)
    return _BLOCK.unpack_from(message)[1], message[_BLOCK.size:]


def resync_end(epoch: int, base: int, consistent: int) -> bytes:
    return _RESYNC_END.pack(Kind.RESYNC_END, epoch, base, consistent)


def parse_resync_end(message: bytes | memoryview) -> tuple[int, int, int]:
    """``(epoch, base, consistent)``: the resync covered every fence up to ``base``
    (the fences after it follow as BATCH messages); the image is a crash image
    of the primary once the fence ``consistent`` (>= ``base``) is applied."""
    _expect(message, Kind.RESYNC_END, _RESYNC_END.size)
    return _RESYNC_END.unpack_from(message)[1:]


def digests(block_size: int, values: bytes) -> bytes:
    return _DIGESTS.pack(Kind.DIGESTS, block_size) + values


def parse_digests(message: bytes | memoryview) -> tuple[int, memoryview]:
    _expect(message, Kind.DIGESTS, _DIGESTS.size)
    if (len(message) - _DIGESTS.size) % DIGEST_SIZE:
        raise MirrorProtocolError("DIGESTS: not a whole number of digests")
    return _DIGESTS.unpack_from(message)[1], memoryview(message)[_DIGESTS.size:]


# -- small messages -------------------------------------------------------------------------


def ack(seq: int) -> bytes:
    return _ACK.pack(Kind.ACK, seq)


def parse_ack(message: bytes | memoryview) -> int:
    if message and message[0] == Kind.STATE:
        s = parse_state(message)
        raise MirrorProtocolError(f"refused: {s.text or Status(s.status).name}")
    _expect(message, Kind.ACK, _ACK.size)
    return _ACK.unpack_from(message)[1]


def status_request() -> bytes:
    return _KIND.pack(Kind.STATUS)


def fence_epoch(epoch: int) -> bytes:
    return _EPOCH.pack(Kind.FENCE_EPOCH, epoch)


def parse_fence_epoch(message: bytes | memoryview) -> int:
    _expect(message, Kind.FENCE_EPOCH, _EPOCH.size)
    return _EPOCH.unpack_from(message)[1]


def promote() -> bytes:
    return _KIND.pack(Kind.PROMOTE)


def error(text: str) -> bytes:
    return _KIND.pack(Kind.ERROR) + text.encode()


def parse_error(message: bytes | memoryview) -> str:
    return bytes(message[1:]).decode("utf-8", "replace")
