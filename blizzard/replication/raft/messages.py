"""Raft values (entries, hard state, snapshots) and messages, with a binary codec.

Every message names its ``source`` and ``target`` node and carries the
sender's ``term`` (0 for forwarded client requests, which are not bound to a
term). ``encode`` and ``decode`` are exact inverses: ``decode(encode(m)) == m``
for every message and ``encode(decode(b)) == b`` for every frame ``decode``
accepts, up to the entries' CRC fields and pads (below). Anything else
(truncated frames, unknown kinds, booleans other than 0/1, trailing bytes)
raises ``MessageDecodeError``.

Frame layout (little endian)::

    version u8 | kind u8 | source u64 | target u64 | term u64 | body (per kind)

Entries are laid out exactly as the records of the Raft log in a pool
(:mod:`~blizzard.replication.raft.pmem_storage`), so a follower can receive
them straight into its log, and a leader can send them straight from its
own: ``crc u32 | length u32 | term u64 | index u64 | type u8 | pad 7 | data |
pad to 8 bytes`` (the type is read as a u64, so a non-zero byte in its pad is
an unknown type). A MsgApp's fixed part (header, then ``log_term | index |
commit | count``) is :data:`APP_HEAD_BYTES` long and its records follow.

The CRC field and the data's pad travel but mean nothing on the wire, and a
receiver never reads them: ``encode`` writes zeros there, a leader sending
records from its log (:func:`encode_app_head` and the log's own records)
sends what its log holds -- its chain CRC, which seeds from the leader's
previous record and so could not be checked against the follower's chain
anyway, and pad bytes the log never wrote. A follower receiving in place
stamps its own chain CRC over the field. So ``encode(decode(b)) == b`` holds
for every accepted frame up to those bytes (exactly for frames ``encode``
made). Frame version 3 (2 had the same layout, but its receivers rejected a
non-zero CRC field or pad). A
snapshot is ``index u64 | term u64 | voters | learners | length u32 | data``
where a node list is ``count u16 | id u64 ...``.

Typed Python: ``messages.pxd`` makes the decoder's cursor an extension type
that reads entry headers straight from the frame (a follower decodes every
entry it is sent), and the records every round builds (``HardState``,
``MsgApp``, ``MsgAppResp``, heartbeats and their answers, ``MsgProp``)
extension types with read-only fields; the rarer messages stay attrs classes.
The frames are the same bytes either way.
"""

from __future__ import annotations

import enum
import functools
import struct
import zlib
from collections.abc import Iterable
from itertools import count, repeat
from typing import NamedTuple

import attrs
import cython

from blizzard.exceptions import MessageDecodeError

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import crc32 as crc32_at
    from cython.cimports.blizzard.pmem._mem import (
        get_u32,
        get_u64,
        read,
        set_u32,
        set_u64,
        u32_of,
        u64_of,
        write,
        write_view,
    )
    from cython.cimports.cpython.ref import Py_INCREF
    from cython.cimports.cpython.tuple import PyTuple_SET_ITEM
    from cython.cimports.cpython.type import PyType_GenericAlloc

__all__ = [
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageDecodeError",
    "MsgApp",
    "MsgAppResp",
    "MsgHeartbeat",
    "MsgHeartbeatResp",
    "MsgPreVote",
    "MsgPreVoteResp",
    "MsgProp",
    "MsgReadIndex",
    "MsgReadIndexResp",
    "MsgSnap",
    "MsgTimeoutNow",
    "MsgVote",
    "MsgVoteResp",
    "Snapshot",
    "SnapshotMeta",
    "decode",
    "decode_app_head",
    "encode",
    "encode_app_head",
    "new_entry",
    "take_records",
    "untracked_entries",
    "untracked_entry",
    "write_records",
]

NONE = 0  # "no node": node ids are >= 1.
VERSION = 3  # 2: entries in the Raft log's record layout; 3: CRC fields and pads ignored
U64_MAX = (1 << 64) - 1


class EntryType(enum.IntEnum):
    """The kinds of entry, by name. An ``Entry`` holds its type as the plain
    int (``entry.type == EntryType.NORMAL`` holds either way), so an entry is
    made of ints and bytes only and the garbage collector can ignore it."""

    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


