"""The ordered-map benchmark runs end to end on a small key count and cleans up.

A harness check, not a speed test.
"""

from __future__ import annotations

import pytest

from blizzard.bench import ordered
from blizzard.pmem import _libpmem
from tests.structures.conftest import shm_tempdir

pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")


def test_small_run_reports_every_structure(capsys):
    workdir = shm_tempdir()
    try:
        assert ordered.main(["--keys", "3000", "--gets", "500", "--scans", "3",
                             "--dir", str(workdir)]) == 0
        out = capsys.readouterr().out
        for name in ("PBPlusTree", "PSkipList", "SortedDict", "n=1,000", "n=3,000",
                     "command: blizzard bench ordered --keys 3000"):
            assert name in out
        assert list(workdir.iterdir()) == []
    finally:
        workdir.rmdir()


def test_checkpoints_are_powers_of_ten():
    assert ordered.checkpoints(25_000) == [1000, 10_000, 25_000]
    assert ordered.checkpoints(1000) == [1000]


def test_the_get_target_is_lmdbs_rate_in_the_same_run():
    ours = {"insert": 160_000.0, "get": 300_000.0, "scan": 2_000_000.0}
    lines = ordered.targets({"PBPlusTree": ours, "lmdb": {"get": 350_000.0}})
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["met)", "MISSED)", "MISSED)"]
    assert "lmdb's 350,000" in lines[1]
    lines = ordered.targets({"PBPlusTree": ours})
    assert "no lmdb in this run" in lines[1]
