"""The node driver without I/O: three Nodes wired by hand, no event loop, no clock.

What runs a node (asyncio, the simulator, a DPDK poller) only calls tick(),
receive() and turn(), and gives it a send(); this test is such a runner.
"""

from __future__ import annotations

from blizzard.exceptions import ProposalDroppedError
from blizzard.pmem import DramMedia, Pool
from blizzard.replication.node import Node, NotLeaderError
from blizzard.replication.raft.core import Role
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.structures import ops, registry_for

IDS = (1, 2, 3)


class Wire:
    """Frames queued per target; delivered when the test says so."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, bytes]] = []
        self.dead: set[int] = set()  # nodes whose frames are lost, both ways

    def endpoint(self, source: int):
        wire = self

        class Endpoint:
            def send(self, target: int, payload: bytes) -> bool:
                if source not in wire.dead and target not in wire.dead:
                    wire.frames.append((source, target, payload))
                return True

        return Endpoint()


def cluster(**node_options):
    wire = Wire()
    woken: set[int] = set()
    nodes = {}
    for i in IDS:
        data, log = Pool.create(DramMedia(4 << 20)), Pool.create(DramMedia(4 << 20))
        storage = PmemStorage(log, conf_state=ConfState(IDS), segment_bytes=1 << 16)
        nodes[i] = Node(i, storage=storage,
                        state_machine=SessionStateMachine(registry_for(data), data),
                        transport=wire.endpoint(i), wake=lambda i=i: woken.add(i),
                        clock=lambda: 0.0, seed=i, **node_options)

    def run(ticks: int = 0) -> None:
        for _ in range(max(ticks, 1)):
            if ticks:
                for i, node in nodes.items():
                    if i not in wire.dead:
                        node.tick()
            for _ in range(20):
                while woken:
                    nodes[woken.pop()].turn()
                frames, wire.frames = wire.frames, []
                for source, target, payload in frames:
                    nodes[target].receive(source, payload)
                if not frames and not woken:
                    break

    return nodes, run, wire


def test_three_nodes_elect_replicate_and_answer_without_an_event_loop():
    nodes, run, _ = cluster()
    run(ticks=40)
    leaders = [n for n in nodes.values() if n.raft.role == Role.LEADER]
    assert len(leaders) == 1
    follower = next(n for n in nodes.values() if n.raft.role != Role.LEADER)
    answers = []
    create = ops.encode(ops.Op("m", ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
    put = ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k", b"v")))
    follower.submit(wrap(7, 1, create), lambda key, result, error: answers.append((key, error)))
    run()
    follower.submit(wrap(7, 2, put), lambda key, result, error: answers.append((key, error)))
    run()
    assert answers == [((7, 1), None), ((7, 2), None)]
    reads = []
    follower.read(reads.append)
    run(ticks=3)
    assert reads == [None]
    applied = {n.applied for n in nodes.values()}
    assert len(applied) == 1
    for node in nodes.values():
        core = node.state_machine._inner.core("m")
        assert core.get(b"k") == b"v"


def test_no_leader_fails_requests_clearly():
    nodes, run, _ = cluster()
    node = nodes[1]
    answers = []
    node.read(answers.append)
    assert isinstance(answers[0], NotLeaderError)
    node.submit(wrap(1, 1, b"x"), lambda key, result, error: answers.append(error))
    run()
    assert isinstance(answers[1], NotLeaderError)
    assert isinstance(answers[1], ProposalDroppedError)


def test_a_malformed_frame_is_counted_and_dropped():
    nodes, run, _ = cluster()
    nodes[1].receive(2, b"\xffgarbage")
    assert nodes[1].bad_frames == 1
    run(ticks=40)
    assert sum(n.raft.role == Role.LEADER for n in nodes.values()) == 1


def test_a_committed_entry_that_is_not_an_envelope_settles_nothing_and_breaks_nothing():
    # Only envelopes are submitted through a node, but the log may hold other
    # data (an older writer, a bug elsewhere): every replica must apply past
    # it, and settle the entries waiting beside it.
    nodes, run, _ = cluster()
    run(ticks=40)
    leader = next(n for n in nodes.values() if n.raft.role == Role.LEADER)
    answers = []
    create = ops.encode(ops.Op("m", ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
    leader.submit(wrap(7, 1, create), lambda key, result, error: answers.append((key, error)))
    leader.raft.propose_batch([b"\x01short", b"\x09" + bytes(20)])  # too short; a bad version
    run()  # the three commit in one batch while (7, 1) waits
    assert answers == [((7, 1), None)]
    run(ticks=1)  # the leader's next tick tells its followers of the commit
    assert len({n.applied for n in nodes.values()}) == 1
    assert all(n.state_machine._inner.core("m") is not None for n in nodes.values())


def test_a_waiting_entry_is_proposed_again_when_a_new_leader_is_known():
    """The leader dies with a forwarded entry; no requester retries: the node
    proposes it again as soon as it learns the new leader, and it applies once."""
    nodes, run, wire = cluster()
    run(ticks=40)
    leader = next(i for i, n in nodes.items() if n.raft.role == Role.LEADER)
    follower = next(i for i in nodes if i != leader)
    create = ops.encode(ops.Op("q", ops.OpCode.CREATE, (b"pqueue", b"bytes", b"bytes")))
    answers = []
    nodes[follower].submit(wrap(9, 1, create), lambda key, result, error: answers.append(error))
    run()
    assert answers == [None]
    put = ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (b"once",)))
    nodes[follower].submit(wrap(9, 2, put), lambda key, result, error: answers.append(error))
    nodes[follower].turn()  # forwarded to the leader...
    wire.dead.add(leader)  # ...which dies with it
    run(ticks=60)
    assert answers == [None, None]
    assert nodes[follower].reproposed >= 1
    live = [n for i, n in nodes.items() if i != leader]
    assert all(list(n.state_machine._inner.core("q").values()) == [b"once"] for n in live)


def test_requests_whose_entries_arrive_inside_a_snapshot_are_answered_by_it():
    """A follower forwards two requests, then loses touch while the leader
    commits them and compacts its log past them: it catches up from a snapshot,
    which applies them here without an apply to settle them. They are answered
    at once from the snapshot's session table -- the result of the latest
    request, StaleRequestError for the older one -- not left to a retry."""
    from blizzard.exceptions import StaleRequestError

    nodes, run, wire = cluster(snapshot_entries=4)
    run(ticks=40)
    leader = next(i for i, n in nodes.items() if n.raft.role == Role.LEADER)
    follower = next(i for i in nodes if i != leader)
    create = ops.encode(ops.Op("q", ops.OpCode.CREATE, (b"pqueue", b"bytes", b"bytes")))
    answers: list = []
    nodes[leader].submit(wrap(5, 1, create), lambda key, result, error: answers.append(error))
    run()
    assert answers == [None]
    for seq, item in ((1, b"a"), (2, b"b")):
        put = ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (item,)))
        nodes[follower].submit(wrap(9, seq, put),
                               lambda key, result, error: answers.append((key, result, error)))
    nodes[follower].turn()  # forwarded to the leader...
    wire.dead.add(follower)  # ...and the follower hears no more
    run()
    for seq in range(2, 12):  # enough entries past them for the leader to compact
        put = ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (b"%d" % seq,)))
        nodes[leader].submit(wrap(5, seq, put), lambda key, result, error: None)
        run()
    assert nodes[leader].storage.first_index() > nodes[follower].applied + 1
    assert answers == [None]  # the follower's two still wait
    wire.dead.clear()
    run(ticks=10)
    assert nodes[follower].storage.first_index() == nodes[leader].storage.first_index()
    assert len(answers) == 3
    assert answers[1][0] == (9, 1) and isinstance(answers[1][1], StaleRequestError)
    assert answers[2] == ((9, 2), None, None)
    assert list(nodes[follower].state_machine._inner.core("q").values())[:2] == [b"a", b"b"]


def test_the_asyncio_runner_yields_between_turns_that_wake_it_again():
    """A turn that wakes the node again (an image copied a slice per turn) must
    still let the loop's other callbacks run: the transport's reads and dials,
    the client server. ``Event.wait()`` on a set event does not yield."""
    import asyncio

    from blizzard.cluster.ports import port_block
    from blizzard.replication.node import RaftNode
    from blizzard.replication.transport.tcp import TcpTransport

    turns_max = 20_000

    async def main() -> int:
        data, log = Pool.create(DramMedia(4 << 20)), Pool.create(DramMedia(4 << 20))
        transport = TcpTransport(1, {1: ("127.0.0.1", port_block(1))}, seed=1)
        node = RaftNode(1, storage=PmemStorage(log, conf_state=ConfState((1,))),
                        state_machine=SessionStateMachine(registry_for(data), data),
                        transport=transport, tick_s=0.01, seed=1)
        turns = 0
        turn = node.turn

        def busy_turn() -> None:
            nonlocal turns
            turn()
            turns += 1
            if turns < turns_max:
                node.wake()

        node.turn = busy_turn
        await node.start()
        try:
            node.wake()
            await asyncio.sleep(0.05)  # a timer callback, like a socket's
            return turns
        finally:
            await node.stop()

    turns_seen = asyncio.run(main())
    assert 0 < turns_seen < turns_max, turns_seen


def test_a_leader_holds_an_entry_resubmitted_in_its_term_once():
    """A requester that retries an entry its leader already holds adds nothing to
    the log (each copy would be replicated, persisted and dropped as a duplicate
    on every node); the last callback given is the one answered."""
    nodes, run, _ = cluster()
    run(ticks=40)
    leader = next(n for n in nodes.values() if n.raft.role == Role.LEADER)
    create = ops.encode(ops.Op("m", ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
    answers = []
    leader.submit(wrap(5, 1, create), lambda key, result, error: answers.append(("c", error)))
    run()
    last = leader.raft.log.last_index()
    put = wrap(5, 2, ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k", b"v"))))
    leader.submit(put, lambda key, result, error: answers.append(("first", error)))
    leader.turn()  # in the leader's log, not yet committed
    leader.submit(put, lambda key, result, error: answers.append(("second", error)))
    leader.submit(put, lambda key, result, error: answers.append(("third", error)))
    run()
    run(ticks=1)  # the leader's next tick tells its followers of the commit
    assert answers == [("c", None), ("third", None)]
    assert leader.resubmits_held == 2
    assert leader.raft.log.last_index() == last + 1
    assert all(n.state_machine._inner.core("m").get(b"k") == b"v" for n in nodes.values())


def test_a_leader_appends_an_entry_forwarded_twice_in_its_term_once():
    """A follower cannot know whether the leader got its forwarded entry, so a
    retry is forwarded again; the leader, which appended it already in this
    term, appends it once."""
    nodes, run, _ = cluster()
    run(ticks=40)
    leader = next(n for n in nodes.values() if n.raft.role == Role.LEADER)
    follower = next(n for n in nodes.values() if n.raft.role != Role.LEADER)
    create = ops.encode(ops.Op("q", ops.OpCode.CREATE, (b"pqueue", b"bytes", b"bytes")))
    answers = []
    follower.submit(wrap(6, 1, create), lambda key, result, error: answers.append(error))
    run()
    last = leader.raft.log.last_index()
    put = wrap(6, 2, ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (b"once",))))
    follower.submit(put, lambda key, result, error: answers.append(error))
    follower.turn()  # forwarded...
    follower.submit(put, lambda key, result, error: answers.append(error))
    follower.turn()  # ...and forwarded again
    run()
    assert answers == [None, None]
    assert follower.resubmits_held == 0
    assert leader.forwards_held == 1
    assert leader.raft.log.last_index() == last + 1
    assert all(list(n.state_machine._inner.core("q").values()) == [b"once"]
               for n in nodes.values())


def test_a_follower_holds_a_retry_of_an_entry_its_leader_sent_back():
    """Once the leader of this term has sent a follower the entry a retry is
    for, the follower does not forward it again: the entry commits unless the
    term ends (and then it is proposed again)."""
    nodes, run, wire = cluster()
    run(ticks=40)
    leader = next(n for n in nodes.values() if n.raft.role == Role.LEADER)
    follower = next(n for n in nodes.values() if n.raft.role != Role.LEADER)
    create = ops.encode(ops.Op("q", ops.OpCode.CREATE, (b"pqueue", b"bytes", b"bytes")))
    answers = []
    follower.submit(wrap(8, 1, create), lambda key, result, error: answers.append(error))
    run()
    last = leader.raft.log.last_index()
    put = wrap(8, 2, ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (b"once",))))
    follower.submit(put, lambda key, result, error: answers.append(error))

    def deliver() -> None:
        frames, wire.frames = wire.frames, []
        for source, target, payload in frames:
            nodes[target].receive(source, payload)

    follower.turn()  # forwarded
    deliver()
    leader.turn()  # appended, sent to the followers (not yet committed)
    deliver()
    follower.submit(put, lambda key, result, error: answers.append(error))
    assert follower.resubmits_held == 1
    run()
    assert answers == [None, None]
    assert leader.forwards_held == 0
    assert leader.raft.log.last_index() == last + 1
    assert all(list(n.state_machine._inner.core("q").values()) == [b"once"]
               for n in nodes.values())


def test_a_frame_of_another_version_is_refused_by_both_receive_paths(caplog):
    """A node of an older release (frame version 2) in the cluster: its frames
    are refused, counted and logged naming both versions, and never reach the
    log -- whether they arrive as a whole frame or at a log region's door."""
    nodes, run, wire = cluster()
    run(ticks=40)
    leader = next(n for n in nodes.values() if n.raft.role == Role.LEADER)
    follower = next(n for n in nodes.values() if n.raft.role != Role.LEADER)
    leader.submit(wrap(7, 1, ops.encode(
        ops.Op("m", ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))),
        lambda *_: None)
    run()
    wire.dead.add(follower.node_id)  # the leader's next MsgApp to it is captured below
    leader.submit(wrap(7, 2, ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k", b"v")))),
                  lambda *_: None)
    wire.dead.clear()
    leader.turn()
    app = next(f for s, t, f in wire.frames if t == follower.node_id)
    wire.frames.clear()
    old = bytes([2]) + app[1:]
    last = follower.storage.last_index()
    # at the region's door: the fixed part does not decode, so no region is lent
    assert follower.reserve_region(leader.node_id, old[:follower.head_bytes],
                                   len(old) - follower.head_bytes) is None
    with caplog.at_level("WARNING", logger="blizzard.node"):
        follower.receive(leader.node_id, old)
    assert follower.bad_frames == 1
    assert "frame version 2, where this node reads only version 3" in caplog.text
    assert follower.storage.last_index() == last
    follower.receive(leader.node_id, app)  # the same frame at the current version is taken
    run()
    assert follower.bad_frames == 1 and follower.storage.last_index() > last
