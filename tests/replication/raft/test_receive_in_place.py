"""Entries received straight into the Raft log's free tail (the log as the
network buffer): taken where they lie, one flush and one fence per batch, and
a crash or a killed process at any point leaves a log that verifies and holds
nothing the node had not accepted."""

from __future__ import annotations

import itertools
import random
import socket
import subprocess
import sys
import textwrap

import pytest

from blizzard.exceptions import ReceiveRegionLostError
from blizzard.pmem import CrashSimMedia, Pool, random_chooser
from blizzard.replication import copies as copiesmod
from blizzard.replication.raft import messages as m
from blizzard.replication.raft.pmem_storage import PmemStorage

pytestmark = pytest.mark.interpreted

POOL_SIZE = 2 << 20
SEGMENT_BYTES = 64 << 10


def _log_with(media, count: int) -> PmemStorage:
    log = PmemStorage(Pool.create(media), segment_bytes=SEGMENT_BYTES)
    log.save(m.HardState(1, 1, 0), [m.Entry(1, i, m.EntryType.NORMAL, b"old %d" % i)
                                    for i in range(1, count + 1)])
    return log


def _frame_parts(first: int, count: int, rng: random.Random,
                 term: int = 1) -> tuple[bytes, bytes, tuple[m.Entry, ...]]:
    """A MsgApp of ``count`` entries from ``first`` split where a transport asks
    the node for a region: its fixed part and the entries' records."""
    entries = tuple(m.Entry(term, first + i, m.EntryType.NORMAL,
                            rng.randbytes(rng.choice([0, 1, 7, 64, 1024])))
                    for i in range(count))
    frame = m.encode(m.MsgApp(1, 2, term, term, first - 1, entries, 0))
    return frame[:m.APP_HEAD_BYTES], frame[m.APP_HEAD_BYTES:], entries


def test_the_wire_carries_entries_in_the_logs_record_layout():
    rng = random.Random(0)
    head, tail, entries = _frame_parts(6, 5, rng)
    assert m.decode_app_head(head) == (1, 2, 1, 1, 5, 0, 5)
    assert m.decode_app_head(m.encode(m.MsgHeartbeat(1, 2, 1, 0))[:m.APP_HEAD_BYTES]) is None
    assert len(tail) % 8 == 0
    assert m.decode(head + tail).entries == entries


def test_received_entries_are_taken_where_they_lie():
    rng = random.Random(1)
    media = CrashSimMedia(POOL_SIZE)
    log = _log_with(media, 5)
    counted = copiesmod.Copies()
    log.count_copies(counted)
    _, tail, sent = _frame_parts(6, 8, rng)
    region = log.tail_region(6, 1, len(tail))
    assert region is not None and len(region) == len(tail)
    region[:] = tail  # what recv_into does: the kernel fills the view
    entries = log.received_entries(region, 8)
    assert tuple(entries) == sent
    fences, flushes = media.fences, media.flushes
    log.save(m.HardState(1, 1, 3), entries)
    assert media.fences == fences + 1
    assert media.flushes - flushes <= 3  # the region, last_index, the hard state
    assert counted.counts == dict.fromkeys(copiesmod.STAGES, 0)  # nothing copied into the log
    log.check()
    reopened = PmemStorage(Pool.open(CrashSimMedia.from_image(media.durable_image())))
    assert reopened.entries(6, 14) == list(sent)
    reopened.check()
    # and the log goes on, in place or not
    _, tail, more = _frame_parts(14, 3, rng)
    region = log.tail_region(14, 1, len(tail))
    region[:] = tail
    log.save(None, [*log.received_entries(region, 3), m.Entry(1, 17, 0, b"appended")])
    log.check()
    assert log.entries(14, 18) == [*more, m.Entry(1, 17, 0, b"appended")]


def test_regions_received_one_after_another_before_the_log_takes_them():
    """A leader pipelines: the next frame's entries arrive before the node has
    persisted the previous ones. They go after those, and the log takes each
    batch when the node persists it."""
    rng = random.Random(5)
    media = CrashSimMedia(POOL_SIZE)
    log = _log_with(media, 5)
    counted = copiesmod.Copies()
    log.count_copies(counted)
    batches = []
    first = 6
    for count in (3, 1, 4):
        _, tail, sent = _frame_parts(first, count, rng)
        assert log.tail_region(first, 2, len(tail)) is None  # the entry before is of term 1
        region = log.tail_region(first, 1, len(tail))
        region[:] = tail
        batches.append(log.received_entries(region, count))
        assert tuple(batches[-1]) == sent
        first += count
    log.save(None, batches[0])
    assert log.last_index() == 8
    log.save(None, batches[1] + batches[2])
    assert log.last_index() == 13 and counted.counts["entries_to_log"] == 0
    log.check()
    reopened = PmemStorage(Pool.open(CrashSimMedia.from_image(media.durable_image())))
    assert reopened.entries(6, 14) == [e for batch in batches for e in batch]


