"""A follower over DPDK receives its leader's entries straight into its Raft log.

Three processes over net_memif: node 2 is a real Raft node (RaftNode, the
DPDK transport, a pool for its log and one for its map); nodes 1 and 3 are
bare transports the test plays leaders with, sending frames exactly as the
C side cuts a message (:func:`frames.fragments`) -- in order, out of
order, twice, or not at all. A MsgApp whose first fragment comes first is
copied fragment by fragment from the mbufs into the log's free tail: one
copy (``socket_to_buffer``), then the one cut of each entry's data from its
record; any other arrives as bytes and is appended as before. A region the
log gives up half-way (another leader appended) is counted and written no
more; the new leader's entries follow.
"""

from __future__ import annotations

import time

import pytest

from blizzard.replication.raft import messages as m
from blizzard.replication.sessions import wrap
from blizzard.replication.transport.dpdk import frames
from blizzard.structures import ops
from tests.replication.transport.conftest import HostCluster

FRAME_BYTES = 1024
PER = FRAME_BYTES - frames.OVERHEAD_BYTES
VALUE = b"v" * 1024
SESSION = 77


def _put(seq: int) -> bytes:
    return wrap(7, seq, ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k%03d" % seq, VALUE))))


def _create() -> bytes:
    return wrap(7, 1, ops.encode(ops.Op("m", ops.OpCode.CREATE,
                                        (b"phashmap", b"bytes", b"bytes"))))


def _entries(first: int, datas: list[bytes], term: int = 1) -> tuple[m.Entry, ...]:
    return tuple(m.Entry(term, first + i, 0, d) for i, d in enumerate(datas))


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    cluster = HostCluster("dpdk", 3, options={"frame_bytes": FRAME_BYTES, "memory_mb": 128,
                                                  "message_bytes_max": 1 << 20})
    cluster.specs[2]["follower"] = str(tmp_path_factory.mktemp("follower"))
    try:
        cluster.start_all()
        cluster.wait_links()
        yield cluster
    finally:
        cluster.close()


class _Leader:
    """Node ``source`` of ``cluster``, sending node 2 whole messages as frames."""

    def __init__(self, cluster: HostCluster, source: int) -> None:
        self.cluster = cluster
        self.source = source
        self.tag = frames.cluster_tag(cluster.specs[1]["cluster_id"])
        self.message = 0

    def frames_of(self, msg: m.Message) -> list[bytes]:
        self.message += 1
        return frames.fragments(m.encode(msg), PER, cluster=self.tag, source=self.source,
                                destination=2, session=SESSION, message=self.message)

    def send(self, cut: list[bytes], order: list[int] | None = None) -> None:
        for k in (order if order is not None else range(len(cut))):
            assert self.cluster.hosts[self.source].call(f"raw 2 {cut[k].hex()}")["accepted"]


def _node(cluster: HostCluster) -> dict:
    return cluster.hosts[2].call("node")["node"]


def _wait(cluster: HostCluster, what: str, predicate) -> dict:
    deadline = time.monotonic() + 30
    while not predicate(status := _node(cluster)):
        assert time.monotonic() < deadline, f"{what}: {status}"
        time.sleep(0.02)
    return status


def _records(msg: m.MsgApp) -> int:
    return len(m.encode(msg)) - m.APP_HEAD_BYTES


def _data(msg: m.MsgApp) -> int:
    return sum(len(e.data) for e in msg.entries)


def _delta(after: dict, before: dict) -> dict:
    stages = ("socket_to_buffer", "frame_to_entries", "entries_to_log", "log_to_apply")
    out = {s: after["copies"][s] - before["copies"][s] for s in stages}
    out["in_place"] = after["received_in_place"] - before["received_in_place"]
    return out


def test_fragments_land_in_the_log_once_whatever_their_order(trio):
    one = _Leader(trio, 1)
    first = m.MsgApp(1, 2, 1, 0, 0, _entries(1, [b"", _create()]), 0)
    one.send(one.frames_of(first))  # the log's first records: the ordinary append
    before = _wait(trio, "the first entries", lambda s: s["last_index"] == 2)

    # in order, one fragment twice: into the log, copied once out of the mbufs
    app = m.MsgApp(1, 2, 1, 1, 2, _entries(3, [_put(s) for s in range(2, 6)]), 2)
    cut = one.frames_of(app)
    assert len(cut) >= 4
    one.send(cut, [0, 1, 1, *range(2, len(cut))])
    after = _wait(trio, "entries 3..6", lambda s: s["last_index"] == 6)
    assert _delta(after, before) == {"socket_to_buffer": _records(app),
                                     "frame_to_entries": _data(app), "entries_to_log": 0,
                                     "log_to_apply": 0, "in_place": 4}

    # the first fragment first, the others shuffled: into the log too
    app = m.MsgApp(1, 2, 1, 1, 6, _entries(7, [_put(s) for s in range(6, 10)]), 6)
    cut = one.frames_of(app)
    before, order = after, [0, *reversed(range(1, len(cut)))]
    one.send(cut, order)
    after = _wait(trio, "entries 7..10", lambda s: s["last_index"] == 10)
    assert _delta(after, before)["in_place"] == 4
    assert _delta(after, before)["socket_to_buffer"] == _records(app)

    # the first fragment after another: reassembled as bytes (copied out, joined)
    app = m.MsgApp(1, 2, 1, 1, 10, _entries(11, [_put(s) for s in range(10, 14)]), 10)
    cut = one.frames_of(app)
    before = after
    one.send(cut, [1, 0, *range(2, len(cut))])
    after = _wait(trio, "entries 11..14", lambda s: s["last_index"] == 14)
    delta = _delta(after, before)
    assert delta["in_place"] == 0 and delta["entries_to_log"] == _data(app)
    assert delta["socket_to_buffer"] == 2 * len(m.encode(app))

    # one fragment lost: nothing lands; the leader's resend goes into the log
    app = m.MsgApp(1, 2, 1, 1, 14, _entries(15, [_put(s) for s in range(14, 17)]), 14)
    lost = one.frames_of(app)
    before = after
    one.send(lost[:-1])
    resent = one.frames_of(app)
    one.send(resent)
    after = _wait(trio, "entries 15..17", lambda s: s["last_index"] == 17)
    assert _delta(after, before)["in_place"] == 3
    assert after["transport"]["regions_lost"] == 0
    # the lost fragment after all: its message's region went to the resend
    # meanwhile, so it is written no more (counted), and the log keeps the resend
    one.send(lost[-1:])
    after = _wait(trio, "the straggler", lambda s: s["transport"]["regions_lost"] == 1)
    after = _wait(trio, "everything applied", lambda s: s["applied"] >= 14)
    assert after["last_index"] == 17 and after["bad_frames"] == 0
    link = after["transport"]["links"]["1"]
    assert link["duplicates"] >= 1
    entries = trio.hosts[2].call("entries 1 18")["entries"]
    assert len(entries) == 17 and entries[-1] == repr(m.Entry(1, 17, 0, _put(16)))


def test_a_region_given_up_mid_message_is_counted_and_written_no_more(trio):
    status = _node(trio)
    last, term, lost = status["last_index"], status["term"], status["transport"]["regions_lost"]
    one, three = _Leader(trio, 1), _Leader(trio, 3)
    one.message = 1000  # a new message id range for node 1's session
    # node 1's message is half in the log's tail...
    app = m.MsgApp(1, 2, term, term, last, _entries(last + 1, [_put(40), _put(41)], term), last)
    cut = one.frames_of(app)
    assert len(cut) >= 3
    one.send(cut[:2])
    time.sleep(0.2)
    # ...when node 3, leading a new term, appends there: the log gives the region up
    new = term + 1
    three.send(three.frames_of(m.MsgApp(3, 2, new, term, last,
                                        _entries(last + 1, [_put(50)], new), last)))
    _wait(trio, "node 3's entry", lambda s: s["term"] == new and s["last_index"] == last + 1)
    one.send(cut[2:])  # the rest of node 1's message goes nowhere
    after = _wait(trio, "the region lost",
                  lambda s: s["transport"]["regions_lost"] > lost)
    assert after["transport"]["regions_lost"] == lost + 1
    # node 3 goes on (its next entries land in the log), nothing of node 1's is there
    app = m.MsgApp(3, 2, new, new, last + 1, _entries(last + 2, [_put(51)], new), last + 2)
    three.send(three.frames_of(app))
    after = _wait(trio, "node 3's next entry",
                  lambda s: s["last_index"] == last + 2 and s["applied"] >= last + 2)
    entries = trio.hosts[2].call(f"entries {last + 1} {last + 3}")["entries"]
    assert entries == [repr(m.Entry(new, last + 1, 0, _put(50))),
                       repr(m.Entry(new, last + 2, 0, _put(51)))]
    assert after["bad_frames"] == 0
