"""The ``blizzard`` command: demo and pool create / info / check, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blizzard import _compiled
from blizzard.cli import main, parse_size


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blizzard", *args], capture_output=True,
                          text=True, timeout=120)


def test_parse_size():
    assert parse_size("4096") == 4096
    assert parse_size("64M") == 64 << 20
    assert parse_size("1GiB") == 1 << 30
    with pytest.raises(Exception, match="not a size"):
        parse_size("lots")


def test_demo_runs_end_to_end():
    """Pool, structures and a 3-node cluster; the working directory is removed."""
    import os

    work = f"/dev/shm/blizzard-test-demo-{os.getpid()}"
    result = _run("demo", "--records", "500", "--writes", "50", "--dir", work)
    assert result.returncode == 0, result.stderr
    assert "500 records verified" in result.stdout
    assert "all 3 replicas hold the same 150 keys" in result.stdout
    assert "demo: all checks passed" in result.stdout
    assert not os.path.exists(work)


def test_pool_create_info_check(tmp_path, capsys):
    path = str(tmp_path / "p.pool")
    assert main(["pool", "create", path, "--size", "4M", "--layout", "app", "--mode", "msync"]) == 0
    assert main(["pool", "info", path, "--mode", "msync"]) == 0
    out = capsys.readouterr().out
    assert "layout               app" in out and "roots" in out
    assert f"build                {_compiled.describe()}" in out
    assert main(["pool", "check", path, "--mode", "msync"]) == 0
    assert ": ok" in capsys.readouterr().out


def test_errors_are_one_line_not_a_traceback(tmp_path):
    missing = _run("pool", "info", str(tmp_path / "nope.pool"))
    assert missing.returncode == 1
    assert "no such pool file" in missing.stderr and "Traceback" not in missing.stderr
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 10000)
    bad = _run("pool", "check", str(junk))
    assert bad.returncode == 1 and "not a Blizzard pool" in bad.stderr
