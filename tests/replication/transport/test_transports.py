"""Every transport passes the same tests: one process per node (DPDK allows one
EAL per process), real loopback sockets or real DPDK links (net_memif).

What a Raft node needs from a transport: messages of any size arrive whole,
once, in the order each peer sent them; a bad message does not stop the
transport; the outbox is bounded; links come back after a peer is killed
and restarted.
"""

from __future__ import annotations

import time

import pytest

from tests.replication.transport.conftest import HostCluster

SMALL, LARGE = 100, 100_000  # LARGE spans 13 frames of 8 KiB on DPDK


@pytest.fixture
def trio(kind):
    cluster = HostCluster(kind, 3)
    try:
        cluster.start_all()
        cluster.wait_links()
        yield cluster
    finally:
        cluster.close()


def test_all_to_all_whole_in_order_once_and_batched(trio):
    """Small and large messages from every node to every other; then a message
    the receiver cannot parse, which costs one bad frame and nothing else."""
    per_peer = 0
    for node in trio.ids:
        for peer in trio.ids:
            if peer == node:
                continue
            host = trio.hosts[node]
            accepted = host.call(f"send {peer} 300 {SMALL}")["accepted"]
            accepted += host.call(f"send {peer} 10 {LARGE}")["accepted"]
            accepted += host.call(f"send {peer} 300 {SMALL}")["accepted"]
            assert accepted == 610
    per_peer = 610
    for node in trio.ids:
        inbox = trio.wait_inbox(node, lambda box: len(box) == 2 and all(
            b["count"] >= per_peer for b in box.values()))
        for source, box in inbox.items():
            assert box == {"count": per_peer, "in_order": True, "intact": True,
                           "duplicates": 0, "last": per_peer}, (node, source)
    stats = trio.hosts[1].stats()
    sent = stats["stats"]
    assert sent["frames_sent"] == 2 * per_peer and sent["frames_dropped"] == 0
    if trio.kind == "tcp":
        # A message leaves at once (sendmsg, a Raft turn sends about one per
        # peer); only messages queued behind a full socket share a write.
        assert sent["writes"] <= sent["frames_sent"]
    else:
        links = stats["status"]["links"].values()
        frames = sum(link["frames_sent"] for link in links)
        assert frames >= 2 * (per_peer + 10 * 12)  # the large ones went as 13 frames each
        # A message leaves at once (a Raft turn sends about one per peer); the
        # frames of a large one go out in bursts.
        assert sent["writes"] < frames

    assert trio.hosts[1].call("boom 2")["accepted"]
    trio.hosts[1].call(f"send 2 1 {SMALL}")
    trio.wait_inbox(2, lambda box: box[1]["count"] == per_peer + 1)
    assert trio.hosts[2].stats()["stats"]["bad_frames"] == 1
    assert "receiver failed on a message from node 1" in trio.hosts[2].log() \
        or "receiver failed on a frame from node 1" in trio.hosts[2].log()


def test_the_outbox_is_bounded_and_drops_while_the_peer_is_down(kind):
    options = {"outbox_frames_max": 100} if kind == "tcp" else {}
    cluster = HostCluster(kind, 2, options=options)
    try:
        host = cluster.start(1)  # node 2 never starts
        accepted = host.call(f"send 2 1000 {SMALL} 0")["accepted"]
        stats = host.stats()["stats"]
        assert accepted <= 100 and stats["frames_dropped"] >= 900
    finally:
        cluster.close()