@pytest.mark.parametrize("seed", range(6))
def test_regions_that_need_the_next_segment_link_it_and_give_it_up_with_them(seed):
    """A region too long for the rest of the segment goes to the start of a
    segment linked for it. Taken, the log goes on there; given up (the node
    persisted other entries), the segment is unlinked again; a crash at any
    fence recovers a log that verifies and holds only entries taken."""
    rng = random.Random(seed)
    media = CrashSimMedia(POOL_SIZE)
    log = PmemStorage(Pool.create(media), segment_bytes=4096)
    log.save(m.HardState(1, 1, 0), [m.Entry(1, 1, 0, b"first")])
    expected = log.entries(1, 2)
    first = 2
    batches: list[list[m.Entry]] = []  # received, not taken (in order)
    for round_ in range(24):
        for _ in range(rng.randrange(1, 4)):
            count = rng.randrange(1, 5)
            at = first + sum(map(len, batches))
            _, tail, _ = _frame_parts(at, count, rng)
            region = log.tail_region(at, 1, len(tail))
            assert region is not None
            region[:] = tail
            batches.append(log.received_entries(region, count))
        if rng.random() < 0.3:  # another leader's entries win: every region goes
            other = [m.Entry(1, first, 0, b"other %d" % round_)]
            log.save(None, other)
            expected += other
            first += 1
            batches = []
        else:
            received = [e for batch in batches for e in batch]
            taken = received[:rng.randrange(1, len(received) + 1)]
            ends = list(itertools.accumulate(map(len, batches)))
            # batches after those taken whole stay; a batch cut short, and any after it, go
            batches = batches[ends.index(len(taken)) + 1:] if len(taken) in ends else []
            log.save(None, taken)
            expected += taken
            first += len(taken)
        log.check()
        assert log.entries(1, first) == expected, f"seed {seed} round {round_}"
    log.save(None, [e for batch in batches for e in batch])
    expected += [e for batch in batches for e in batch]
    first = len(expected) + 1
    assert log.entries(1, first) == expected
    assert len(log._segments) > 1
    _, tail, _ = _frame_parts(first, 6, rng)
    region = log.tail_region(first, 1, len(tail))
    region[:] = tail
    entries = log.received_entries(region, 6)
    media.fence_hook = lambda media_: _crash(media_, rng)
    with pytest.raises(_Crash) as crashed:
        log.save(None, entries)
    recovered = PmemStorage(Pool.open(CrashSimMedia.from_image(crashed.value.args[0])))
    recovered.check()
    got = recovered.entries(1, recovered.last_index() + 1)
    assert got[:len(expected)] == expected and got[len(expected):] == entries[:len(got)
                                                                           - len(expected)]


def _crash(media, rng):
    media.fence_hook = None
    raise _Crash(media.crash_image(random_chooser(rng.randrange(2**32))))


def test_a_region_overtaken_by_another_write_is_refused():
    rng = random.Random(2)
    log = _log_with(CrashSimMedia(POOL_SIZE), 3)
    _, tail, _ = _frame_parts(4, 2, rng)
    region = log.tail_region(4, 1, len(tail))
    region[:] = tail
    log.save(None, [m.Entry(1, 4, m.EntryType.NORMAL, b"appended meanwhile")])
    with pytest.raises(ReceiveRegionLostError):
        log.received_entries(region, 2)
    assert log.tail_region(9, 1, 64) is None  # not where the log ends
    assert log.tail_region(5, 1, 63) is None  # records are 8-byte aligned
    region = log.tail_region(5, 1, len(tail))
    region[:] = tail  # records for 4, 5 where 5, 6 belong
    with pytest.raises(m.MessageDecodeError, match="cannot follow"):
        log.received_entries(region, 2)
    log.check()
    assert log.entries(4, 5) == [m.Entry(1, 4, 0, b"appended meanwhile")]


