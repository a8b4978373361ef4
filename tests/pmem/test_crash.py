"""Crash consistency on CrashSimMedia (DESIGN.md, correctness contract 1).

A drawn program of transactions (allocs, writes, frees, roots, nested blocks,
commits and aborts, at least one overflowing the 4 KiB undo log into heap
segments) runs on a simulated medium. At a fence, ``crash_image`` gives what a
power cut could leave: every durable line, plus any choice of the lines that
were flushed but not fenced, or stored to but never flushed. Each image is
opened (running recovery) and must pass ``check()``, show every transaction
that committed before the crash, and show the one in flight entirely or not at
all. Recovery itself is then crashed at each of its fences, and the image that
leaves must recover to the same state.

Replay a failure from the printed ``@reproduce_failure`` blob; run many more
programs with ``HYPOTHESIS_PROFILE=soak``.
"""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from blizzard.exceptions import PoolFullError
from blizzard.pmem import CrashSimMedia, Pool, all_or_nothing, random_chooser
from tests.conftest import budget
from tests.pmem.strategies import OPS, Abort, pattern, run_ops

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

POOL_SIZE = 2 << 20
LOG_SIZE = 4096  # entries past 4 KiB go to overflow segments in the heap

# A transaction that always overflows the log: a 40-70 KB undo entry.
BIG = st.builds(
    lambda seed, n: [("alloc", 200_000, False, seed), ("write", 0, 1000, n, seed, "write")],
    st.integers(0, 255), st.integers(40_000, 70_000))
TXS = st.builds(
    lambda txs, big, at, commit: [*txs[:at], (big, commit), *txs[at:]],
    st.lists(st.tuples(OPS, st.booleans()), min_size=1, max_size=4),
    BIG, st.integers(0, 4), st.booleans())

Model = tuple[dict[int, bytes], dict]


class _Crash(Exception):
    """Stops the program at the chosen fence, as a power cut would."""


def _fresh_pool() -> tuple[bytes, CrashSimMedia, Pool]:
    media = CrashSimMedia(POOL_SIZE)
    Pool.create(media, layout="crash", log_size=LOG_SIZE).close()
    image = media.durable_image()
    media = CrashSimMedia.from_image(image)
    return image, media, Pool.open(media, layout="crash")


def play(pool: Pool, txs, on_tx=None) -> list[Model]:
    """Run the program; returns the model after each transaction (index 0: empty)."""
    blocks: dict[int, bytes] = {}
    roots: dict = {}
    states = [(blocks, roots)]
    for i, (ops, commit) in enumerate(txs):
        if on_tx is not None:
            on_tx(i)
        work, work_roots = dict(blocks), dict(roots)
        try:
            with pool.transaction() as tx:
                run_ops(pool, tx, ops, work, work_roots)
                if not commit:
                    raise Abort
        except (Abort, PoolFullError):
            pass
        else:
            blocks, roots = work, work_roots
        states.append((blocks, roots))
    return states


def matches(pool: Pool, model: Model) -> bool:
    """Whether the pool holds exactly the model's blocks, contents and roots."""
    blocks, roots = model
    if pool.roots() != dict(sorted(roots.items())):
        return False
    used = 0
    for off, data in blocks.items():
        if not pool.is_allocated(off) or pool.read(off, len(data)) != data:
            return False
        used += pool.usable_size(off)
    return pool.stats().used == used


def recover(image: bytes, before: Model, after: Model, where: str) -> tuple[int, int]:
    """Open a crash image and check it; returns (which model it equals, recovery fences)."""
    media = CrashSimMedia.from_image(image)
    pool = Pool.open(media, layout="crash")
    fences = media.fences
    pool.check()
    if matches(pool, after):
        which = 1
    elif matches(pool, before):
        which = 0
    else:
        raise AssertionError(f"{where}: the recovered pool equals neither the state before "
                             f"the transaction in flight nor the state after it")
    with pool.transaction() as tx:  # and it is usable
        off = tx.alloc(300)
        pool.buf[off:off + 300] = pattern(7, 300)
    assert pool.read(off, 300) == pattern(7, 300)
    pool.check()
    pool.close()
    return which, fences


def crash_recovery(image: bytes, fence: int, make_chooser) -> bytes | None:
    """The image left by a crash at ``fence`` of the recovery of ``image`` (None: fewer
    fences); ``make_chooser(media)`` gives the chooser when the crash happens."""
    media = CrashSimMedia.from_image(image)
    taken = []

    def hook(m):
        if m.fences == fence:
            m.fence_hook = None
            taken.append(m.crash_image(make_chooser(m)))
            raise _Crash

    media.fence_hook = hook
    try:
        Pool.open(media, layout="crash").close()
    except _Crash:
        return taken[0]
    return None


def _in_flight(starts: list[int], fence: int) -> int:
    """Index of the transaction during which relative fence number ``fence`` happened."""
    i = 0
    while i + 1 < len(starts) and starts[i + 1] < fence:
        i += 1
    return i


CHOOSERS = st.one_of(
    st.just(("old",)), st.just(("new",)), st.just(("lines",)),
    st.tuples(st.just("seed"), st.integers(0, 2**32 - 1)))
LINES_DRAWN_MAX = 48  # more unsettled lines than this: a seeded random choice instead