class Entry(NamedTuple):
    """One log entry. ``index`` starts at 1; ``term`` >= 1 for real entries.

    A named tuple rather than an attrs class because entries are created and
    copied per proposal on the hot path: ``new_entry((term, index, type, data))``
    builds one in C, several times faster than a generated ``__init__``.
    ``type`` is an int, the value of an ``EntryType``.
    """

    term: int
    index: int
    type: int = 0
    data: bytes = b""


new_entry = functools.partial(tuple.__new__, Entry)
"""Build an ``Entry`` from a (term, index, type, data) tuple without Python code."""

ENTRY_TYPE_COUNT = len(EntryType)  # wire values are 0 .. ENTRY_TYPE_COUNT - 1


def untracked_entry(term: int, index: int, kind: int, data: bytes) -> Entry:
    """``Entry(term, index, kind, data)``, which the garbage collector never visits.

    Compiled, the entry is built in place (no argument tuples) and untracked
    at once: it holds only ints and bytes, so it can be part of no reference
    cycle. CPython untracks plain tuples of atoms by itself, but never a
    tuple subclass, so without this every collection of the oldest
    generation would walk every entry the log keeps in memory. Interpreted,
    it is ``new_entry``.
    """
    if cython.compiled:
        entry = PyType_GenericAlloc(Entry, 4)
        PyObject_GC_UnTrack(entry)  # noqa: F821 (declared in messages.pxd)
        _put(entry, 0, term)
        _put(entry, 1, index)
        _put(entry, 2, kind)
        _put(entry, 3, data)
        return entry
    return new_entry((term, index, kind, data))


def _put(entry: Entry, position: int, value: object) -> None:
    """Fill a field of a tuple just allocated (compiled only)."""
    Py_INCREF(value)
    PyTuple_SET_ITEM(entry, position, value)


def untracked_entries(term: int, first: int, kind: int, items: Iterable[bytes]) -> list[Entry]:
    """Entries ``first, first + 1, ...`` of ``term`` and ``kind`` carrying ``items``,
    built by ``untracked_entry`` (the leader's append)."""
    if cython.compiled:
        out = []
        index = first
        for data in items:
            out.append(untracked_entry(term, index, kind, data))
            index += 1
        return out
    return list(map(new_entry, zip(repeat(term), count(first), repeat(kind), items)))


_set = object.__setattr__  # writes a slot behind a __setattr__ that refuses


@cython.no_gc
@cython.cclass
class _Record:
    """The base of the records built on every round of the entry path (the
    hard state, appends, their acknowledgements, heartbeats, forwarded
    proposals): immutable values, equal and hashed by their fields, with a
    keyword-style repr; ``__match_args__`` names the fields in order.

    Compiled, each is an extension type with read-only fields, built in a few
    stores and taking no part in garbage collection (they hold ints, bytes
    and entries, so they can close no reference cycle); an attrs class's
    generated ``__init__`` cost several times as much.
    Interpreted, a plain class with slots whose ``__init__`` writes past the
    ``__setattr__`` that refuses every later assignment.
    """

    __slots__ = ()
    __match_args__ = ()  # the fields' names, in order

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _fields(self) == _fields(other)

    def __ne__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _fields(self) != _fields(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, *_fields(self)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple:
        return type(self), _fields(self)


def _fields(record: _Record) -> tuple:
    """The values of ``record``'s fields, in order."""
    return tuple([getattr(record, name) for name in record.__match_args__])


@cython.no_gc
@cython.cclass
class HardState(_Record):
    """What must be on stable storage before any message is sent."""

    __slots__ = __match_args__ = ("term", "vote", "commit")

    term: int
    vote: int
    commit: int

    def __init__(self, term: int = 0, vote: int = NONE, commit: int = 0) -> None:
        if cython.compiled:
            self.term = term
            self.vote = vote
            self.commit = commit
        else:
            _set(self, "term", term)
            _set(self, "vote", vote)
            _set(self, "commit", commit)


@attrs.frozen
class ConfState:
    """The membership: voting nodes and non-voting learners (sorted, disjoint)."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@attrs.frozen
class ConfChange:
    """The payload of a CONF_CHANGE entry: one server added, removed or demoted.

    ``context`` is opaque to Raft: the driver's business (the cluster layer
    puts the new member's addresses there, so every member learns them when
    the change applies). Encoded as ``type u8 | node id u64 | context``.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    _S = struct.Struct("<BQ")

    def encode(self) -> bytes:
        return self._S.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            kind, node_id = cls._S.unpack_from(data)
            return cls(ConfChangeType(kind), node_id, bytes(data[cls._S.size:]))
        except (struct.error, ValueError) as error:
            raise MessageDecodeError(f"bad conf change: {error}") from None


