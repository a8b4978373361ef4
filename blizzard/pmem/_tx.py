"""Undo-log transactions.

Protocol (one fence per ``add``, one for the commit, one to retire)::

    add(off, n):  append entry [crc | len | txid | off | old bytes] to the log,
                  persist it                          -- fence
                  (the caller then writes the range in place)
    add(off, n, fence=False): append and flush the entry; the fence of the
                  next add (or ready()) makes it durable, and the caller
                  writes the range only after that fence
    commit:       flush every touched range (merged), drain   -- fence
                  txid += 1, persist the log header word     -- fence: retired
    abort/crash:  copy old bytes back in reverse order, persist, txid += 1

An entry is live when its txid equals the log header's txid and its CRC-32
matches; entries of earlier transactions carry smaller txids, so retiring a
transaction is a single 8-byte store. A torn entry fails its CRC; a range is
stored to only after a fence that followed its entry and every entry before
it, so the range of a torn entry, and of every entry after it, was not yet
modified: recovery stops at the first entry that fails.

Log entry (8-byte aligned)::

    offset | size | field
    0      | 4    | CRC-32 of bytes [4, 24 + len)
    4      | 4    | len
    8      | 8    | txid
    16     | 8    | off (pool offset of the range)
    24     | len  | the range's bytes before the transaction

Log header (64 bytes at ``log_off``): word 0 txid, word 1 offset of the first
overflow segment (0 = none). When an entry does not fit, a segment of whole
chunks (kind LOG) is taken from the heap and linked; a segment's 64-byte
header is txid, next segment, capacity. Segments are freed after the
transaction ends; ones left by a crash are freed at open.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING
from zlib import crc32

from blizzard.exceptions import PoolClosedError, TransactionError
from blizzard.pmem._layout import CHUNK_SIZE, LOG_HEADER_SIZE, align
from blizzard.pmem._mem import views
from blizzard.pmem._undolog import ENTRY_HEADER, ENTRY_HEADER_SIZE, UndoLog

if TYPE_CHECKING:
    from blizzard.pmem.pool import Pool

SEGMENT_HEADER = struct.Struct("<QQQ")
SEGMENT_CHUNKS_MIN = 4


class Transaction:
    """The pool's one transaction object, reused; see :meth:`Pool.transaction`.

    The log's hot path (append an entry, commit) lives in ``_undolog``; this
    class adds nesting, allocation, frees, roots and overflow segments.
    Typed Python: compiled with the C types of ``_tx.pxd`` where a compiler
    was present at install time. Not thread-safe: a pool is driven by one
    thread at a time (the replicator's apply loop serialises mutations).
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._buf = pool.buf
        _, _, self._u64 = views(pool.buf, pool.size)
        self._alloc = pool._allocator
        self._next_word = (pool._log_off >> 3) + 1
        self._log = UndoLog(
            pool.media,
            pool.size,
            pool._dir_off,  # data_lo: header and log are never added
            pool._log_off + LOG_HEADER_SIZE,
            pool._log_off + pool._log_size,
            pool._log_off,
        )
        self._depth = 0
        #: Bumped by every outermost transaction: lets callers do something once per
        #: transaction (undo-log a header, say) by remembering the serial they did it in.
        self.serial = 0
        self._words: set[int] = set()
        self._frees: list = []
        self._segments: list[tuple[int, int]] = []
        self._on_commit: list[Callable[[], None]] = []
        self._observer: Callable[[int, int], None] | None = None

    def _reset(self) -> None:
        """Forget the ended transaction (after an abort)."""
        self._log.reset()
        self._words.clear()
        self._frees.clear()
        self._segments.clear()
        self._on_commit.clear()

    # -- context manager -----------------------------------------------------------

    def __enter__(self) -> Transaction:
        if self._depth == 0:
            if self._pool._closed:
                raise PoolClosedError("the pool is closed")
            self.serial += 1
        self._depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._depth -= 1
        if self._depth:
            return  # nested: the outermost transaction decides
        if exc_type is None:
            self._commit()
            if self._on_commit:
                callbacks, self._on_commit = self._on_commit, []
                for callback in callbacks:
                    callback()
        else:
            self._pool._abort()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the outermost transaction has committed.

        For volatile state that may change only once the change is durable
        (a dropped structure's handles): if the transaction rolls back
        instead, the callback is discarded.
        """
        if not self._depth:
            raise TransactionError("on_commit() outside a transaction")
        self._on_commit.append(callback)

    @property
    def active(self) -> bool:
        return self._depth > 0

    # -- the undo log ----------------------------------------------------------------

    def add(self, off: int, n: int, fence: bool = True) -> None:
        """Snapshot ``[off, off+n)`` so an abort or crash restores it.

        Call before the first store to a range that existed before this
        transaction (fresh blocks from :meth:`alloc` need none). Costs one
        persist (a fence) of ``n + 24`` bytes; the range is flushed at commit.

        ``fence=False`` saves the fence when another ``add`` will follow before
        the range is stored to (its fence covers both), or else :meth:`ready`:
        until one of them, the snapshot may not be durable, and a store to the
        range could reach the media before it.
        """
        if not self._depth:
            raise TransactionError("add() outside a transaction")
        if self._observer is not None:
            self._observer(off, n)
        done = self._log.add(off, n, fence)
        if done != 1:
            if done < 0:
                raise TransactionError(
                    f"range [{off}, {off + n}) is outside the pool's data area "
                    f"[{self._pool._dir_off}, {self._pool.size})"
                )
            self._overflow(n)
            done = self._log.add(off, n, fence)
            assert done == 1, done

    def ready(self) -> None:
        """Make every snapshot taken with ``add(..., fence=False)`` durable (a fence, if
        one is still owed): call before storing to its range."""
        self._log.ready()

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """``add(off, len(data))`` then store ``data`` at ``off``."""
        n = len(data)
        self.add(off, n)
        self._buf[off : off + n] = data

    def flush(self, off: int, n: int) -> None:
        """Start writing back ``[off, off+n)``, stored outside the undo log (memory no
        committed state refers to yet); durable at the commit's fence."""
        if self._observer is not None:
            self._observer(off, n)
        self._log.flush(off, n)

    def _add_word(self, word: int) -> None:
        """``add`` of one 8-byte word, at most once per transaction."""
        if word not in self._words:
            self._words.add(word)
            self.add(word << 3, 8)

    def observe(self, callback: Callable[[int, int], None] | None) -> None:
        """Call ``callback(off, n)`` before every range is undo-logged or marked
        fresh (None: stop). While off it costs one comparison per range."""
        self._observer = callback

    def _touch(self, off: int, n: int) -> None:
        """Flush ``[off, off+n)`` at commit (fresh memory: nothing to undo)."""
        if self._observer is not None:
            self._observer(off, n)
        self._log.touch(off, n)

    def _overflow(self, n: int) -> None:
        """Link a new log segment big enough for an ``n``-byte entry.

        A segment of ``SEGMENT_CHUNKS_MIN`` chunks is preferred (fewer links
        in a long transaction); in a fragmented pool, any free extent that
        holds the entry will do.
        """
        need = LOG_HEADER_SIZE + ENTRY_HEADER_SIZE + align(n, 8)
        fit = -(-need // CHUNK_SIZE)
        persist = self._pool.media.persist
        seg, chunks = self._alloc.take_log_chunks(fit, max(SEGMENT_CHUNKS_MIN, fit), persist)
        capacity = chunks * CHUNK_SIZE
        SEGMENT_HEADER.pack_into(self._buf, seg, self._log.txid, 0, capacity)
        persist(seg, SEGMENT_HEADER.size)
        link = (self._segments[-1][0] + 8) >> 3 if self._segments else self._next_word
        self._u64[link] = seg
        persist(link << 3, 8)
        self._segments.append((seg, chunks))
        self._log.move_to(seg + LOG_HEADER_SIZE, seg + capacity)

    # -- allocation ------------------------------------------------------------------

    def alloc(self, size: int, zero: bool = False) -> int:
        """Allocate a block of at least ``size`` bytes; returns its offset.

        The block's contents are undefined unless ``zero``; they are flushed
        at commit, and the block is freed again if the transaction aborts.
        Raises :class:`PoolFullError` (the transaction then rolls back).
        """
        if not self._depth:
            raise TransactionError("alloc() outside a transaction")
        off = self._alloc.alloc(self, size)
        if zero:
            self._buf[off : off + size] = bytes(size)
        return off

    def free(self, off: int) -> None:
        """Free the block at ``off``; reusable once the transaction commits."""
        if not self._depth:
            raise TransactionError("free() outside a transaction")
        self._alloc.free(self, off)

    # -- roots -------------------------------------------------------------------------

    def set_root(self, name: str, off: int, tag: bytes = b"") -> None:
        """Bind ``name`` to the block at ``off`` (``tag`` says what it is)."""
        if not self._depth:
            raise TransactionError("set_root() outside a transaction")
        self._pool._directory.set(self, name, off, tag)

    def delete_root(self, name: str) -> None:
        """Remove the name (the block itself is not freed)."""
        if not self._depth:
            raise TransactionError("delete_root() outside a transaction")
        self._pool._directory.delete(self, name)

    # -- ending ------------------------------------------------------------------------

    def _commit(self) -> None:
        """Flush touched ranges, fence, retire; then drop segments, reuse frees."""
        self._log.commit()
        if self._segments:
            persist = self._pool.media.persist
            self._u64[self._next_word] = 0
            persist(self._next_word << 3, 8)
            for seg, chunks in self._segments:
                self._alloc.release_log_chunks(seg, chunks, persist)
            self._segments.clear()
        if self._frees:
            self._alloc.commit_frees(self._frees)
            self._frees.clear()
        if self._words:
            self._words.clear()

    def _release(self) -> None:
        self._log.release()
        self._u64 = None  # type: ignore[assignment]


def live_entries(pool: Pool) -> list[tuple[int, int, int]]:
    """The live undo entries ``(entry_pos, off, len)`` in log order."""
    u64 = pool._u64
    buf = pool.buf
    txid_word = pool._log_off >> 3
    txid = u64[txid_word]
    entries = []
    pos = pool._log_off + LOG_HEADER_SIZE
    end = pool._log_off + pool._log_size
    link = txid_word + 1
    seen_segments = 0
    while True:
        while pos + ENTRY_HEADER_SIZE <= end:
            crc, n, entry_txid, off = ENTRY_HEADER.unpack_from(buf, pos)
            body_end = pos + ENTRY_HEADER_SIZE + n
            if (
                entry_txid != txid
                or body_end > end
                or off < pool._dir_off
                or off + n > pool.size
                or crc != crc32(buf[pos + 4 : body_end])
            ):
                break
            entries.append((pos, off, n))
            pos = (body_end + 7) & ~7
        seg = u64[link]
        if not seg or seen_segments >= pool._nchunks:
            break
        if (
            seg < pool._heap_off
            or (seg - pool._heap_off) % CHUNK_SIZE
            or seg + LOG_HEADER_SIZE > pool.size
        ):
            break
        seg_txid, _, capacity = SEGMENT_HEADER.unpack_from(buf, seg)
        if seg_txid != txid or seg + capacity > pool.size:
            break
        seen_segments += 1
        pos, end, link = seg + LOG_HEADER_SIZE, seg + capacity, (seg + 8) >> 3
    return entries


def roll_back(pool: Pool) -> int:
    """Undo the live transaction, if any, and retire it. Returns entries undone.

    Idempotent: a crash during roll back leaves the same live entries, and
    copying old bytes back twice is harmless.
    """
    entries = live_entries(pool)
    media = pool.media
    buf = pool.buf
    txid_word = pool._log_off >> 3
    for pos, off, n in reversed(entries):
        body = pos + ENTRY_HEADER_SIZE
        buf[off : off + n] = buf[body : body + n]
        media.flush(off, n)
    if entries:
        media.drain()
        pool._u64[txid_word] += 1
        media.persist(txid_word << 3, 8)
    if pool._u64[txid_word + 1]:
        pool._u64[txid_word + 1] = 0
        media.persist((txid_word + 1) << 3, 8)
    return len(entries)
