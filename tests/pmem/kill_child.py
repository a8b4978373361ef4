"""The workload of test_kill: run as ``python -m tests.pmem.kill_child POOL MODE PROGRESS``.

The pool's root "state" is a block of ``8 + SLOTS * 24`` bytes: the number of
committed steps, then per slot (offset, size, version) of a data block. Step
``c`` (one transaction) reallocates slot ``c % SLOTS`` with a new size, rewrites
slot ``(5c + 3) % SLOTS`` in place, and sets the counter to ``c``; every block
holds :func:`contents` of its slot and version. :func:`expected` computes the
slots after ``c`` steps without a pool, so a test can check any state against
the step counter. After each commit the child writes the counter to PROGRESS
(an 8-byte file it maps), which is what the parent compares with after SIGKILL.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys

from blizzard.pmem import Pool

SLOTS = 8
SLOT = struct.Struct("<QQQ")
STATE_SIZE = 8 + SLOTS * SLOT.size
SIZES = (24, 100, 700, 5000, 40_000, 70_000, 200, 300_000)  # runs and extents


def contents(slot: int, version: int, size: int) -> bytes:
    head = struct.pack("<QQ", version, slot)
    unit = bytes((version * 31 + slot * 7 + i) & 0xFF for i in range(241))
    return (head + unit * (size // 241 + 1))[:size]


def step_plan(c: int) -> tuple[int, int, int]:
    """(reallocated slot, its new size, slot rewritten in place) of step ``c``."""
    return c % SLOTS, SIZES[(c * 3) % len(SIZES)], (c * 5 + 3) % SLOTS


def expected(c: int) -> list[tuple[int, int]]:
    """(size, version) of each slot after ``c`` steps; version 0 = empty."""
    slots = [(0, 0)] * SLOTS
    for k in range(1, c + 1):
        a, size, b = step_plan(k)
        slots[a] = (size, k)
        if b != a and slots[b][1]:
            slots[b] = (slots[b][0], k)
    return slots


def create(path: str, mode: str) -> None:
    with Pool.create(path, 4 << 20, layout="kill", mode=mode, log_size=8192) as pool, \
            pool.transaction() as tx:
        off = tx.alloc(STATE_SIZE, zero=True)
        tx.set_root("state", off)


def step(pool: Pool, state: int, c: int) -> None:
    a, size, b = step_plan(c)
    buf = pool.buf
    with pool.transaction() as tx:
        pos = state + 8 + a * SLOT.size
        old_off, _, _ = SLOT.unpack_from(buf, pos)
        if old_off:
            tx.free(old_off)
        off = tx.alloc(size)
        buf[off:off + size] = contents(a, c, size)
        tx.write(pos, SLOT.pack(off, size, c))
        pos = state + 8 + b * SLOT.size
        b_off, b_size, b_version = SLOT.unpack_from(buf, pos)
        if b != a and b_version:
            tx.write(b_off, contents(b, c, b_size))
            tx.write(pos, SLOT.pack(b_off, b_size, c))
        tx.write(state, struct.pack("<Q", c))


def main() -> None:
    path, mode, progress = sys.argv[1:4]
    pool = Pool.open(path, layout="kill", mode=mode)
    state = pool.root("state").off
    fd = os.open(progress, os.O_RDWR)
    shown = mmap.mmap(fd, 8)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    c = struct.unpack_from("<Q", pool.buf, state)[0]
    while True:
        c += 1
        step(pool, state, c)
        shown[0:8] = struct.pack("<Q", c)


if __name__ == "__main__":
    main()
