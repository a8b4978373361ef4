"""Process kill on real files: a child inserting into a PBPlusTree and a PSkipList is
SIGKILLed at a seeded random moment; the reopened pool holds a prefix of its Ops,
each exactly once, and both structures pass ``check()``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from blizzard.pmem import Pool
from blizzard.structures import PBPlusTree, PSkipList, registry_for

CHILD = r"""
import sys, time
from blizzard.exceptions import PoolFullError
from blizzard.pmem import Pool
from blizzard.structures import PBPlusTree, PSkipList
from tests.structures.test_ordered_kill import key, value

pool = Pool.create(sys.argv[1], 64 << 20, mode="pmem")
t, s = PBPlusTree(pool, "t", fanout=8), PSkipList(pool, "s")
print("ready", flush=True)
i = 0
try:
    while True:
        t[key(i)] = value(i)
        s[key(i)] = value(i)
        if i % 5 == 4:  # deletes too, so merges happen under the kill
            del t[key(i - 3)]
            del s[key(i - 3)]
        i += 1
except PoolFullError:
    time.sleep(60)
"""


def key(i: int) -> bytes:
    """The i-th key: a scrambled order, so inserts land all over the tree."""
    return b"%010d" % (i * 2654435761 % 4294967291)


def value(i: int) -> bytes:
    return bytes([i % 251]) * (i * 7919 % 200)


def model(ops: int) -> dict[bytes, bytes]:
    """The contents after the first ``ops`` Ops on one structure."""
    out: dict[bytes, bytes] = {}
    i = 0
    done = 0
    while done < ops:
        out[key(i)] = value(i)
        done += 1
        if i % 5 == 4 and done < ops:
            del out[key(i - 3)]
            done += 1
        i += 1
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_leaves_a_prefix(seed, shm_dir):
    path = shm_dir / "kill.pool"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             env=env, cwd=os.getcwd())
    try:
        assert child.stdout.readline() == b"ready\n"
        time.sleep(random.Random(seed).uniform(0.2, 1.0))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    print(f"replay: pytest {__file__}::test_sigkill_leaves_a_prefix[{seed}]")
    with Pool.open(path) as pool:
        t, s = PBPlusTree(pool, "t"), PSkipList(pool, "s")
        registry = registry_for(pool)
        registry.check()
        t.check()
        s.check()
        got_t, got_s = dict(t.items()), dict(s.items())
        # Ops alternate t, s (puts) and t, s (deletes): t is at most one Op ahead of s
        applied = registry.last_applied - 3  # CREATE t, INIT t (fanout), CREATE s
        ops_t, ops_s = (applied + 1) // 2, applied // 2
        assert ops_t > 10, "the child made little progress before the kill"
        assert got_t == model(ops_t)
        assert got_s == model(ops_s)
        assert list(t) == sorted(got_t) and list(s) == sorted(got_s)
