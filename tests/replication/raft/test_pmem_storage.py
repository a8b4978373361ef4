"""PmemStorage: the Raft log in a pool behaves like MemoryStorage, survives
reopening, and recovers from a crash at any fence to a state that keeps
everything acknowledged."""

from __future__ import annotations

import gc
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blizzard import _compiled
from blizzard.pmem import CrashSimMedia, DramMedia, Pool, all_or_nothing, random_chooser
from blizzard.replication.raft.messages import (
    APP_HEAD_BYTES,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MsgApp,
    Snapshot,
    SnapshotMeta,
    decode,
    encode_app_head,
)
from blizzard.replication.raft.pmem_storage import LogCorruptError, PmemStorage
from blizzard.replication.raft.storage import CompactedError, MemoryStorage, UnavailableError
from tests.conftest import budget

POOL_SIZE = 2 << 20
SEGMENT_BYTES = 2048  # small, so batches cross segments


def _state(s) -> tuple:
    """Everything a restarted node reads back."""
    return (s.first_index(), s.last_index(), s.entries(s.first_index(), s.last_index() + 1)
            if s.last_index() >= s.first_index() else [], s.snapshot(), s.initial_state())


class Ops:
    """A seeded generator of valid storage operations (terms never decrease)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.term = 1
        self.hs = HardState()

    def next(self, model: MemoryStorage):
        rng = self.rng
        first, last = model.first_index(), model.last_index()
        roll = rng.random()
        if roll < 0.6:
            # a conflicting suffix never reaches below the commit index (Raft)
            start = rng.randint(max(first, last - 3, self.hs.commit + 1), last + 1)
            if start <= last or rng.random() < 0.3:
                self.term += 1  # a conflicting suffix comes from a later term
            entries = [Entry(self.term, start + i, rng.choice(list(EntryType)),
                             rng.randbytes(rng.choice([0, 5, 40, 300, 1500])))
                       for i in range(rng.randint(1, 8))]
            hs = None
            if rng.random() < 0.5:
                commit = min(entries[-1].index, max(self.hs.commit, start - 1 + rng.randint(0, 2)))
                hs = self.hs = HardState(self.term, rng.randint(0, 3), commit)
            return ("save", hs, entries)
        if roll < 0.75:
            self.term += rng.randint(0, 1)
            self.hs = HardState(self.term, rng.randint(0, 3), self.hs.commit)
            return ("save", self.hs, [])
        if roll < 0.93 and last >= first:
            index = rng.randint(first, last)
            meta = SnapshotMeta(index, model.term(index), ConfState((1, 2, 3), (4,)))
            return ("compact", Snapshot(meta, rng.randbytes(rng.randint(0, 100))))
        index = last + rng.randint(0, 5)
        self.term += 1
        meta = SnapshotMeta(index, self.term, ConfState((1, 2), ()))
        return ("apply_snapshot", Snapshot(meta, rng.randbytes(50)))


def _do(storage, op) -> None:
    kind = op[0]
    if kind == "save":
        _, hs, entries = op
        if isinstance(storage, MemoryStorage):
            if entries:
                storage.append(entries)
            if hs is not None:
                storage.set_hard_state(hs)
        else:
            storage.save(hs, entries)
    elif kind == "compact":
        storage.compact(op[1])
    else:
        storage.apply_snapshot(op[1])


def test_append_read_reopen(tmp_path):
    """Entries, hard state and snapshot come back after closing the file."""
    path = tmp_path / "log.pool"
    entries = [Entry(1, i, EntryType.NORMAL, f"op {i}".encode()) for i in range(1, 200)]
    with Pool.create(path, POOL_SIZE, mode="msync") as pool:
        log = PmemStorage(pool, segment_bytes=SEGMENT_BYTES)
        log.save(HardState(1, 2, 50), entries)
        assert log.entries(10, 13) == entries[9:12]
        log.compact(Snapshot(SnapshotMeta(100, 1, ConfState((1, 2, 3))), b"state"))
        pool.check()
    with Pool.open(path, mode="msync") as pool:
        log = PmemStorage(pool)
        assert log.first_index() == 101 and log.last_index() == 199
        assert log.entries(101, 200) == entries[100:]
        # Read back as the hot paths build them: ints and bytes, untracked when compiled.
        assert {(type(e.type), gc.is_tracked(e)) for e in log.entries(101, 200)} == {
            (int, not _compiled.compiled())}
        assert log.initial_state() == (HardState(1, 2, 50), ConfState((1, 2, 3)))
        assert log.snapshot().data == b"state"
        with pytest.raises(CompactedError):
            log.entries(50, 60)
        with pytest.raises(UnavailableError):
            log.term(300)
        pool.check()


def test_entries_already_held_are_not_rewritten():
    """Re-saving entries with the same index and term costs no truncation fence."""
    media = CrashSimMedia(POOL_SIZE)
    log = PmemStorage(Pool.create(media), segment_bytes=SEGMENT_BYTES)
    entries = [Entry(2, i, EntryType.NORMAL, b"x") for i in range(1, 6)]
    log.save(HardState(2, 1, 0), entries)
    fences = media.fences
    log.save(None, entries[2:])
    assert media.fences == fences
    log.save(None, [*entries[3:], Entry(2, 6)])
    assert media.fences == fences + 1 and log.last_index() == 6


def test_a_root_of_another_kind_is_refused():
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        tx.set_root("raft.log", tx.alloc(64), b"other")
    with pytest.raises(LogCorruptError, match="not a Raft log"):
        PmemStorage(pool)


@settings(max_examples=budget(30))
@given(st.integers(0, 2**32))
def test_behaves_like_memory_storage_across_reopens(seed):
    """Random saves, truncations, compactions and snapshots; reopen now and then."""
    media = DramMedia(POOL_SIZE)
    pool = Pool.create(media)
    log = PmemStorage(pool, segment_bytes=SEGMENT_BYTES)
    model = MemoryStorage()
    ops = Ops(seed)
    for step in range(60):
        op = ops.next(model)
        _do(model, op)
        _do(log, op)
        if step % 13 == 12:
            pool = Pool.open(media)  # same memory, fresh volatile state
            log = PmemStorage(pool, segment_bytes=SEGMENT_BYTES)
        assert _state(log) == _state(model), f"seed {seed}, step {step}, op {op[0]}"
    pool.check()


class _Crash(Exception):
    pass


def _acceptable(recovered: tuple, before: MemoryStorage, after: MemoryStorage) -> bool:
    """The recovered log is the state before, or a prefix of the state after that
    keeps every entry the operation did not replace."""
    first, last, entries, snapshot, (hs, _conf) = recovered
    if snapshot == after.snapshot() and snapshot != before.snapshot():
        target = after
    elif snapshot == before.snapshot():
        target = None
    else:
        return False
    if hs not in (before.hard_state(), after.hard_state()):
        # the commit index may be clamped to the recovered log
        candidates = [h for h in (before.hard_state(), after.hard_state())
                      if (h.term, h.vote) == (hs.term, hs.vote)
                      and hs.commit == min(h.commit, last)]
        if not candidates:
            return False
    for model in ([target] if target else [before, after]):
        m_first, _, m_entries, _, _ = _state(model)
        if first != m_first or entries != m_entries[:len(entries)]:
            continue
        b_entries = _state(before)[2]
        kept = 0
        while kept < min(len(b_entries), len(m_entries)) and b_entries[kept] == m_entries[kept]:
            kept += 1
        if model is before and len(entries) == len(m_entries):
            return True
        if model is after and len(entries) >= kept:
            return True
    return False


@pytest.mark.parametrize("seed", range(40))
def test_crash_at_every_fence_keeps_what_was_acknowledged(seed):
    """Crash each operation at each of its fences, with random unflushed lines surviving."""
    rng = random.Random(seed)
    media = CrashSimMedia(POOL_SIZE)
    pool = Pool.create(media)
    log = PmemStorage(pool, segment_bytes=SEGMENT_BYTES)
    model = MemoryStorage()
    ops = Ops(seed)
    images = 0
    for step in range(25):
        op = ops.next(model)
        before = model.clone()
        _do(model, op)
        # How many fences does this operation take? Run it on a copy first.
        probe = CrashSimMedia.from_image(media.durable_image())
        probe_log = PmemStorage(Pool.open(probe), segment_bytes=SEGMENT_BYTES)
        start = probe.fences
        _do(probe_log, op)
        fences = probe.fences - start
        for k in range(fences):
            trial = CrashSimMedia.from_image(media.durable_image())
            trial_log = PmemStorage(Pool.open(trial), segment_bytes=SEGMENT_BYTES)
            seen = [0]

            def hook(m, k=k, seen=seen):
                if seen[0] == k:
                    m.fence_hook = None
                    raise _Crash(m.crash_image(random_chooser(rng.randrange(2**32))))
                seen[0] += 1

            trial.fence_hook = hook
            with pytest.raises(_Crash) as crashed:
                _do(trial_log, op)
            image = crashed.value.args[0]
            recovered_pool = Pool.open(CrashSimMedia.from_image(image))
            recovered = _state(PmemStorage(recovered_pool, segment_bytes=SEGMENT_BYTES))
            recovered_pool.check()
            assert _acceptable(recovered, before, model), (
                f"seed {seed} step {step} op {op[0]} fence {k}/{fences}: {recovered[:2]}")
            images += 1
        _do(log, op)
        assert _state(log) == _state(model)
    assert images > 25


def test_a_segment_linked_by_a_lost_append_is_unlinked_at_recovery():
    """An append that crossed into a new segment loses power at its fence: the
    link had committed (a pool transaction), the records had not. Recovery must
    unlink that segment: else entries later written into the older segment, at
    indexes the orphan claims to start at, are cut off at the next open (a
    persisted, acknowledged entry lost) and the orphan leaks."""
    media = CrashSimMedia(POOL_SIZE)
    log = PmemStorage(Pool.create(media), segment_bytes=SEGMENT_BYTES)
    log.save(HardState(1, 1, 0), [Entry(1, i, EntryType.NORMAL, bytes(300)) for i in range(1, 6)])
    crossing = [Entry(1, 6, EntryType.NORMAL, bytes(300))]  # does not fit: a new segment
    probe = CrashSimMedia.from_image(media.durable_image())
    probe_log = PmemStorage(Pool.open(probe), segment_bytes=SEGMENT_BYTES)
    start = probe.fences
    probe_log.save(None, crossing)
    last_fence = probe.fences - start - 1
    seen = [0]

    def hook(m):
        if seen[0] == last_fence:
            m.fence_hook = None
            raise _Crash(m.crash_image(all_or_nothing(False)))
        seen[0] += 1

    media.fence_hook = hook
    with pytest.raises(_Crash) as crashed:
        log.save(None, crossing)
    media = CrashSimMedia.from_image(crashed.value.args[0])
    log = PmemStorage(Pool.open(media), segment_bytes=SEGMENT_BYTES)
    assert log.last_index() == 5
    log.check()
    log.save(HardState(2, 1, 6), [Entry(2, 6, EntryType.NORMAL, b"fits the old segment")])
    log.check()
    pool = Pool.open(CrashSimMedia.from_image(media.durable_image()))
    again = PmemStorage(pool, segment_bytes=SEGMENT_BYTES)
    assert again.last_index() == 6
    assert again.entries(6, 7)[0].data == b"fits the old segment"
    again.check()
    pool.check()


STEPS_PER_RUN = budget(60)


@pytest.mark.parametrize("seed", range(3))
def test_record_views_are_a_leaders_frame_of_its_entries(seed):
    """A leader sends a MsgApp as its fixed part plus views of its log's records
    (one per segment the run crosses): decoded, that is the MsgApp; received
    in place by another log (its own CRC chain: a follower that installed a
    snapshot seeds its chain anew), the entries verify there. Runs the log
    does not hold as such get no views."""
    rng = random.Random(seed)
    ops = Ops(seed)
    model = MemoryStorage()
    log = PmemStorage(Pool.create(DramMedia(POOL_SIZE)), segment_bytes=SEGMENT_BYTES)
    crossed = 0
    for _ in range(STEPS_PER_RUN):
        op = ops.next(model)
        _do(model, op)
        _do(log, op)
        first, last = log.first_index(), log.last_index()
        if last < first:
            continue
        a = rng.randint(first, last)
        b = rng.randint(a, min(last, a + 12))
        run = tuple(log.entries(a, b + 1))
        views = log.record_views(run)
        assert views is not None and all(v.readonly for v in views)
        crossed += len(views) > 1
        msg = MsgApp(1, 2, 9, log.term(a - 1), a - 1, run, 0)
        frame = encode_app_head(msg) + b"".join(views)
        assert decode(frame) == msg
        # the same records received in place by a follower whose log ends at a - 1
        follower = PmemStorage(Pool.create(DramMedia(POOL_SIZE)), segment_bytes=SEGMENT_BYTES)
        follower.apply_snapshot(Snapshot(SnapshotMeta(a - 2, 1, ConfState((1, 2)))) if a > 2
                                else Snapshot())
        follower.save(None, [Entry(log.term(a - 1), a - 1, EntryType.NORMAL, b"before")]
                      if a > 1 else [])
        if a > 1:
            region = follower.tail_region(a, log.term(a - 1), len(frame) - APP_HEAD_BYTES)
            region[:] = frame[APP_HEAD_BYTES:]
            follower.save(None, follower.received_entries(region, len(run)))
            assert follower.entries(a, b + 1) == list(run)
            follower.check()
        for view in views:
            view.release()
        # not this log's entries, or not all of them: no views
        assert log.record_views(()) is None
        assert log.record_views((*run, Entry(run[-1].term, last + 1))) is None
        assert log.record_views((Entry(run[0].term + 100, a),)) is None
        if first > 1:
            assert log.record_views((Entry(1, first - 1),)) is None
    assert crossed  # some runs crossed from one segment into the next
