"""Client sessions: a retried Op is applied exactly once, across restarts too.

Every Raft entry carries an envelope ``version u8 | client id u64 | seq u64 |
op``. The :class:`SessionStateMachine` wraps the pool's state machine: an Op
whose ``seq`` is at or below the last one applied for its client is not
applied again; the caller gets the result recorded the first time (for the
latest ``seq``) or :class:`StaleRequestError` (for an older one). The table
of clients and the Ops' effects change in the same pool transaction, so a
crash can never separate them. Client id 0 means "no session".

The table is bounded (``capacity`` sessions, 16384 by default, hashed, ``PROBE_MAX`` slots
probed); when full, the least recent of the probed slots is reused -- the
session of a client silent for that long expires, as in Raft's thesis
(section 6.3).

Persistent layout (root ``blizzard.sessions``, tag ``sessions``), version 1::

    offset | size | field
    0      | 8    | magic b"BLZSES01"
    8      | 8    | applied: last index applied through this table
    16     | 8    | capacity (slots)
    64     | 48*n | slots: client u64 | seq u64 | result length u32 | kind u8 |
           |      |        pad 3 | result (<= 24 bytes inline, else a block offset)
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import cython

from blizzard import exceptions
from blizzard.exceptions import BlizzardError, EnvelopeError, PoolFullError, StaleRequestError
from blizzard.pmem import Pool
from blizzard.pmem._mem import views

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import u64_of
else:
    from blizzard.pmem._mem import u64_of
from blizzard.replication.base import StateMachine

if not cython.compiled and TYPE_CHECKING:  # compiled: cimported in the .pxd
    from blizzard.pmem import Transaction

if not cython.compiled:  # the compiled build has these as C constants (sessions.pxd)
    ENVELOPE_SIZE = 17
    SLOT_SIZE = 48
    HEADER_SIZE = 64
    PROBE_MAX = 8
    INLINE_MAX = 24
ENVELOPE = struct.Struct("<BQQ")
ENVELOPE_VERSION = 1
ROOT = "blizzard.sessions"
TAG = b"sessions"
MAGIC = b"BLZSES01"
_HEADER = struct.Struct("<8sQQ")
_SLOT = struct.Struct("<QQIB3x24s")
CAPACITY_DEFAULT = 16384
SNAPSHOT_MAGIC = b"BLZSSN01"
_SNAP_SESSION = struct.Struct("<QQBI")
assert _SLOT.size == SLOT_SIZE and ENVELOPE.size == ENVELOPE_SIZE


def wrap(client: int, seq: int, op: bytes) -> bytes:
    """The entry data for ``op`` submitted by ``client`` as request ``seq``."""
    return ENVELOPE.pack(ENVELOPE_VERSION, client, seq) + op


def _envelope_key(data) -> tuple[int, int]:
    """``(client id, seq)`` of an entry already known to be a session envelope
    (compiled: two C loads into a C pair, no tuple or int objects)."""
    raw = data if cython.compiled and type(data) is bytes else None
    if raw is not None:
        return u64_of(raw, 1), u64_of(raw, 9)
    _, client, seq = ENVELOPE.unpack_from(data, 0)
    return client, seq


# -- results as bytes --------------------------------------------------------------------

_NONE, _TRUE, _FALSE, _INT, _BYTES, _STR, _ERROR, _PAIR = range(8)
_PAIR_HEAD = struct.Struct("<I")  # a pair of bytes (an ordered map's popitem): len(first)
_BUFFERS = (bytes, bytearray, memoryview)


def encode_result(value: Any) -> tuple[int, bytes]:
    """(kind, bytes) for the results Ops produce; anything else is refused."""
    if value is None:
        return _NONE, b""
    if value is True:
        return _TRUE, b""
    if value is False:
        return _FALSE, b""
    if isinstance(value, int):
        return _INT, value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    if isinstance(value, _BUFFERS):
        return _BYTES, bytes(value)
    if isinstance(value, str):
        return _STR, value.encode("utf-8")
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], _BUFFERS)
            and isinstance(value[1], _BUFFERS)):
        return _PAIR, _PAIR_HEAD.pack(len(value[0])) + bytes(value[0]) + bytes(value[1])
    if isinstance(value, BaseException):
        args = value.args
        message = args[0] if len(args) == 1 and isinstance(args[0], str) else str(value)
        return _ERROR, f"{type(value).__name__}\0{message}".encode("utf-8", "replace")
    raise TypeError(f"cannot record a result of type {type(value).__name__}")


def decode_result(kind: int, data: bytes) -> Any:
    if kind == _NONE:
        return None
    if kind in (_TRUE, _FALSE):
        return kind == _TRUE
    if kind == _INT:
        return int.from_bytes(data, "little", signed=True)
    if kind == _BYTES:
        return data
    if kind == _STR:
        return data.decode("utf-8")
    if kind == _PAIR:
        if len(data) < _PAIR_HEAD.size:
            raise EnvelopeError("a pair result truncated before its first length")
        n = _PAIR_HEAD.unpack_from(data)[0]
        if _PAIR_HEAD.size + n > len(data):
            raise EnvelopeError("a pair result's first field runs past its end")
        return bytes(data[4:4 + n]), bytes(data[4 + n:])
    if kind == _ERROR:
        name, _, message = data.decode("utf-8", "replace").partition("\0")
        error = exceptions.from_name(name, message)
        if error is not None:
            return error
        cls = getattr(builtins, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = BlizzardError
        return cls(message)
    raise EnvelopeError(f"unknown result kind {kind}")


class _Duplicate(NamedTuple):
    """Placeholder for a duplicate's result until the batch is applied."""

    client: int
    seq: int
    same_batch: int | None  # position of the original in this batch, if there


