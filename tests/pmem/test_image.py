"""PoolImage: a pool copied a slice at a time while it changes equals the pool
at the instant the copy finishes -- structures, sessions, allocator and all."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blizzard.pmem import DramMedia, Pool
from blizzard.pmem.image import PoolImage, geometry, used_pieces
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList, registry_for
from tests.conftest import budget


def _mutate(rng: random.Random, structures: dict, n: int) -> None:
    m, q, t, s = structures["m"], structures["q"], structures["t"], structures["s"]
    for _ in range(n):
        key = b"k%d" % rng.randrange(300)
        value = rng.randbytes(rng.choice((8, 100, 2000, 6000)))
        roll = rng.random()
        if roll < 0.3:
            m[key] = value
        elif roll < 0.4:
            m.pop(key, None)
        elif roll < 0.55:
            q.put(value)
        elif roll < 0.65:
            if len(q):
                q.get()
        elif roll < 0.8:
            t[key] = value[:200]
        elif roll < 0.85:
            t.pop(key, None)
        elif roll < 0.95:
            s[key] = value
        else:
            s.pop(key, None)


def _state(pool: Pool) -> bytes:
    return registry_for(pool).snapshot()


@settings(max_examples=budget(10), deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([65536, 256 << 10, 1 << 20]))
def test_an_image_copied_while_the_pool_changes_is_the_pool_at_the_end(seed, slice_bytes):
    rng = random.Random(seed)
    pool = Pool.create(DramMedia(8 << 20))
    structures = {"m": PHashMap(pool, "m"), "q": PQueue(pool, "q"),
                  "t": PBPlusTree(pool, "t"), "s": PSkipList(pool, "s")}
    _mutate(rng, structures, 300)
    image = PoolImage(pool, slice_bytes=slice_bytes)
    for step in range(2000):  # a few mutations between slices, as turns between copies
        pending = image.step()
        # stop once the pages dirtied meanwhile are being copied again (a second pass)
        if step >= 3 and image.passes >= 2 and pending <= 2 * slice_bytes:
            break
        _mutate(rng, structures, rng.randrange(0, 4))
    image.finish()
    expected = _state(pool)
    _mutate(rng, structures, 50)  # the pool goes on; the image does not
    copy = Pool.open(DramMedia.from_bytes(bytes(image.image)))
    copy.check()
    registry_for(copy).check()
    assert _state(copy) == expected
    assert image.passes >= 2
    image.close()


def test_tracking_stops_and_costs_nothing_after(monkeypatch):
    pool = Pool.create(DramMedia(4 << 20))
    m = PHashMap(pool, "m")
    flush = pool.media.flush
    image = PoolImage(pool)
    assert pool.media.flush is not flush
    while image.step():
        m[b"k"] = b"v"
    image.finish()
    assert "flush" not in vars(pool.media)  # DramMedia's own method again
    assert pool.transaction()._observer is None  # the log is called directly again
    image.close()


def test_used_pieces_are_the_metadata_and_the_used_chunks():
    pool = Pool.create(DramMedia(8 << 20))
    PHashMap(pool, "m")[b"k"] = bytes(300_000)  # an extent of its own
    g = geometry(pool.buf)
    assert g["size"] == pool.size and g["heap_off"] == pool._heap_off
    pieces = list(used_pieces(pool.buf, heap_off=g["heap_off"], table_off=g["table_off"],
                              nchunks=g["nchunks"]))
    assert pieces[0] == (0, pool._heap_off)
    used = sum(n for _, n in pieces[1:])
    assert 0 < used < pool.size - pool._heap_off
    assert all(a[0] + a[1] < b[0] for a, b in pairwise(pieces[1:]))
    with pytest.raises(AssertionError):
        PoolImage(pool).pieces()  # not finished
