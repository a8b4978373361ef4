"""What a user meets at the terminal: bad input gets one clear line, never a traceback.

Every case runs the installed ``blizzard`` command itself (the console
script beside this interpreter), as a user would, and asserts a non-zero
exit with exactly one line on stderr that says what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from blizzard.cluster.ports import port_block
from blizzard.cluster.server import serving
from blizzard.exceptions import PoolFullError
from blizzard.pmem import Pool
from blizzard.structures import PHashMap, PQueue

BLIZZARD = str(Path(sys.executable).with_name("blizzard"))


def blizzard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([BLIZZARD, *args], capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """The single stderr line of a failed run, after checking it says ``fragments``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def shm_dir():
    directory = Path(tempfile.mkdtemp(prefix="blizzard-test-cli-", dir="/dev/shm"))
    try:
        yield directory
    finally:
        pids = directory / "pids.json"
        if pids.exists():
            for pid in json.loads(pids.read_text()).values():
                if serving(pid):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def test_the_command_is_installed():
    assert os.access(BLIZZARD, os.X_OK), BLIZZARD


# -- pool create -------------------------------------------------------------------


def test_pool_create_into_a_missing_directory(shm_dir):
    result = blizzard("pool", "create", str(shm_dir / "no" / "such" / "p.pool"))
    one_error_line(result, "blizzard: error:", "no such directory", str(shm_dir / "no" / "such"))


def test_pool_create_larger_than_its_file_system(shm_dir):
    result = blizzard("pool", "create", str(shm_dir / "p.pool"), "--size", "100T")
    one_error_line(result, "100 TiB pool does not fit its file system")
    assert not (shm_dir / "p.pool").exists()


def test_pool_create_with_a_layout_name_too_long(shm_dir):
    result = blizzard("pool", "create", str(shm_dir / "p.pool"), "--layout", "x" * 200)
    line = one_error_line(result, "layout name must be 1 to 32 UTF-8 bytes, got 200")
    assert len(line) < 200  # the name is not echoed whole
    assert not (shm_dir / "p.pool").exists()


@pytest.mark.parametrize(("size", "says"), [
    ("lots", "not a size: 'lots'"),
    ("64mb", "the byte is an upper-case B"),
    ("-5", "not a size"),
])
def test_a_size_that_does_not_parse_is_one_usage_line(shm_dir, size, says):
    result = blizzard("pool", "create", str(shm_dir / "p.pool"), "--size", size)
    one_error_line(result, "blizzard pool create: error: argument --size:", says,
                   "see blizzard pool create --help", code=2)


def test_a_decimal_size_that_is_no_pool_size_says_why(shm_dir):
    result = blizzard("pool", "create", str(shm_dir / "p.pool"), "--size", "1GB")
    one_error_line(result, "multiple of 4096", "got 1000000000", "powers of 1000")


def test_an_unknown_command_is_one_usage_line():
    result = blizzard("pool", "explode")
    one_error_line(result, "blizzard pool: error:", "invalid choice", code=2)


# -- pool info / check ----------------------------------------------------------------


def test_pool_info_on_a_missing_or_foreign_file(shm_dir):
    one_error_line(blizzard("pool", "info", str(shm_dir / "nope.pool")), "no such pool file")
    junk = shm_dir / "junk"
    junk.write_bytes(b"x" * 10000)
    one_error_line(blizzard("pool", "info", str(junk)), "not a Blizzard pool")


def test_pool_info_reads_a_pool_in_use_from_a_copy(shm_dir):
    """Another handle holds the lock: info still answers, and says how it read."""
    path = shm_dir / "busy.pool"
    with Pool.create(path, 4 << 20, layout="busy", mode="none") as pool:
        users = PHashMap(pool, "users", key_codec=str)
        users.update({f"u{i}": b"x" * 100 for i in range(300)})
        result = blizzard("pool", "info", str(path), "--mode", "none")
        assert result.returncode == 0, result.stderr
        assert f"in use by {os.getpid()}: read from a copy" in result.stdout
        assert "layout               busy" in result.stdout
        assert "users" in result.stdout and "phashmap" in result.stdout
        assert len(users) == 300  # the owner's handle is untouched
    plain = blizzard("pool", "info", str(path), "--mode", "none")
    assert plain.returncode == 0 and "in use" not in plain.stdout


def rows(out: str) -> dict[str, str]:
    """``pool check``'s per-root lines: name -> "kind verdict" (spaces collapsed)."""
    return {line.split()[0]: " ".join(line.split()[1:])
            for line in out.splitlines() if line.startswith("  ")}


def _pool_with_every_kind(path: Path) -> None:
    with Pool.create(path, 8 << 20, mode="none") as pool:
        PHashMap(pool, "users", key_codec=str).update({f"u{i}": b"v" for i in range(50)})
        jobs = PQueue(pool, "jobs")
        for i in range(7):
            jobs.put(b"%d" % i)


