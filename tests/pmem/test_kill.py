"""Process-kill tests on real files: a child process runs transactions on a pool
(tests/pmem/kill_child.py) and is SIGKILLed at a seeded random moment; the
reopened pool must pass ``check()`` and hold exactly the state after a prefix
of the child's transactions: the last one it reported, or the one after it.
The next child then continues on the recovered pool, so later rounds also kill
processes that are recovering or have recovered."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blizzard.pmem import Pool
from tests.pmem import kill_child as K

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 8


def verify(path: Path, mode: str, reported: int, where: str) -> int:
    """Check the pool against the child's reported progress; returns its step counter."""
    with Pool.open(path, layout="kill", mode=mode) as pool:
        pool.check()
        state = pool.root("state").off
        counter = struct.unpack_from("<Q", pool.buf, state)[0]
        assert counter in (reported, reported + 1), (where, counter, reported)
        used = pool.usable_size(state)
        for slot, (size, version) in enumerate(K.expected(counter)):
            off, got_size, got_version = K.SLOT.unpack_from(pool.buf, state + 8 + slot * 24)
            assert (got_size, got_version) == (size, version), (where, slot)
            if not version:
                assert off == 0
                continue
            assert pool.is_allocated(off), (where, slot)
            assert pool.read(off, size) == K.contents(slot, version, size), (where, slot)
            used += pool.usable_size(off)
        assert pool.stats().used == used, f"{where}: leaked or lost blocks"
    return counter


@pytest.mark.parametrize(("place", "mode", "seed"), [
    ("shm", "pmem", 1), ("disk", "pmem", 2), ("disk", "msync", 3)])
def test_sigkill_leaves_a_committed_prefix(place, mode, seed, shm_dir, tmp_path):
    """After SIGKILL at a random moment, the pool holds the state after the last
    reported transaction or the one in flight, never anything in between."""
    rng = random.Random(seed)
    path = (shm_dir if place == "shm" else tmp_path) / "kill.pool"
    progress = shm_dir / "progress"
    progress.write_bytes(bytes(8))
    K.create(str(path), mode)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    counter = 0
    for round_ in range(ROUNDS):
        where = f"seed={seed} round={round_}"
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.pmem.kill_child", str(path), mode, str(progress)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            assert line == "ready\n", (where, line, child.stderr.read())
            time.sleep(rng.uniform(0.01, 0.25))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, (where, child.stderr.read())
        reported = struct.unpack("<Q", progress.read_bytes())[0]
        assert reported >= counter, where
        counter = verify(path, mode, reported, where)
        progress.write_bytes(struct.pack("<Q", counter))  # the next child starts here
    assert counter > ROUNDS, f"the children committed only {counter} transactions"
