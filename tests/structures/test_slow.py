"""Large: a map grown past a million keys, then checked and reopened."""

from __future__ import annotations

import pytest

from blizzard.pmem import Pool
from blizzard.structures import PHashMap

KEYS = 1_050_000


@pytest.mark.slow
def test_map_past_a_million_keys(shm_dir):
    path = shm_dir / "big.pool"
    with Pool.create(path, 1 << 30, mode="none") as pool:
        m = PHashMap(pool, "big", key_codec=int, value_codec=int)
        for i in range(KEYS):
            m[i] = i ^ 0x5A5A
        assert len(m) == KEYS
        stats = m.stats()
        assert stats["buckets"] > KEYS // 32 and stats["pages"] < stats["buckets"] * 1.5, stats
        m.check()
    with Pool.open(path, mode="none") as pool:
        m = PHashMap(pool, "big")
        assert len(m) == KEYS
        assert all(m[i] == i ^ 0x5A5A for i in range(0, KEYS, 997))
        for i in range(0, KEYS, 2):
            del m[i]
        assert len(m) == KEYS // 2
        m.check()
