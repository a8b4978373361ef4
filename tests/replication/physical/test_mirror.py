"""MirroredMedia with real backups on loopback: images equal byte for byte,
every path (the undo log's fast path included) seen, resync, epochs."""

from __future__ import annotations

import time

import pytest

from blizzard import _compiled
from blizzard.pmem import DramMedia, Pool
from blizzard.pmem import _undolog as U
from blizzard.replication.physical import MirroredMedia
from blizzard.replication.physical import mirror as M
from tests.replication.physical.conftest import check_model, workload

SEEDS = [1, 2, 3]


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("seed", SEEDS)
def test_backup_images_equal_the_primary_byte_for_byte(mirror, seed):
    """After a seeded workload on all four structures, with every fence acknowledged
    by both backups, each backup's pool file is the primary's, byte for byte.

    A path that writes the pool without flushing through the media (or a fast
    undo log that flushes behind the wrapper's back) makes this fail.
    Replay: pytest tests/replication/physical/test_mirror.py -k 'seed'"""
    m = mirror(backups=2)
    pool = m.open_primary()
    model = workload(pool, seed, 300)
    assert m.media.stats.failures == 0
    primary = m.primary_image()
    for node in (2, 3):
        backup = m.backup_image(node)
        if backup != primary:
            diff = next(i for i in range(len(primary)) if primary[i] != backup[i])
            pytest.fail(f"seed {seed}: backup {node} differs from the primary at byte {diff}")
    check_model(pool, model)


@pytest.mark.skipif(not _compiled.compiled(), reason=_compiled.describe())
def test_the_fast_undo_log_runs_under_the_mirror(mirror):
    """No silent fallback: with the compiled undo log, a mirrored pool flushes through
    the native pointers, and its flushes and fences reach the mirror through the
    trampolines. (tests/pmem/test_undolog.py fails when the build is missing.)"""
    m = mirror(backups=1)
    pool = m.open_primary()
    assert type(pool._tx._log) is U.UndoLog and pool._tx._log.native
    before = m.media.stats.flushes
    with pool.transaction() as tx:
        off = tx.alloc(64)
        tx.set_root("x", off)
    with pool.transaction() as tx:
        tx.write(off, b"y" * 64)
    assert m.media.stats.flushes > before
    assert m.primary_image() == m.backup_image(2)


def test_a_restarted_backup_catches_up_by_missed_ranges(mirror):
    """A backup that was down while the primary went on (acks from the other one)
    is resynchronised from the ranges it missed, then counts again."""
    m = mirror(backups=2, acks=1)
    pool = m.open_primary()
    workload(pool, 7, 100)
    m.stop_backup(3)
    model = workload(pool, 8, 100, suffix="2")
    resync_bytes = m.media.stats.resync_bytes
    m.start_backup(3)
    assert m.media.wait_ready(30, nodes=[3])
    links = m.media.backups()
    assert links[3]["state"] == M.IN_SYNC
    # missed ranges, not the whole 8 MiB image
    assert 0 < m.media.stats.resync_bytes - resync_bytes < 1 << 20
    workload(pool, 9, 20, suffix="3")
    # the fence path now waits on backup 3 too: it must keep up
    assert m.media.sync(every=True)
    assert m.primary_image() == m.backup_image(3) == m.backup_image(2)
    check_model(pool, model, suffix="2")


def test_a_wiped_backup_gets_the_whole_image(mirror):
    m = mirror(backups=1)
    pool = m.open_primary()
    workload(pool, 11, 50)
    m.stop_backup(2)
    for path in (m.root / "node2").iterdir():
        path.unlink()
    m.start_backup(2)
    workload(pool, 12, 20, suffix="2")  # finds the old channel dead, fails fences meanwhile
    assert m.media.wait_ready(30, nodes=[2])
    workload(pool, 13, 5, suffix="3")
    assert m.media.stats.resyncs_whole == 2  # at start, and after the wipe
    assert m.primary_image() == m.backup_image(2)


def test_a_deposed_primary_is_refused(mirror):
    """Once a backup promised a newer epoch, the older primary's fences fail the
    rule and it learns it was deposed; the backup's image is untouched."""
    m = mirror(backups=1)
    pool = m.open_primary()
    workload(pool, 13, 30)
    server = m.servers[2]
    before = m.backup_image(2)
    state = server.fence_epoch((2 << 16) | 2)
    assert state.status == 0
    failures = m.media.stats.failures
    workload(pool, 14, 5, suffix="2")  # ships fences: refused, counted as failures
    assert m.media.stats.failures > failures
    assert wait_until(lambda: m.media.deposed is not None, 30)  # the supervisor's reconnect
    assert m.media.deposed == (2 << 16) | 2
    assert not m.media.ready()
    assert m.backup_image(2) == before


def test_no_backups_needed_means_no_waiting():
    media = MirroredMedia(DramMedia(1 << 20), {2: ("127.0.0.1", 1)}, node=1, epoch=1, acks=0)
    pool = Pool.create(media)
    with pool.transaction() as tx:
        tx.set_root("a", tx.alloc(8))
    assert media.stats.failures == 0 and media.stats.round_trips == 0
    pool.close()


def test_merge():
    assert M._merge([(10, 5), (0, 4), (4, 2), (12, 10)]) == [(0, 6), (10, 12)]
    assert M._merge([(5, 1)]) == [(5, 1)]


def test_pipelined_callbacks_fire_once_acknowledged(mirror):
    """With pipelined fences, Ops apply back to back and each callback runs once
    every fence of its Op is acknowledged; the images still end equal."""
    from blizzard.replication.physical.replicator import PhysicalReplicator
    from blizzard.structures import PHashMap, registry_for
    from blizzard.structures.ops import Encoder, OpCode

    m = mirror(backups=2, fence="pipelined", inflight_max=256)
    pool = m.open_primary()
    rep = PhysicalReplicator(registry_for(pool), m.media)
    PHashMap(pool, "h", replicator=rep)
    put = Encoder("h").two
    done: list[int] = []
    for i in range(200):
        rep.submit_callback(put(OpCode.MAP_PUT, b"k%d" % i, b"v" * 64),
                            lambda result, error, i=i: done.append(i if error is None else -1))
    rep.settle()
    assert done == list(range(200))
    assert m.media.stats.round_trips < m.media.stats.fences_shipped  # not one per fence
    assert m.media.sync(every=True)
    assert m.primary_image() == m.backup_image(2) == m.backup_image(3)
