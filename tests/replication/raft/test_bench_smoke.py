"""The core benchmark runs and reports (a tiny run: correctness, not speed)."""

from __future__ import annotations

from blizzard.bench import raft_core


def test_run_once_commits_everything():
    wall, cpu = raft_core.run_once(entries=2_000, batch=64)
    assert wall > 0 and cpu > 0


def test_main_prints_both_rates(capsys):
    raft_core.main(["--entries", "2000", "--runs", "1"])
    out = capsys.readouterr().out
    assert "CPU time" in out and "wall time" in out
