"""The undo log's hot path: append entries, and commit.

Typed Python, compiled where a compiler was present at install time (C
types in ``_undolog.pxd``) and interpreted elsewhere; the entry format is
documented in ``_tx``.

Flushing: the log makes every range durable through its media. When the
media offers ``native()`` C functions (libpmem's, or none for DRAM) the
compiled log calls them directly, without entering Python; otherwise --
the crash simulator, msync, any wrapper that observes flushes, or the
interpreted build -- it calls the media's ``flush`` / ``drain`` /
``persist`` methods, one call per range and per fence, so a wrapping media
sees every range the log makes durable. Structures flush the ranges they
write outside the log (fresh heap) through :meth:`UndoLog.flush` too.

The interface: ``add(off, n, fence=True) -> 1`` (logged and persisted), ``0`` (no room
left in the current area: the caller links an overflow segment with
``move_to`` and retries) or ``-1`` (range outside the data area);
``ready()`` (fence an entry logged with ``fence=False``);
``touch(off, n)`` (flush at commit); ``commit() -> bool`` (flush the
touched ranges, fence, retire the transaction; False if nothing was
logged); ``reset()``; ``release()``; attributes ``pos``, ``txid``,
``logged``.
"""

from __future__ import annotations

import struct
import zlib

import cython

from blizzard.pmem.media import Media

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import address, call_fence, call_range, crc32, move
else:
    from blizzard.pmem._mem import address, call_fence, call_range, crc32, move
from blizzard.pmem._mem import views

if not cython.compiled:  # the compiled build has these as C constants (_undolog.pxd)
    ENTRY_HEADER_SIZE = 24
    LINE_MASK = 63  # ranges whose gap stays within a cache line are flushed together
ENTRY_HEADER = struct.Struct("<IIQQ")
assert ENTRY_HEADER.size == ENTRY_HEADER_SIZE


def _words(n: int) -> memoryview:
    """``n`` zeroed u64 words, one C array."""
    return memoryview(bytearray(8 * n)).cast("Q")