def _chooser(spec, data, media):
    """Turn a drawn chooser spec into choose(line, n); "lines" draws each line's fate."""
    if spec[0] == "old":
        return all_or_nothing(False)
    if spec[0] == "new":
        return all_or_nothing(True)
    if spec[0] == "seed":
        return random_chooser(spec[1])
    lines = media.unsettled_lines()
    if len(lines) > LINES_DRAWN_MAX:
        return random_chooser(data.draw(st.integers(0, 2**32 - 1), label="seed for many lines"))
    picks = data.draw(st.lists(st.integers(0, 2), min_size=len(lines), max_size=len(lines)),
                      label="fate of each unsettled line")
    fate = dict(zip(lines, picks, strict=True))
    return lambda line, n: fate[line] % n


@given(data=st.data(), txs=TXS)
def test_crash_at_a_drawn_fence(data, txs):
    """Crash at a drawn fence with drawn surviving lines, then again during recovery:
    committed transactions survive, the one in flight is all or nothing."""
    image0, media, pool = _fresh_pool()
    starts: list[int] = []
    states = play(pool, txs, on_tx=lambda i: starts.append(media.fences))
    total = media.fences
    starts.append(total)
    pool.close()
    fence = data.draw(st.integers(1, total), label="crash at fence")
    spec = data.draw(CHOOSERS, label="chooser")

    media = CrashSimMedia.from_image(image0)
    pool = Pool.open(media, layout="crash")
    base = media.fences
    taken = []

    def hook(m):
        if m.fences - base == fence:
            m.fence_hook = None
            if pool._tx._segments:
                event("crashed with an overflow log segment linked")
            taken.append(m.crash_image(_chooser(spec, data, m)))
            raise _Crash

    media.fence_hook = hook
    with contextlib.suppress(_Crash):
        play(pool, txs)
    assert taken, f"fence {fence} of {total} was never reached on replay"
    i = _in_flight(starts, fence)
    event(f"in-flight transaction {'commits' if txs[i][1] else 'aborts'}")
    which, recovery_fences = recover(taken[0], states[i], states[i + 1], f"fence {fence}")
    if states[i] != states[i + 1]:
        event(f"recovered to the state {('before', 'after')[which]} the transaction")
    if recovery_fences:
        again = data.draw(st.integers(1, recovery_fences), label="crash recovery at fence")
        spec = data.draw(CHOOSERS, label="recovery chooser")
        image2 = crash_recovery(taken[0], again, lambda m: _chooser(spec, data, m))
        assert image2 is not None
        which2, _ = recover(image2, states[i], states[i + 1], f"recovery fence {again}")
        assert which2 == which, "a crash during recovery changed what recovery decides"


IMAGES = {"taken": 0, "distinct": 0}


@settings(max_examples=budget(25))
@given(txs=TXS, seed=st.integers(0, 2**32 - 1))
def test_crash_at_every_fence(txs, seed):
    """At every fence of a program, the oldest, the newest and a random choice of
    lines all recover correctly; so does a crash at every fence of their recovery."""
    _, _, ref_pool = _fresh_pool()  # the model after each transaction, first
    states = play(ref_pool, txs)
    ref_pool.close()

    _, media, pool = _fresh_pool()
    current = [0]
    seen: set[bytes] = set()

    def hook(m):
        i = current[0]
        before, after = states[i], states[i + 1]
        for k, choose in enumerate((all_or_nothing(False), all_or_nothing(True),
                                    random_chooser(seed + m.fences))):
            image = m.crash_image(choose)
            IMAGES["taken"] += 1
            key = hashlib.blake2b(image, digest_size=16).digest() + i.to_bytes(4, "little")
            if key in seen:
                continue
            seen.add(key)
            IMAGES["distinct"] += 1
            which, recovery_fences = recover(image, before, after,
                                             f"fence {m.fences} chooser {k} of tx {i}")
            for again in range(1, recovery_fences + 1):
                image2 = crash_recovery(image, again, lambda m: random_chooser(seed + m.fences))
                IMAGES["taken"] += 1
                which2, _ = recover(image2, before, after, f"recovery fence {again}")
                assert which2 == which, "a crash during recovery changed what recovery decides"

    media.fence_hook = hook
    assert play(pool, txs, on_tx=lambda i: current.__setitem__(0, i)) == states
    pool.close()


def test_crash_at_every_fence_of_directory_growth():
    """A root that makes the directory grow (extension table allocated, the last
    entry moved, a link written) is all or nothing at every fence."""
    from blizzard.pmem._layout import DIR_ENTRIES

    media = CrashSimMedia(POOL_SIZE)
    pool = Pool.create(media, layout="crash", log_size=LOG_SIZE)
    with pool.transaction() as tx:
        off = tx.alloc(64)
        for i in range(DIR_ENTRIES):
            tx.set_root(f"r{i}", off)
    before = (pool.roots(), pool.stats().used)
    images = []

    def hook(m):
        images.extend(m.crash_image(choose) for choose in (
            all_or_nothing(False), all_or_nothing(True), random_chooser(m.fences)))

    media.fence_hook = hook
    with pool.transaction() as tx:
        tx.set_root("grows", off, b"new")
        tx.set_root("r0", off, b"changed")
    media.fence_hook = None
    after = (pool.roots(), pool.stats().used)
    assert len(after[0]) == DIR_ENTRIES + 1 and after[1] > before[1]
    outcomes = set()
    for image in images:
        recovered = Pool.open(CrashSimMedia.from_image(image), layout="crash")
        recovered.check()
        state = (recovered.roots(), recovered.stats().used)
        assert state in (before, after)
        outcomes.add(state == after)
        recovered.close()
    assert outcomes == {False, True}
