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
import tempfile
from pathlib import Path

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blizzard.exceptions import PoolFullError
from blizzard.pmem import CHUNK_SIZE, SMALL_MAX, DramMedia, Pool, Root
from blizzard.pmem._layout import CLASS_FOR, SIZE_CLASSES

POOL_SIZE = 2 << 20  # small, so allocations run out of room often
LOG_SIZE = 4096  # small, so transactions overflow into log segments often
ROOT_NAMES = ("a", "b", "c", "ñ" * 24, "x" * 48)

SIZES = st.one_of(
    st.integers(1, 128),
    st.integers(129, 4096),
    st.integers(4097, SMALL_MAX),
    st.integers(SMALL_MAX + 1, 300_000),
)
PICK = st.integers(0, 1 << 16)  # an index into the live blocks, taken modulo their number
TAGS = st.binary(max_size=8).map(lambda t: t.replace(b"\0", b"_"))  # NUL tags: see test_errors

_leaf_op = st.one_of(
    st.tuples(st.just("alloc"), SIZES, st.booleans(), st.integers(0, 255)),
    st.tuples(st.just("write"), PICK, PICK, st.integers(1, 70_000), st.integers(0, 255),
              st.sampled_from(["write", "add"])),
    st.tuples(st.just("free"), PICK),
    st.tuples(st.just("set_root"), st.sampled_from(ROOT_NAMES), PICK, TAGS),
    st.tuples(st.just("delete_root"), st.sampled_from(ROOT_NAMES)),
)
OPS = st.recursive(
    st.lists(_leaf_op, min_size=1, max_size=6),
    lambda inner: st.lists(
        st.one_of(_leaf_op, st.tuples(st.sampled_from(["nested", "nested_caught"]), inner)),
        min_size=1, max_size=4),
    max_leaves=12,
)


class _Abort(Exception):
    """Raised by a test to roll a transaction back."""


def pattern(seed: int, n: int) -> bytes:
    unit = bytes((seed + 37 * i) & 0xFF for i in range(251))  # 251: prime, so no aligned repeats
    return (unit * (n // 251 + 1))[:n]


def chunks_needed(size: int) -> int:
    """Chunks a request takes when it cannot come from an existing run."""
    if size <= SMALL_MAX:
        return SIZE_CLASSES[CLASS_FOR[(size + 15) >> 4]].chunks
    return -(-size // CHUNK_SIZE)


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

    def _pick(self, work: dict[int, bytes], pick: int) -> int | None:
        if not work:
            return None
        return sorted(work)[pick % len(work)]

    def _run(self, tx, ops, work: dict[int, bytes], roots: dict[str, Root]) -> None:
        pool = self.pool
        for op in ops:
            kind = op[0]
            if kind == "alloc":
                _, size, zero, seed = op
                largest = pool.stats().largest_free_extent
                try:
                    off = tx.alloc(size, zero=zero)
                except PoolFullError:
                    assert chunks_needed(size) * CHUNK_SIZE > largest, (size, largest)
                    raise
                assert off not in work
                assert pool.usable_size(off) >= size
                if zero:
                    assert pool.read(off, size) == bytes(size)
                data = pattern(seed, size)
                pool.buf[off:off + size] = data  # a fresh block needs no undo entry
                work[off] = data
            elif kind == "write":
                _, pick, at, length, seed, method = op
                off = self._pick(work, pick)
                if off is None:
                    continue
                old = work[off]
                rel = at % len(old)
                n = min(length, len(old) - rel)
                data = pattern(seed, n)
                if method == "write":
                    tx.write(off + rel, data)
                else:
                    tx.add(off + rel, n)
                    pool.buf[off + rel:off + rel + n] = data
                work[off] = old[:rel] + data + old[rel + n:]
            elif kind == "free":
                off = self._pick(work, op[1])
                if off is None:
                    continue
                for name in [name for name, root in roots.items() if root.off == off]:
                    tx.delete_root(name)
                    del roots[name]
                tx.free(off)
                del work[off]
            elif kind == "set_root":
                _, name, pick, tag = op
                off = self._pick(work, pick)
                if off is None:
                    continue
                tx.set_root(name, off, tag)
                roots[name] = Root(off, tag)
            elif kind == "delete_root":
                if op[1] in roots:
                    tx.delete_root(op[1])
                    del roots[op[1]]
            elif kind == "nested":
                with pool.transaction() as inner:
                    assert inner is tx
                    self._run(inner, op[1], work, roots)
            else:  # nested_caught: the inner block raises, the outer one carries on
                try:
                    with pool.transaction() as inner:
                        self._run(inner, op[1], work, roots)
                        raise _Abort
                except _Abort:
                    pass  # flat nesting: only the outermost transaction decides

    @rule(ops=OPS, commit=st.booleans())
    def transaction(self, ops, commit):
        """One transaction; the model changes only if it commits."""
        work, roots = dict(self.blocks), dict(self.roots)
        try:
            with self.pool.transaction() as tx:
                self._run(tx, ops, work, roots)
                if tx._segments:
                    event("transaction overflowed into a log segment")
                if not commit:
                    raise _Abort
        except _Abort:
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
        off = self._pick(self.blocks, pick)
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
