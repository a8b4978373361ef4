"""Local clusters on loopback for the cluster tests."""

from __future__ import annotations

import pytest

from blizzard.cluster.config import local_cluster
from blizzard.cluster.ports import port_block


def free_port_block(n: int) -> int:
    return port_block(n)


@pytest.fixture
def cluster_config(tmp_path_factory):
    """A 3-node cluster config with its data under /dev/shm."""
    import tempfile

    data = tempfile.mkdtemp(prefix="blizzard-test-", dir="/dev/shm")
    config = local_cluster(3, data, base_port=free_port_block(6), pool_size="16M",
                           log_pool_size="16M", raft={"tick_ms": 10, "election_ticks": 10})
    yield config
    import shutil

    shutil.rmtree(data, ignore_errors=True)
