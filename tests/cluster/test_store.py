"""blizzard.open(): the configuration chooses the backend and the transport.

Local stores on real pool files; Raft stores as three nodes in this process
over loopback TCP; factories registered by a test reach the same seam a new
backend or transport module uses.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import attrs
import pytest

import blizzard
from blizzard.cluster import config as configmod
from blizzard.cluster.backends import BACKENDS, LocalBackend
from blizzard.cluster.store import Store
from blizzard.exceptions import ConfigError, ReplicatorStoppedError
from blizzard.pmem import Pool
from blizzard.replication.transport.registry import TRANSPORTS, TransportSpec
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

STATUS_KEYS = {"backend", "transport", "node", "role", "term", "leader", "commit", "applied",
               "counters"}


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="blizzard-test-store-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _use_every_structure(store) -> None:
    users = store.hashmap("users", key_codec=str, value_codec="msgpack")
    users["ada"] = {"born": 1815}
    jobs = store.queue("jobs", value_codec=str)
    jobs.put("build")
    jobs.put("test")
    dates = store.bptree("dates", key_codec=int, fanout=8)
    for day in (20261123, 20260101, 20261231):
        dates[day] = str(day).encode()
    names = store.skiplist("names", key_codec=str, value_codec=int)
    names.update({"b": 2, "a": 1, "c": 3})


def test_local_store_from_a_toml_file_and_reopened_from_a_dict(data_dir):
    path = data_dir / "app.toml"
    path.write_text('data_dir = "data"\npool_size = "16M"\n[replication]\nbackend = "local"\n')
    with blizzard.open(path) as store:
        assert isinstance(store, Store) and store.backend == "local"
        _use_every_structure(store)
        assert isinstance(store.hashmap("users"), PHashMap)
        assert store.names() == {"users": "hashmap", "jobs": "queue", "dates": "bptree",
                                 "names": "skiplist"}
        status = store.status()
        assert set(status) >= STATUS_KEYS
        assert status["backend"] == "local" and status["transport"] is None
        assert status["role"] == "local" and status["applied"] == status["commit"] > 0
        assert status["counters"]["submitted"] > 0
        store.check()
    assert store.closed and store.status()["role"] == "closed"
    with pytest.raises(ReplicatorStoppedError):
        store.pool  # noqa: B018

    # the same pool, reopened from a dict of the same tables; codecs are stored
    with blizzard.open({"data_dir": str(data_dir / "data")}) as store:
        assert store.hashmap("users")["ada"] == {"born": 1815}
        assert isinstance(store.queue("jobs"), PQueue) and store.queue("jobs").get() == "build"
        dates = store.bptree("dates")
        assert isinstance(dates, PBPlusTree) and dates.fanout == 8
        assert list(dates.irange(20260601)) == [20261123, 20261231]
        names = store.skiplist("names")
        assert isinstance(names, PSkipList) and names.peekitem(0) == ("a", 1)
        store.drop("names")
        assert "names" not in store.names()
        with pytest.raises(KeyError):
            store.drop("names")

    # local use without a Store: the same pool, as short as ever
    with Pool.open(data_dir / "data" / "data.pool") as pool:
        assert PHashMap(pool, "users")["ada"] == {"born": 1815}


def test_store_pool_is_there_for_raw_use(data_dir):
    with blizzard.open({"data_dir": str(data_dir), "pool_size": "8M"}) as store:
        with store.pool.transaction() as tx:
            off = tx.alloc(16)
            store.pool.buf[off:off + 5] = b"hello"
            tx.set_root("greeting", off)
        assert bytes(store.pool.buf[off:off + 5]) == b"hello"
        assert store.names() == {}  # a raw root is not a structure


@pytest.mark.parametrize(("raw", "node", "message"), [
    ({"replication": {"backend": "xx"}}, None,
     "replication.backend: unknown replication backend 'xx' (available: local, physical, raft, "
     "remote"),
    ({"replication": {"backend": "physical"}}, None,
     "nodes: the physical backend needs at least one [[nodes]] table"),
    ({"replication": {"backend": "local", "ack": "all"}}, None,
     "replication.ack: unknown setting for the local backend"),
    ({"replication": "raft"}, None, "replication: expected a table"),
    ({"transport": "tcp"}, None, "transport: expected a table"),
    ({"replication": {"backend": 7}}, None, "replication.backend: expected a name"),
    ({}, 2, "node: the local backend has no nodes (got node=2)"),
    ({"nodes": [{"id": 1, "raft": "127.0.0.1:0"}]}, None,
     "node: the raft backend runs a cluster node in this process: pass node=<id> (one of 1)"),
    ({"nodes": [{"id": 1, "raft": "127.0.0.1:0"}]}, 4, "node 4 is not in the cluster"),
    ({"replication": {"backend": "raft"}}, 1,
     "nodes: the raft backend needs at least one [[nodes]] table"),
    ({"nodes": [{"id": 1, "client": "127.0.0.1:9"}], "replication": {"backend": "raft"}}, 1,
     "nodes[0].raft: missing (node 1's replication address"),
    ({"nodes": [{"id": 1, "raft": "127.0.0.1:0"}], "transport": {"kind": "dpdk", "mtu": 9000}},
     1, "transport.mtu: unknown setting for the dpdk transport"),
    ({"nodes": [{"id": 1, "raft": "127.0.0.1:0"}], "transport": {"kind": "carrier-pigeon"}}, 1,
     "transport.kind: unknown transport 'carrier-pigeon' (available: dpdk, tcp"),
    ({"nodes": [{"id": 1, "raft": "127.0.0.1:0"}], "transport": {"kind": "tcp", "mtu": 9000}},
     1, "transport.mtu: unknown setting for the tcp transport"),
    ({"replication": {"backend": "remote"}}, None, "nodes: no node has a client address"),
    ({"replication": {"backend": "remote"}, "nodes": [{"id": 1, "client": "127.0.0.1:9"}]}, 1,
     "node: a remote client is not a node (got node=1)"),
])
def test_bad_configurations_are_named(data_dir, raw, node, message):
    with pytest.raises(ConfigError) as err:
        blizzard.open({"data_dir": str(data_dir), "pool_size": "8M", **raw}, node=node)
    assert message in str(err.value)
    assert not any(data_dir.glob("**/*.pool"))  # refused before any file was made


def test_a_failed_open_leaves_no_pool_locked(data_dir):
    """A Raft node that cannot start (its port is taken) closes the pools it opened."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        raw = {"data_dir": str(data_dir), "pool_size": "8M", "log_pool_size": "8M",
               "nodes": [{"id": 1, "raft": f"127.0.0.1:{port}"}]}
        with pytest.raises(OSError):
            blizzard.open(raw, node=1)
    with Pool.open(data_dir / "node1" / "data.pool"):  # not locked by the failed attempt
        pass


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _raft_stores(config) -> dict[int, Store]:
    stores: dict[int, Store] = {}
    try:
        for node in config.nodes:
            stores[node.id] = blizzard.open(config, node=node.id)
    except BaseException:
        for store in stores.values():
            store.close()
        raise
    return stores


