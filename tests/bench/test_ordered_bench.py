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
