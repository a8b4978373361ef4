"""The C undo log and the pure-Python one write the same bytes.

Transactions run on DramMedia go through the C extension; with
``BLIZZARD_PURE_PYTHON=1`` the same sequence goes through ``PyUndoLog``. Two
pools started from one image must stay byte-identical after every
transaction, including aborts and overflow segments.
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.exceptions import PoolFullError
from blizzard.pmem import DramMedia, Pool, _undolog

needs_c = pytest.mark.skipif(
    _undolog.CUndoLog is None, reason="C undo log not built: see test_the_c_extension_is_built")


def test_the_c_extension_is_built():
    """`make` installs a compiler (scripts/install-system-deps.sh) before the
    package, so the fast path must be there wherever the tests run; without
    it the tests below skip, and this one says why."""
    assert _undolog.CUndoLog is not None, (
        "blizzard.pmem._undolog_c is missing: the package was installed without a C "
        "compiler; re-run `.venv/bin/pip install -e '.[test,bench]'` after installing one")


@needs_c
@given(st.binary(max_size=300))
def test_crc32_matches_zlib(data):
    from blizzard.pmem._undolog_c import crc32

    assert crc32(data) == zlib.crc32(data)


def _twin_pools(monkeypatch) -> tuple[Pool, Pool]:
    fast = Pool.create(DramMedia(4 << 20), log_size=4096)
    image = bytes(fast.buf)
    monkeypatch.setenv("BLIZZARD_PURE_PYTHON", "1")
    slow = Pool.open(DramMedia.from_bytes(image))
    monkeypatch.delenv("BLIZZARD_PURE_PYTHON")
    assert type(fast._tx._log) is _undolog.CUndoLog
    assert type(slow._tx._log) is _undolog.PyUndoLog
    return fast, slow


def _run(pool: Pool, rng: random.Random, live: list[int], abort: bool) -> list[int]:
    """One transaction of random allocs, writes and frees; returns the live blocks."""
    blocks = list(live)
    try:
        with pool.transaction() as tx:
            for _ in range(rng.randrange(1, 6)):
                action = rng.random()
                if action < 0.4 or not blocks:
                    size = rng.choice([8, 64, 100, 3000, 70_000])
                    off = tx.alloc(size)
                    pool.buf[off:off + size] = rng.randbytes(size)
                    blocks.append(off)
                elif action < 0.8:
                    off = blocks[rng.randrange(len(blocks))]
                    n = min(pool.usable_size(off), rng.choice([8, 16, 5000]))
                    tx.write(off, rng.randbytes(n))
                else:
                    tx.free(blocks.pop(rng.randrange(len(blocks))))
            if abort:
                raise KeyError("abort")
    except (KeyError, PoolFullError):  # both roll back
        return live
    return blocks


@needs_c
@pytest.mark.parametrize("seed", range(5))
def test_c_and_python_logs_write_identical_pools(monkeypatch, seed):
    """Same transactions, same bytes: commits, aborts and log overflow."""
    fast, slow = _twin_pools(monkeypatch)
    fast_live: list[int] = []
    slow_live: list[int] = []
    for step in range(60):
        abort = step % 7 == 3
        fast_live = _run(fast, random.Random(seed * 1000 + step), fast_live, abort)
        slow_live = _run(slow, random.Random(seed * 1000 + step), slow_live, abort)
        assert fast_live == slow_live
        assert bytes(fast.buf) == bytes(slow.buf), f"pools differ after step {step}"
    fast.check()
    slow.check()
