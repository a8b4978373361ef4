"""A cluster that is down, or partly down, as a client and ``blizzard cluster
status / down`` meet it: real sockets on loopback, real ``blizzard serve``
processes.

A client fails within its connect timeout when no node accepts a connection,
naming every node and why (not after its 30 s request timeout); ``cluster
status`` lists nodes by numeric id, says in its row why a node is unreachable,
speaks JSON with ``-o json``; ``cluster down`` names the nodes already down;
both find the cluster ``cluster up`` makes by default without ``--config``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from blizzard import cli
from blizzard.client import ClusterUnavailableError, connect
from blizzard.cluster import client as clientmod
from blizzard.cluster import config as configmod
from blizzard.cluster.ports import port_block
from blizzard.exceptions import ConfigError
from blizzard.structures import ops
from blizzard.structures.ops import OpCode
from tests.cluster.test_processes import ProcessCluster
from tests.test_cli_errors import blizzard, one_error_line


@pytest.fixture
def down_config():
    """A 3-node cluster's config (ids 1..3) whose nodes are not running: their
    ports are free, so every connection is refused."""
    directory = Path(tempfile.mkdtemp(prefix="blizzard-test-down-", dir="/dev/shm"))
    config = configmod.local_cluster(3, directory, base_port=port_block(6))
    path = directory / "cluster.toml"
    path.write_text(configmod.dump(config))
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _names_every_node(message: str, config_path: Path) -> None:
    config = configmod.load(config_path)
    for node in config.nodes:
        host, port = node.client
        assert f"node {node.id} at {host}:{port}: Connection refused" in message, message


def test_a_client_of_a_cluster_that_is_down_fails_within_its_connect_timeout(down_config):
    with connect(down_config, connect_timeout_s=0.5) as client:
        start = time.monotonic()
        with pytest.raises(ClusterUnavailableError, match=r"no node answers \(tried for "
                                                          r"0.5 s\)") as info:
            client.hashmap("m")
        elapsed = time.monotonic() - start
        assert elapsed < 5, elapsed  # not the request timeout (30 s)
        _names_every_node(str(info.value), down_config)

        start = time.monotonic()  # the pipelined path too
        with pytest.raises(ClusterUnavailableError, match="no node answers"):
            client.submit_many([ops.encode(ops.Op("m", OpCode.DROP))])
        assert time.monotonic() - start < 5


def test_the_connect_timeout_comes_from_the_config_unless_an_argument_says(down_config):
    text = down_config.read_text() + "\n[client]\nconnect_timeout_s = 0.4\n"
    down_config.write_text(text)
    for target in (down_config, configmod.load(down_config)):
        with connect(target) as client:
            assert client.connect_timeout_s == 0.4
            start = time.monotonic()
            with pytest.raises(ClusterUnavailableError, match=r"tried for 0.4 s") as info:
                client.hashmap("m")
            assert time.monotonic() - start < 5
            _names_every_node(str(info.value), down_config)
    with connect(down_config, connect_timeout_s=0.6) as client:
        assert client.connect_timeout_s == 0.6
        with pytest.raises(ClusterUnavailableError, match=r"tried for 0.6 s"):
            client.queue("q")
    down_config.write_text(text.replace("0.4", "-1"))
    with pytest.raises(ConfigError, match=r"client\.connect_timeout_s: expected a positive"):
        connect(down_config)


def test_the_connect_timeout_is_a_few_seconds_by_default(down_config):
    assert clientmod.CONNECT_TIMEOUT_S <= 5 < clientmod.TIMEOUT_S
    start = time.monotonic()
    with connect(down_config) as client, pytest.raises(
            ClusterUnavailableError, match=f"tried for {clientmod.CONNECT_TIMEOUT_S} s"):
        client.queue("q")
    assert time.monotonic() - start < clientmod.CONNECT_TIMEOUT_S + 5
    with pytest.raises(ValueError, match="connect_timeout_s must be a positive number"):
        connect(down_config, connect_timeout_s=0)


def test_cluster_status_of_a_cluster_that_is_down_is_one_error_line(down_config):
    start = time.monotonic()
    result = blizzard("cluster", "status", "--config", str(down_config))
    line = one_error_line(result, "no node answers")
    _names_every_node(line, down_config)
    assert time.monotonic() - start < 30  # a process start and three refused connects
    result = blizzard("cluster", "status", "-o", "json", "--config", str(down_config))
    one_error_line(result, "no node answers")


def test_status_and_down_default_to_the_cluster_up_writes(down_config, tmp_path,
                                                          monkeypatch, capsys):
    """Without --config, the file `cluster up` writes in its default directory."""
    monkeypatch.setattr(cli, "CLUSTER_DIR_DEFAULT", str(tmp_path / "none"))
    assert cli.main(["cluster", "status"]) == 1
    assert "no --config given and no cluster in the default directory" in \
        capsys.readouterr().err
    monkeypatch.setattr(cli, "CLUSTER_DIR_DEFAULT", str(down_config.parent))
    assert cli.main(["cluster", "status"]) == 1
    _names_every_node(capsys.readouterr().err, down_config)
    assert cli.main(["cluster", "down"]) == 1
    assert "is serving (nodes 1, 2, 3 already stopped)" in capsys.readouterr().err


def test_status_by_numeric_id_with_unreachable_rows_json_and_down():
    """Nodes 2, 3 and 10 run, node 9 never started: the table lists 2, 3, 9, 10
    (not "10" before "2"), node 9's row says why it is unreachable, -o json
    gives the same for scripts, and `down` names node 9 as already down."""
    cluster = ProcessCluster(4)
    try:
        ids = [2, 3, 9, 10]
        raw = configmod.to_dict(cluster.config)
        for node, new_id in zip(raw["nodes"], ids, strict=True):
            node["id"] = new_id
        cluster.path.write_text(configmod.dump(configmod.parse(raw)))
        cluster.config = configmod.load(cluster.path)
        cluster.ids = [2, 3, 10]
        cluster.start_all()
        cluster.wait_for_leader()
        dead = "{}:{}".format(*cluster.config.node(9).client)

        table = blizzard("cluster", "status", "--config", str(cluster.path))
        assert table.returncode == 1, table.stderr  # a node does not answer
        lines = table.stdout.splitlines()[2:]
        assert [line.split()[0] for line in lines] == ["2", "3", "9", "10"], table.stdout
        assert f"unreachable: {dead}: Connection refused" in lines[2], table.stdout
        assert sorted(line.split()[1] for i, line in enumerate(lines) if i != 2) == \
            ["follower", "follower", "leader"]

        out = blizzard("cluster", "status", "--output", "json", "--config", str(cluster.path))
        assert out.returncode == 1, out.stderr
        nodes = json.loads(out.stdout)["nodes"]
        assert [n["node"] for n in nodes] == ids
        assert nodes[2] == {"node": 9, "role": "unreachable", "address": dead,
                            "error": "Connection refused"}
        assert all(isinstance(n["term"], int) for i, n in enumerate(nodes) if i != 2)

        down = blizzard("cluster", "down", "--config", str(cluster.path))
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "cluster down: 3 nodes stopped; already down: node 9"
        for proc in cluster.procs.values():
            assert proc.wait(30) == 0  # a graceful exit
    finally:
        cluster.close()
