"""Allocator and transactions against a dict model (Hypothesis state machine).

The model is ``{offset: contents}`` for every live block plus ``{name: Root}``.
Each rule runs one transaction built from drawn operations (alloc, write via
``tx.write`` or ``tx.add`` + store, free, set/delete root, nested and
nested-caught blocks) that either commits or raises; the model follows only
committed transactions. Other rules reopen the pool file and try allocations
that cannot fit. After every step the pool must pass ``check()`` and equal the
model: contents, roots, no overlapping blocks, ``stats().used`` = the sum of
usable sizes.

Replay a failure with the printed ``@reproduce_failure`` blob, or run many
more examples with ``HYPOTHESIS_PROFILE=soak``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blizzard.exceptions import PoolFullError, UndoLogFullError
from blizzard.pmem import CHUNK_SIZE, SMALL_MAX, DramMedia, Pool, Root
from tests.pmem.strategies import OPS, PICK, Abort, pattern, pick_block, run_ops

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

POOL_SIZE = 2 << 20  # small, so allocations run out of room often
LOG_SIZE = 4096  # small, so transactions overflow into log segments often
class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="blizzard-stateful-", dir="/dev/shm"))
        self.path = self.dir / "m.pool"
        self.pool = Pool.create(self.path, POOL_SIZE, layout="stateful", mode="none",
                                log_size=LOG_SIZE)
        self.blocks: dict[int, bytes] = {}
        self.roots: dict[str, Root] = {}

    def teardown(self) -> None:
        self.pool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- running one transaction against a working copy of the model --------------------

    @rule(ops=OPS, commit=st.booleans())
    def transaction(self, ops, commit):
        """One transaction; the model changes only if it commits."""
        work, roots = dict(self.blocks), dict(self.roots)
        try:
            with self.pool.transaction() as tx:
                run_ops(self.pool, tx, ops, work, roots)
                if tx._segments:
                    event("transaction overflowed into a log segment")
                if not commit:
                    raise Abort
        except Abort:
            event("transaction rolled back")
            return
        except PoolFullError:
            event("transaction hit PoolFullError")
            return
        event("transaction committed")
        self.blocks, self.roots = work, roots

    @rule(sizes=st.lists(st.integers(SMALL_MAX + 1, 300_000), min_size=2, max_size=8),
          seed=st.integers(0, 255))
    def fill(self, sizes, seed):
        """Large allocations in one transaction, often more than fits."""
        self.transaction([("alloc", size, False, seed) for size in sizes], commit=True)

    @rule(pick=PICK, seed=st.integers(0, 255), extra=st.integers(1, 3 * CHUNK_SIZE))
    def pool_full(self, pick, seed, extra):
        """An allocation bigger than the largest free extent fails and changes nothing."""
        off = pick_block(self.blocks, pick)
        stats = self.pool.stats()
        too_big = stats.largest_free_extent + extra
        try:
            with self.pool.transaction() as tx:
                if off is not None:
                    tx.write(off, pattern(seed, min(64, len(self.blocks[off]))))
                tx.alloc(max(too_big, SMALL_MAX + 1))
        except PoolFullError as exc:
            assert "rolled back" in str(exc)
        else:
            raise AssertionError(f"allocating {too_big} bytes did not fail ({stats})")
        assert self.pool.stats() == stats

    @rule()
    def reopen(self):
        """Close and reopen the file: a clean close leaves nothing to recover."""
        self.pool.close()
        self.pool = Pool.open(self.path, layout="stateful", mode="none")
        assert self.pool.recovered_entries == 0

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def pool_checks(self):
        self.pool.check()

    @invariant()
    def contents_equal_the_model(self):
        pool = self.pool
        used = 0
        end = pool._heap_off
        for off in sorted(self.blocks):
            data = self.blocks[off]
            assert pool.is_allocated(off), off
            usable = pool.usable_size(off)
            assert usable >= len(data)
            assert off >= end, f"block {off} overlaps the previous one (ends {end})"
            end = off + usable
            used += usable
            assert pool.read(off, len(data)) == data, off
        assert end <= pool.size
        stats = pool.stats()
        assert stats.used == used
        assert stats.used + stats.free <= stats.capacity
        assert stats.roots == len(self.roots)
        assert pool.roots() == dict(sorted(self.roots.items()))


TestPoolMachine = PoolMachine.TestCase


# --- bug 7 (found by this machine): deterministic regression tests ----------------------


def _pool_with_lazy_free_lists():
    """A pool with one committed 16-byte block whose run's free list is not built yet."""
    media = DramMedia(2 << 20)
    pool = Pool.create(media)
    with pool.transaction() as tx:
        keep = tx.alloc(16)
        pool.buf[keep:keep + 4] = b"KEEP"
    pool = Pool.open(DramMedia.from_bytes(bytes(media.buf)))  # volatile indexes rebuilt
    return pool, keep