@attrs.frozen
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


@attrs.frozen
class Snapshot:
    """The state machine as of ``meta.index``, replacing the log up to there."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


# --- messages -----------------------------------------------------------------


@cython.no_gc
@cython.cclass
class MsgApp(_Record):
    """AppendEntries: ``entries`` follow the entry at (``index``, ``log_term``)."""

    __slots__ = __match_args__ = (
        "source", "target", "term", "log_term", "index", "entries", "commit")

    source: int
    target: int
    term: int
    log_term: int
    index: int
    entries: tuple[Entry, ...]
    commit: int

    def __init__(self, source: int, target: int, term: int, log_term: int, index: int,
                 entries: tuple[Entry, ...], commit: int) -> None:
        if cython.compiled:
            self.source = source
            self.target = target
            self.term = term
            self.log_term = log_term
            self.index = index
            self.entries = entries
            self.commit = commit
        else:
            _set(self, "source", source)
            _set(self, "target", target)
            _set(self, "term", term)
            _set(self, "log_term", log_term)
            _set(self, "index", index)
            _set(self, "entries", entries)
            _set(self, "commit", commit)


@cython.no_gc
@cython.cclass
class MsgAppResp(_Record):
    """Ack of ``index`` or, if ``reject``, a hint: the follower's log may match
    up to ``reject_hint`` whose term is ``log_term`` (fast backtracking)."""

    __slots__ = __match_args__ = (
        "source", "target", "term", "index", "reject", "reject_hint", "log_term")

    source: int
    target: int
    term: int
    index: int
    reject: bool
    reject_hint: int
    log_term: int

    def __init__(self, source: int, target: int, term: int, index: int, reject: bool = False,
                 reject_hint: int = 0, log_term: int = 0) -> None:
        if cython.compiled:
            self.source = source
            self.target = target
            self.term = term
            self.index = index
            self.reject = reject
            self.reject_hint = reject_hint
            self.log_term = log_term
        else:
            _set(self, "source", source)
            _set(self, "target", target)
            _set(self, "term", term)
            _set(self, "index", index)
            _set(self, "reject", reject)
            _set(self, "reject_hint", reject_hint)
            _set(self, "log_term", log_term)


@attrs.frozen
class MsgVote:
    """RequestVote; ``transfer`` marks a leadership transfer (bypasses the lease)."""

    source: int
    target: int
    term: int
    log_term: int
    index: int
    transfer: bool = False


@attrs.frozen
class MsgVoteResp:
    source: int
    target: int
    term: int
    reject: bool


@attrs.frozen
class MsgPreVote:
    """A vote request that changes nobody's term: "would you vote for me?"."""

    source: int
    target: int
    term: int
    log_term: int
    index: int
    transfer: bool = False


@attrs.frozen
class MsgPreVoteResp:
    source: int
    target: int
    term: int
    reject: bool


@cython.no_gc
@cython.cclass
class MsgHeartbeat(_Record):
    """Leader liveness, commit index, and the latest pending ReadIndex context."""

    __slots__ = __match_args__ = ("source", "target", "term", "commit", "context")

    source: int
    target: int
    term: int
    commit: int
    context: bytes

    def __init__(self, source: int, target: int, term: int, commit: int,
                 context: bytes = b"") -> None:
        if cython.compiled:
            self.source = source
            self.target = target
            self.term = term
            self.commit = commit
            self.context = context
        else:
            _set(self, "source", source)
            _set(self, "target", target)
            _set(self, "term", term)
            _set(self, "commit", commit)
            _set(self, "context", context)


