"""``[replication] backend = "physical"`` through blizzard.open(): the same code as
local and Raft use, the backups in the cluster TOML, accounting in status()."""

from __future__ import annotations

import pytest

import blizzard
from blizzard.cluster import config as configmod
from blizzard.cluster.ports import port_block
from blizzard.exceptions import ConfigError
from blizzard.pmem import Pool
from blizzard.replication.physical import BackupServer
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList


def toml(workdir, **replication) -> str:
    base = port_block(6)
    lines = [f'data_dir = "{workdir}"', 'pool_size = "8M"', "", "[replication]",
             'backend = "physical"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in replication.items()]
    for i in (1, 2, 3):
        lines += ["", "[[nodes]]", f"id = {i}", f'raft = "127.0.0.1:{base + 2 * i - 2}"',
                  f'client = "127.0.0.1:{base + 2 * i - 1}"']
    path = workdir / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def backups(workdir):
    servers = []

    def start(path: str) -> None:
        config = configmod.load(path)
        for node in config.nodes[1:]:
            servers.append(BackupServer(config.node_dir(node.id), node.raft, node=node.id,
                                        cluster_id=config.cluster_id))

    yield start
    for server in servers:
        server.close()


def test_the_physical_backend_by_configuration_alone(workdir, backups):
    path = toml(workdir, acks=1, fence="pipelined")
    backups(path)
    with blizzard.open(path, node=1) as store:
        users = store.hashmap("users", key_codec=str, value_codec="msgpack")
        users["ada"] = {"born": 1815}
        store.queue("jobs").put(b"build")
        store.bptree("dates", key_codec=int)[20261201] = b"today"
        store.skiplist("names", key_codec=str)["b"] = b"2"
        store.check()
        status = store.status()
        assert status["backend"] == "physical" and status["role"] == "primary"
        assert status["leader"] == 1 and status["applied"] > 0
        counters = status["counters"]
        for key in ("bytes_sent_per_op", "messages_sent_per_op", "round_trips_per_op",
                    "flushes_per_op", "backup_flushes_per_op"):
            assert counters[key] > 0, key
        assert counters["acks_needed"] == 1 and counters["failures"] == 0
        store._backend.replicator.mirror.sync(every=True)
    config = configmod.load(path)
    for node in (2, 3):  # each backup's pool, copied while it serves, holds it all
        copy = workdir / f"copy{node}.pool"
        copy.write_bytes((config.node_dir(node) / "data.pool").read_bytes())
        with Pool.open(copy, mode="none") as pool:
            pool.check()
            assert PHashMap(pool, "users")["ada"] == {"born": 1815}
            assert list(PQueue(pool, "jobs")) == [b"build"]
            assert PBPlusTree(pool, "dates")[20261201] == b"today"
            assert PSkipList(pool, "names")["b"] == b"2"


@pytest.mark.parametrize(("options", "node", "message"), [
    ({"acks": 3}, 1, "replication.acks"),
    ({"fence": "maybe"}, 1, "replication.fence"),
    ({"colour": "blue"}, 1, "replication.colour: unknown setting"),
    ({}, None, "node: the physical backend"),
])
def test_bad_physical_settings_are_named(workdir, options, node, message):
    with pytest.raises(ConfigError, match=message):
        blizzard.open(toml(workdir, **options), node=node)
