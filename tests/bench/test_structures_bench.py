"""The structures benchmark runs end to end on a small map and cleans up.

A harness check, not a speed test.
"""

from __future__ import annotations

import json

import pytest

from blizzard.bench import structures
from blizzard.pmem import _libpmem

pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")


def test_small_run_measures_every_operation(shm_dir, capsys):
    record = shm_dir / "run.json"
    assert structures.main(["--ops", "3000", "--sizes", "1000,3000", "--no-references",
                            "--dir", str(shm_dir), "--json", str(record)]) == 0
    out = capsys.readouterr().out
    assert "command: blizzard bench structures --ops 3000" in out
    doc = json.loads(record.read_text())
    got = {(r["size"], r["op"]) for r in doc["results"]}
    assert got == {(n, op) for n in (1000, 3000)
                   for op in ("put", "get", "delete", "queue put+get")}
    assert all(r["ops_s"] > 0 and r["lmdb_ops_s"] is None for r in doc["results"])
    assert [line.split(":")[0] for line in doc["verdict"]] == [
        "put at 3,000 entries", "get at 3,000 entries", "delete at 3,000 entries",
        "queue put+get at 3,000 entries"]
    assert [p.name for p in shm_dir.iterdir()] == ["run.json"]  # its pools are gone


def test_each_target_and_the_put_against_lmdbs_in_the_same_run():
    rows = [{"size": 10, "op": "put", "ops_s": 1e9, "lmdb_ops_s": 2e9},  # not the largest
            {"size": 1000, "op": "put", "ops_s": 260_000.0, "lmdb_ops_s": 300_000.0},
            {"size": 1000, "op": "get", "ops_s": 999_999.0, "lmdb_ops_s": None},
            {"size": 1000, "op": "delete", "ops_s": 200_000.0, "lmdb_ops_s": None},
            {"size": 1000, "op": "queue put+get", "ops_s": 300_001.0, "lmdb_ops_s": None}]
    lines = structures.targets(rows)
    assert [line.rsplit(": ", 1)[1] for line in lines] == [
        "met)", "MISSED)", "MISSED)", "met)", "met)"]
    assert lines[1] == ("put at 1,000 entries: 0.87x lmdb's put rate in this run "
                        "(target >= 1x: MISSED)")
    assert structures.targets([]) == []