@cython.no_gc
@cython.cclass
class MsgHeartbeatResp(_Record):
    """A follower answers a heartbeat, echoing its ReadIndex context."""

    __slots__ = __match_args__ = ("source", "target", "term", "context")

    source: int
    target: int
    term: int
    context: bytes

    def __init__(self, source: int, target: int, term: int, context: bytes = b"") -> None:
        if cython.compiled:
            self.source = source
            self.target = target
            self.term = term
            self.context = context
        else:
            _set(self, "source", source)
            _set(self, "target", target)
            _set(self, "term", term)
            _set(self, "context", context)


@attrs.frozen
class MsgSnap:
    """InstallSnapshot: for a follower behind the leader's compacted log."""

    source: int
    target: int
    term: int
    snapshot: Snapshot


@attrs.frozen
class MsgTimeoutNow:
    """Leadership transfer: the target campaigns at once."""

    source: int
    target: int
    term: int


@attrs.frozen
class MsgReadIndex:
    """A follower forwards a linearizable read request to the leader."""

    source: int
    target: int
    term: int
    context: bytes


@attrs.frozen
class MsgReadIndexResp:
    """The read index for ``context``: reads are safe once applied >= ``index``."""

    source: int
    target: int
    term: int
    index: int
    context: bytes


@cython.no_gc
@cython.cclass
class MsgProp(_Record):
    """A follower forwards proposals (entries without term/index) to the leader."""

    __slots__ = __match_args__ = ("source", "target", "term", "entries")

    source: int
    target: int
    term: int
    entries: tuple[Entry, ...]

    def __init__(self, source: int, target: int, term: int,
                 entries: tuple[Entry, ...]) -> None:
        if cython.compiled:
            self.source = source
            self.target = target
            self.term = term
            self.entries = entries
        else:
            _set(self, "source", source)
            _set(self, "target", target)
            _set(self, "term", term)
            _set(self, "entries", entries)


Message = (
    MsgApp
    | MsgAppResp
    | MsgVote
    | MsgVoteResp
    | MsgPreVote
    | MsgPreVoteResp
    | MsgHeartbeat
    | MsgHeartbeatResp
    | MsgSnap
    | MsgTimeoutNow
    | MsgReadIndex
    | MsgReadIndexResp
    | MsgProp
)

# --- codec --------------------------------------------------------------------

_HEADER = struct.Struct("<BBQQQ")
#: An entry's record header, as in the log: crc, length, term, index and the
#: type as a u64 (a u8 and 7 zero bytes).
RECORD = struct.Struct("<IIQQQ")
RECORD_HEADER_BYTES = 32
_ZEROS = bytes(8)
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_RECORD_FIELDS = struct.Struct("<IQQQ")  # a record past its CRC, before its data
_APP = struct.Struct("<QQQI")  # log_term, index, commit, entry count
_APP_RESP = struct.Struct("<QBQQ")  # index, reject, reject_hint, log_term
_VOTE = struct.Struct("<QQB")  # log_term, index, transfer
_RESP = struct.Struct("<B")  # reject
_COMMIT = struct.Struct("<Q")
_SNAP_META = struct.Struct("<QQ")
assert RECORD.size == RECORD_HEADER_BYTES
#: Bytes of a MsgApp frame before its first record (where a follower can
#: receive the rest straight into its log).
APP_HEAD_BYTES = _HEADER.size + _APP.size
_APP_HEAD = struct.Struct("<BBQQQQQQI")  # _HEADER and _APP in one
assert _APP_HEAD.size == APP_HEAD_BYTES
KIND_APP = 0  # MsgApp's kind on the wire

assert [int(kind) for kind in EntryType] == list(range(ENTRY_TYPE_COUNT))
_KINDS: tuple[type, ...] = (
    MsgApp,
    MsgAppResp,
    MsgVote,
    MsgVoteResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgHeartbeat,
    MsgHeartbeatResp,
    MsgSnap,
    MsgTimeoutNow,
    MsgReadIndex,
    MsgReadIndexResp,
    MsgProp,
)
_KIND_OF = {cls: number for number, cls in enumerate(_KINDS)}
assert _KINDS[KIND_APP] is MsgApp
assert len(_KINDS) < 256


def _bool(value: int) -> bool:
    if value > 1:
        raise MessageDecodeError(f"boolean field holds {value}")
    return value == 1


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(data)


