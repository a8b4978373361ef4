"""The compiled and the interpreted build write the same bytes.

The undo log, the transactions and the allocator are typed Python compiled
by Cython; ``BLIZZARD_PURE=1`` runs the same sources interpreted. Two pools
started from one image must stay byte-identical after every transaction,
including aborts and overflow segments (``tests/twin.py`` plays the
interpreted side in a child process).
"""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard import _compiled
from blizzard.pmem import DramMedia, Pool, _mem
from tests import twin

interpreted_on_purpose = bool(
    os.environ.get(_compiled.ENV_PURE) or os.environ.get(_compiled.ENV_PURE_OLD))


@pytest.mark.skipif(interpreted_on_purpose, reason="BLIZZARD_PURE=1: the interpreted run")
def test_the_compiled_build_is_in_use():
    """`make` installs a compiler and Cython, so the compiled modules must be there."""
    assert _compiled.compiled(), _compiled.describe()
    assert _compiled.describe().startswith("compiled")


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1), st.integers(0, 7))
def test_crc32_matches_zlib(data, start, at):
    """The undo log's CRC and a key's hash are zlib's CRC-32 (continued from any
    value, at any alignment), below and above the length where the compiled
    build hands over to zlib itself."""
    buf = memoryview(bytearray(bytes(at) + data + bytes(8)))
    assert _mem.crc32(buf, at, len(data), start) == zlib.crc32(data, start)
    assert _mem.crc32_bytes(data) == zlib.crc32(data)


@given(st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 7))
def test_compare_and_piece_agree_with_bytes(stored, probe, at):
    """A key compared where it lies orders as bytes do (a prefix first); a piece of
    bytes is the slice."""
    buf = memoryview(bytearray(bytes(at) + stored + bytes(8)))
    c = _mem.compare(buf, at, len(stored), probe)
    assert (c > 0) - (c < 0) == (stored > probe) - (stored < probe)
    data = bytes(at) + stored
    assert _mem.piece(data, at, len(stored)) == stored


@pytest.mark.parametrize("seed", range(3))
def test_compiled_and_interpreted_builds_write_identical_pools(tmp_path, seed):
    """Same transactions, same bytes: commits, aborts and log overflow."""
    pool = Pool.create(DramMedia(4 << 20), log_size=4096)
    image = bytes(pool.buf)
    pool.close()
    twin.assert_same("transactions", image, seed, tmp_path)


class _Recording(DramMedia):
    """DRAM that records the ranges made durable (no native flush: every call is seen)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.flushed: list[tuple[int, int]] = []

    def flush(self, off: int, n: int) -> None:
        self.flushed.append((off, n))

    def persist(self, off: int, n: int) -> None:
        self.flushed.append((off, n))

    def native(self) -> None:
        return None


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The commit's rule, written plainly: by offset, a range starting in the
    same or the next cache line as the run so far joins it."""
    out: list[list[int]] = []
    for off, n in sorted(ranges):
        if out and off <= (out[-1][1] + 63) & ~63:
            out[-1][1] = max(out[-1][1], off + n)
        else:
            out.append([off, off + n])
    return [(start, end - start) for start, end in out]


@given(st.lists(st.tuples(st.integers(0, 60_000), st.integers(1, 300)), max_size=1500),
       st.integers(0, 2**32 - 1))
def test_a_commit_flushes_the_touched_ranges_merged_by_offset(touched, logged_at):
    """Any number of ranges in any order (past the first array's 32 and the sort's
    largest gap): the commit flushes exactly the merged runs, then the txid word."""
    from blizzard.pmem._undolog import UndoLog

    size = 1 << 17
    media = _Recording(size)
    log = UndoLog(media, size, data_lo=4096, log_start=64, area_end=4096, txid_off=8)
    logged = 4096 + logged_at % 60_000
    assert log.add(logged, 8) == 1
    for off, n in touched:
        log.touch(4096 + off, n)
    media.flushed.clear()
    assert log.commit()
    want = _merged([(logged, 8)] + [(4096 + off, n) for off, n in touched])
    assert media.flushed == [*want, (8, 8)]
    media.close()


class _Calls(DramMedia):
    """DRAM that records every flush and fence, in order (no native flush)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.calls: list[tuple[int, ...]] = []

    def flush(self, off: int, n: int) -> None:
        self.calls.append((off, n))

    def drain(self) -> None:
        self.calls.append(())

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.drain()

    def native(self) -> None:
        return None


@pytest.mark.interpreted
def test_an_entry_logged_without_a_fence_shares_the_next_ones():
    """``add(..., fence=False)`` flushes its entry only; the next fenced ``add`` or
    ``ready()`` fences it, and ``ready()`` fences only when one is owed."""
    from blizzard.pmem._undolog import UndoLog

    size = 1 << 16
    media = _Calls(size)
    log = UndoLog(media, size, data_lo=4096, log_start=64, area_end=4096, txid_off=8)
    assert log.add(4096, 24, False) == 1  # 24 + 24 bytes at 64
    assert media.calls == [(64, 48)] and log.unfenced
    assert log.add(8192, 8) == 1  # 24 + 8 bytes at 112, and the fence of both
    assert media.calls[1:] == [(112, 32), ()] and not log.unfenced
    del media.calls[:]
    log.ready()
    assert media.calls == []
    assert log.add(12288, 8, False) == 1
    log.ready()
    log.ready()
    assert media.calls == [(144, 32), ()]
    assert log.add(16384, 8, False) == 1
    assert log.commit() and not log.unfenced
    log.ready()
    assert media.calls[-1] == () and media.calls[-2] == (8, 8)  # the commit's last fence
    assert log.add(4096, 8, False) == 1
    log.reset()  # an abort forgets what was owed: its rollback persists on its own
    assert not log.unfenced
    media.close()