class UndoLog:
    """Appends undo entries and commits; see the module docstring."""

    def __init__(self, media: Media, size: int, data_lo: int, log_start: int, area_end: int,
                 txid_off: int) -> None:
        if log_start >= area_end or area_end > size or txid_off + 8 > size or size > media.size:
            raise ValueError("undo log regions outside the media")
        self._u8, self._u32, self._u64 = views(media.buf, size)
        self._size = size
        self._data_lo = data_lo
        self._log_start = log_start
        self._area_end = area_end
        self._txid_word = txid_off >> 3
        assert not txid_off & 7
        self._media_flush, self._media_drain, self._media_persist = (
            media.flush, media.drain, media.persist)
        native = media.native()
        #: Whether this log flushes through the media's C functions (compiled build only).
        self.native = False
        self._c_flush = self._c_drain = self._c_persist = self._base = 0
        if cython.compiled and native is not None:
            self.native = True
            self._c_flush, self._c_drain, self._c_persist = native
            self._base = address(self._u8)
        if not cython.compiled:
            # Interpreted, the three methods below would only add a call per range.
            self.flush, self.drain, self.persist = (  # type: ignore[method-assign]
                media.flush, media.drain, media.persist)
        # The ranges to flush at commit: compiled, (off, n) word pairs in one C array
        # (a tuple per range, and sorting tuples, were ~8% of a hash map put);
        # interpreted, a list of tuples, which the interpreter sorts fastest.
        self._ranges: list[tuple[int, int]] = []
        self._rv = _words(32)
        self._nr = 0
        self.pos = self._end = log_start  # (reset() sets them, and the txid)
        self.txid = 0
        #: An entry was logged with ``fence=False`` and no fence has followed yet.
        self.unfenced = False
        self.reset()

    @property
    def logged(self) -> bool:
        return self.pos != self._log_start

    # -- making ranges durable ---------------------------------------------------------

    def flush(self, off: int, n: int) -> None:
        """Start writing back ``[off, off+n)``; durable at the next fence."""
        if self.native:
            if self._c_flush:
                call_range(self._c_flush, self._base + off, n)
        else:
            self._media_flush(off, n)

    def persist(self, off: int, n: int) -> None:
        """Flush ``[off, off+n)`` and fence."""
        if self.native:
            if self._c_persist:
                call_range(self._c_persist, self._base + off, n)
        else:
            self._media_persist(off, n)

    def drain(self) -> None:
        """The fence: every flush issued before is durable when this returns."""
        if self.native:
            if self._c_drain:
                call_fence(self._c_drain)
        else:
            self._media_drain()

    # -- the log ---------------------------------------------------------------------------

    def add(self, off: int, n: int, fence: bool = True) -> int:
        """Log ``[off, off+n)`` as an entry and persist it; see the module docstring.

        ``fence=False`` flushes the entry without the fence: the next fenced
        ``add``, or :meth:`ready`, makes it durable, and the range must not be
        stored to before that. A snapshot taken first and stored to last (a
        structure's header) then shares the fence of the entry after it.
        """
        if off < self._data_lo or n <= 0 or off + n > self._size:
            return -1
        pos = self.pos
        body = pos + ENTRY_HEADER_SIZE
        end = body + n
        if end > self._end:
            return 0
        # [crc | len | txid | off | old bytes]; the CRC covers everything after itself
        self._u32[(pos >> 2) + 1] = n
        self._u64[(pos >> 3) + 1] = self.txid
        self._u64[(pos >> 3) + 2] = off
        if cython.compiled:
            move(self._u8, body, off, n)
            self._u32[pos >> 2] = crc32(self._u8, pos + 4, end - pos - 4)
        else:  # the same, two Python calls fewer (the interpreted log's hot path)
            u8 = self._u8
            u8[body:end] = u8[off:off + n]
            self._u32[pos >> 2] = zlib.crc32(u8[pos + 4:end])
        if fence:
            self.persist(pos, end - pos)
            self.unfenced = False
        else:
            self.flush(pos, end - pos)
            self.unfenced = True
        self.pos = (end + 7) & ~7
        if cython.compiled:
            self._note(off, n)
        else:
            self._ranges.append((off, n))
        return 1

    def ready(self) -> None:
        """Fence if an entry logged with ``fence=False`` is not durable yet: call
        before the first store to its range."""
        if self.unfenced:
            self.drain()
            self.unfenced = False

    def touch(self, off: int, n: int) -> None:
        """Flush ``[off, off+n)`` at commit (fresh memory: nothing to undo)."""
        if cython.compiled:
            self._note(off, n)
        else:
            self._ranges.append((off, n))

    def _note(self, off: int, n: int) -> int:
        """Append ``(off, n)`` to the C array of ranges (compiled build)."""
        i = 2 * self._nr
        if i == len(self._rv):
            self._grow_ranges()
        self._rv[i] = off
        self._rv[i + 1] = n
        self._nr += 1
        return 0

    def _grow_ranges(self) -> None:
        """Double the C array of ranges. Kept out of ``_note``, which runs for every
        undo-logged range: a function zeroes its memoryview temporaries on every call."""
        i = len(self._rv)
        grown = _words(2 * i)
        grown[:i] = self._rv
        self._rv = grown

    @cython.boundscheck(False)  # indexes stay below 2 * _nr <= len(_rv) (_note grows it)
    @cython.wraparound(False)
    def _sort_ranges(self) -> None:
        """Sort the C array's ranges by offset, in place: a Shell sort, as a
        transaction's few ranges arrive mostly in order (compiled build)."""
        nr = self._nr
        for gap in (701, 301, 132, 57, 23, 10, 4, 1):
            for i in range(gap, nr):
                off = self._rv[2 * i]
                n = self._rv[2 * i + 1]
                j = i
                while j >= gap and self._rv[2 * (j - gap)] > off:
                    self._rv[2 * j] = self._rv[2 * (j - gap)]
                    self._rv[2 * j + 1] = self._rv[2 * (j - gap) + 1]
                    j -= gap
                self._rv[2 * j] = off
                self._rv[2 * j + 1] = n

    def commit(self) -> bool:
        """Flush the touched ranges (merged), fence, retire the transaction."""
        ranges = self._ranges
        if self.pos == self._log_start:
            ranges.clear()
            self._nr = 0
            return False
        if cython.compiled:
            if self._nr:
                self._sort_ranges()
                start = self._rv[0]  # (the field itself: a local view costs an acquisition)
                end = start + self._rv[1]
                for i in range(1, self._nr):
                    off = self._rv[2 * i]
                    n = self._rv[2 * i + 1]
                    if off <= ((end + LINE_MASK) & ~LINE_MASK):  # as below
                        if off + n > end:
                            end = off + n
                    else:
                        self.flush(start, end - start)
                        start, end = off, off + n
                self.persist(start, end - start)
            else:
                self.drain()
            self._nr = 0
        elif ranges:
            ranges.sort()
            start, end = ranges[0]
            end += start
            for off, n in ranges:
                if off <= ((end + LINE_MASK) & ~LINE_MASK):  # same or next cache line: merge
                    if off + n > end:
                        end = off + n
                else:
                    self.flush(start, end - start)
                    start, end = off, off + n
            self.persist(start, end - start)  # the last flush and the fence in one call
        else:
            self.drain()
        self.txid += 1
        self._u64[self._txid_word] = self.txid
        self.persist(self._txid_word << 3, 8)
        self.unfenced = False
        ranges.clear()
        self.pos = self._log_start
        self._end = self._area_end
        return True

    def reset(self) -> None:
        """Forget the transaction (after an abort, or at open); rereads the txid."""
        self._ranges.clear()
        self._nr = 0
        self.unfenced = False
        self.pos = self._log_start
        self._end = self._area_end
        self.txid = self._u64[self._txid_word]

    def move_to(self, pos: int, end: int) -> None:
        """Continue the log in another area (an overflow segment)."""
        if pos > end or end > self._size:
            raise ValueError("undo log area outside the pool")
        self.pos, self._end = pos, end

    def release(self) -> None:
        """Let go of the pool's memory (the pool is closing)."""
        self._u8 = self._u32 = self._u64 = None  # type: ignore[assignment]
