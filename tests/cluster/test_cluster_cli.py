"""``blizzard cluster up / status / down`` and ``blizzard serve``, for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from blizzard._heap import SERVING_GEN0_THRESHOLD
from blizzard.cli import main
from blizzard.client import connect
from blizzard.cluster.config import dump, local_cluster
from blizzard.cluster.server import serving
from tests.cluster.test_processes import port_block


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blizzard", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def data_dir():
    # quotes, a backslash and a tab: the TOML that `cluster up` writes must keep them
    directory = Path(tempfile.mkdtemp(prefix='blizzard-test- "q" \\ \t ', dir="/dev/shm"))
    try:
        yield directory
    finally:
        pids = directory / "pids.json"
        if pids.exists():
            for pid in json.loads(pids.read_text()).values():
                if serving(pid):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def test_cluster_up_status_down(data_dir):
    for _ in range(3):  # a port of the block may be taken meanwhile on this busy machine
        up = _run("cluster", "up", "--nodes", "3", "--dir", str(data_dir),
                  "--base-port", str(port_block(6)), "--pool-size", "16M")
        if "address already in use" not in up.stderr.lower():
            break
        shutil.rmtree(data_dir)
        data_dir.mkdir()
    assert up.returncode == 0, up.stderr
    config = data_dir / "cluster.toml"
    assert "cluster up: 3 nodes, leader node" in up.stdout
    assert f"config: {config}" in up.stdout
    pids = json.loads((data_dir / "pids.json").read_text())
    assert sorted(pids) == ["1", "2", "3"] and all(serving(p) for p in pids.values())

    with connect(config) as client:
        client.hashmap("m")[b"k"] = b"v"
        # each `blizzard serve` set its collector for serving (blizzard._heap)
        statuses = client.node_statuses().values()
        assert all(s["heap_frozen"] > 10_000 for s in statuses)
        assert all(s["gc_threshold"][0] == SERVING_GEN0_THRESHOLD for s in statuses)

    status = _run("cluster", "status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["node", "role", "term", "leader", "commit", "applied", "log",
                                "match", "ops/s"]
    assert set(lines[1].strip()) == {"─"}  # the rule under the header
    roles = sorted(line.split()[1] for line in lines[2:])
    assert roles == ["follower", "follower", "leader"]

    again = _run("cluster", "up", "--dir", str(data_dir))
    assert again.returncode == 1 and "already runs" in again.stderr

    down = _run("cluster", "down", "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert "cluster down: 3 nodes stopped" in down.stdout
    assert not any(serving(p) for p in pids.values())
    assert "node 1: stopped" in (data_dir / "node1.log").read_text()  # a graceful exit

    status = _run("cluster", "status", "--config", str(config))
    assert status.returncode == 1 and not status.stdout
    assert status.stderr.count("Connection refused") == 3, status.stderr

    # Up again from the same directory: the nodes reopen their pools.
    up = _run("cluster", "up", "--dir", str(data_dir))
    assert up.returncode == 0, up.stderr
    with connect(config) as client:
        assert client.hashmap("m")[b"k"] == b"v"
    down = _run("cluster", "down", "--config", str(config), "--grace", "0")
    assert down.returncode == 0, down.stderr
    assert "with SIGKILL after 0.0 s" in down.stdout

    gone = _run("cluster", "down", "--config", str(config))
    assert gone.returncode == 1 and "no node of the cluster" in gone.stderr


def test_cluster_down_stops_nodes_however_they_were_started(data_dir):
    """A node restarted by hand (not by `cluster up`) records itself; `down` finds it."""
    for _ in range(3):
        up = _run("cluster", "up", "--nodes", "3", "--dir", str(data_dir),
                  "--base-port", str(port_block(6)), "--pool-size", "16M")
        if "address already in use" not in up.stderr.lower():
            break
        shutil.rmtree(data_dir)
        data_dir.mkdir()
    assert up.returncode == 0, up.stderr
    config = data_dir / "cluster.toml"
    pids = json.loads((data_dir / "pids.json").read_text())
    os.kill(pids["2"], signal.SIGKILL)  # node 2 dies; its operator restarts it by hand
    with open(data_dir / "node2.log", "ab") as log:
        by_hand = subprocess.Popen([sys.executable, "-m", "blizzard", "serve", "--config",
                                    str(config), "--node", "2"], stdout=log, stderr=log,
                                   start_new_session=True)
    try:
        record = data_dir / "node2" / "serve.pid"
        deadline = time.monotonic() + 60
        while not (record.exists() and json.loads(record.read_text())["pid"] == by_hand.pid):
            assert time.monotonic() < deadline, "the restarted node never recorded itself"
            assert by_hand.poll() is None, (data_dir / "node2.log").read_text()[-2000:]
            time.sleep(0.05)
        down = _run("cluster", "down", "--config", str(config))
        assert down.returncode == 0, down.stderr
        assert "cluster down: 3 nodes stopped" in down.stdout
        assert by_hand.wait(30) == 0  # a graceful exit, which removes its record
        assert not record.exists()
        assert not any(serving(p) for p in pids.values())
    finally:
        if by_hand.poll() is None:
            by_hand.kill()


def test_serve_refuses_bad_configs(tmp_path):
    missing = _run("serve", "--config", str(tmp_path / "nope.toml"), "--node", "1")
    assert missing.returncode == 1 and "no such config file" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nid = 1\nraft = "127.0.0.1:1"\n')
    wrong_node = _run("serve", "--config", str(bad), "--node", "5")
    assert wrong_node.returncode == 1 and "node 5 is not in the cluster" in wrong_node.stderr
    no_client = _run("serve", "--config", str(bad), "--node", "1")
    assert no_client.returncode == 1 and "client: missing" in no_client.stderr


def _cli(capsys, *args: str) -> tuple[int, str]:
    """``blizzard ARGS`` in this process (no start-up cost): exit code and stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def test_cluster_up_refuses_flags_an_existing_file_contradicts(tmp_path, capsys):
    config = local_cluster(3, tmp_path, base_port=7001, pool_size="16M", log_pool_size="16M")
    path = tmp_path / "cluster.toml"
    path.write_text(dump(config))
    for flags, message in [
        (["--config", str(path), "--nodes", "5"], "--nodes 5 (it has 3 nodes)"),
        (["--dir", str(tmp_path), "--pool-size", "32M"],
         f"--pool-size {32 << 20} (its pool_size is {16 << 20})"),
        (["--dir", str(tmp_path), "--base-port", "9000"],
         "--base-port 9000 (its first node listens on 7001)"),
        (["--config", str(path), "--dir", "/elsewhere"], "--dir /elsewhere (its data_dir is"),
    ]:
        code, err = _cli(capsys, "cluster", "up", *flags)
        assert code == 1, err
        assert f"{path} exists and says otherwise: {message}" in err
    assert not (tmp_path / "pids.json").exists()  # nothing was started


@pytest.mark.parametrize(("flags", "message"), [
    (["--nodes", "0"], "--nodes must be at least 1, got 0"),
    (["--pool-size", "1000"], "--pool-size must be at least 1M and a multiple of 4096"),
    (["--pool-size", "12Q"], "argument --pool-size: not a size: '12Q'"),
    (["--base-port", "65534"], "--base-port must leave room for 6 ports below 65536"),
    (["--config", "/nonexistent/cluster.toml"], "--config /nonexistent/cluster.toml: no such"),
])
def test_cluster_up_flag_errors_speak_of_flags(tmp_path, capsys, flags, message):
    code, err = _cli(capsys, "cluster", "up", "--dir", str(tmp_path / "new"), *flags)
    assert code != 0 and message in err, err
    assert not (tmp_path / "new" / "cluster.toml").exists()
