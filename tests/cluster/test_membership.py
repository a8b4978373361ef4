"""Membership at run time, with real processes: grow a cluster from 3 to 5 nodes
under load, SIGKILL two of the five, remove a dead one; no acknowledged write is
lost and the survivors agree."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from blizzard.client import connect
from blizzard.cluster import config as configmod
from blizzard.cluster.client import ClusterUnavailableError
from blizzard.cluster.server import serving, serving_nodes
from blizzard.exceptions import ConfigError, NoSuchStructureError
from tests.cluster.test_processes import ProcessCluster, port_block


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blizzard", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def data_dir():
    directory = Path(tempfile.mkdtemp(prefix="blizzard-test-", dir="/dev/shm"))
    try:
        yield directory
    finally:
        config = directory / "cluster.toml"
        if config.exists():
            with contextlib.suppress(ConfigError):
                for pid in serving_nodes(configmod.load(config)).values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


class Writer(threading.Thread):
    """Puts of fresh keys, one after another; remembers every acknowledged one."""

    def __init__(self, config: Path) -> None:
        super().__init__(daemon=True)
        self.client = connect(config, timeout_s=60.0)
        self.map = self.client.hashmap("m")
        self.acked: dict[bytes, bytes] = {}
        self.stop = threading.Event()
        self.failures: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key, value = b"k%06d" % i, b"v%06d" % i
            try:
                self.map[key] = value
            except ClusterUnavailableError as exc:  # no quorum for a minute: a finding
                self.failures.append(repr(exc))
                continue
            self.acked[key] = value
            i += 1

    def wait_for(self, more: int, timeout_s: float = 120.0) -> None:
        target = len(self.acked) + more
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < target:
            assert not self.failures, self.failures
            assert time.monotonic() < deadline, f"writes stalled at {len(self.acked)}"
            time.sleep(0.05)


def _members_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_grow_to_five_kill_two_remove_a_dead_one_under_load(data_dir):
    for _ in range(3):  # a port of the block may be taken meanwhile on this busy machine
        up = _run("cluster", "up", "--nodes", "3", "--dir", str(data_dir),
                  "--base-port", str(port_block(6)), "--pool-size", "16M")
        if "address already in use" not in up.stderr.lower():
            break
        shutil.rmtree(data_dir)
        data_dir.mkdir()
    assert up.returncode == 0, up.stderr
    config_path = data_dir / "cluster.toml"
    writer = Writer(config_path)
    writer.start()
    try:
        writer.wait_for(50)
        for node in (4, 5):
            added = _run("cluster", "add", "--config", str(config_path))
            assert added.returncode == 0, added.stderr
            assert f"node {node} added: voters {list(range(1, node + 1))}" in added.stdout
            writer.wait_for(50)
        config = configmod.load(config_path)
        assert [n.id for n in config.nodes] == [1, 2, 3, 4, 5]
        assert [n.join for n in config.nodes] == [False] * 3 + [True] * 2
        with connect(config, timeout_s=60.0) as client:
            members = client.members()
            assert members["voters"] == [1, 2, 3, 4, 5] and not members["learners"]
            leader = members["leader"]

        # Two of five die, the leader among them: three are a quorum.
        pids = serving_nodes(config)
        victims = [leader, next(n for n in (5, 4, 3) if n != leader)]
        for node in victims:
            os.kill(pids[node], signal.SIGKILL)
        writer.wait_for(50)

        removed = _run("cluster", "remove", "--config", str(config_path), "--node",
                       str(victims[1]))
        assert removed.returncode == 0, removed.stderr
        survivors = [n for n in (1, 2, 3, 4, 5) if n not in victims]
        assert _members_line(removed.stdout).startswith(
            f"node {victims[1]} removed: voters {sorted([*survivors, victims[0]])}")
        assert victims[1] not in [n.id for n in configmod.load(config_path).nodes]
        writer.wait_for(50)
    finally:
        writer.stop.set()
        writer.join(120)
    assert not writer.is_alive()

    # Every acknowledged write is there, and the survivors agree.
    with connect(config_path, timeout_s=60.0) as client:
        stored = dict(client.hashmap("m").items())
        assert stored.items() >= writer.acked.items()
        deadline = time.monotonic() + 60
        while True:
            statuses = [s for s in client.node_statuses().values() if "applied" in s]
            applied = {s["applied"] for s in statuses}
            if len(statuses) == len(survivors) and len(applied) == 1:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.1)
    for node in survivors:
        with connect([configmod.load(config_path).node(node).client]) as one:
            assert one.check()
    down = _run("cluster", "down", "--config", str(config_path))
    assert down.returncode == 0, down.stderr
    assert f"cluster down: {len(survivors)} nodes stopped" in down.stdout
    assert not any(serving(pid) for pid in pids.values())


def test_the_store_changes_membership_on_the_leader(cluster_config):
    """Store.members / transfer_leader / remove_node / add_node, in one process;
    elsewhere than on the leader they say who leads."""
    import blizzard
    from blizzard.replication.node import NotLeaderError

    stores = {n.id: blizzard.open(cluster_config, node=n.id) for n in cluster_config.nodes}
    try:
        deadline = time.monotonic() + 30
        while not any(s.status()["role"] == "leader" for s in stores.values()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        leader = next(i for i, s in stores.items() if s.status()["role"] == "leader")
        first, second = (i for i in stores if i != leader)
        assert stores[leader].members()["voters"] == [1, 2, 3]
        with pytest.raises(NotLeaderError, match=f"node {leader} does"):
            stores[first].remove_node(second)
        assert stores[leader].transfer_leader(first)["leader"] == first
        members = stores[first].remove_node(second)
        assert members["voters"] == sorted([leader, first])
        stores[first].hashmap("m")[b"k"] = b"two voters commit"
        node = cluster_config.node(second)
        members = stores[first].add_node(second, node.raft, node.client)
        assert members["voters"] == [1, 2, 3] and not members["learners"]
        assert stores[second].hashmap("m", linearizable=False).get(b"k") == b"two voters commit"
        local = blizzard.open({"data_dir": str(cluster_config.data_dir / "local")})
        with local, pytest.raises(ConfigError, match="no members"):
            local.members()
    finally:
        for store in stores.values():
            store.close()


def test_a_dpdk_cluster_adds_a_node_and_removes_one():
    """Membership over the DPDK transport: a fourth node joins a running 3-node
    cluster (``blizzard cluster add``: every member attaches a memif link to it)
    and gets everything written before and after; then a founder is removed
    (every member detaches its link) and the three left go on and agree."""
    from blizzard.client import Client

    cluster = ProcessCluster(transport="dpdk")
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        with cluster.client(timeout_s=60.0) as client:
            m = client.hashmap("m")
            for i in range(50):
                m[b"before%02d" % i] = b"1"
        added = _run("cluster", "add", "--config", str(cluster.path))
        assert added.returncode == 0, added.stderr + cluster.diagnosis()
        assert "node 4 added: voters [1, 2, 3, 4]" in added.stdout
        config = configmod.load(cluster.path)
        with connect(config, timeout_s=60.0) as client:
            m = client.hashmap("m")
            for i in range(50):
                m[b"after%02d" % i] = b"2"
            leader = client.members()["leader"]

        def local_view(node: int) -> tuple[dict, dict]:
            with Client([config.node(node).client], failover=False, timeout_s=10.0) as one:
                try:
                    kv = dict(one.hashmap("m", linearizable=False, create=False).items())
                except NoSuchStructureError:  # a new node that has not applied its creation
                    kv = {}
                return kv, one.node_statuses()[node]

        deadline = time.monotonic() + 60
        while len((view := local_view(4))[0]) < 100:
            assert time.monotonic() < deadline, (len(view[0]), cluster.diagnosis())
            time.sleep(0.1)
        links = view[1]["transport"]["links"]
        assert view[1]["transport"]["kind"] == "dpdk"
        assert sorted(links) == ["1", "2", "3"] and all(lk["up"] for lk in links.values())

        victim = max(i for i in (1, 2, 3) if i != leader)
        removed = _run("cluster", "remove", "--config", str(cluster.path), "--node", str(victim))
        assert removed.returncode == 0, removed.stderr + cluster.diagnosis()
        survivors = sorted({1, 2, 3, 4} - {victim})
        assert _members_line(removed.stdout).startswith(f"node {victim} removed: voters "
                                                        f"{survivors}")
        config = configmod.load(cluster.path)
        with connect(config, timeout_s=60.0) as client:
            m = client.hashmap("m")
            for i in range(20):
                m[b"removed%02d" % i] = b"3"
        deadline = time.monotonic() + 60
        while True:
            views = {node: local_view(node) for node in survivors}
            if all(len(kv) == 120 for kv, _ in views.values()):
                break
            assert time.monotonic() < deadline, {n: len(kv) for n, (kv, _) in views.items()}
            time.sleep(0.1)
        assert len({tuple(sorted(kv.items())) for kv, _ in views.values()}) == 1
        for node, (_, status) in views.items():  # the removed node's link is gone
            assert sorted(status["transport"]["links"]) == [str(n) for n in survivors
                                                            if n != node]
    finally:
        with contextlib.suppress(ConfigError, OSError):
            for pid in serving_nodes(configmod.load(cluster.path)).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        cluster.close()
