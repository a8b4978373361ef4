"""The compiled and the interpreted build apply the same Ops to the same bytes.

Each structure's core is typed Python, compiled by Cython; ``BLIZZARD_PURE=1``
runs the same sources interpreted. The same seeded Ops, from one pool image,
must leave byte-identical pools after every Op (``tests/twin.py`` plays the
interpreted side in a child process).
"""

from __future__ import annotations

import pytest

from blizzard.pmem import DramMedia, Pool
from tests import twin


@pytest.mark.parametrize("seed", range(2))
def test_compiled_and_interpreted_builds_apply_ops_to_identical_pools(tmp_path, seed):
    pool = Pool.create(DramMedia(8 << 20), log_size=4096)
    image = bytes(pool.buf)
    pool.close()
    twin.assert_same("structures", image, seed, tmp_path)


@pytest.mark.parametrize("seed", range(2))
def test_compiled_and_interpreted_builds_roll_back_batches_to_identical_pools(tmp_path, seed):
    """Batches of Ops in outer transactions, some rolled back, on every structure."""
    pool = Pool.create(DramMedia(8 << 20), log_size=4096)
    image = bytes(pool.buf)
    pool.close()
    twin.assert_same("batches", image, seed, tmp_path)


@pytest.mark.parametrize("seed", range(2))
def test_compiled_and_interpreted_session_tables_record_identical_bytes(tmp_path, seed):
    """Enveloped Ops through the session table (retries, evictions, every result
    kind, a batch that does not fit): the same table and results in both builds."""
    pool = Pool.create(DramMedia(1 << 20), log_size=4096)
    image = bytes(pool.buf)
    pool.close()
    twin.assert_same("sessions", image, seed, tmp_path)