class SessionStateMachine:
    """A :class:`StateMachine` that applies enveloped Ops at most once per (client, seq).

    Typed Python (C types in ``sessions.pxd``): every replica runs ``apply``
    for every entry, so the envelope is read and the table probed through
    views of the pool's memory (``u64[off >> 3]`` is the word at ``off``).
    """

    def __init__(self, inner: StateMachine, pool: Pool, *,
                 capacity: int = CAPACITY_DEFAULT) -> None:
        self._inner = inner
        # A registry applies each Op where it lies in its entry, after the envelope
        # (``apply_at``); other state machines get the Op cut out of its entry.
        self._in_place = hasattr(inner, "apply_at")
        self._pool = pool
        self._buf = pool.buf
        self._transaction = pool.transaction
        self._copies = None  # see count_copies
        root = pool.root(ROOT)
        if root is None:
            with pool.transaction() as tx:
                off = tx.alloc(HEADER_SIZE + capacity * SLOT_SIZE, zero=True)
                _HEADER.pack_into(self._buf, off, MAGIC, 0, capacity)
                tx.set_root(ROOT, off, TAG)
            root = pool.root(ROOT)
        self._bind(root)
        # a mapping with views left cannot be unmapped: let go of them at close
        pool.close_hooks.append(self._release)

    def count_copies(self, copies) -> None:
        """Count, in ``copies`` (a :class:`~blizzard.replication.copies.Copies`),
        the Op bytes cut out of ``bytes`` entries (``log_to_apply``: none when
        the inner state machine applies them in place); the inner state machine
        counts its own stages if it can."""
        self._copies = copies.counts
        count_copies = getattr(self._inner, "count_copies", None)
        if count_copies is not None:
            count_copies(copies)

    def _bind(self, root) -> None:
        if root is None or root.tag != TAG:
            raise EnvelopeError(f"root {ROOT!r} is not a session table")
        magic, self._applied, self._capacity = _HEADER.unpack_from(self._buf, root.off)
        if magic != MAGIC:
            raise exceptions.PoolCorruptError(f"session table has magic {magic!r}")
        if root.off & 7:
            raise exceptions.PoolCorruptError(f"session table at {root.off} is not 8-aligned")
        self._off = root.off
        self._slots = root.off + HEADER_SIZE
        self._u64 = views(self._buf, self._pool.size)[2]

    def _release(self) -> None:
        self._u64 = None  # type: ignore[assignment]

    def reload(self) -> None:
        """The pool was replaced wholesale (a snapshot image): read the table
        again, and have the inner state machine do the same."""
        self._bind(self._pool.root(ROOT))
        self._inner.reload()

    @property
    def last_applied(self) -> int:
        return max(self._applied, self._inner.last_applied)

    def snapshot(self) -> bytes:
        """``magic | applied u64 | sessions u32 | (client, seq, kind, len, result)... | inner``.

        Sessions travel with the state, so a retry that spans an
        InstallSnapshot is still recognised.
        """
        parts = [SNAPSHOT_MAGIC, b"", b""]
        count = 0
        for client, seq, kind, data in self.sessions():
            parts.append(_SNAP_SESSION.pack(client, seq, kind, len(data)) + data)
            count += 1
        parts[1] = self.last_applied.to_bytes(8, "little")
        parts[2] = count.to_bytes(4, "little")
        parts.append(self._inner.snapshot())
        return b"".join(parts)

    def sessions(self) -> Iterator[tuple[int, int, int, bytes]]:
        """``(client, last seq, result kind, result bytes)`` of every session, in slot order."""
        clients = [self._u64[(self._slots + i * SLOT_SIZE) >> 3] for i in range(self._capacity)]
        for client in clients:
            if client:
                yield (client, *self._lookup(client))

    def restore(self, data: bytes) -> None:
        """Replace sessions and state by a :meth:`snapshot`, in one transaction."""
        if data[:8] != SNAPSHOT_MAGIC:
            raise EnvelopeError("not a session snapshot")
        applied = int.from_bytes(data[8:16], "little")
        count = int.from_bytes(data[16:20], "little")
        pos = 20
        sessions = []
        for _ in range(count):
            client, seq, kind, n = _SNAP_SESSION.unpack_from(data, pos)
            pos += _SNAP_SESSION.size
            sessions.append((client, seq, decode_result(kind, data[pos:pos + n])))
            pos += n
        buf = self._buf
        with self._pool.transaction() as tx:
            for i in range(self._capacity):
                slot = self._slots + i * SLOT_SIZE
                _, _, length, _, inline = _SLOT.unpack_from(buf, slot)
                if length > INLINE_MAX:
                    tx.free(int.from_bytes(inline[:8], "little"))
            tx.add(self._slots, self._capacity * SLOT_SIZE)
            buf[self._slots:self._slots + self._capacity * SLOT_SIZE] = bytes(
                self._capacity * SLOT_SIZE)
            for client, seq, result in sessions:
                self._record(tx, client, seq, result)
            self._inner.restore(data[pos:])
            tx.write(self._off + 8, applied.to_bytes(8, "little"))
        self._applied = applied

    # -- applying --------------------------------------------------------------------------

    def apply(self, batch: list[tuple[int, bytes]]) -> list[Any]:
        """Apply a batch of enveloped entries in one transaction."""
        if not batch:
            return []
        results: list[Any] = [None] * len(batch)
        fresh: list[tuple[int, bytes]] = []
        fresh_at: list[int] = []
        # Per entry, no tuple and as few ints as can be: the (client, seq) of an
        # entry at a position is read again from its envelope where needed.
        owners: list[int] = []  # positions of the fresh entries that have a client
        latest: dict[int, int] = {}  # client -> position of its latest fresh entry here
        last_applied = self.last_applied
        copies = self._copies
        in_place = self._in_place
        unpack = ENVELOPE.unpack_from
        for position, entry in enumerate(batch):
            index, data = entry
            if index <= last_applied or not data:
                continue  # a replay, or the leader's empty entry
            # compiled: typed bytes and two C loads; interpreted, one unpack is cheaper
            raw = data if cython.compiled and type(data) is bytes else None
            if raw is not None and len(raw) >= ENVELOPE_SIZE and raw[0] == ENVELOPE_VERSION:
                client, seq = u64_of(raw, 1), u64_of(raw, 9)
            else:
                try:
                    version, client, seq = unpack(data, 0)
                    if version != ENVELOPE_VERSION:
                        raise EnvelopeError(f"envelope version {version}")
                except (struct.error, EnvelopeError) as exc:
                    results[position] = EnvelopeError(
                        f"entry {index} is not a session envelope: {exc}")
                    continue
            if client:
                seen = latest.get(client)
                if seen is None:
                    done_seq = self._last_seq(client)
                else:
                    done_seq = _envelope_key(batch[seen][1])[1]
                if seq <= done_seq:
                    original = seen if seen is not None and seq == done_seq else None
                    results[position] = _Duplicate(client, seq, original)
                    continue
                latest[client] = position
                owners.append(position)
            if in_place:
                fresh.append(entry)  # (index, data) as given: the Op lies after the envelope
            else:
                op = data[ENVELOPE_SIZE:]  # a copy when ``data`` is bytes, a view over a view
                fresh.append((index, op))
                if copies is not None and type(op) is not memoryview:
                    copies["log_to_apply"] += len(op)
            fresh_at.append(position)
        last = batch[-1][0]
        try:
            with self._transaction() as tx:
                inner_results = self._inner_apply(fresh) if fresh else []
                for position, result in zip(fresh_at, inner_results, strict=True):
                    results[position] = result
                for position in owners:
                    client, seq = _envelope_key(batch[position][1])
                    if latest[client] == position:
                        self._record(tx, client, seq, results[position])
                self._stamp(tx, last)
        except PoolFullError:
            # The batch rolled back whole. Apply its Ops one at a time, so only
            # the ones that do not fit fail -- the same ones on every replica,
            # since replicas apply the same Ops to pools of the same size.
            self._apply_one_by_one(batch, results, fresh, fresh_at, owners, latest)
        self._applied = last
        for position, result in enumerate(results):
            if type(result) is _Duplicate:
                results[position] = self._duplicate(result, results)
        return results

    def _inner_apply(self, fresh: list[tuple[int, bytes]]) -> list[Any]:
        """The inner state machine's apply of the fresh entries (see ``_in_place``)."""
        if self._in_place:
            return self._inner.apply_at(fresh, ENVELOPE_SIZE)
        return self._inner.apply(fresh)

    def _stamp(self, tx: Transaction, index: int) -> None:
        """Record ``index`` as the last one applied through this table (undo-logged)."""
        tx.add(self._off + 8, 8)
        self._u64[(self._off + 8) >> 3] = index

    def _apply_one_by_one(self, batch, results, fresh, fresh_at, owners, latest) -> None:
        owner_of = {position: _envelope_key(batch[position][1]) for position in owners}
        for (index, op), position in zip(fresh, fresh_at, strict=True):
            try:
                with self._pool.transaction() as tx:
                    result = self._inner_apply([(index, op)])[0]
                    self._finish_entry(tx, index, position, result, owner_of, latest, results)
            except PoolFullError as exc:
                with self._pool.transaction() as tx:
                    self._finish_entry(tx, index, position, exc, owner_of, latest, results)
        with self._pool.transaction() as tx:
            self._stamp(tx, batch[-1][0])

    def _finish_entry(self, tx, index, position, result, owner_of, latest, results) -> None:
        results[position] = result
        owner = owner_of.get(position)
        if owner is not None and latest[owner[0]] == position:
            self._record(tx, owner[0], owner[1], result)
        self._stamp(tx, index)

    def _duplicate(self, dup: _Duplicate, results: list[Any]) -> Any:
        if dup.same_batch is not None:
            return results[dup.same_batch]
        return self.outcome(dup.client, dup.seq)[1]

    def outcome(self, client: int, seq: int) -> tuple[bool, Any]:
        """``(True, result)`` if request ``seq`` of ``client`` was applied, as a
        retry of it would be answered (its recorded result, or
        :class:`StaleRequestError` once a later request replaced it); ``(False,
        None)`` if it was not. For requests whose entries arrived inside a snapshot,
        which no apply of this node answers."""
        done_seq, kind, data = self._lookup(client)
        if seq > done_seq:
            return False, None
        if seq == done_seq:
            return True, decode_result(kind, data)
        return True, StaleRequestError(f"request {seq} of client {client:#x} is older than its "
                                       f"latest ({done_seq}); it was applied, its result is gone")

    # -- the table -------------------------------------------------------------------------

    def _slot_of(self, client: int) -> int:
        """The offset of ``client``'s slot, or -1 if it has none."""
        # (self._u64 each time: compiled, a local copy would acquire and release the view)
        capacity = self._capacity
        start = client % capacity
        for i in range(start, start + min(PROBE_MAX, capacity)):
            pos = self._slots + (i % capacity) * SLOT_SIZE
            if self._u64[pos >> 3] == client:
                return pos
        return -1

    def _last_seq(self, client: int) -> int:
        """The last seq applied for ``client``; 0 if unknown."""
        pos = self._slot_of(client)
        return self._u64[(pos + 8) >> 3] if pos >= 0 else 0

    def _lookup(self, client: int) -> tuple[int, int, bytes]:
        """(last seq, result kind, result bytes) for ``client``; seq 0 if unknown."""
        pos = self._slot_of(client)
        if pos < 0:
            return 0, _NONE, b""
        u64 = self._u64
        word = u64[(pos + 16) >> 3]
        length = word & 0xFFFFFFFF
        kind = (word >> 32) & 0xFF
        if length <= INLINE_MAX:
            return u64[(pos + 8) >> 3], kind, bytes(self._buf[pos + 24:pos + 24 + length])
        off = u64[(pos + 24) >> 3]
        return u64[(pos + 8) >> 3], kind, bytes(self._buf[off:off + length])

    def _record(self, tx: Transaction, client: int, seq: int, result: Any) -> None:
        u64 = self._u64
        capacity = self._capacity
        start = client % capacity
        target = -1
        oldest = -1
        oldest_seq = 0
        for i in range(start, start + min(PROBE_MAX, capacity)):
            pos = self._slots + (i % capacity) * SLOT_SIZE
            slot_client = u64[pos >> 3]
            if slot_client == client or slot_client == 0:
                target = pos
                break
            slot_seq = u64[(pos + 8) >> 3]
            if oldest < 0 or slot_seq < oldest_seq:
                oldest, oldest_seq = pos, slot_seq
        if target < 0:
            target = oldest  # evict the least recent session among the probed
        pos = target
        old_length = u64[(pos + 16) >> 3] & 0xFFFFFFFF
        if old_length > INLINE_MAX:
            tx.free(u64[(pos + 24) >> 3])
        try:
            kind, data = encode_result(result)
        except TypeError:
            kind, data = _NONE, b""
        if kind == _ERROR:
            data = data[:INLINE_MAX]  # inline: recording a failure must not allocate
        n = len(data)
        tx.add(pos, SLOT_SIZE)
        u64[pos >> 3] = client
        u64[(pos + 8) >> 3] = seq
        u64[(pos + 16) >> 3] = n | (kind << 32)
        if old_length:  # else the inline bytes are zero already (past a length, they are)
            u64[(pos + 24) >> 3] = 0
            u64[(pos + 32) >> 3] = 0
            u64[(pos + 40) >> 3] = 0
        if n > INLINE_MAX:
            block = tx.alloc(n)
            self._buf[block:block + n] = data
            u64[(pos + 24) >> 3] = block
        elif n:
            self._buf[pos + 24:pos + 24 + n] = data