def test_pool_check_checks_every_structure_and_says_so(shm_dir):
    path = shm_dir / "p.pool"
    _pool_with_every_kind(path)
    result = blizzard("pool", "check", str(path), "--mode", "none")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pool ok: header, undo log, allocator, directory of 3 roots" in out
    assert rows(out) == {"blizzard.registry": "registry ok", "jobs": "pqueue ok, 7 items",
                         "users": "phashmap ok, 50 items"}
    assert "ok (3 roots checked)" in out


def test_pool_check_fails_on_an_overwritten_structure_header(shm_dir):
    """A PHashMap whose header block was overwritten: the pool's own metadata is
    fine, so only the structure's check() can tell."""
    path = shm_dir / "p.pool"
    _pool_with_every_kind(path)
    with Pool.open(path, mode="none") as pool:
        off = pool.root("users").off
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(b"\xff" * 64)
    result = blizzard("pool", "check", str(path), "--mode", "none")
    one_error_line(result, "1 of 3 roots failed their check (users)")
    found = rows(result.stdout)
    assert found["users"] == "phashmap CORRUPT: map 'users': bad magic in its header block"
    assert found["jobs"] == "pqueue ok, 7 items"


# -- cluster ------------------------------------------------------------------------


def test_cluster_up_in_a_directory_that_cannot_be_made():
    result = blizzard("cluster", "up", "--dir", "/proc/x")
    one_error_line(result, "cannot create the data directory /proc/x")


def test_cluster_status_of_a_missing_config(shm_dir):
    result = blizzard("cluster", "status", "--config", str(shm_dir / "none.toml"))
    one_error_line(result, "no such config file")


def test_a_node_that_dies_at_start_is_reported_by_its_cause(shm_dir):
    """4 MiB pools cannot hold the Raft log's first segment: the node's Raft loop
    dies with PoolFullError, and that is what `cluster up` says, not the last
    line of the log (asyncio's complaints while the process shut down)."""
    for _ in range(3):  # a port of the block may be taken meanwhile on this busy machine
        result = blizzard("cluster", "up", "--dir", str(shm_dir / "c"), "--pool-size", "4M",
                          "--base-port", str(port_block(6)), "--timeout", "60")
        if "address already in use" not in result.stderr.lower():
            break
        shutil.rmtree(shm_dir / "c")
    line = one_error_line(result, "exited at start", "the Raft loop stopped",
                          PoolFullError.__name__, "pool full")
    assert "Task" not in line and "the other nodes were stopped" in line


# -- help and version ------------------------------------------------------------------


def test_version():
    """The release, then which build runs (compiled, or interpreted and why)."""
    from blizzard import __version__, _compiled

    result = blizzard("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"blizzard {__version__}, {_compiled.describe()}"


def test_help_shows_defaults_and_units():
    create = " ".join(blizzard("pool", "create", "--help").stdout.split())
    assert "(default: 64M)" in create and "(default: blizzard)" in create
    assert "powers of 1024" in create and "powers of 1000" in create
    up = blizzard("cluster", "up", "--help").stdout
    for default in ("(default: 3)", "(default: 7001)", "(default: 64M)",
                    "(default: /dev/shm/blizzard-cluster)", "(default: 30.0)"):
        assert default in " ".join(up.split()), default


def test_every_benchmark_option_is_described():
    from blizzard.cluster.config import RaftConfig

    raft_core = blizzard("bench", "raft-core", "--help")
    assert raft_core.returncode == 0 and "usage: blizzard bench raft-core" in raft_core.stdout
    options = [line.split()[0] for line in raft_core.stdout.splitlines()
               if line.startswith("  --")]
    assert options[:4] == ["--entries", "--batch", "--nodes", "--runs"]
    for line in raft_core.stdout.splitlines():
        if line.startswith("  --"):
            assert len(line.split()) > 2, f"no description: {line!r}"
    cluster = " ".join(blizzard("bench", "cluster", "--help").stdout.split())
    assert f"{RaftConfig().election_ticks} ticks of {RaftConfig().tick_ms} ms" in cluster


@pytest.mark.parametrize("command", [["serve"], ["mirror", "serve"]])
def test_a_node_command_run_in_process_leaves_logging_and_signals_as_they_were(
        command, shm_dir, capsys):
    """A node command installs its stderr log handler (and signal handlers) for
    its run only: left on the root logger, the handler would hold a stream its
    caller closes (a test's captured stderr), and every later log line from any
    thread would fail with "--- Logging error ---"."""
    import logging

    from blizzard.cli import main

    root = logging.getLogger()
    before = (root.handlers[:], root.level,
              signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert main([*command, "--config", str(shm_dir / "missing.toml"), "--node", "1"]) == 1
    assert "missing.toml" in capsys.readouterr().err
    after = (root.handlers[:], root.level,
             signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert after == before
