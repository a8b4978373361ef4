"""The persistent FIFO behind PQueue: a linked list of chunks of entries.

Layout version 1. Header block (the structure's root; tag ``pqueue``)::

    offset | size | field
    0      | 8    | magic b"BLZPQUE1"
    8      | 8    | count: entries in the queue
    16     | 8    | applied: index of the last Op applied to this queue
    24     | 8    | head chunk offset
    32     | 8    | head position: offset in the head chunk of the first entry
    40     | 8    | tail chunk offset
    48     | 8    | tail position: where the next entry goes in the tail chunk
    56     | 8    | removed: entries taken from the head since creation (was
           |      |   reserved, zero: older pools simply count from there)
    64     | 16   | key codec name (unused: "bytes")
    80     | 16   | value codec name
    96     | 32   | reserved, zero

Chunk (4096-byte block)::

    0      | 8    | next chunk offset (0 in the tail chunk)
    8      | 8    | end: offset past its last entry (set when the next is linked)
    16     | ...  | entries

Entry (8-byte aligned): u32 length | u32 flags | value, padded to 8. With
flag 1 (EXT) the value lives in a block of its own and the entry holds
u64 length | u64 block offset.

Every entry has a sequence number that never changes while it is queued:
``removed`` for the head, ``removed + i`` for the i-th entry after it. A
scan resumed from a sequence number is therefore exact however many entries
were taken or added meanwhile (the remote client pages through a queue so).
Snapshots carry ``removed``: :meth:`QueueCore.dump` yields
``(REMOVED_FIELD, u64)`` before the entries' ``(value,)``.

Invariants: walking from (head chunk, head position) to (tail chunk, tail
position) meets exactly ``count`` entries; every chunk before the tail
holds at least one unread entry past the head position; ``count == 0``
implies head == tail.

Why: an enqueue writes its entry into the tail chunk's free space (nothing
references it yet: no undo entry, just a flush) and then undo-logs the
header's hot range [count .. removed] -- one undo entry. A dequeue
undo-logs the same range. A chunk is allocated every ~50 small entries and
freed when the head leaves it; when the queue empties, a later transaction
rewinds both positions to the start of the chunk, so a steady put/get
workload never allocates. Positions are rewound only by a transaction that
did not itself consume the entries being overwritten (see ``_empty_gen``),
so a roll back never resurrects an overwritten entry.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cython

from blizzard.exceptions import OpDecodeError, StructureCorruptError
from blizzard.structures._corebase import CoreBase

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import read, write_from
    from cython.cimports.blizzard.structures.ops import QUEUE_CLEAR, QUEUE_GET, QUEUE_PUT
else:
    from blizzard.pmem._mem import read, write_from
    from blizzard.structures.ops import QUEUE_CLEAR, QUEUE_GET, QUEUE_PUT

if not cython.compiled and TYPE_CHECKING:  # compiled: cimported in the .pxd
    from blizzard.pmem import Transaction

if TYPE_CHECKING:
    from blizzard.structures.registry import Registry

TAG = b"pqueue"
MAGIC = b"BLZPQUE1"
HEADER_BYTES = 128
if not cython.compiled:  # the compiled build has these as C constants (_queuecore.pxd)
    CHUNK_BYTES = 4096
    CHUNK_HEAD = 16
    INLINE_MAX = 1024
    FLAG_EXT = 1
assert CHUNK_HEAD + INLINE_MAX + 8 <= CHUNK_BYTES

_HOT = struct.Struct("<QQQQQQQ")  # count, applied, head, head_pos, tail, tail_pos, removed
REMOVED_FIELD = b"removed"  # the snapshot item carrying ``removed``
_HDR = struct.Struct("<II")
_EXT = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_LINK = struct.Struct("<QQ")


class QueueCore(CoreBase):
    """Apply side and read side of one persistent queue.

    Typed Python (C types in ``_queuecore.pxd``): words of the header, the
    chunks and the entries are read and written through the core's views
    (``u64[off >> 3]``; every field here is 8-aligned, see the layout).
    """

    opgroup = 2
    tag = TAG

    magic = MAGIC
    label = "queue"
    header_bytes = HEADER_BYTES
    hot_bytes = _HOT.size  # count .. removed

    @classmethod
    def create(cls, registry: Registry, tx: Transaction, name: str, key_codec: str,
               value_codec: str) -> QueueCore:
        buf = registry.pool.buf
        off = cls._new_header(tx, key_codec, value_codec)
        chunk = _new_chunk(tx)
        _HOT.pack_into(buf, off + 8, 0, 0, chunk, CHUNK_HEAD, chunk, CHUNK_HEAD, 0)
        tx.set_root(name, off, TAG)
        return cls(registry, name, off)

    @classmethod
    def open(cls, registry: Registry, name: str, off: int) -> QueueCore:
        return cls(registry, name, off)

    def reload(self) -> None:
        (self.count, self._applied, self.head, self.head_pos, self.tail,
         self.tail_pos, self.removed) = _HOT.unpack_from(self.buf, self.header_off + 8)
        self._serial = 0  # the transaction that last undo-logged the hot header fields
        self._empty_serial = 0  # the transaction that last emptied the queue

    def kill(self) -> None:
        super().kill()
        self.count = 0

    @property
    def applied(self) -> int:
        return self._applied

    # -- reading -----------------------------------------------------------------------

    def _value(self, e: int) -> bytes:
        """The value of the entry at ``e``."""
        if self.u32[(e >> 2) + 1] & FLAG_EXT:
            w = e >> 3
            return read(self.u8, self.u64[w + 2], self.u64[w + 1])
        return read(self.u8, e + 8, self.u32[e >> 2])

    def _size(self, e: int) -> int:
        """Chunk bytes taken by the entry at ``e``."""
        if self.u32[(e >> 2) + 1] & FLAG_EXT:
            return 24
        return (8 + self.u32[e >> 2] + 7) & ~7

    def peek(self) -> bytes | None:
        if not self.count:
            return None
        return self._value(self.head + self.head_pos)

    def positions(self) -> Iterator[tuple[int, int]]:
        """``(chunk, position)`` of every entry, head to tail."""
        chunk, pos = self.head, self.head_pos
        for _ in range(self.count):  # (no view held across a yield: see PQueue.__iter__)
            if chunk != self.tail and pos >= self.u64[(chunk >> 3) + 1]:  # past its end
                chunk, pos = self.u64[chunk >> 3], CHUNK_HEAD
            yield chunk, pos
            pos += self._size(chunk + pos)

    def values(self) -> Iterator[bytes]:
        for chunk, pos in self.positions():
            yield self._value(chunk + pos)

    def values_from(self, skip: int) -> Iterator[bytes]:
        """Values from the ``skip``-th entry after the head on; the skipped
        entries cost a header read each, not a copy."""
        for chunk, pos in itertools.islice(self.positions(), skip, None):
            yield self._value(chunk + pos)

    def page(self, start: int | None, limit: int) -> tuple[int, list[bytes]]:
        """``(seq, values)``: up to ``limit`` values from sequence number ``start``
        (the head's if None or already taken); see the module docstring."""
        skip = 0 if start is None else max(0, start - self.removed)
        return self.removed + skip, list(itertools.islice(self.values_from(skip), limit))

    def dump(self) -> Iterator[tuple[bytes, ...]]:
        yield REMOVED_FIELD, _U64.pack(self.removed)
        for value in self.values():
            yield (value,)

    # -- applying ----------------------------------------------------------------------

    def apply(self, tx: Transaction, index: int, code: int, record: bytes, start: int) -> Any:
        if code == QUEUE_PUT:
            self._hot(tx)
            self.put(tx, record, start)
            result = None
        elif code == QUEUE_GET:
            if start != len(record):
                raise OpDecodeError("QUEUE_GET takes no arguments")
            self._hot(tx)
            result = self.get(tx)
        elif code == QUEUE_CLEAR:
            if start != len(record):
                raise OpDecodeError("QUEUE_CLEAR takes no arguments")
            self._hot(tx)
            self.clear(tx)
            result = None
        else:
            raise OpDecodeError(f"opcode {code:#x} does not apply to a queue")
        self._applied = index
        tx.ready()  # the header's snapshot is durable (see _hot)
        self._store_hot(index)
        return result

    def _store_hot(self, applied: int) -> None:
        """Write the header's hot fields from memory (undo-logged by ``_hot``)."""
        u64 = self.u64
        w = (self.header_off >> 3) + 1
        u64[w] = self.count
        u64[w + 1] = applied
        u64[w + 2] = self.head
        u64[w + 3] = self.head_pos
        u64[w + 4] = self.tail
        u64[w + 5] = self.tail_pos
        u64[w + 6] = self.removed

    def put(self, tx: Transaction, data: bytes, start: int = 0) -> None:
        """Append ``data[start:]``. Cost: the header's undo entry; a chunk every ~50
        small entries."""
        u64 = self.u64  # (one view a line: a tuple of views would box them)
        u32 = self.u32
        vlen = len(data) - start
        if not self.count and self._empty_serial != tx.serial:
            # empty since an earlier transaction: rewind, the chunk's entries are all consumed
            self.head_pos = self.tail_pos = CHUNK_HEAD
        block = 0
        if 8 + vlen > INLINE_MAX:
            block = tx.alloc(vlen)
            write_from(self.u8, block, data, start, vlen)
            need = 24
        else:
            need = (8 + vlen + 7) & ~7
        tail, pos = self.tail, self.tail_pos
        if pos + need > CHUNK_BYTES:
            fresh = _new_chunk(tx)
            if self.count:
                tx.add(tail, 16)
                u64[tail >> 3] = fresh  # next
                u64[(tail >> 3) + 1] = pos  # end
            else:  # emptied earlier in this transaction: the old tail has nothing unread
                tx.free(tail)
                self.head, self.head_pos = fresh, CHUNK_HEAD
            self.tail = tail = fresh
            pos = CHUNK_HEAD
        e = tail + pos
        if block:
            u32[e >> 2] = vlen & 0xFFFFFFFF
            u32[(e >> 2) + 1] = FLAG_EXT
            u64[(e >> 3) + 1] = vlen
            u64[(e >> 3) + 2] = block
            tx.flush(e, 24)
        else:
            u32[e >> 2] = vlen
            u32[(e >> 2) + 1] = 0
            write_from(self.u8, e + 8, data, start, vlen)
            tx.flush(e, 8 + vlen)
        self.tail_pos = pos + need
        self.count += 1

    def get(self, tx: Transaction) -> bytes | None:
        """Pop the head entry; None when empty. Cost: the header's undo entry."""
        if not self.count:
            return None
        head = self.head
        e = head + self.head_pos
        value = self._value(e)
        if self.u32[(e >> 2) + 1] & FLAG_EXT:
            tx.free(self.u64[(e >> 3) + 2])
        self.head_pos += self._size(e)
        self.count -= 1
        self.removed += 1
        if head != self.tail and self.head_pos >= self.u64[(head >> 3) + 1]:  # its end
            self.head, self.head_pos = self.u64[head >> 3], CHUNK_HEAD
            tx.free(head)
        if not self.count:
            self._empty_serial = tx.serial
        return value

    def clear(self, tx: Transaction) -> None:
        """Drop every entry: free value blocks and every chunk but the tail."""
        u64 = self.u64
        for chunk, pos in list(self.positions()):
            e = chunk + pos
            if self.u32[(e >> 2) + 1] & FLAG_EXT:
                tx.free(u64[(e >> 3) + 2])
        chunk = self.head
        while chunk != self.tail:
            nxt = u64[chunk >> 3]
            tx.free(chunk)
            chunk = nxt
        self.head, self.head_pos = self.tail, self.tail_pos
        self.removed += self.count
        self.count = 0
        self._empty_serial = tx.serial

    def destroy(self, tx: Transaction) -> None:
        self.clear(tx)
        tx.free(self.tail)
        tx.free(self.header_off)

    def load(self, tx: Transaction, items: list[tuple[bytes, ...]]) -> None:
        """Bulk append (snapshot restore) inside ``tx``; see :meth:`dump`."""
        for item in items:
            if len(item) == 2 and item[0] == REMOVED_FIELD and len(item[1]) == 8:
                self.removed = _U64.unpack(item[1])[0]
            elif len(item) == 1:
                self.put(tx, bytes(item[0]), 0)
            else:
                raise OpDecodeError(f"queue {self.name!r}: a snapshot item of {len(item)} fields")
        self._store_hot(0)

    # -- checking ------------------------------------------------------------------------

    def check(self) -> None:
        """Walk head to tail; raise StructureCorruptError on any broken invariant."""
        pool = self.pool
        buf = self.buf

        def fail(msg: str) -> None:
            raise StructureCorruptError(f"queue {self.name!r}: {msg}")

        if bytes(buf[self.header_off:self.header_off + 8]) != MAGIC:
            fail("bad magic")
        hot = _HOT.unpack_from(buf, self.header_off + 8)
        mine = (self.count, self._applied, self.head, self.head_pos, self.tail, self.tail_pos,
                self.removed)
        if hot != mine:
            fail(f"header {hot} disagrees with memory {mine}")
        count, _, head, head_pos, tail, tail_pos, _ = hot
        if not CHUNK_HEAD <= tail_pos <= CHUNK_BYTES or not CHUNK_HEAD <= head_pos <= CHUNK_BYTES:
            fail(f"positions {head_pos}, {tail_pos} outside a chunk")
        if count == 0 and head != tail:
            fail("empty, but head and tail chunks differ")
        chunk, pos, seen, chunks = head, head_pos, 0, 0
        while True:
            if not pool.is_allocated(chunk) or pool.usable_size(chunk) < CHUNK_BYTES:
                fail(f"chunk {chunk} is not an allocated {CHUNK_BYTES}-byte block")
            chunks += 1
            if chunks > pool.size // CHUNK_BYTES:
                fail("the chunk list loops")
            end = tail_pos if chunk == tail else _LINK.unpack_from(buf, chunk)[1]
            if not pos <= end <= CHUNK_BYTES:
                fail(f"chunk {chunk}: end {end} before position {pos} or past the chunk")
            if chunk != tail and pos >= end:
                fail(f"chunk {chunk} before the tail holds no unread entry")
            while pos < end:
                n, flags = _HDR.unpack_from(buf, chunk + pos)
                if flags & ~FLAG_EXT:
                    fail(f"chunk {chunk}: entry at {pos} has unknown flags {flags:#x}")
                if flags & FLAG_EXT:
                    vlen, block = _EXT.unpack_from(buf, chunk + pos + 8)
                    if vlen + 8 <= INLINE_MAX or not pool.is_allocated(block) \
                            or pool.usable_size(block) < vlen:
                        fail(f"chunk {chunk}: entry at {pos} has a bad value block")
                    pos += 24
                else:
                    pos += (8 + n + 7) & ~7
                seen += 1
            if pos != end:
                fail(f"chunk {chunk}: entries overrun the end {end}")
            if chunk == tail:
                break
            chunk, pos = _U64.unpack_from(buf, chunk)[0], CHUNK_HEAD
            if not chunk:
                fail("the chunk list ends before the tail")
        if seen != count:
            fail(f"count is {count} but {seen} entries lie between head and tail")


def _new_chunk(tx: Transaction) -> int:
    """A fresh chunk: no next chunk, no end yet (its entry space is left as it is)."""
    chunk = tx.alloc(CHUNK_BYTES)
    tx._buf[chunk:chunk + CHUNK_HEAD] = bytes(CHUNK_HEAD)
    return chunk
