"""Progress tracking (probe / replicate / snapshot) and MemoryStorage."""

from __future__ import annotations

import pytest

from blizzard.replication.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from blizzard.replication.raft.progress import Inflights, Progress, ProgressState
from blizzard.replication.raft.storage import (
    CompactedError,
    MemoryStorage,
    SnapshotOutOfDateError,
    UnavailableError,
)


def test_inflights_bounded_and_freed_in_order():
    window = Inflights(3)
    for last in (5, 9, 12):
        window.add(last)
    assert window.full()
    with pytest.raises(AssertionError):
        window.add(13)
    window.free_le(9)
    assert len(window) == 1 and not window.full()
    window.free_first_one()
    assert len(window) == 0


def test_probe_sends_one_message_at_a_time():
    progress = Progress(next_index=10, inflight_max=4)
    assert progress.state == ProgressState.PROBE and not progress.is_paused()
    progress.sent_entries(12)
    assert progress.is_paused() and progress.next == 10


def test_replicate_pipelines_up_to_the_window():
    progress = Progress(next_index=1, inflight_max=2)
    progress.maybe_update(4)
    progress.become_replicate()
    progress.sent_entries(6)
    assert progress.next == 7 and not progress.is_paused()
    progress.sent_entries(8)
    assert progress.is_paused()
    progress.maybe_update(6)
    progress.inflights.free_le(6)
    assert not progress.is_paused()


def test_rejection_with_hint_jumps_back():
    progress = Progress(next_index=101, inflight_max=4)
    # The follower rejected the append after index 100 and says its log may
    # match up to 40: probe from 41, not 99.
    assert progress.maybe_decrease_to(100, 40)
    assert progress.next == 41
    assert not progress.maybe_decrease_to(100, 40), "a stale rejection is ignored"


def test_snapshot_state_pauses_until_acknowledged():
    progress = Progress(next_index=5, inflight_max=4)
    progress.become_snapshot(50)
    assert progress.is_paused()
    progress.maybe_update(50)
    progress.become_probe()
    assert progress.next == 51


def storage_with(count: int) -> MemoryStorage:
    storage = MemoryStorage(ConfState((1, 2, 3)))
    storage.append([Entry(1, i, data=b"%d" % i) for i in range(1, count + 1)])
    return storage


def test_memory_storage_reads_and_truncating_append():
    storage = storage_with(5)
    assert (storage.first_index(), storage.last_index()) == (1, 5)
    assert [e.index for e in storage.entries(2, 5)] == [2, 3, 4]
    storage.append([Entry(2, 4), Entry(2, 5), Entry(2, 6)])
    assert [storage.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    with pytest.raises(UnavailableError):
        storage.term(7)
    assert len(storage.entries(1, 7, bytes_max=1)) == 1


def test_memory_storage_compaction_and_snapshots():
    storage = storage_with(10)
    snapshot = Snapshot(SnapshotMeta(6, 1, ConfState((1, 2, 3))), b"state")
    storage.compact(snapshot)
    assert storage.first_index() == 7 and storage.term(6) == 1
    with pytest.raises(CompactedError):
        storage.entries(5, 8)
    with pytest.raises(CompactedError):
        storage.term(5)
    storage.append([Entry(1, 3), Entry(1, 4)])  # covered by the snapshot: ignored
    assert storage.last_index() == 10
    newer = Snapshot(SnapshotMeta(20, 3, ConfState((1, 2))), b"later")
    storage.apply_snapshot(newer)
    assert (storage.first_index(), storage.last_index()) == (21, 20)
    assert storage.initial_state()[1] == ConfState((1, 2))
    with pytest.raises(SnapshotOutOfDateError):
        storage.apply_snapshot(snapshot)
    clone = storage.clone()
    clone.append([Entry(3, 21)])
    assert storage.last_index() == 20 and clone.last_index() == 21
