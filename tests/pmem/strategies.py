"""Shared Hypothesis strategies and the operation runner of the pmem tests.

An operation list (``OPS``) is a small program run inside one transaction by
:func:`run_ops` against a working copy of a model: ``{offset: contents}`` of
the live blocks and ``{name: Root}``. Offsets are picked by index into the
sorted live blocks, so the same program on the same pool state always does the
same thing (the crash tests rely on it to replay a run up to a fence).
"""

from __future__ import annotations

from hypothesis import strategies as st

from blizzard.exceptions import PoolFullError, UndoLogFullError
from blizzard.pmem import CHUNK_SIZE, SMALL_MAX, Root
from blizzard.pmem._layout import CLASS_FOR, LOG_HEADER_SIZE, SIZE_CLASSES
from blizzard.pmem._undolog import ENTRY_HEADER_SIZE

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
              st.sampled_from(["write", "add", "add_unfenced", "add_ready"])),
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


class Abort(Exception):
    """Raised by a test to roll a transaction back."""


def pattern(seed: int, n: int) -> bytes:
    unit = bytes((seed + 37 * i) & 0xFF for i in range(251))  # 251: prime, so no aligned repeats
    return (unit * (n // 251 + 1))[:n]


def chunks_needed(size: int) -> int:
    """Chunks a request takes when it cannot come from an existing run."""
    if size <= SMALL_MAX:
        return SIZE_CLASSES[CLASS_FOR[(size + 15) >> 4]].chunks
    return -(-size // CHUNK_SIZE)

def pick_block(work: dict[int, bytes], pick: int) -> int | None:
    """The live block a drawn index designates (None when there is none)."""
    if not work:
        return None
    return sorted(work)[pick % len(work)]


def run_ops(pool, tx, ops, work: dict[int, bytes], roots: dict[str, Root]) -> None:
    """Run ``ops`` in ``tx``, updating the working model ``work``/``roots`` in step.

    Fresh blocks are filled by plain stores (they need no undo entry); existing
    bytes change through ``tx.write``, or ``tx.add`` + store: fenced, or
    ``fence=False`` followed by a fenced ``add`` or ``ready()``. A PoolFullError is
    checked to be honest and propagates, so the caller's transaction rolls
    back: an allocation really needed more than the largest free extent, or
    the undo log had to grow and no free extent could hold its next segment.
    """
    for op in ops:
        try:
            _run_op(pool, tx, op, work, roots)
        except UndoLogFullError as exc:
            largest = pool.stats().largest_free_extent
            assert largest == exc.largest_free_extent < exc.needed, (op, exc, largest)
            assert exc.needed <= _segment_bytes_max(op), (op, exc.needed)
            raise


def _segment_bytes_max(op) -> int:
    """The largest log segment an op may ask for: a ``write`` (or a nested
    block) logs a range of up to 70,000 bytes; every other op logs words or
    directory entries, whose segment is a single chunk."""
    if op[0] in ("alloc", "free", "set_root", "delete_root"):
        return CHUNK_SIZE
    return -(-(LOG_HEADER_SIZE + ENTRY_HEADER_SIZE + 70_000) // CHUNK_SIZE) * CHUNK_SIZE


def _run_op(pool, tx, op, work: dict[int, bytes], roots: dict[str, Root]) -> None:
    """One op of :func:`run_ops`."""
    kind = op[0]
    if kind == "alloc":
        _, size, zero, seed = op
        largest = pool.stats().largest_free_extent
        try:
            off = tx.alloc(size, zero=zero)
        except UndoLogFullError as exc:
            # The block may have fit, yet taken the last extent that could
            # hold the log's next segment (a small block opens a new run).
            assert exc.largest_free_extent < exc.needed, (size, exc)
            assert largest - chunks_needed(size) * CHUNK_SIZE < exc.needed, (size, largest, exc)
            raise
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
        off = pick_block(work, pick)
        if off is None:
            return
        old = work[off]
        rel = at % len(old)
        n = min(length, len(old) - rel)
        data = pattern(seed, n)
        if method == "write":
            tx.write(off + rel, data)
        elif method == "add":
            tx.add(off + rel, n)
            pool.buf[off + rel:off + rel + n] = data
        elif method == "add_unfenced":  # fenced by the add after it (a header, then a slot)
            tx.add(off + rel, n, fence=False)
            tx.add(off + rel, min(n, 8))
            pool.buf[off + rel:off + rel + n] = data
        else:  # "add_ready": fenced by ready()
            tx.add(off + rel, n, fence=False)
            tx.ready()
            pool.buf[off + rel:off + rel + n] = data
        work[off] = old[:rel] + data + old[rel + n:]
    elif kind == "free":
        off = pick_block(work, op[1])
        if off is None:
            return
        for name in [name for name, root in roots.items() if root.off == off]:
            tx.delete_root(name)
            del roots[name]
        tx.free(off)
        del work[off]
    elif kind == "set_root":
        _, name, pick, tag = op
        off = pick_block(work, pick)
        if off is None:
            return
        tx.set_root(name, off, tag)
        roots[name] = Root(off, tag)
    elif kind == "delete_root":
        if op[1] in roots:
            tx.delete_root(op[1])
            del roots[op[1]]
    elif kind == "nested":
        with pool.transaction() as inner:
            assert inner is tx
            run_ops(pool, inner, op[1], work, roots)
    else:  # nested_caught: the inner block raises, the outer one carries on
        try:
            with pool.transaction() as inner:
                run_ops(pool, inner, op[1], work, roots)
                raise Abort
        except Abort:
            pass  # flat nesting: only the outermost transaction decides
