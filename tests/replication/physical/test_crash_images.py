"""A backup's image after any prefix of the shipped fences -- with any subset of
the next fence's lines written -- is a valid crash image of the primary: it
opens, recovery rolls back the operation in flight, ``check()`` passes, and its
contents are the model's just before or just after that operation, as
``last_applied`` says.

The stream is the real one (the messages ``MirroredMedia`` ships), replayed
by the backup's own ``write_ranges`` into a ``CrashSimMedia``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from blizzard.pmem import CrashSimMedia, DramMedia, Pool
from blizzard.pmem.crashsim import random_chooser
from blizzard.replication.physical import MirroredMedia
from blizzard.replication.physical.backup import write_ranges
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList, registry_for
from tests.conftest import budget

POOL_BYTES = 2 << 20
OPS = 60


def contents(pool: Pool) -> tuple:
    roots = pool.roots()
    out = []
    for name, cls in (("h", PHashMap), ("b", PBPlusTree), ("s", PSkipList)):
        out.append(dict(cls(pool, name).items()) if name in roots else None)
    out.append(list(PQueue(pool, "q")) if "q" in roots else None)
    return tuple(out)


def record(seed: int):
    """Run a seeded workload on a mirrored pool; returns the shipped fences,
    the seq at each op's end, and the model at each ``last_applied``."""
    fences: list[list[bytes]] = []
    media = MirroredMedia(DramMedia(POOL_BYTES), {}, node=1, epoch=1, acks=0,
                          on_fence=lambda seq, messages: fences.append(messages))
    pool = Pool.create(media)
    rng = random.Random(seed)
    models = {registry_for(pool).last_applied: contents(pool)}
    handles = []
    for name, cls in (("h", PHashMap), ("b", PBPlusTree), ("s", PSkipList), ("q", PQueue)):
        handles.append(cls(pool, name))
        models[registry_for(pool).last_applied] = contents(pool)
    h, b, s, q = handles
    for _ in range(OPS):
        which = rng.randrange(5)
        key = b"k%03d" % rng.randrange(40)
        value = rng.randbytes(rng.choice([8, 64, 300]))
        if which == 0:
            h[key] = value
        elif which == 1:
            b[key] = value
        elif which == 2:
            s[key] = value
        elif which == 3 and len(q) and rng.random() < 0.5:
            q.get()
        elif which == 3:
            q.put(value)
        else:
            target = rng.choice([h, b, s])
            target.pop(key, None)
        models[registry_for(pool).last_applied] = contents(pool)
    pool.close()
    return fences, models


RECORDED = {seed: record(seed) for seed in (1, 2)}


@settings(max_examples=budget(60))
@given(seed=st.sampled_from(sorted(RECORDED)), where=st.floats(0, 1),
       chooser=st.integers(0, 2**32))
def test_every_prefix_of_the_stream_is_a_crash_image(seed, where, chooser):
    fences, models = RECORDED[seed]
    k = min(int(where * len(fences)), len(fences) - 1)
    image = DramMedia(POOL_BYTES)
    for messages in fences[:k]:
        for message in messages:
            write_ranges(image, memoryview(message))
    sim = CrashSimMedia.from_image(bytes(image.buf))
    image.close()
    for message in fences[k]:  # the fence in flight: any subset of its lines lands
        write_ranges(sim, memoryview(message))
    crashed = sim.crash_image(random_chooser(chooser))
    if bytes(crashed[:8]) != b"BLIZPOOL":
        assert k < 5, "only the pool's own formatting fences precede its magic"
        return
    pool = Pool.open(DramMedia.from_bytes(crashed))
    try:
        pool.check()
        applied = registry_for(pool).last_applied
        for name, cls in (("h", PHashMap), ("b", PBPlusTree), ("s", PSkipList)):
            if name in pool.roots():
                cls(pool, name).check()
        assert applied in models, (applied, sorted(models))
        assert contents(pool) == models[applied], f"seed {seed} fence {k} chooser {chooser}"
    finally:
        pool.close()
