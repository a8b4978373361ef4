"""The allocator: size-class runs for small blocks, chunk extents for large.

Persistent state is only the chunk table and the runs' bitmaps; both change
only inside a transaction (every word is undo-logged first), so a crash
never leaks or double-allocates a block. Everything else here is a volatile
index rebuilt from that state on open (and after an abort):

* ``_free``: free chunk extents ``[start, count]``, sorted, coalesced;
* ``_partial[c]``: runs of class ``c`` with at least one free block;
* ``_owner[chunk]``: the Run or extent that owns a chunk (None when free).

A run's list of free slots is built lazily from its bitmap, the first time
a block is taken from it, so opening a large pool costs a popcount per run.
Frees become reusable only at commit: a block freed by a transaction that
then aborts is still in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blizzard.exceptions import (
    InvalidSizeError,
    PoolCorruptError,
    PoolFullError,
    TransactionError,
    UndoLogFullError,
)
from blizzard.pmem._layout import (
    CHUNK_SIZE,
    CLASS_FOR,
    KIND_EXTENT,
    KIND_FREE,
    KIND_LOG,
    KIND_RUN,
    SIZE_CLASSES,
    SMALL_MAX,
    SizeClass,
    chunk_word,
    split_chunk_word,
)

if TYPE_CHECKING:
    from blizzard.pmem._tx import Transaction

ALLOC_SIZE_MAX = 1 << 40
BIT = 1  # an unsigned 64-bit one in the compiled build (_alloc.pxd): bit 63 of a bitmap word


class Run:
    """Volatile view of a run: ``cls.nblocks`` blocks of ``cls.size`` bytes."""

    def __init__(self, cls: SizeClass, chunk: int, base: int, used: int) -> None:
        self.cls = cls
        self.size = cls.size
        self.index = cls.index
        self.chunk = chunk
        self.bitmap_word = base >> 3
        self.data_off = base + cls.data_start
        self.used = used
        self.free: list[int] | None = None  # built on first use
        self.listed = False


class Extent:
    """Volatile view of an allocated extent of whole chunks."""

    def __init__(self, chunk: int, count: int) -> None:
        self.chunk = chunk
        self.count = count


class Allocator:
    """Allocates and frees blocks inside transactions; see the module docstring.

    Typed Python: compiled with the C types of ``_alloc.pxd`` where a
    compiler was present at install time.
    """

    def __init__(
        self, u64: memoryview, buf: memoryview, *, table_off: int, heap_off: int, nchunks: int
    ) -> None:
        self._u64 = u64
        self._buf = buf
        self._table_word = table_off >> 3
        self._heap_off = heap_off
        self._nchunks = nchunks
        self.rebuild()

    # -- rebuilding the volatile index --------------------------------------------

    def rebuild(self) -> list[tuple[int, int]]:
        """Rebuild every volatile index from the chunk table and bitmaps.

        Returns the ``(chunk, count)`` blocks of kind LOG found: overflow log
        segments left by a crash, which the caller frees.
        """
        u64 = self._u64
        table = self._table_word
        n = self._nchunks
        self._free: list[list[int]] = []
        self._partial: list[list[Run]] = [[] for _ in SIZE_CLASSES]
        self._owner: list[Run | Extent | None] = [None] * n
        self._used_bytes = 0
        logs = []
        chunk = 0
        while chunk < n:
            kind, size_class, count = split_chunk_word(u64[table + chunk])
            if count < 1 or chunk + count > n:
                raise PoolCorruptError(
                    f"chunk {chunk}: header claims {count} chunks, heap has {n - chunk} left"
                )
            if kind in (KIND_FREE, KIND_LOG):
                if kind == KIND_LOG:
                    logs.append((chunk, count))
                self._insert_free(chunk, count)
            elif kind == KIND_EXTENT:
                extent = Extent(chunk, count)
                for i in range(chunk, chunk + count):
                    self._owner[i] = extent
                self._used_bytes += count * CHUNK_SIZE
            elif kind == KIND_RUN:
                if size_class >= len(SIZE_CLASSES) or SIZE_CLASSES[size_class].chunks != count:
                    raise PoolCorruptError(f"chunk {chunk}: run of unknown size class {size_class}")
                cls = SIZE_CLASSES[size_class]
                base = self._heap_off + chunk * CHUNK_SIZE
                bits = self._buf[base : base + cls.bitmap_words * 8]
                used = int.from_bytes(bits, "little").bit_count()
                if used > cls.nblocks:
                    raise PoolCorruptError(f"chunk {chunk}: bitmap marks blocks past the run's end")
                run = Run(cls, chunk, base, used)
                for i in range(chunk, chunk + count):
                    self._owner[i] = run
                self._used_bytes += used * cls.size
                if used < cls.nblocks:
                    self._list(run)
            else:
                raise PoolCorruptError(f"chunk {chunk}: unknown chunk kind {kind}")
            chunk += count
        return logs

    def _list(self, run: Run) -> None:
        if not run.listed:
            run.listed = True
            self._partial[run.index].append(run)

    def _insert_free(self, chunk: int, count: int) -> None:
        """Add a free extent to the sorted, coalesced list."""
        free = self._free
        lo, hi = 0, len(free)
        while lo < hi:
            mid = (lo + hi) // 2
            if free[mid][0] < chunk:
                lo = mid + 1
            else:
                hi = mid
        if lo > 0 and free[lo - 1][0] + free[lo - 1][1] == chunk:
            free[lo - 1][1] += count
            lo -= 1
        else:
            free.insert(lo, [chunk, count])
        if lo + 1 < len(free) and free[lo][0] + free[lo][1] == free[lo + 1][0]:
            free[lo][1] += free[lo + 1][1]
            del free[lo + 1]

    def _take_chunks(self, count: int, what: str) -> tuple[int, int]:
        """First fit: returns (start, length of the free extent it came from)."""
        for i, (start, length) in enumerate(self._free):
            if length >= count:
                if length == count:
                    del self._free[i]
                else:
                    self._free[i][0] += count
                    self._free[i][1] -= count
                return start, length
        largest = max((length for _, length in self._free), default=0) * CHUNK_SIZE
        raise PoolFullError(
            f"pool full: cannot allocate {what}; largest free extent is {largest} bytes "
            f"of {self._nchunks * CHUNK_SIZE} (the transaction was rolled back)"
        )

    # -- allocation (inside a transaction) -------------------------------------------

    def alloc(self, tx: Transaction, size: int) -> int:
        """Allocate ``size`` bytes; the block is flushed when ``tx`` commits."""
        if size <= SMALL_MAX:
            if size <= 0:
                raise InvalidSizeError(f"allocation size must be positive, got {size}")
            index = CLASS_FOR[(size + 15) >> 4]
            runs = self._partial[index]
            while runs:
                run = runs[-1]
                free = run.free
                if free is None:
                    free = run.free = self._free_slots(run, tx._frees)
                if free:
                    break
                runs.pop()
                run.listed = False
            else:
                run = self._new_run(tx, SIZE_CLASSES[index])
                free = run.free
                assert free is not None  # a new run lists every slot
            slot = free.pop()
            run.used += 1
            word = run.bitmap_word + (slot >> 6)
            tx._add_word(word)
            self._u64[word] |= BIT << (slot & 63)
            off = run.data_off + slot * run.size
            tx._touch(off, run.size)
            self._used_bytes += run.size
            return off
        if size > ALLOC_SIZE_MAX:
            raise InvalidSizeError(
                f"allocation of {size} bytes exceeds the {ALLOC_SIZE_MAX}-byte maximum"
            )
        count = -(-size // CHUNK_SIZE)
        chunk = self._claim(tx, count, chunk_word(KIND_EXTENT, count), f"{size} bytes")
        extent = Extent(chunk, count)
        for i in range(chunk, chunk + count):
            self._owner[i] = extent
        off = self._heap_off + chunk * CHUNK_SIZE
        tx._touch(off, size)
        self._used_bytes += count * CHUNK_SIZE
        return off

    def _claim(self, tx: Transaction, count: int, header: int, what: str) -> int:
        """Take ``count`` free chunks and log their header (and the remainder's)."""
        start, length = self._take_chunks(count, what)
        table = self._table_word
        tx._add_word(table + start)
        self._u64[table + start] = header
        if length > count:
            tx._add_word(table + start + count)
            self._u64[table + start + count] = chunk_word(KIND_FREE, length - count)
        return start

    def _new_run(self, tx: Transaction, cls: SizeClass) -> Run:
        chunk = self._claim(
            tx,
            cls.chunks,
            chunk_word(KIND_RUN, cls.chunks, cls.index),
            f"a run of {cls.size}-byte blocks",
        )
        base = self._heap_off + chunk * CHUNK_SIZE
        nbytes = cls.bitmap_words * 8
        self._buf[base : base + nbytes] = bytes(nbytes)  # fresh chunks: no undo needed
        tx._touch(base, nbytes)
        run = Run(cls, chunk, base, 0)
        run.free = list(range(cls.nblocks - 1, -1, -1))
        for i in range(chunk, chunk + cls.chunks):
            self._owner[i] = run
        self._list(run)
        return run

    def _free_slots(self, run: Run, pending: list[tuple[Run | Extent, int]]) -> list[int]:
        """Free slot numbers of a run, highest first (so pop() takes the lowest).

        Slots freed by the live transaction (``pending``) have their bit clear
        already but become reusable only at commit, so they are left out.
        """
        cls = run.cls
        base = run.bitmap_word << 3
        bits = int.from_bytes(self._buf[base : base + cls.bitmap_words * 8], "little")
        for owner, slot in pending:
            if owner is run:
                bits |= 1 << slot
        return [slot for slot in range(cls.nblocks - 1, -1, -1) if not (bits >> slot) & 1]

    def take_log_chunks(self, count_min: int, count_max: int, persist) -> tuple[int, int]:
        """Chunks for an overflow log segment, outside any transaction.

        Takes ``count_max`` chunks where a free extent that long exists (first
        fit), else as much of the largest free extent as there is, if that is
        at least ``count_min``: a fragmented pool still lets a transaction's
        log grow, one chunk at a time if need be. The headers are persisted
        at once (kind LOG, plus the remainder of the free extent), so no undo
        entry is needed: LOG chunks are freed when the transaction ends, or by
        ``rebuild`` at the next open. Returns ``(offset, chunks)``; raises
        :class:`UndoLogFullError` when no free extent has ``count_min`` chunks.
        """
        assert 1 <= count_min <= count_max, (count_min, count_max)
        free = self._free
        pick = next((i for i, (_, length) in enumerate(free) if length >= count_max), None)
        if pick is None:
            pick = max(range(len(free)), key=lambda i: free[i][1], default=None)
            if pick is None or free[pick][1] < count_min:
                largest = free[pick][1] * CHUNK_SIZE if pick is not None else 0
                raise UndoLogFullError(
                    f"pool full: the undo log could not grow: its next segment needs "
                    f"{count_min * CHUNK_SIZE} contiguous bytes and the largest free extent "
                    f"is {largest} bytes of {self._nchunks * CHUNK_SIZE} "
                    f"(the transaction was rolled back)",
                    needed=count_min * CHUNK_SIZE,
                    largest_free_extent=largest,
                )
        start, length = free[pick]
        count = min(count_max, length)
        if length == count:
            del free[pick]
        else:
            free[pick][0] += count
            free[pick][1] -= count
        u64, table = self._u64, self._table_word
        if length > count:
            u64[table + start + count] = chunk_word(KIND_FREE, length - count)
            persist((table + start + count) << 3, 8)
        u64[table + start] = chunk_word(KIND_LOG, count)
        persist((table + start) << 3, 8)
        return self._heap_off + start * CHUNK_SIZE, count

    def release_log_chunks(self, off: int, count: int, persist) -> None:
        """Free an overflow segment once its transaction has ended."""
        chunk = (off - self._heap_off) // CHUNK_SIZE
        word = self._table_word + chunk
        self._u64[word] = chunk_word(KIND_FREE, count)
        persist(word << 3, 8)
        self._insert_free(chunk, count)

    # -- free (inside a transaction) -----------------------------------------------

    def locate(self, off: int) -> tuple[Run | Extent, int]:
        """The owner of the block starting at ``off``, and its slot (0 for extents)."""
        rel = off - self._heap_off
        chunk = rel // CHUNK_SIZE
        owner = self._owner[chunk] if rel >= 0 and chunk < self._nchunks else None
        if owner is None:
            raise TransactionError(f"offset {off} is not an allocated block")
        if isinstance(owner, Run):
            cls = owner.cls
            slot, rem = divmod(off - owner.data_off, cls.size)
            if off < owner.data_off or rem or slot >= cls.nblocks:
                raise TransactionError(f"offset {off} is not the start of a block")
            word = owner.bitmap_word + (slot >> 6)
            if not (self._u64[word] >> (slot & 63)) & 1:
                raise TransactionError(f"offset {off} is not an allocated block (double free?)")
            return owner, slot
        if off != self._heap_off + owner.chunk * CHUNK_SIZE:
            raise TransactionError(f"offset {off} is not the start of a block")
        if self._u64[self._table_word + owner.chunk] & 0xFF != KIND_EXTENT:
            # freed earlier in this transaction: the index catches up at commit
            raise TransactionError(f"offset {off} is not an allocated block (double free?)")
        return owner, 0

    def free(self, tx: Transaction, off: int) -> None:
        owner, slot = self.locate(off)
        if isinstance(owner, Run):
            word = owner.bitmap_word + (slot >> 6)
            tx._add_word(word)
            self._u64[word] &= ~(BIT << (slot & 63))
        else:
            word = self._table_word + owner.chunk
            tx._add_word(word)
            self._u64[word] = chunk_word(KIND_FREE, owner.count)
        tx._frees.append((owner, slot))

    def commit_frees(self, frees: list[tuple[Run | Extent, int]]) -> None:
        """Make blocks freed by a committed transaction reusable."""
        for owner, slot in frees:
            if isinstance(owner, Run):
                owner.used -= 1
                self._used_bytes -= owner.cls.size
                if owner.free is not None:
                    owner.free.append(slot)
                self._list(owner)
            else:
                for i in range(owner.chunk, owner.chunk + owner.count):
                    self._owner[i] = None
                self._used_bytes -= owner.count * CHUNK_SIZE
                self._insert_free(owner.chunk, owner.count)

    def release(self) -> None:
        """Let go of the pool's memory (the pool is closing)."""
        self._u64 = None  # type: ignore[assignment]
        self._buf = None  # type: ignore[assignment]

    # -- questions ------------------------------------------------------------------

    def usable_size(self, off: int) -> int:
        owner, _ = self.locate(off)
        if isinstance(owner, Run):
            return owner.cls.size
        return owner.count * CHUNK_SIZE

    def is_allocated(self, off: int) -> bool:
        try:
            self.locate(off)
        except TransactionError:
            return False
        return True

    def stats(self) -> dict[str, int]:
        free_chunks = sum(length for _, length in self._free)
        largest = max((length for _, length in self._free), default=0) * CHUNK_SIZE
        run_free = 0
        seen = set()
        for owner in self._owner:
            if isinstance(owner, Run) and id(owner) not in seen:
                seen.add(id(owner))
                run_free += (owner.cls.nblocks - owner.used) * owner.cls.size
        return {
            "capacity": self._nchunks * CHUNK_SIZE,
            "used": self._used_bytes,
            "free": free_chunks * CHUNK_SIZE + run_free,
            "largest_free_extent": largest,
        }

    def check(self) -> None:
        """Verify the volatile index against the persistent state, and both."""
        u64 = self._u64
        chunk = 0
        used = 0
        free_chunks: list[list[int]] = []
        while chunk < self._nchunks:
            kind, size_class, count = split_chunk_word(u64[self._table_word + chunk])
            if count < 1 or chunk + count > self._nchunks:
                raise PoolCorruptError(f"chunk {chunk}: bad chunk count {count}")
            owners = {id(self._owner[i]) for i in range(chunk, chunk + count)}
            if len(owners) != 1:
                raise PoolCorruptError(f"chunks {chunk}..{chunk + count}: mixed owners")
            owner = self._owner[chunk]
            if kind == KIND_FREE:
                if owner is not None:
                    raise PoolCorruptError(f"chunk {chunk}: free but owned")
                if free_chunks and free_chunks[-1][0] + free_chunks[-1][1] == chunk:
                    free_chunks[-1][1] += count
                else:
                    free_chunks.append([chunk, count])
            elif kind == KIND_EXTENT:
                if not isinstance(owner, Extent) or owner.chunk != chunk or owner.count != count:
                    raise PoolCorruptError(f"chunk {chunk}: extent index disagrees")
                used += count * CHUNK_SIZE
            elif kind == KIND_RUN:
                cls = SIZE_CLASSES[size_class]
                if not isinstance(owner, Run) or owner.chunk != chunk or owner.cls is not cls:
                    raise PoolCorruptError(f"chunk {chunk}: run index disagrees")
                base = owner.bitmap_word << 3
                bits = int.from_bytes(self._buf[base : base + cls.bitmap_words * 8], "little")
                if bits >> cls.nblocks:
                    raise PoolCorruptError(f"chunk {chunk}: bitmap bits past the last block")
                if bits.bit_count() != owner.used:
                    raise PoolCorruptError(
                        f"chunk {chunk}: bitmap has {bits.bit_count()} blocks, index {owner.used}"
                    )
                if owner.free is not None:
                    expect = [s for s in range(cls.nblocks) if not (bits >> s) & 1]
                    if sorted(owner.free) != expect:
                        raise PoolCorruptError(
                            f"chunk {chunk}: free slot list disagrees with bitmap"
                        )
                if owner.used < cls.nblocks and not owner.listed:
                    raise PoolCorruptError(f"chunk {chunk}: run with free blocks is not listed")
                used += owner.used * cls.size
            else:
                raise PoolCorruptError(f"chunk {chunk}: kind {kind} outside a transaction")
            chunk += count
        if free_chunks != self._free:
            raise PoolCorruptError(f"free extent index {self._free} != chunk table {free_chunks}")
        if used != self._used_bytes:
            raise PoolCorruptError(f"used bytes {self._used_bytes} != {used} from the chunk table")