def test_links_come_back_after_either_side_is_killed_and_restarted(kind):
    """SIGKILL, then a new process for the same node: the survivor's link
    recovers (on DPDK both memif roles: node 1 serves the link, node 2 dials)."""
    cluster = HostCluster(kind, 2)
    try:
        cluster.start_all()
        cluster.wait_links()
        cluster.hosts[1].call(f"send 2 5 {SMALL}")
        cluster.wait_inbox(2, lambda box: box.get(1, {}).get("count") == 5)
        for victim, survivor in ((2, 1), (1, 2)):
            cluster.kill(victim)
            reborn = cluster.start(victim)
            deadline = time.monotonic() + 30
            while not reborn.inbox().get(survivor, {}).get("count"):
                # Raft resends; a transport may drop while the link is down
                cluster.hosts[survivor].call(f"send {victim} 1 {LARGE}")
                assert time.monotonic() < deadline, cluster.hosts[survivor].log()[-2000:]
                time.sleep(0.05)
            box = reborn.inbox()[survivor]
            assert box["intact"] and box["duplicates"] == 0
    finally:
        cluster.close()


def test_a_peer_added_at_run_time_then_removed_then_added_again(kind):
    """Membership at run time: nodes 1 and 2 run as a pair; node 3 starts knowing
    all three, and the pair adds it (``add_peer``): messages flow every way.
    Node 1 removes it: node 1 sends it nothing (on DPDK its link is detached, so
    nothing of node 3's arrives either); adding it again brings the link back."""
    cluster = HostCluster(kind, 3)
    try:
        for node in (1, 2):
            spec = cluster.specs[node]
            spec["nodes"] = [1, 2]
            spec["addresses"] = {k: v for k, v in spec["addresses"].items() if k != "3"}
            cluster.start(node)
        cluster.wait_links()
        host, port = cluster.specs[3]["addresses"]["3"]
        cluster.start(3)
        for node in (1, 2):
            assert "3" in cluster.hosts[node].call(f"add 3 {host} {port}")["links"]
            cluster.hosts[node].call(f"add 3 {host} {port}")  # twice: nothing more
        cluster.wait_links()
        for source, target in ((1, 3), (2, 3), (3, 1), (3, 2)):
            assert cluster.hosts[source].call(f"send {target} 20 {LARGE}")["accepted"] == 20
        cluster.wait_inbox(3, lambda box: box.get(1, {}).get("count") == 20
                           and box.get(2, {}).get("count") == 20)
        for node in (1, 2):
            box = cluster.wait_inbox(node, lambda box: box.get(3, {}).get("count") == 20)[3]
            assert box["intact"] and box["in_order"] and box["duplicates"] == 0

        assert "3" not in cluster.hosts[1].call("remove 3")["links"]
        cluster.hosts[1].call("remove 3")  # twice: nothing more
        assert cluster.hosts[1].call(f"send 3 5 {SMALL}")["accepted"] == 0
        if kind == "dpdk":
            deadline = time.monotonic() + 30
            while cluster.hosts[3].call("links")["links"]["1"]:  # node 1 closed its end
                assert time.monotonic() < deadline, cluster.hosts[3].log()[-2000:]
                time.sleep(0.05)
            cluster.hosts[3].call(f"send 1 5 {SMALL}")
            cluster.hosts[2].call(f"send 1 1 {SMALL}")
            cluster.wait_inbox(1, lambda box: box[2]["count"] == 1)
            assert cluster.hosts[1].inbox()[3]["count"] == 20
            assert cluster.hosts[1].stats()["stats"]["bad_frames"] == 0

        cluster.hosts[1].call(f"add 3 {host} {port}")
        cluster.wait_links()
        deadline = time.monotonic() + 30
        while cluster.hosts[3].inbox()[1]["count"] < 21:  # links may still be coming up
            cluster.hosts[1].call(f"send 3 1 {SMALL}")
            assert time.monotonic() < deadline, cluster.hosts[1].log()[-2000:]
            time.sleep(0.05)
        cluster.hosts[3].call(f"send 1 1 {SMALL}")
        cluster.wait_inbox(1, lambda box: box[3]["count"] >= 21)
        status = cluster.hosts[1].stats().get("status", {})
        if kind == "dpdk":
            assert sorted(status["links"]) == ["2", "3"]  # the removed slot is not listed
    finally:
        cluster.close()