def _put_entries(out: list[bytes], entries: tuple[Entry, ...]) -> None:
    pack = RECORD.pack
    zeros = _ZEROS
    for entry in entries:
        data = entry.data
        n = len(data)
        out.append(pack(0, n, entry.term, entry.index, entry.type))
        out.append(data)
        if n & 7:
            out.append(zeros[n & 7:])


def _put_nodes(out: list[bytes], nodes: tuple[int, ...]) -> None:
    out.append(_U16.pack(len(nodes)))
    out.append(struct.pack(f"<{len(nodes)}Q", *nodes))


def _put_snapshot(out: list[bytes], snapshot: Snapshot) -> None:
    meta = snapshot.meta
    out.append(_SNAP_META.pack(meta.index, meta.term))
    _put_nodes(out, meta.conf_state.voters)
    _put_nodes(out, meta.conf_state.learners)
    _put_bytes(out, snapshot.data)


def encode(msg: Message) -> bytes:
    """Serialise ``msg`` into one frame (see the module docstring)."""
    kind = _KIND_OF[type(msg)]
    out = [_HEADER.pack(VERSION, kind, msg.source, msg.target, msg.term)]
    cls = type(msg)
    if cls is MsgApp:
        out.append(_APP.pack(msg.log_term, msg.index, msg.commit, len(msg.entries)))
        _put_entries(out, msg.entries)
    elif cls is MsgAppResp:
        out.append(_APP_RESP.pack(msg.index, msg.reject, msg.reject_hint, msg.log_term))
    elif cls is MsgVote or cls is MsgPreVote:
        out.append(_VOTE.pack(msg.log_term, msg.index, msg.transfer))
    elif cls is MsgVoteResp or cls is MsgPreVoteResp:
        out.append(_RESP.pack(msg.reject))
    elif cls is MsgHeartbeat:
        out.append(_COMMIT.pack(msg.commit))
        _put_bytes(out, msg.context)
    elif cls is MsgHeartbeatResp or cls is MsgReadIndex:
        _put_bytes(out, msg.context)
    elif cls is MsgSnap:
        _put_snapshot(out, msg.snapshot)
    elif cls is MsgReadIndexResp:
        out.append(_COMMIT.pack(msg.index))
        _put_bytes(out, msg.context)
    elif cls is MsgProp:
        out.append(_U32.pack(len(msg.entries)))
        _put_entries(out, msg.entries)
    return b"".join(out)


class _Reader:
    """A cursor over a frame; every read checks the bounds."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: struct.Struct) -> tuple:
        end = self.pos + fmt.size
        if end > len(self.buf):
            raise MessageDecodeError("truncated frame")
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos = end
        return values

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > len(self.buf):
            raise MessageDecodeError("truncated frame")
        data = self.buf[self.pos : end]
        self.pos = end
        return data

    def blob(self) -> bytes:
        (length,) = self.unpack(_U32)
        return self.take(length)

    def entries(self, count: int) -> tuple[Entry, ...]:
        # Each entry needs at least a header, so a huge count cannot allocate.
        if count * RECORD_HEADER_BYTES > len(self.buf) - self.pos:
            raise MessageDecodeError("truncated frame")
        # The hot path of a receiving transport: locals, no method calls per entry.
        buf = self.buf
        end = len(buf)
        pos = self.pos
        unpack_from = RECORD.unpack_from
        header = RECORD_HEADER_BYTES
        out = []
        append = out.append
        for _ in range(count):
            if pos + header > end:
                raise MessageDecodeError("truncated frame")
            if cython.compiled:  # the same little-endian fields, read in place
                length = u32_of(buf, pos + 4)
                term = u64_of(buf, pos + 8)
                index = u64_of(buf, pos + 16)
                kind = u64_of(buf, pos + 24)
            else:
                length, term, index, kind = unpack_from(buf, pos)[1:]
            pos += header
            if kind >= ENTRY_TYPE_COUNT:
                raise MessageDecodeError(f"unknown entry type {kind}")
            # the CRC field and the pad are not read (see the module docstring)
            stop = pos + length
            padded = stop + (-length & 7)  # records are padded to 8 bytes
            if padded > end:
                raise MessageDecodeError("truncated frame")
            if cython.compiled:
                append(untracked_entry(term, index, kind, buf[pos:stop]))
            else:  # the same entry, without a Python call more
                append(new_entry((term, index, kind, buf[pos:stop])))
            pos = padded
        self.pos = pos
        return tuple(out)

    def nodes(self) -> tuple[int, ...]:
        (count,) = self.unpack(_U16)
        return self.unpack(struct.Struct(f"<{count}Q"))

    def snapshot(self) -> Snapshot:
        index, term = self.unpack(_SNAP_META)
        voters = self.nodes()
        learners = self.nodes()
        meta = SnapshotMeta(index, term, ConfState(voters, learners))
        return Snapshot(meta, self.blob())


def encode_app_head(msg: MsgApp) -> bytes:
    """The first :data:`APP_HEAD_BYTES` of ``msg``'s frame: what precedes its
    records. A leader sends this, then its log's records of ``msg.entries``
    as they lie there, and the receiver reads the same frame ``encode``
    would have made, up to the records' CRC fields and pads."""
    return _APP_HEAD.pack(VERSION, KIND_APP, msg.source, msg.target, msg.term, msg.log_term,
                          msg.index, msg.commit, len(msg.entries))


