"""The ``blizzard`` command: demo and pool create / info / check, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_demo_writes_reopens_and_verifies(tmp_path):
    path = tmp_path / "demo.pool"
    result = _run("demo", "--records", "500", "--path", str(path), "--mode", "msync")
    assert result.returncode == 0, result.stderr
    assert "500 records verified" in result.stdout
    assert not path.exists()


def test_pool_create_info_check(tmp_path, capsys):
    path = str(tmp_path / "p.pool")
    assert main(["pool", "create", path, "--size", "4M", "--layout", "app", "--mode", "msync"]) == 0
    assert main(["pool", "info", path, "--mode", "msync"]) == 0
    out = capsys.readouterr().out
    assert "layout               app" in out and "roots" in out
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
