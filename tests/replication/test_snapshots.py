"""Snapshots as pool images: copied while the pool changes, streamed in frames that
may come twice or in any order, installed in place; a follower that was away
catches up from the log's tail or from an image; refusals fail the install only."""

from __future__ import annotations

import random

import pytest

from blizzard.pmem import DramMedia, Pool
from blizzard.replication.node import Node
from blizzard.replication.raft.core import Role
from blizzard.replication.raft.messages import ConfState, MsgSnap, SnapshotMeta
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.replication.snapshots import (
    ImageJob,
    ImageReceiver,
    SnapshotInstallError,
    is_stream_frame,
)
from blizzard.structures import PHashMap, PQueue, ops, registry_for

IDS = (1, 2, 3)


class MemoryImages:
    """StateImages in memory (the cluster keeps them in a file, the simulator in
    the replica): the receiving side of these tests."""

    def __init__(self, pool: Pool, machine: SessionStateMachine) -> None:
        self.pool = pool
        self.machine = machine
        self.incoming: bytearray | None = None
        self.ready: int | None = None
        self.refuse: str | None = None

    def begin(self, index, size, total):
        if self.refuse:
            raise SnapshotInstallError(self.refuse)
        if size != self.pool.size:
            raise SnapshotInstallError(f"an image of a {size}-byte pool")
        self.incoming = bytearray(size)

    def write(self, offset, data):
        self.incoming[offset:offset + len(data)] = data

    def complete(self, index, term):
        self.ready = index

    def abort(self):
        if self.ready is None:
            self.incoming = None

    def discard(self):
        self.incoming = self.ready = None

    def install(self, index):
        assert self.ready == index
        from blizzard.pmem.image import geometry, used_pieces

        g = geometry(self.incoming)
        for off, n in used_pieces(self.incoming, heap_off=g["heap_off"],
                                  table_off=g["table_off"], nchunks=g["nchunks"]):
            self.pool.buf[off:off + n] = self.incoming[off:off + n]
        self.incoming = self.ready = None
        self.pool.reload()
        self.machine.reload()


def _filled_pool(seed: int) -> Pool:
    rng = random.Random(seed)
    pool = Pool.create(DramMedia(8 << 20))
    SessionStateMachine(registry_for(pool), pool)  # a node's pool holds its session table
    m, q = PHashMap(pool, "m"), PQueue(pool, "q")
    for i in range(500):
        m[b"k%d" % rng.randrange(300)] = rng.randbytes(rng.choice((10, 3000)))
        q.put(b"%d" % i)
    return pool


