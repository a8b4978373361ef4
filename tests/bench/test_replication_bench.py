"""``blizzard bench replication`` runs, accounts for every system, and leaves nothing
behind. A tiny run: it checks the harness and the accounting, not the speed."""

from __future__ import annotations

import json

import pytest

from blizzard.bench import replication
from blizzard.pmem import _libpmem

pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")


def test_quick_run_reports_both_sides(shm_dir, capsys):
    out = shm_dir / "r.json"
    code = replication.main(["--ops", "120", "--latency-ops", "20", "--window", "50",
                             "--structures", "hashmap,bptree", "--values", "64",
                             "--dir", str(shm_dir), "--json", str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    rows = {(r["system"], r["structure"]): r for r in report["results"]}
    assert set(rows) == {(s, k) for s in replication.SYSTEMS for k in ("hashmap", "bptree")}
    for (system, kind), r in rows.items():
        assert r["ops"] == 120 and r["failed"] == 0, (system, kind, r["note"])
        assert r["p50_us"] > 0 and r["bytes_per_op"] > 0 and r["messages_per_op"] > 0
        assert r["flushes_per_op_primary"] > 0 and r["flushes_per_op_backup"] > 0
        if system == "physical-sync":
            # each put's fences are shipped and waited for: at least 2 per put
            assert r["round_trips_per_op"] >= 2
            # a 64-byte value: every backup gets at least the value and the key
            assert r["bytes_per_op"] > 2 * (64 + 16)
    assert list(shm_dir.iterdir()) == [out]  # the run's own directory is gone
    printed = capsys.readouterr().out
    assert "physical / logical" in printed
