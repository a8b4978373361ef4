"""The failover benchmark runs, reports what it measured and leaves nothing behind.

One kill only: this checks the harness (processes, the kill, the restart,
cleanup), not the speed.
"""

from __future__ import annotations

from blizzard.bench import failover


def test_one_kill_is_measured_and_nothing_is_left_behind(shm_dir):
    summary = failover.run_kills(1, directory=str(shm_dir))
    assert list(shm_dir.iterdir()) == []  # the run's directory is gone
    [kill] = summary["kills"]
    assert kill["new_leader"] != kill["leader"]
    assert 0 < kill["election_ms"] < 30_000 and 0 < kill["pause_ms"] < 30_000
    assert summary["pause_ms_p50"] == kill["pause_ms"]
    assert summary["election_timeout_ms"] == 300
    text = failover.format_summary(summary)
    assert "write pause: p50" in text and "p50 pause <= 600 ms:" in text


def test_the_pause_is_the_longest_gap_around_the_kill():
    """A put already committed may complete just after the kill: the pause is the
    stall that follows, not the first gap."""
    done = [9.98, 9.99, 10.001, 10.4, 10.41, 10.42, 10.51, 13.0]  # killed at 10.0
    assert abs(failover._longest_gap(done, start=10.0, end=10.5) - 0.399) < 1e-9
    assert failover._longest_gap([9.0], start=10.0, end=10.5) == 0.0
