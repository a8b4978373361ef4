"""Scans in pages stay exact while the structure changes between pages.

A hash map's pages follow an order of the keys alone (bit-reversed hash,
then key), so the splits and merges of linear hashing never move a key
across the cursor; a queue's pages follow sequence numbers, which survive
gets, puts and snapshots.
"""

from __future__ import annotations

import random

import pytest

from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PHashMap, PQueue, registry_for

SEEDS = range(5)


@pytest.fixture
def pool():
    with Pool.create(DramMedia(32 << 20)) as p:
        yield p


@pytest.mark.parametrize("seed", SEEDS)
def test_hash_map_pages_are_exact_across_splits_and_merges(pool, seed):
    rng = random.Random(seed)
    m = PHashMap(pool, "m")
    present = {b"k%d" % i for i in range(rng.randrange(50, 1500))}
    m.update({k: b"v" for k in present})
    stable = set(present)
    seen: list[bytes] = []
    page = m.page(limit=rng.randrange(1, 40), values=False)
    while page:
        seen += page
        for _ in range(rng.randrange(60)):  # grow and shrink: buckets split and merge
            if rng.random() < 0.5 or not present:
                key = b"n%d" % rng.randrange(10**6)
                m[key] = b"w"
                present.add(key)
            else:
                key = rng.choice(sorted(present))
                del m[key]
                present.discard(key)
                stable.discard(key)
        page = m.page(page[-1], rng.randrange(1, 40), values=False)
    assert len(seen) == len(set(seen)), f"a key came twice (seed {seed})"
    assert stable <= set(seen), f"{len(stable - set(seen))} keys missed (seed {seed})"
    m.check()


def test_hash_map_pages_without_writes_are_the_whole_map(pool):
    m = PHashMap(pool, "m", key_codec=str, value_codec=int)
    m.update({f"k{i}": i for i in range(300)})
    pairs, page = [], m.page(limit=7)
    while page:
        pairs += page
        page = m.page(page[-1][0], 7)
    assert dict(pairs) == dict(m.items()) and len(pairs) == 300
    assert m.page("not a key in the map", 1000)  # any key is a cursor, present or not


@pytest.mark.parametrize("seed", SEEDS)
def test_queue_pages_follow_sequence_numbers(pool, seed):
    rng = random.Random(seed)
    q = PQueue(pool, "q", value_codec=int)
    for i in range(200):
        q.put(i)
    taken, got, start = 0, [], None
    while True:
        seq, items = q.page(start, rng.randrange(1, 20))
        if not items:
            break
        assert start is None or seq == max(start, taken)
        got += items
        start = seq + len(items)
        for _ in range(rng.randrange(10)):
            if rng.random() < 0.5 and taken < 100:
                assert q.get() == taken
                taken += 1
            else:
                q.put(-1)
    stayed = [i for i in got if i >= 100]
    assert stayed == list(range(100, 200)), f"seed {seed}"
    assert [i for i in got if i >= 0] == sorted(i for i in got if i >= 0)


def test_queue_sequence_numbers_survive_a_snapshot(pool):
    q = PQueue(pool, "q")
    for i in range(10):
        q.put(b"%d" % i)
    for _ in range(4):
        q.get()
    q.clear()  # counts as taken too
    q.put(b"next")
    assert q.page() == (10, [b"next"])
    snapshot = registry_for(pool).snapshot()
    with Pool.create(DramMedia(32 << 20)) as other:
        registry_for(other).restore(snapshot)
        again = PQueue(other, "q")
        assert again.page() == (10, [b"next"]) and again.page(11) == (11, [])
        again.check()


def test_raw_faces_pass_bytes_whatever_the_codecs(pool):
    m = PHashMap(pool, "m", key_codec=str, value_codec=int)
    m["ada"] = 1815
    raw = PHashMap(pool, "m", raw=True)
    assert raw[b"ada"] == m.value_codec.encode(1815) and raw.key_codec.name == "bytes"
    q = PQueue(pool, "q", value_codec=str)
    q.put("x")
    assert PQueue(pool, "q", raw=True).peek() == b"x"
