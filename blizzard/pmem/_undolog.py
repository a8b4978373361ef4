"""The undo log's hot path: append entries, and commit.

Two implementations of one interface, writing the same bytes:

* ``UndoLog`` from the C extension ``_undolog_c`` (built at install time when
  a compiler is present), used when the media flushes through libpmem or
  does not flush at all: one C call per ``add`` and one per commit;
* :class:`PyUndoLog`, pure Python, used with every other media (the crash
  simulator, wrappers that observe flushes, msync) and wherever the
  extension is missing. ``BLIZZARD_PURE_PYTHON=1`` forces it.

The interface: ``add(off, n) -> 1`` (logged and persisted), ``0`` (no room
left in the current area: the caller links an overflow segment with
``move_to`` and retries) or ``-1`` (range outside the data area);
``touch(off, n)`` (flush at commit); ``commit() -> bool`` (flush the
touched ranges, fence, retire the transaction; False if nothing was
logged); ``reset()``; ``release()``; attributes ``pos``, ``txid``,
``logged``. The entry format is documented in ``_tx``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from zlib import crc32

try:
    from blizzard.pmem._undolog_c import UndoLog as CUndoLog
except ImportError:  # no compiler at install time: the pure-Python log is used
    CUndoLog = None

ENTRY_HEADER = struct.Struct("<IIQQ")
ENTRY_HEADER_SIZE = ENTRY_HEADER.size
_pack_fields = struct.Struct("<IQQ").pack  # the CRC covers these bytes, then the old range
_pack_header = ENTRY_HEADER.pack_into
_WORD = struct.Struct("<Q")
assert ENTRY_HEADER_SIZE == 24


class PyUndoLog:
    """Pure-Python undo log; flushes through the media's own methods."""

    __slots__ = (
        "_area_end",
        "_buf",
        "_data_lo",
        "_drain",
        "_end",
        "_flush",
        "_log_start",
        "_persist",
        "_ranges",
        "_size",
        "_txid_off",
        "pos",
        "txid",
    )
    pos: int  # where the next entry goes
    txid: int  # the running transaction's id (the log header's, once committed)
    _end: int  # where the current log segment ends

    def __init__(
        self,
        buf: memoryview,
        size: int,
        data_lo: int,
        log_start: int,
        area_end: int,
        txid_off: int,
        flush: Callable[[int, int], None],
        drain: Callable[[], None],
        persist: Callable[[int, int], None],
    ) -> None:
        self._buf = buf
        self._size = size
        self._data_lo = data_lo
        self._log_start = log_start
        self._area_end = area_end
        self._txid_off = txid_off
        self._flush, self._drain, self._persist = flush, drain, persist
        self._ranges: list[tuple[int, int]] = []
        self.reset()

    @property
    def logged(self) -> bool:
        return self.pos != self._log_start

    def add(self, off: int, n: int) -> int:
        if off < self._data_lo or n <= 0 or off + n > self._size:
            return -1
        pos = self.pos
        body = pos + ENTRY_HEADER_SIZE
        end = body + n
        if end > self._end:
            return 0
        buf = self._buf
        old = buf[off : off + n]
        _pack_header(
            buf, pos, crc32(old, crc32(_pack_fields(n, self.txid, off))), n, self.txid, off
        )
        buf[body:end] = old
        self._persist(pos, end - pos)
        self.pos = (end + 7) & ~7
        self._ranges.append((off, n))
        return 1

    def touch(self, off: int, n: int) -> None:
        self._ranges.append((off, n))

    def commit(self) -> bool:
        ranges = self._ranges
        if self.pos == self._log_start:
            ranges.clear()
            return False
        if ranges:
            ranges.sort()
            flush = self._flush
            start, end = ranges[0][0], ranges[0][0] + ranges[0][1]
            for off, n in ranges:
                if off <= ((end + 63) & ~63):  # same or next cache line: merge
                    if off + n > end:
                        end = off + n
                else:
                    flush(start, end - start)
                    start, end = off, off + n
            self._persist(start, end - start)  # the last flush and the fence in one call
        else:
            self._drain()
        self.txid += 1
        _WORD.pack_into(self._buf, self._txid_off, self.txid)
        self._persist(self._txid_off, 8)
        ranges.clear()
        self.pos = self._log_start
        self._end = self._area_end
        return True

    def reset(self) -> None:
        self._ranges.clear()
        self.pos = self._log_start
        self._end = self._area_end
        self.txid = _WORD.unpack_from(self._buf, self._txid_off)[0]

    def move_to(self, pos: int, end: int) -> None:
        self.pos, self._end = pos, end

    def release(self) -> None:
        self._buf = None  # type: ignore[assignment]


def make_undo_log(media, *, size: int, data_lo: int, log_start: int, area_end: int, txid_off: int):
    """The fastest undo log this media allows (see the module docstring)."""
    native = media.native()
    if CUndoLog is not None and native is not None and not os.environ.get("BLIZZARD_PURE_PYTHON"):
        flush, drain, persist = native
        return CUndoLog(
            media.buf, size, data_lo, log_start, area_end, txid_off, flush, drain, persist
        )
    return PyUndoLog(
        media.buf,
        size,
        data_lo,
        log_start,
        area_end,
        txid_off,
        media.flush,
        media.drain,
        media.persist,
    )
