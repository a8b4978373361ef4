"""PSkipList: behaviour, deterministic towers, and a stateful test against SortedDict."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from sortedcontainers import SortedDict

from blizzard import _compiled
from blizzard.exceptions import StructureCorruptError, StructureKindError
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PSkipList, registry_for
from blizzard.structures import _keyindex as K
from blizzard.structures import _skiplistcore as S
from tests.conftest import budget
from tests.structures.ordered_machine import make_machine


def new_pool(size: int = 16 << 20) -> Pool:
    return Pool.create(DramMedia(size))


def towers(s: PSkipList) -> list[tuple[bytes, int]]:
    core = s._core
    out = []
    x = core._next(core.head)
    while x:
        out.append((core._key(x), S._NODE.unpack_from(core.buf, x)[0]))
        x = core._next(x)
    return out


def test_mapping_and_ordered_api():
    s = PSkipList(new_pool(), "s", key_codec=int, value_codec=str)
    for k in [5, -3, 12, 0, 99]:
        s[k] = f"v{k}"
    assert list(s) == [-3, 0, 5, 12, 99] and list(reversed(s)) == [99, 12, 5, 0, -3]
    assert s.peekitem(0) == (-3, "v-3") and s.peekitem() == (99, "v99")
    assert s.peekitem(2) == (5, "v5") and s.peekitem(-2) == (12, "v12")
    assert list(s.irange(0, 12, inclusive=(False, True))) == [5, 12]
    assert s.bisect_left(5) == 2 and s.bisect_right(5) == 3
    assert s.popitem() == (99, "v99") and s.popitem(0) == (-3, "v-3")
    s[5] = "same length"
    s[5] = "a different length"
    assert s[5] == "a different length" and len(s) == 3
    s.check()
    s.clear()
    assert len(s) == 0 and list(s) == []
    with pytest.raises(KeyError, match="empty"):
        s.popitem()
    s.check()


def test_towers_are_deterministic_across_replicas_and_restarts(shm_dir):
    """Two pools fed the same Ops build identical towers, including across a reopen."""
    ops = [(b"%04d" % random.Random(3).randrange(10_000 + i), i % 3) for i in range(400)]
    path = shm_dir / "a.pool"
    a_pool = Pool.create(path, 8 << 20, mode="none")
    a = PSkipList(a_pool, "s", seed=42)
    b = PSkipList(new_pool(), "s", seed=42)
    c = PSkipList(new_pool(), "s", seed=43)
    for n, (k, op) in enumerate(ops):
        for s in (a, b, c):
            if op == 2:
                s.pop(k, None)
            else:
                s[k] = b"v"
        if n == 200:
            a_pool.close()
            a_pool = Pool.open(path, mode="none")
            a = PSkipList(a_pool, "s", seed=42)
    assert towers(a) == towers(b)
    assert [k for k, _ in towers(c)] == [k for k, _ in towers(a)]
    assert towers(c) != towers(a)
    assert a._core.rng == b._core.rng
    a.check()
    a_pool.close()


def test_tower_heights_follow_a_quarter():
    hs = [S.height_of(S.splitmix64(i)[1]) for i in range(40_000)]
    share = sum(h > 1 for h in hs) / len(hs)
    assert 0.23 < share < 0.27
    assert max(hs) <= S.LEVEL_MAX


def test_search_cost_grows_as_log_n():
    """A full search from the head reads about 4 log4 n keys; a lookup through the
    index of tall towers then follows only a few level-0 links."""
    s = PSkipList(new_pool(64 << 20), "s", key_codec=int)
    n = 5000
    for i in range(n):
        s[(i * 7919) % n] = b""
    core = s._core
    reads = 0

    def search(kb):
        """_preds's walk from the head, counting the keys it reads."""
        nonlocal reads
        x = core.head
        preds = []
        for lvl in range(core.level - 1, -1, -1):
            nxt = core._next(x, lvl)
            while nxt:
                reads += 1
                if core._key(nxt) >= kb:
                    break
                x, nxt = nxt, core._next(nxt, lvl)
            preds.append(x)
        return preds[::-1]

    probes = [s.key_codec.encode(k) for k in range(0, n, 50)]
    for kb in probes:
        assert search(kb) == core._preds(kb)
    assert reads / len(probes) < 8 * 6.2  # log4(5000) ~ 6.1
    hops = 0
    for kb in probes:
        x = core._next(core._start(kb))
        while core._key(x) < kb:
            hops += 1
            x = core._next(x)
    assert hops / len(probes) < 6
    assert all(s.get(k) == b"" for k in range(0, n, 50))


def test_kind_and_key_limits():
    pool = new_pool()
    PBPlusTree(pool, "t")
    with pytest.raises(StructureKindError):
        PSkipList(pool, "t")
    with pytest.raises(ValueError, match="at most"):
        PSkipList(pool, "s")[b"k" * (S.KEY_BYTES_MAX + 1)] = b""
    s = PSkipList(pool, "s")
    s[b"big"] = b"x" * (S.VALUE_INLINE_MAX + 1)
    s[b"huge"] = b"y" * (1 << 20)
    assert s[b"big"] == b"x" * (S.VALUE_INLINE_MAX + 1) and len(s[b"huge"]) == 1 << 20
    s[b"huge"] = b"small"
    s.check()


