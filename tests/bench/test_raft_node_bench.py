"""The node benchmark replicates real puts through three real nodes, checks every
replica holds them all, and leaves no pool behind. Small runs: these check the
harness, not the speed."""

from __future__ import annotations

import gc
import json

import pytest

from blizzard.bench import raft_node


@pytest.mark.parametrize("value_bytes", [0, 64, 3_000])
def test_a_run_replicates_every_put_to_every_replica(shm_dir, value_bytes):
    # 3,000 puts, 64 in flight: many rounds, and values too large to lie inline
    figures = raft_node.run_once(directory=str(shm_dir), puts=3_000, window=64,
                                 value_bytes=value_bytes)
    assert figures["leader_us"] > 0 and figures["follower_us"] > 0
    assert figures["summed_us"] == pytest.approx(
        figures["leader_us"] + 2 * figures["follower_us"])
    assert list(shm_dir.iterdir()) == []  # its pools are gone


def test_the_command_reports_each_size_and_leaves_the_collector_as_it_was(shm_dir, capsys):
    out = shm_dir / "raft-node.json"
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert raft_node.main(["--puts", "500", "--runs", "1", "--value-bytes", "0,64",
                           "--dir", str(shm_dir), "--quiet", "--json", str(out)]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)
    text = capsys.readouterr().out
    assert "leader µs" in text and "follower µs" in text
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["0", "64"]
    assert all(r["median_summed_us"] > 0 and len(r["samples"]) == 1 for r in results.values())
    out.unlink()
    assert list(shm_dir.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--value-bytes", "64,x"], "comma-separated integers"),
    (["--value-bytes", "64,-1"], "at least 0"),
    (["--window", "0"], "at least 1"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        raft_node.main(argv)
    assert message in capsys.readouterr().err
