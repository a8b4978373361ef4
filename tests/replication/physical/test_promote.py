"""Promotion's rules, in process (real backups, sockets and pool files): it fences
enough nodes for the acknowledgement rule, never promotes a node behind another,
never promotes an image mid-resynchronisation."""

from __future__ import annotations

import pytest

from blizzard.cluster import config as configmod
from blizzard.cluster.physical import close_primary, open_primary, promote_here
from blizzard.cluster.ports import port_block
from blizzard.exceptions import DeposedError, PromoteError
from blizzard.replication.physical import BackupServer
from blizzard.structures import PHashMap


@pytest.fixture
def cluster(workdir):
    config = configmod.local_cluster(3, workdir, base_port=port_block(6), pool_size="8M",
                                     log_pool_size="8M")
    servers: dict[int, BackupServer] = {}

    def start(node: int) -> BackupServer:
        servers[node] = BackupServer(config.node_dir(node), config.node(node).raft, node=node,
                                     cluster_id=config.cluster_id)
        return servers[node]

    def stop(node: int) -> None:
        servers.pop(node).close()

    yield config, servers, start, stop
    for server in servers.values():
        server.close()


def crash(rep) -> None:
    """The primary stops: nothing more is shipped (closing a pool writes nothing;
    the process tests SIGKILL the primary for real)."""
    close_primary(rep)


def write(rep, prefix: str, n: int) -> None:
    h = PHashMap(rep.pool, "h", replicator=rep)
    for i in range(n):
        h[f"{prefix}{i}".encode()] = b"v"


def test_a_node_behind_another_is_not_promoted(cluster):
    config, servers, start, stop = cluster
    start(2)
    start(3)
    rep = open_primary(config, 1, acks=1)
    write(rep, "a", 10)
    assert rep.mirror.sync(every=True)
    stop(3)
    write(rep, "b", 10)  # acknowledged by node 2 alone
    crash(rep)
    start(3)
    with pytest.raises(PromoteError, match="node 2 holds later fences"):
        promote_here(config, servers[3], acks=1)
    result = promote_here(config, servers[2], acks=1)
    assert result["fenced"] == [3]
    stop(2)  # it hands its pool over
    rep2 = open_primary(config, 2, acks=1)
    h = PHashMap(rep2.pool, "h", replicator=rep2)
    assert all(h[f"b{i}".encode()] == b"v" for i in range(10))
    write(rep2, "c", 5)
    close_primary(rep2)
    # the old primary is refused
    with pytest.raises(DeposedError):
        open_primary(config, 1, acks=1, ready_timeout_s=10)


def test_promotion_needs_enough_fenced_nodes(cluster):
    """With one acknowledgement needed of two backups, an acknowledged write may be on
    either: promoting needs the other node fenced too."""
    config, servers, start, stop = cluster
    start(2)
    start(3)
    rep = open_primary(config, 1, acks=1)
    write(rep, "a", 5)
    # both backups caught up, so node 2 is not refused as mid-resynchronisation,
    # which would hide the rule under test
    assert rep.mirror.sync(every=True)
    crash(rep)
    stop(3)
    with pytest.raises(PromoteError, match="1 node\\(s\\) fenced"):
        promote_here(config, servers[2], acks=1)


def test_with_every_backup_acknowledging_one_node_suffices(cluster):
    config, servers, start, stop = cluster
    start(2)
    start(3)
    rep = open_primary(config, 1)
    write(rep, "a", 5)
    crash(rep)
    stop(3)
    assert promote_here(config, servers[2], acks=None)["fenced"] == []
    stop(2)
    start(3)
    rep2 = open_primary(config, 2, acks=1)
    h = PHashMap(rep2.pool, "h", replicator=rep2)
    assert sorted(h) == [b"a%d" % i for i in range(5)]
    close_primary(rep2)


def test_an_image_mid_resync_is_not_promoted(cluster):
    config, _servers, start, _stop = cluster
    server = start(2)
    with pytest.raises(PromoteError, match="mid-resynchronisation"):
        promote_here(config, server, acks=None)