def take_records(region: memoryview, count: int, first: int, term_before: int, crc: int,
                 start: int) -> tuple[list[Entry], list[int], list[int], int]:
    """The entries of the ``count`` records a MsgApp's frame put in ``region``
    (a writable view of a Raft log's free tail, see
    :mod:`~blizzard.replication.raft.pmem_storage`), read where they lie.

    The records must follow entry ``first - 1`` of term ``term_before`` index
    by index, with terms that never fall, and fill ``region`` exactly; else
    ``MessageDecodeError``. Each record's CRC field (the sender's: 0, or its own
    log's chain CRC, never read) gets this log's chain CRC (continued from
    ``crc``) *inverted*: the log rights it when
    it accepts the entry, so a record never accepted never verifies. Returns
    ``(entries, positions, crcs, end)``: each entry (its data cut from the
    record: the one copy of a received entry), where each record lies and
    where the last ends (``start`` + its offset in ``region``: the region's
    place in the log), and the chain CRC after each.
    """
    end = len(region)
    if count * RECORD_HEADER_BYTES > end:
        raise MessageDecodeError("truncated frame")
    entries = []
    positions = []
    crcs = []
    expected = first
    prev = crc
    pos = 0
    for _ in range(count):  # per received entry: C reads and writes when compiled
        if pos + RECORD_HEADER_BYTES > end:
            raise MessageDecodeError("truncated frame")
        if cython.compiled:
            length = get_u32(region, pos + 4)
            term = get_u64(region, pos + 8)
            index = get_u64(region, pos + 16)
            kind = get_u64(region, pos + 24)
        else:
            length, term, index, kind = RECORD.unpack_from(region, pos)[1:]
        if kind >= ENTRY_TYPE_COUNT:
            raise MessageDecodeError(f"unknown entry type {kind}")
        if index != expected or term < term_before:
            raise MessageDecodeError(
                f"entry {index} (term {term}) cannot follow {expected - 1} "
                f"(term {term_before}) in the log")
        body = pos + RECORD_HEADER_BYTES
        stop = body + length
        if stop > end:
            raise MessageDecodeError("truncated frame")
        if cython.compiled:
            prev = crc32_at(region, pos + 4, stop - pos - 4, prev)
            set_u32(region, pos, prev ^ 0xFFFFFFFF)
            data = read(region, body, length) if length else b""  # (body may be the end)
            entries.append(untracked_entry(term, index, kind, data))
        else:
            prev = zlib.crc32(region[pos + 4:stop], prev)
            _U32.pack_into(region, pos, prev ^ 0xFFFFFFFF)
            entries.append(new_entry((term, index, kind, region[body:stop].tobytes())))
        positions.append(start + pos)
        crcs.append(prev)
        term_before = term
        expected += 1
        pos = (stop + 7) & ~7
    if pos != end:
        raise MessageDecodeError(f"{end - pos} trailing bytes")
    return entries, positions, crcs, start + end


