"""Accounting on the Raft backend: bytes and messages per op always, flushes and
fences per op with ``count_flushes`` (the physical backend's: tests/replication/physical)."""

from __future__ import annotations

import time

import attrs

import blizzard
from blizzard.cluster.store import Store


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