def test_check_detects_corruption():
    s = PSkipList(new_pool(), "s")
    for i in range(30):
        s[b"%02d" % i] = b"v"
    core = s._core
    x = core._next(core._next(core.head))
    h = S._NODE.unpack_from(core.buf, x)[0]
    ks = x + S.NODE_HEAD + 8 * h
    core.buf[ks:ks + 2] = b"99"
    core.reload()
    with pytest.raises(StructureCorruptError):
        s.check()


def test_snapshot_restore_round_trip():
    pool = new_pool()
    s = PSkipList(pool, "s", key_codec=int)
    for i in range(100):
        s[i * 3] = b"%d" % i
    other = new_pool()
    registry_for(other).restore(registry_for(pool).snapshot())
    u = PSkipList(other, "s")
    assert list(u.items()) == list(s.items())
    u.check()


@pytest.mark.parametrize("load", [2, K.TALL_LOAD])
def test_against_sorted_dict_randomised(load, monkeypatch):
    """A seeded random walk; a tiny chunk size makes the DRAM index of tall towers
    split and drop chunks all the time."""
    monkeypatch.setattr(K, "TALL_LOAD", load)
    seed = 11
    rnd = random.Random(seed)
    s = PSkipList(new_pool(32 << 20), "s")
    m = SortedDict()
    for _ in range(3000):
        k = b"%03d" % rnd.randrange(400)
        r = rnd.random()
        if r < 0.55:
            v = bytes([rnd.randrange(256)]) * rnd.choice([0, 9, 100, 5000])
            s[k] = v
            m[k] = v
        elif r < 0.9:
            assert s.pop(k, None) == m.pop(k, None)
        elif m:
            i = rnd.choice([0, -1, rnd.randrange(-len(m), len(m))])
            assert s.popitem(i) == m.popitem(i), f"seed {seed}"
    s.check()
    assert list(s.items()) == list(m.items())


SkipListMachine = make_machine(
    lambda pool, create: PSkipList(pool, "s", key_codec=int, seed=7 if create else None))
TestSkipListMachine = pytest.mark.interpreted(SkipListMachine.TestCase)
TestSkipListMachine.settings = settings(max_examples=budget(30), stateful_step_count=30,
                                        deadline=None)


@pytest.mark.interpreted
def test_forward_scans_over_many_runs():
    """Scans that cross many runs of nodes (compiled, each run first follows level 0
    in segments from the tall towers ahead): the same items as a sorted dict, from
    every kind of start, with deletions leaving gaps and long value nodes."""
    rnd = random.Random(5)
    s = PSkipList(new_pool(32 << 20), "s")
    m = SortedDict()
    for i in rnd.sample(range(20_000), 6000):
        v = b"v" * rnd.choice([0, 3, 64, 200, 5000])
        s[b"%06d" % i] = m[b"%06d" % i] = v
    for k in rnd.sample(list(m), 2000):
        del s[k], m[k]
    keys = list(m)
    assert list(s.items()) == list(m.items())
    for _ in range(40):
        lo, hi = sorted(rnd.sample(range(20_001), 2))
        lo_k, hi_k = b"%06d" % lo, b"%06d" % hi
        want = list(m.irange(lo_k, hi_k))
        assert list(s.irange(lo_k, hi_k)) == want
        assert list(s.irange_items(lo_k, hi_k)) == [(k, m[k]) for k in want]
    first = keys[rnd.randrange(len(keys))]
    assert list(s.irange(first)) == keys[keys.index(first):]
    s.check()


@pytest.mark.interpreted
def test_lookups_ask_for_the_nodes_last_walked_and_never_trust_them():
    """Compiled, a get or an insert records in the index, beside the tall node it
    started from, the level-0 nodes it walked (and asks for their lines the next
    time): after a lookup they are the nodes that follow. Hints scribbled over
    -- other nodes, offsets inside nodes, zeros -- change no answer."""
    rnd = random.Random(11)
    pool = new_pool(32 << 20)
    s = PSkipList(pool, "s")
    m = {}
    for i in rnd.sample(range(10_000), 4000):
        s[b"%05d" % i] = m[b"%05d" % i] = b"%d" % i
    core = s._core
    tall = core._index()
    for k in rnd.sample(sorted(m), 200):
        assert s[k] == m[k]
        if _compiled.compiled():
            x = tall.before(k)
            got = list(tall.found_run.hints[K.HINTS * tall.found_at:][:K.HINTS])
            walk, nxt = [], core._next(x)
            while nxt and len(walk) < K.HINTS:
                walk.append(nxt)
                if core._key(nxt) >= k:
                    break
                nxt = core._next(nxt)
            assert got[:len(walk)] == walk
    nodes = [x for c in tall.chunks for x in c.values]
    for chunk in tall.chunks:  # wrong hints everywhere
        for q in range(len(chunk.hints)):
            chunk.hints[q] = rnd.choice([0, rnd.choice(nodes), rnd.choice(nodes) + 9,
                                         rnd.randrange(pool.size)])
    for k in rnd.sample(range(10_000), 2000):
        kb = b"%05d" % k
        assert s.get(kb) == m.get(kb)
        if rnd.random() < 0.3:
            s[kb] = m[kb] = b"new"
        elif kb in m and rnd.random() < 0.3:
            del s[kb], m[kb]
    assert dict(s.items()) == m
    s.check()