def test_entries_taken_but_not_accepted_leave_nothing_behind():
    """The node took entries from the region but persisted others (the core
    rejected them, or another leader's arrived first): the ordinary append
    overwrites the region and the rejected records never verify."""
    rng = random.Random(4)
    media = CrashSimMedia(POOL_SIZE)
    log = _log_with(media, 3)
    _, tail, _ = _frame_parts(4, 4, rng)
    region = log.tail_region(4, 1, len(tail))
    region[:] = tail
    log.received_entries(region, 4)
    other = [m.Entry(2, 4, 0, b"another leader's")]
    log.save(m.HardState(2, 0, 0), other)
    log.check()
    reopened = PmemStorage(Pool.open(CrashSimMedia.from_image(media.durable_image())))
    assert reopened.last_index() == 4 and reopened.entries(4, 5) == other
    reopened.check()


@pytest.mark.parametrize("seed", range(8))
def test_a_crash_keeps_received_entries_only_once_taken(seed):
    """Crash with any subset of unflushed lines durable: before the entries are
    taken (even with last_index forced over them) the log is as before; at the
    taking fence, it is as before plus a prefix of them."""
    rng = random.Random(seed)
    media = CrashSimMedia(POOL_SIZE)
    log = _log_with(media, 4)
    before = log.entries(1, 5)
    _, tail, _ = _frame_parts(5, 6, rng)
    region = log.tail_region(5, 1, len(tail))
    region[:] = tail
    log.received_entries(region, 6)
    log._store_last_index(10)  # the worst case: a word claims them, durably
    media.drain()
    image = media.crash_image(random_chooser(rng.randrange(2**32)))
    recovered = PmemStorage(Pool.open(CrashSimMedia.from_image(image)))
    recovered.check()
    assert recovered.entries(1, recovered.last_index() + 1) == before, f"seed {seed}"

    log = _log_with(CrashSimMedia(POOL_SIZE), 4)
    media = log._media
    region = log.tail_region(5, 1, len(tail))
    region[:] = tail
    entries = log.received_entries(region, 6)

    def crash(media_):
        media_.fence_hook = None
        raise _Crash(media_.crash_image(random_chooser(rng.randrange(2**32))))

    media.fence_hook = crash
    with pytest.raises(_Crash) as crashed:
        log.save(m.HardState(1, 1, 2), entries)
    recovered = PmemStorage(Pool.open(CrashSimMedia.from_image(crashed.value.args[0])))
    recovered.check()
    got = recovered.entries(1, recovered.last_index() + 1)
    assert got[:4] == before and got[4:] == entries[:len(got) - 4], f"seed {seed}"


class _Crash(Exception):
    def __str__(self) -> str:
        return "a crash image"


_CHILD = textwrap.dedent("""
    import socket, sys
    from blizzard.pmem import Pool
    from blizzard.replication.raft.messages import Entry, EntryType, HardState
    from blizzard.replication.raft.pmem_storage import PmemStorage

    path, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pool = Pool.create(path, 2 << 20, mode="pmem")
    log = PmemStorage(pool, segment_bytes=64 << 10)
    log.save(HardState(1, 1, 0), [Entry(1, i, EntryType.NORMAL, b"old %d" % i)
                                  for i in range(1, 6)])
    region = log.tail_region(6, 1, nbytes)
    sock = socket.create_connection(("127.0.0.1", port))
    got = 0
    while got < nbytes:
        n = sock.recv_into(region[got:])
        if not n:
            break
        got += n
        print(got, flush=True)
    sys.stdin.read()  # killed before this returns
""")


def test_a_process_killed_mid_receive_leaves_a_valid_log(tmp_path):
    """A real process receives a MsgApp's records from a socket straight into its
    mapped log and is killed with SIGKILL half-way: the reopened log verifies and
    holds exactly the entries it had before."""
    rng = random.Random(3)
    _, tail, _ = _frame_parts(6, 40, rng)
    path = tmp_path / "log.pool"
    with socket.create_server(("127.0.0.1", 0)) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(server.getsockname()[1]),
             str(len(tail))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            server.settimeout(60)
            conn, _ = server.accept()
            with conn:
                half = len(tail) // 2
                conn.sendall(tail[:half])
                got = 0
                while got < half:  # the child has received half into its log
                    line = child.stdout.readline()
                    assert line, "the child exited early"
                    got = int(line)
                child.kill()
                child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(60)
    with Pool.open(path, mode="pmem") as pool:
        log = PmemStorage(pool)
        log.check()
        assert log.last_index() == 5
        assert [e.data for e in log.entries(1, 6)] == [b"old %d" % i for i in range(1, 6)]
        log.save(None, [m.Entry(1, 6, m.EntryType.NORMAL, b"next")])  # and it goes on
        log.check()