def test_raft_stores_replicate_every_structure(cluster_config):
    stores = _raft_stores(cluster_config)
    try:
        _wait(lambda: any(s.status()["role"] == "leader" for s in stores.values()))
        leader = next(i for i, s in stores.items() if s.status()["role"] == "leader")
        follower = next(i for i in stores if i != leader)
        _use_every_structure(stores[follower])  # forwarded to the leader
        for store in stores.values():
            assert store.hashmap("users")["ada"] == {"born": 1815}  # linearizable reads
            assert list(store.queue("jobs")) == ["build", "test"]
            assert list(store.bptree("dates")) == [20260101, 20261123, 20261231]
            assert store.skiplist("names").peekitem(-1) == ("c", 3)
            store.check()
        status = stores[leader].status()
        assert set(status) >= STATUS_KEYS
        assert status["backend"] == "raft" and status["transport"] == "tcp"
        assert status["node"] == leader and status["role"] == "leader"
        assert status["term"] >= 1 and status["leader"] == leader
        assert status["commit"] >= status["applied"] > 0
        counters = status["counters"]
        assert counters["transport_frames_sent"] > 0 and counters["log_entries"] > 0
        assert stores[follower].status()["role"] == "follower"
    finally:
        for store in stores.values():
            store.close()


def test_a_registered_transport_carries_the_raft_traffic(cluster_config):
    """The seam a new transport module uses: register a factory, name it in the config."""
    built: list[TransportSpec] = []

    def counted_tcp(spec: TransportSpec):
        built.append(spec)
        return TRANSPORTS.get("tcp")(attrs.evolve(spec, options={}))

    TRANSPORTS.register("tcp-counted", counted_tcp)
    try:
        raw = configmod.to_dict(cluster_config)
        raw["transport"] = {"kind": "tcp-counted", "label": "x"}
        config = configmod.parse(raw)
        stores = _raft_stores(config)
        try:
            stores[1].hashmap("m")[b"k"] = b"v"
            assert all(s.hashmap("m")[b"k"] == b"v" for s in stores.values())
            assert {s.status()["transport"] for s in stores.values()} == {"tcp-counted"}
        finally:
            for store in stores.values():
                store.close()
        assert sorted(spec.node_id for spec in built) == [1, 2, 3]
        spec = built[0]
        assert spec.kind == "tcp-counted" and spec.options == {"label": "x"}
        assert spec.peers == cluster_config.raft_peers
        assert spec.cluster_id == cluster_config.cluster_id
        assert spec.data_dir == cluster_config.data_dir
    finally:
        TRANSPORTS.unregister("tcp-counted")


def test_a_registered_backend_is_chosen_by_name(data_dir):
    """The seam a new backend module uses: a factory ``(config, node) -> Backend``."""

    class Counting(LocalBackend):
        def __init__(self, config, node):
            self.options = dict(config.replication.options)
            config = attrs.evolve(config, replication=configmod.ReplicationConfig("local"))
            super().__init__(config, None)
            self.node = node

        def status(self):
            status = super().status()
            status["counters"]["mirrors"] = self.options["mirrors"]
            return status

    BACKENDS.register("counting", Counting)
    try:
        raw = {"data_dir": str(data_dir), "pool_size": "8M",
               "replication": {"backend": "counting", "mirrors": 2}}
        with blizzard.open(raw, node=7) as store:
            store.hashmap("m")[b"k"] = b"v"
            status = store.status()
            assert status["backend"] == "counting" and status["node"] == 7
            assert status["counters"] == {"submitted": 2, "mirrors": 2}
        with pytest.raises(ConfigError,
                           match=r"available: counting, local, physical, raft, remote"):
            blizzard.open({**raw, "replication": {"backend": "nope"}})
    finally:
        BACKENDS.unregister("counting")
