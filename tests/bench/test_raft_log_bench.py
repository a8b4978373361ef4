"""The Raft log benchmark writes real logs through both paths, checks them and
leaves no pool behind. Small runs: these check the harness, not the speed."""

from __future__ import annotations

import json

import pytest

from blizzard.bench import raft_log


@pytest.mark.parametrize("path", raft_log.PATHS)
def test_each_path_writes_a_log_that_verifies(shm_dir, path):
    # 2,000 entries in batches of 16: compactions happen, and records cross segments
    per_entry = raft_log.run_once(path, directory=str(shm_dir), entries=2_000, batch=16,
                                  value_bytes=1_000)
    assert per_entry > 0
    assert list(shm_dir.iterdir()) == []  # its pool is gone


def test_the_command_reports_every_path_and_size(shm_dir, capsys):
    out = shm_dir / "raft-log.json"
    assert raft_log.main(["--entries", "500", "--runs", "1", "--value-bytes", "0,64",
                          "--dir", str(shm_dir), "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "append" in text and "receive" in text
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["append 0", "append 64", "receive 0", "receive 64"]
    assert all(r["median_us"] > 0 and len(r["samples_us"]) == 1 for r in results.values())
    out.unlink()
    assert list(shm_dir.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--paths", "send"], "unknown path 'send'"),
    (["--value-bytes", "64,x"], "comma-separated integers"),
    (["--value-bytes", "64,-1"], "at least 0"),
    (["--runs", "0"], "at least 1"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        raft_log.main(argv)
    assert message in capsys.readouterr().err
