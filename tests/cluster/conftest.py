"""Local clusters on loopback for the cluster tests."""

from __future__ import annotations

import socket

import pytest

from blizzard.cluster.config import local_cluster


def free_port_block(n: int) -> int:
    """A base port with ``n`` free consecutive ports after it (best effort)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + n >= 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


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
