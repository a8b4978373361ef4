"""Process kill on real files: a child doing puts is SIGKILLed at a seeded random
moment; the reopened pool holds a prefix of its Ops, each exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from blizzard.pmem import Pool
from blizzard.structures import PHashMap, PQueue, registry_for

CHILD = r"""
import sys, time
from blizzard.exceptions import PoolFullError
from blizzard.pmem import Pool
from blizzard.structures import PHashMap, PQueue
from tests.structures.test_kill import value

pool = Pool.create(sys.argv[1], 256 << 20, mode="pmem")
m, q = PHashMap(pool, "m"), PQueue(pool, "q")
print("ready", flush=True)
i = 0
try:
    while True:
        v = value(i)
        m[b"%08d" % i] = v
        q.put(v)
        i += 1
except PoolFullError:
    time.sleep(60)
"""


def value(i: int) -> bytes:
    """The i-th value: mostly small, sometimes empty, now and then megabytes."""
    if i % 13 == 0:
        return b""
    if i % 401 == 7:
        return bytes([i % 251]) * (1 << 20) * (1 + i % 3)
    return bytes([i % 251]) * (i * 7919 % 300)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_leaves_a_prefix(seed, shm_dir):
    path = shm_dir / "kill.pool"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             env=env, cwd=os.getcwd())
    try:
        assert child.stdout.readline() == b"ready\n"
        time.sleep(random.Random(seed).uniform(0.05, 0.8))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    print(f"replay: pytest {__file__}::test_sigkill_leaves_a_prefix[{seed}]")
    with Pool.open(path) as pool:
        m, q = PHashMap(pool, "m"), PQueue(pool, "q")
        registry = registry_for(pool)
        registry.check()
        n = len(m)
        assert n > 0, "the child made no progress before the kill"
        assert sorted(m) == [b"%08d" % i for i in range(n)]
        assert all(m[b"%08d" % i] == value(i) for i in range(n))
        items = list(q)
        assert len(items) in (n - 1, n)
        assert items == [value(i) for i in range(len(items))]
        assert registry.last_applied == 2 + n + len(items)  # two CREATEs, then the puts
