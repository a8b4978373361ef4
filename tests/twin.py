"""The same seeded operations through the compiled and the interpreted build.

A test builds a pool image, then plays a *scenario* (a function of a pool
and a seed, below) twice: in its own process (the compiled build, when it is
in use) and in a child process started with ``BLIZZARD_PURE=1`` (the
interpreted build of the same sources). A scenario yields after every step;
both sides record a CRC-32 of the whole pool there (cheap enough for every
step, and these are not adversarial bytes), and the test asserts the two
lists are equal, naming the first step where the pools differ.

Replay a scenario by hand::

    BLIZZARD_PURE=1 python -m tests.twin SCENARIO IMAGE SEED   # prints the digests
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from blizzard import _compiled
from blizzard.exceptions import PoolFullError
from blizzard.pmem import DramMedia, Pool

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 600
STRUCTURE_STEPS = 800

Scenario = Callable[[Pool, int], Iterator[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def digests(name: str, image: bytes, seed: int) -> list[int]:
    """Play scenario ``name`` on a copy of ``image``; a digest of the pool after each step."""
    pool = Pool.open(DramMedia.from_bytes(image))
    out = []
    try:
        for _ in SCENARIOS[name](pool, seed):
            out.append(zlib.crc32(pool.buf))
        out.append(zlib.crc32(pool.buf))
    finally:
        pool.close()
    return out


def interpreted_digests(name: str, image: bytes, seed: int, workdir: Path) -> list[int]:
    """:func:`digests` in a child process running the interpreted build."""
    path = workdir / f"{name}-{seed}.image"
    path.write_bytes(image)
    env = dict(os.environ, BLIZZARD_PURE="1")
    done = subprocess.run(
        [sys.executable, "-m", "tests.twin", name, str(path), str(seed)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"interpreted run failed:\n{done.stderr}"
    result = json.loads(done.stdout)
    assert result["build"].startswith("interpreted"), result["build"]
    return result["digests"]


def assert_same(name: str, image: bytes, seed: int, workdir: Path) -> None:
    """Both builds, same scenario and seed: the same pool after every step."""
    ours = digests(name, image, seed)
    theirs = interpreted_digests(name, image, seed, workdir)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, (
            f"scenario {name} seed {seed}: the pools differ after step {step}; replay with "
            f"BLIZZARD_PURE=1 python -m tests.twin {name} IMAGE {seed}")


# -- scenarios -------------------------------------------------------------------------


def _transaction(pool: Pool, rng: random.Random, live: list[int], abort: bool) -> list[int]:
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


@scenario
def transactions(pool: Pool, seed: int) -> Iterator[None]:
    """Commits, aborts, frees and undo-log overflow segments (a 4 KiB log)."""
    live: list[int] = []
    for step in range(60):
        live = _transaction(pool, random.Random(seed * 1000 + step), live, step % 7 == 3)
        yield
    pool.check()


@scenario
def structures(pool: Pool, seed: int) -> Iterator[None]:
    """Every structure, Op by Op: puts of small and out-of-line values, overwrites
    (page compaction), deletes and pops (merges), growth past many splits, clears."""
    from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

    rng = random.Random(seed)
    maps = [PHashMap(pool, "h"), PBPlusTree(pool, "b"), PSkipList(pool, "s")]
    queue = PQueue(pool, "q")
    # some keys share prefixes (a B+tree node's prefix shrinks as keys come in)
    keys = [rng.choice([b"", b"", b"user:", b"user:00"]) + rng.randbytes(rng.choice([1, 8, 16, 40]))
            for _ in range(400)]
    yield
    for step in range(STRUCTURE_STEPS):
        action = rng.random()
        m = maps[step % 3]
        key = keys[rng.randrange(len(keys))]
        if action < 0.55:
            m[key] = rng.randbytes(rng.choice([0, 8, 64, 64, 300, 1500]))
        elif action < 0.75:
            m.pop(key, None)
        elif action < 0.9:
            queue.put(rng.randbytes(rng.choice([8, 64, 2000])))
        elif action < 0.97:
            if len(queue):
                queue.get()
        else:
            m.clear()
        yield
    for m in maps:
        m.check()
    queue.check()


class _Abort(Exception):
    """Rolls back a batch of Ops (the scenario below raises it on purpose)."""


@scenario
def batches(pool: Pool, seed: int) -> Iterator[None]:
    """Ops in batches of one outer transaction each, a quarter of them rolled back:
    the cores rebuild from the rolled-back pool, the queue empties and refills
    within one transaction (its positions are rewound only by a later one), and
    every structure is cleared now and then."""
    from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

    rng = random.Random(seed)
    maps = [PHashMap(pool, "h"), PBPlusTree(pool, "b"), PSkipList(pool, "s")]
    queue = PQueue(pool, "q")
    keys = [rng.randbytes(rng.choice([1, 8, 16])) for _ in range(200)]
    yield
    for batch in range(STRUCTURE_STEPS // 8):
        try:
            with pool.transaction():
                for _ in range(rng.randrange(1, 12)):
                    action = rng.random()
                    m = maps[rng.randrange(3)]
                    if action < 0.4:
                        m[keys[rng.randrange(len(keys))]] = rng.randbytes(rng.choice([0, 8, 200]))
                    elif action < 0.55:
                        m.pop(keys[rng.randrange(len(keys))], None)
                    elif action < 0.75:
                        queue.put(rng.randbytes(rng.choice([8, 64, 1500])))
                    elif action < 0.95:
                        if len(queue):
                            queue.get()
                    elif action < 0.975:
                        queue.clear()
                    else:
                        m.clear()
                if batch % 4 == 3:
                    raise _Abort
        except _Abort:
            pass
        yield
    for m in maps:
        m.check()
    queue.check()


@scenario
def sessions(pool: Pool, seed: int) -> Iterator[None]:
    """Enveloped Ops through a session table of 16 slots: retries within a batch
    and across batches, stale requests, more clients than slots (evictions),
    results of every kind (None, bytes inline and in a block, ints, pairs,
    errors), entries that are not envelopes, empty entries and replays; and a
    batch that does not fit, applied again one Op at a time."""
    from blizzard.replication.sessions import SessionStateMachine, wrap
    from blizzard.structures import PBPlusTree, PHashMap, PQueue, ops, registry_for

    rng = random.Random(seed)
    PHashMap(pool, "h")
    PQueue(pool, "q")
    PBPlusTree(pool, "b")
    table = SessionStateMachine(registry_for(pool), pool, capacity=16)
    clients = [rng.getrandbits(64) | 1 for _ in range(24)]
    seqs = dict.fromkeys(clients, 0)
    sent: list[bytes] = []  # envelopes applied, for retries
    keys = [rng.randbytes(rng.choice([1, 8, 16])) for _ in range(40)]
    last = (-1).to_bytes(8, "little", signed=True)  # popitem's index: the last item

    def op() -> bytes:
        action = rng.random()
        key = keys[rng.randrange(len(keys))]
        if action < 0.3:
            size = rng.choice([0, 8, 30, 200, 1 << 16])  # 64 KiB: a batch may not fit
            return ops.encode(ops.Op("h", ops.OpCode.MAP_PUT, (key, rng.randbytes(size))))
        if action < 0.45:
            return ops.encode(ops.Op("h", ops.OpCode.MAP_POP, (key,)))  # bytes, or KeyError
        if action < 0.6:
            return ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (rng.randbytes(40),)))
        if action < 0.75:
            return ops.encode(ops.Op("q", ops.OpCode.QUEUE_GET, ()))  # bytes > 24, or an error
        if action < 0.85:
            return ops.encode(ops.Op("b", ops.OpCode.ORD_PUT, (key, rng.randbytes(8))))
        if action < 0.95:
            return ops.encode(ops.Op("b", ops.OpCode.ORD_POPITEM, (last,)))  # a pair
        return ops.encode(ops.Op("nowhere", ops.OpCode.MAP_PUT, (key, b"")))  # an error

    yield
    for _ in range(STRUCTURE_STEPS // 8):
        index = table.last_applied
        batch = []
        if rng.random() < 0.1:
            batch.append((index, wrap(clients[0], 1, op())))  # a replay of an applied index
        for _ in range(rng.randrange(1, 10)):
            index += 1
            action = rng.random()
            if action < 0.15 and sent:
                data = sent[rng.randrange(max(0, len(sent) - 30), len(sent))]  # a retry
            elif action < 0.2:
                data = rng.choice([b"", b"\x01short", b"\x07" + bytes(20)])  # not envelopes
            else:
                client = clients[rng.randrange(len(clients))]
                seqs[client] += 1
                data = wrap(client, seqs[client], op())
                sent.append(data)
            batch.append((index, data))
        table.apply(batch)
        yield
    pool.check()


if __name__ == "__main__":
    name, image_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = digests(name, Path(image_path).read_bytes(), seed)
    print(json.dumps({"build": _compiled.describe(), "digests": result}))