def test_free_then_alloc_in_one_transaction_does_not_reuse_the_block():
    """Frees become reusable only at commit, even right after open (lazy free lists)."""
    pool, keep = _pool_with_lazy_free_lists()
    with pool.transaction() as tx:
        tx.free(keep)
        fresh = tx.alloc(16)
    assert fresh != keep
    pool.check()


def test_aborted_free_then_alloc_keeps_committed_contents():
    """Rolling back free + alloc leaves the freed block's committed contents intact."""
    pool, keep = _pool_with_lazy_free_lists()
    with pytest.raises(RuntimeError), pool.transaction() as tx:
        tx.free(keep)
        fresh = tx.alloc(16)
        pool.buf[fresh:fresh + 4] = b"NEW!"  # a fresh block needs no undo entry
        raise RuntimeError("abort")
    assert pool.is_allocated(keep)
    assert pool.read(keep, 4) == b"KEEP"


# --- soak finding: overflow segments in a fragmented pool -----------------------------


def test_soak_finding_replays(monkeypatch):
    """The soak run's failing program: log overflow while no 4-chunk extent is free."""
    monkeypatch.setattr(sys.modules[__name__], "event", lambda *args: None)  # outside hypothesis
    state = PoolMachine()
    try:
        state.fill(seed=0, sizes=[32769, 32769, 32769, 32769, 65537, 65537, 196609, 262145])
        state.fill(seed=0, sizes=[32769] * 8)
        state.transaction(commit=False, ops=[
            ("write", 0, 0, 3369, 0, "write"), ("set_root", "a", 0, b""),
            ("nested", [("alloc", 1, False, 0), ("free", 0), ("alloc", 17, False, 0),
                        ("set_root", "a", 0, b""), ("free", 0)]),
            ("alloc", 129, False, 0)])
        state.pool_checks()
        state.contents_equal_the_model()
    finally:
        state.teardown()


def _fragment(pool, keep_free_chunks: int) -> list[int]:
    """Fill the heap with one-chunk extents, then free every other one (at most
    ``keep_free_chunks``), so no two free chunks are adjacent. Returns the
    blocks still allocated."""
    blocks = []
    with pool.transaction() as tx:
        while pool.stats().largest_free_extent >= CHUNK_SIZE:
            blocks.append(tx.alloc(CHUNK_SIZE))
    with pool.transaction() as tx:
        for off in blocks[::2][:keep_free_chunks]:
            tx.free(off)
    assert pool.stats().largest_free_extent == (CHUNK_SIZE if keep_free_chunks else 0)
    return blocks[1::2]


def test_log_grows_one_chunk_at_a_time_in_a_fragmented_pool():
    """A transaction whose log outgrows its area takes single-chunk segments
    when no 4-chunk extent is free, instead of failing."""
    pool = Pool.create(DramMedia(2 << 20), log_size=4096)
    live = _fragment(pool, keep_free_chunks=8)
    with pool.transaction() as tx:
        for off in live[:6]:
            tx.write(off, pattern(1, 20_000))  # ~120 KB of undo entries: several segments
        assert len(tx._segments) >= 2
        assert all(chunks == 1 for _, chunks in tx._segments)
    pool.check()
    assert all(pool.read(off, 20_000) == pattern(1, 20_000) for off in live[:6])


def test_log_that_cannot_grow_says_so_and_rolls_back():
    """With no free chunk at all, the overflow fails with UndoLogFullError (a
    PoolFullError) naming the undo log, and the transaction rolls back."""
    pool = Pool.create(DramMedia(2 << 20), log_size=4096)
    live = _fragment(pool, keep_free_chunks=0)
    before = [pool.read(off, 4000) for off in live]
    with (pytest.raises(UndoLogFullError, match="undo log could not grow") as info,
          pool.transaction() as tx):
        for off in live:
            tx.write(off, pattern(2, 4000))  # the second entry overflows the 4 KiB log
    assert isinstance(info.value, PoolFullError)
    assert info.value.largest_free_extent == 0
    assert [pool.read(off, 4000) for off in live] == before
    pool.check()


def test_small_alloc_that_takes_the_last_chunk_leaves_the_log_no_room():
    """A 129-byte block opens a new run in the last free chunk; the undo entry
    for that run's header then overflows a full log with no chunk left for its
    segment. The allocation fails with UndoLogFullError although the block
    alone would have fit, and the rollback returns the chunk. (Found by the
    soak profile: the oracle had assumed a small block always fits one free
    chunk.)"""
    pool = Pool.create(DramMedia(2 << 20), log_size=4096)
    live = _fragment(pool, keep_free_chunks=1)
    stats = pool.stats()
    before = pool.read(live[0], 4000)
    with (pytest.raises(UndoLogFullError, match="undo log could not grow") as info,
          pool.transaction() as tx):
        tx.write(live[0], pattern(3, 4000))  # the 4 KiB log is now all but full
        tx.alloc(129)
    assert info.value.largest_free_extent == 0
    assert pool.stats() == stats
    assert pool.read(live[0], 4000) == before
    pool.check()