def write_records(buf: memoryview, entries, first: int, pos: int, limit: int, crc: int,
                  positions: list) -> tuple[int, int, int]:
    """Write the records of ``entries[first:]`` into ``buf`` (a Raft log's
    mapping) from ``pos`` on, as many as end by ``limit`` (their segment's end),
    each stamped with the log's chain CRC continued from ``crc``; append each
    record's position to ``positions``. Returns ``(next, pos, crc)``: the first
    entry not written (it needs the next segment), where its record would go,
    and the chain's CRC so far. Bytes of padding are left as they were: no CRC
    covers them.
    """
    count = len(entries)
    i = first
    while i < count:
        entry = entries[i]
        data = entry.data
        length = len(data)
        body = pos + RECORD_HEADER_BYTES
        if body + length > limit:
            break
        if cython.compiled:
            set_u32(buf, pos + 4, length)
            set_u64(buf, pos + 8, entry.term)
            set_u64(buf, pos + 16, entry.index)
            set_u64(buf, pos + 24, entry.type)
            if type(data) is bytes:
                write(buf, body, data)
            elif length:
                write_view(buf, body, data)
            crc = crc32_at(buf, pos + 4, RECORD_HEADER_BYTES - 4 + length, crc)
            set_u32(buf, pos, crc)
        else:
            fields = _RECORD_FIELDS.pack(length, entry.term, entry.index, entry.type)
            buf[pos + 4:body] = fields
            buf[body:body + length] = data
            crc = zlib.crc32(data, zlib.crc32(fields, crc))
            _U32.pack_into(buf, pos, crc)
        positions.append(pos)
        pos = (body + length + 7) & ~7
        i += 1
    return i, pos, crc


def decode_app_head(head: bytes) -> tuple | None:
    """``(source, target, term, log_term, index, commit, count)`` of a MsgApp
    whose first :data:`APP_HEAD_BYTES` are ``head``; None for any other frame."""
    if len(head) < APP_HEAD_BYTES:
        return None
    fields = _APP_HEAD.unpack_from(head, 0)
    if fields[0] != VERSION or fields[1] != KIND_APP:
        return None
    return fields[2:]


def decode(frame: bytes) -> Message:
    """Parse one frame produced by ``encode``; raise ``MessageDecodeError`` otherwise."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise MessageDecodeError(f"expected bytes, got {type(frame).__name__}")
    reader = _Reader(bytes(frame))  # slices of bytes are bytes: no copy per field
    version, kind, source, target, term = reader.unpack(_HEADER)
    if version != VERSION:
        raise MessageDecodeError(
            f"frame version {version}, where this node reads only version {VERSION}: "
            f"every node of a cluster must run a release with the same frame version")
    if kind >= len(_KINDS):
        raise MessageDecodeError(f"unknown message kind {kind}")
    cls = _KINDS[kind]
    msg: Message
    if cls is MsgApp:
        log_term, index, commit, count = reader.unpack(_APP)
        msg = MsgApp(source, target, term, log_term, index, reader.entries(count), commit)
    elif cls is MsgAppResp:
        index, reject, hint, log_term = reader.unpack(_APP_RESP)
        msg = MsgAppResp(source, target, term, index, _bool(reject), hint, log_term)
    elif cls is MsgVote or cls is MsgPreVote:
        log_term, index, transfer = reader.unpack(_VOTE)
        msg = cls(source, target, term, log_term, index, _bool(transfer))
    elif cls is MsgVoteResp or cls is MsgPreVoteResp:
        (reject,) = reader.unpack(_RESP)
        msg = cls(source, target, term, _bool(reject))
    elif cls is MsgHeartbeat:
        (commit,) = reader.unpack(_COMMIT)
        msg = MsgHeartbeat(source, target, term, commit, reader.blob())
    elif cls is MsgHeartbeatResp or cls is MsgReadIndex:
        msg = cls(source, target, term, reader.blob())
    elif cls is MsgSnap:
        msg = MsgSnap(source, target, term, reader.snapshot())
    elif cls is MsgTimeoutNow:
        msg = MsgTimeoutNow(source, target, term)
    elif cls is MsgReadIndexResp:
        (index,) = reader.unpack(_COMMIT)
        msg = MsgReadIndexResp(source, target, term, index, reader.blob())
    else:
        assert cls is MsgProp
        (count,) = reader.unpack(_U32)
        msg = MsgProp(source, target, term, reader.entries(count))
    if reader.pos != len(frame):
        raise MessageDecodeError(f"{len(frame) - reader.pos} trailing bytes")
    return msg