@pytest.mark.parametrize("seed", range(5))
def test_an_image_streamed_in_any_order_installs_the_state_it_was_taken_at(seed):
    rng = random.Random(seed)
    source = _filled_pool(seed)
    m = PHashMap(source, "m")
    job = ImageJob(source)
    while not job.step():
        m[b"k%d" % rng.randrange(300)] = rng.randbytes(50)  # the pool goes on changing
    job.add_target(2)
    job.finish(SnapshotMeta(registry_for(source).last_applied, 3, ConfState(IDS)), 5)
    expected = registry_for(source).snapshot()
    frames: list[bytes] = []
    sender = job.senders[2]
    while not sender.done:
        sender.pump(lambda target, frame: frames.append(frame) or True, 1 << 30)
    assert all(is_stream_frame(f) for f in frames)
    frames += rng.sample(frames, len(frames) // 3)  # duplicates...
    rng.shuffle(frames)  # ...in any order
    target = Pool.create(DramMedia(8 << 20))
    PHashMap(target, "other")[b"x"] = b"y"
    machine = SessionStateMachine(registry_for(target), target)
    handle = PHashMap(target, "m")
    images = MemoryImages(target, machine)
    receiver = ImageReceiver(2, images)
    done = [receiver.receive(1, frame) for frame in frames]
    [snap] = [msg for msg in done if msg is not None]
    assert isinstance(snap, MsgSnap) and snap.term == 5 and snap.snapshot.data == b""
    assert snap.snapshot.meta == job.meta
    images.install(snap.snapshot.meta.index)
    assert registry_for(target).snapshot() == expected
    assert dict(handle.items()) == dict(PHashMap(target, "m").items())  # the handle follows
    target.check()
    registry_for(target).check()
    job.close()


def test_a_lost_frame_never_completes_and_a_refusal_fails_the_install_only():
    source = _filled_pool(1)
    job = ImageJob(source)
    while not job.step():
        pass
    job.add_target(2)
    job.finish(SnapshotMeta(registry_for(source).last_applied, 1, ConfState(IDS)), 1)
    frames: list[bytes] = []
    while not job.senders[2].done:
        job.senders[2].pump(lambda target, frame: frames.append(frame) or True, 1 << 30)
    target = Pool.create(DramMedia(8 << 20))
    images = MemoryImages(target, SessionStateMachine(registry_for(target), target))
    receiver = ImageReceiver(2, images)
    assert [receiver.receive(1, f) for f in frames[:2] + frames[3:]] == [None] * (len(frames) - 1)
    assert images.ready is None
    other = MemoryImages(Pool.create(DramMedia(4 << 20)), None)  # another pool size
    refusing = ImageReceiver(3, other)
    assert all(refusing.receive(1, f) is None for f in frames)
    assert refusing.installs_refused == 1 and "pool" in refusing.last_error
    job.close()


class Wire:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, bytes]] = []
        self.down: set[int] = set()

    def endpoint(self, source: int):
        wire = self

        class Endpoint:
            def send(self, target: int, payload: bytes) -> bool:
                if source not in wire.down and target not in wire.down:
                    wire.frames.append((source, target, payload))
                return True

        return Endpoint()


def _cluster(*, tail: int):
    wire = Wire()
    woken: set[int] = set()
    nodes, pools = {}, {}
    for i in IDS:
        data, log = Pool.create(DramMedia(8 << 20)), Pool.create(DramMedia(8 << 20))
        machine = SessionStateMachine(registry_for(data), data)
        nodes[i] = Node(i, storage=PmemStorage(log, conf_state=ConfState(IDS),
                                               segment_bytes=1 << 14),
                        state_machine=machine, transport=wire.endpoint(i),
                        wake=lambda i=i: woken.add(i), clock=lambda: 0.0, seed=i,
                        snapshot_entries=20, snapshot_tail_entries=tail,
                        images=MemoryImages(data, machine))
        pools[i] = data

    def run(ticks: int = 1) -> None:
        for _ in range(ticks):
            for i, node in nodes.items():
                if i not in wire.down:
                    node.tick()
            for _ in range(50):
                while woken:
                    i = woken.pop()
                    if i not in wire.down:
                        nodes[i].turn()
                frames, wire.frames = wire.frames, []
                for source, target, payload in frames:
                    nodes[target].receive(source, payload)
                if not frames and not woken:
                    break

    return nodes, pools, wire, run


@pytest.mark.parametrize("tail", [0, 200])
def test_a_follower_away_catches_up_from_the_tail_or_from_an_image(tail):
    nodes, pools, wire, run = _cluster(tail=tail)
    run(40)
    leader = next(i for i, n in nodes.items() if n.raft.role == Role.LEADER)
    away = next(i for i in IDS if i != leader)
    create = ops.encode(ops.Op("m", ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
    nodes[leader].submit(wrap(1, 1, create), lambda *a: None)
    run(2)
    wire.down.add(away)
    for seq in range(2, 120):
        op = ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k%d" % (seq % 50), b"%d" % seq)))
        nodes[leader].submit(wrap(1, seq, op), lambda *a: None)
        run(1)
    assert nodes[leader].storage.first_index() > nodes[away].applied + 1 or tail
    wire.down.discard(away)
    run(60)
    applied = {n.applied for n in nodes.values()}
    assert len(applied) == 1, applied
    states = {registry_for(p).snapshot() for p in pools.values()}
    assert len(states) == 1
    images = sum(n.snapshots_installed for n in nodes.values())
    assert images == (0 if tail else 1)
    for pool in pools.values():
        pool.check()
        registry_for(pool).check()
