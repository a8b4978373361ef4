"""Accounting on the Raft backend: bytes and messages per op always, flushes and
fences per op with ``count_flushes`` (the physical backend's: tests/replication/physical)."""

from __future__ import annotations

import time

import attrs

import blizzard
from blizzard.cluster.store import Store
from blizzard.replication import copies
from blizzard.replication.sessions import ENVELOPE


def test_raft_status_counts_wire_and_flushes_per_op(cluster_config):
    config = cluster_config
    raw_stores: dict[int, Store] = {}
    config = attrs.evolve(config, replication=attrs.evolve(
        config.replication, backend="raft", options={"count_flushes": True}))
    try:
        for node in config.nodes:
            raw_stores[node.id] = blizzard.open(config, node=node.id)
        deadline = time.monotonic() + 30
        while not any(s.status()["role"] == "leader" for s in raw_stores.values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        leader = next(s for s in raw_stores.values() if s.status()["role"] == "leader")
        h = leader.hashmap("h")
        for i in range(50):
            h[b"k%d" % i] = b"v" * 64
        counters = leader.status()["counters"]
        assert counters["ops"] >= 50
        assert counters["bytes_sent_per_op"] > 64  # the value reached two followers
        assert counters["messages_sent_per_op"] > 0
        assert counters["flushes_per_op"] > 0 and counters["fences_per_op"] > 0
    finally:
        for store in raw_stores.values():
            store.close()


def test_raft_status_counts_payload_copies_by_stage(cluster_config):
    """Every node counts the payload bytes it copied between the socket and the
    structures, by stage (blizzard.replication.copies). A follower over TCP
    receives its entries straight into its Raft log: nothing is copied out of
    the socket nor into the log; each entry's data is cut once from its record
    (frame_to_entries), the registry reads each Op where it lies in it, and the
    map copies each put's key and value exactly once into its blocks. The
    leader writes each entry into its log once and sends it from there
    (its fixed part and views of the log's records, one sendmsg): no entry
    byte is copied into a frame."""
    config = attrs.evolve(cluster_config, replication=attrs.evolve(
        cluster_config.replication, backend="raft", options={}))
    stores: dict[int, Store] = {}

    def caught_up(store: Store, commit: int) -> dict:
        deadline = time.monotonic() + 30
        while store.status()["applied"] < commit:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return store.status()["counters"]

    try:
        for node in config.nodes:
            stores[node.id] = blizzard.open(config, node=node.id)
        deadline = time.monotonic() + 30
        while not any(s.status()["role"] == "leader" for s in stores.values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        leader = next(s for s in stores.values() if s.status()["role"] == "leader")
        followers = [s for s in stores.values() if s is not leader]
        h = leader.hashmap("h")
        h[b"first"] = b"x"  # the map's creation and a first put: not measured
        commit = leader.status()["commit"]
        before = [caught_up(s, commit) for s in followers]
        leader_before = leader.status()["counters"]
        term = leader.status()["term"]
        puts, value = 50, b"v" * 1024
        for i in range(puts):
            h[b"k%03d" % i] = value
        commit = leader.status()["commit"]
        arguments = 4 + 4 + len(value)  # key length u32 + key + value
        op_bytes = 8 + len(b"h") + arguments  # Op head, structure name, arguments
        entry_bytes = ENVELOPE.size + op_bytes
        for store, was in zip(followers, before, strict=True):
            now = caught_up(store, commit)
            copied = {stage: now[f"copied_{stage}"] - was[f"copied_{stage}"]
                      for stage in copies.STAGES}
            if leader.status()["term"] == term:  # no election: every put went in place
                assert copied["socket_to_buffer"] == 0, copied
                assert copied["entries_to_log"] == 0, copied
                assert copied["frame_to_entries"] == puts * entry_bytes, copied
                assert now["received_in_place"] - was["received_in_place"] == puts
            # the registry reads each Op where it lies in its entry, after the envelope
            assert copied["log_to_apply"] == 0, copied
            assert copied["apply_to_structure"] == puts * arguments, copied
            assert copied["entries_to_frame"] == 0, copied  # a follower forwarded nothing
        counters = leader.status()["counters"]
        assert set(k for k in counters if k.startswith("copied_")) == {
            f"copied_{s}" for s in copies.STAGES}
        sent = {stage: counters[f"copied_{stage}"] - leader_before[f"copied_{stage}"]
                for stage in copies.STAGES}
        if leader.status()["term"] == term:
            assert sent["entries_to_log"] == puts * entry_bytes, sent  # written once
            assert sent["entries_to_frame"] == 0, sent  # sent from the log
    finally:
        for store in stores.values():
            store.close()


def test_a_dpdk_cluster_receives_into_and_sends_from_its_logs():
    """Over DPDK (net_memif, three processes) a follower copies each MsgApp's
    records once, out of the mbufs straight into its Raft log's free tail
    (socket_to_buffer: exactly the records' bytes), then cuts each entry's
    data once from its record, as over TCP; the leader gathers each MsgApp
    from its log's records into the mbufs (entries_to_frame: what the
    transport copied, nothing joined by the node first)."""
    from blizzard.replication.raft import messages as m
    from tests.cluster.test_processes import ProcessCluster

    cluster = ProcessCluster(transport="dpdk")

    def caught_up(commit: int) -> dict[int, dict]:
        deadline = time.monotonic() + 30
        while True:
            status = cluster.status()
            if all(s.get("applied", 0) >= commit for s in status.values()):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.05)

    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        with cluster.client() as client:
            h = client.hashmap("h")
            h[b"first"] = b"x"  # the map's creation and a first put: not measured
            term = cluster.status()[leader]["term"]
            before = caught_up(cluster.status()[leader]["commit"])
            puts, value = 50, b"v" * 1024
            for i in range(puts):
                h[b"k%03d" % i] = value
        status = cluster.status()
        after = caught_up(status[leader]["commit"])
        arguments = 4 + 4 + len(value)
        entry_bytes = ENVELOPE.size + 8 + len(b"h") + arguments
        one = m.MsgApp(1, 2, 1, 1, 1, (m.Entry(1, 2, 0, b"e" * entry_bytes),), 1)
        record_bytes = len(m.encode(one)) - m.APP_HEAD_BYTES
        same_term = all(s["term"] == term for s in status.values())
        for node, now in after.items():
            was = before[node]
            copied = {stage: now["copies"][stage] - was["copies"][stage]
                      for stage in copies.STAGES}
            if node == leader:
                sent = (now["transport"]["bytes_copied_sending"]
                        - was["transport"]["bytes_copied_sending"])
                assert copied["entries_to_frame"] == sent, copied  # the node joined nothing
                assert sent >= 2 * puts * record_bytes, (sent, copied)  # to both followers
                if same_term:
                    assert copied["entries_to_log"] == puts * entry_bytes, copied
                continue
            if same_term:  # no election: every put went into the log where it landed
                assert now["received_in_place"] - was["received_in_place"] == puts
                assert copied["socket_to_buffer"] == puts * record_bytes, copied
                assert copied["frame_to_entries"] == puts * entry_bytes, copied
                assert copied["entries_to_log"] == 0, copied
            assert copied["log_to_apply"] == 0, copied
            assert copied["apply_to_structure"] == puts * arguments, copied
            assert copied["entries_to_frame"] == 0, copied
    finally:
        cluster.close()
