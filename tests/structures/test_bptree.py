"""PBPlusTree: behaviour, splits and merges, and a stateful test against SortedDict."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sortedcontainers import SortedDict

from blizzard.exceptions import CodecMismatchError, StructureCorruptError, StructureKindError
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PHashMap, registry_for
from blizzard.structures import _bptreecore as B
from tests.conftest import budget
from tests.structures.ordered_machine import make_machine


def new_pool(size: int = 16 << 20) -> Pool:
    return Pool.create(DramMedia(size))


def test_mapping_and_ordered_api():
    """The MutableMapping surface behaves like SortedDict, keys in natural order."""
    t = PBPlusTree(new_pool(), "t", key_codec=str, value_codec="msgpack")
    for word in ["pear", "apple", "fig", "kiwi", "banana"]:
        t[word] = {"len": len(word)}
    assert list(t) == sorted(t) == ["apple", "banana", "fig", "kiwi", "pear"]
    assert t.peekitem(0) == ("apple", {"len": 5}) and t.peekitem() == ("pear", {"len": 4})
    assert list(t.irange("b", "kiwi", inclusive=(True, False))) == ["banana", "fig"]
    assert list(t.irange("c", reverse=True)) == ["pear", "kiwi", "fig"]
    assert t.bisect_left("fig") == 2 and t.bisect_right("fig") == 3 and t.index("kiwi") == 3
    assert t.popitem() == ("pear", {"len": 4}) and t.popitem(0) == ("apple", {"len": 5})
    assert t.pop("fig") == {"len": 3} and t.pop("fig", None) is None
    with pytest.raises(KeyError):
        del t["zz"]
    t.clear()
    assert len(t) == 0 and list(t) == []
    with pytest.raises(KeyError, match="empty"):
        t.popitem()
    with pytest.raises(IndexError):
        t.peekitem(0)
    t.check()


def test_int_keys_sort_numerically():
    t = PBPlusTree(new_pool(), "t", key_codec=int, value_codec=int, fanout=4)
    ks = [0, -1, 1, 255, 256, -256, -257, 2**64, -(2**64), 7]
    for k in ks:
        t[k] = k
    assert list(t) == sorted(ks)
    t.check()


def test_codecs_fanout_and_kind_are_fixed():
    pool = new_pool()
    t = PBPlusTree(pool, "t", key_codec=int, fanout=8)
    t[1] = b"x"
    again = PBPlusTree(pool, "t")
    assert again.fanout == 8 and again[1] == b"x"
    with pytest.raises(CodecMismatchError):
        PBPlusTree(pool, "t", key_codec=str)
    with pytest.raises(ValueError, match="fanout"):
        PBPlusTree(pool, "t", fanout=16)
    with pytest.raises(ValueError, match="ordered key codec"):
        PBPlusTree(pool, "u", key_codec="msgpack")
    PHashMap(pool, "h")
    with pytest.raises(StructureKindError):
        PBPlusTree(pool, "h")
    with pytest.raises(ValueError, match="at most"):
        PBPlusTree(pool, "b")[b"k" * (B.KEY_BYTES_MAX + 1)] = b""


def test_splits_and_merges_keep_every_invariant():
    """Sequential and random inserts grow the tree; deleting everything shrinks it
    back to one leaf and frees the nodes."""
    pool = new_pool(64 << 20)
    t = PBPlusTree(pool, "t", key_codec=int, fanout=4)
    used0 = pool.stats().used
    for i in range(300):
        t[i] = b"v" * (i % 50)
    assert t.stats()["height"] >= 4
    t.check()
    order = list(range(300))
    random.Random(1).shuffle(order)
    for n, i in enumerate(order):
        del t[i]
        if n % 37 == 0:
            t.check()
    t.check()
    assert t.stats() == {"count": 0, "height": 1, "nodes": 1, "fanout": 4,
                         "node_bytes": B.node_bytes_for(4)}
    assert pool.stats().used <= used0 + 4096


def test_large_values_and_keys():
    t = PBPlusTree(new_pool(64 << 20), "t", fanout=4)
    sizes = [0, B.VALUE_INLINE_MAX, B.VALUE_INLINE_MAX + 1, 5000, 1 << 20]
    for i, n in enumerate(sizes):
        t[b"k" * (B.KEY_BYTES_MAX - 1) + b"%d" % i] = bytes([i]) * n
    for i, n in enumerate(sizes):
        assert t[b"k" * (B.KEY_BYTES_MAX - 1) + b"%d" % i] == bytes([i]) * n
    t.check()


def test_updates_reuse_space():
    """Rewriting the same keys compacts nodes instead of growing the pool."""
    pool = new_pool()
    t = PBPlusTree(pool, "t", fanout=16)
    for round_ in range(50):
        for k in range(40):
            t[b"%03d" % k] = bytes([round_]) * 60
    t.check()
    assert pool.stats().used < 256 << 10


@pytest.mark.interpreted
def test_trees_share_one_array_of_node_tops_per_pool():
    """Each node's next free heap byte is kept in one array per pool (2 bytes per
    KiB), by node number: a node freed -- merged away, dropped, or built in a
    rolled back transaction -- leaves no top behind, so a block reused as a node of
    another tree is written past its own entries only."""
    pool = new_pool(32 << 20)
    reg = registry_for(pool)
    a, b = PBPlusTree(pool, "a", fanout=4), PBPlusTree(pool, "b", fanout=4)
    for i in range(200):
        a[b"%04d" % i] = b"a" * (i % 40)
    with pytest.raises(RuntimeError, match="roll back"), pool.transaction():
        for i in range(200):
            b[b"%04d" % i] = b"r" * 30  # nodes built, then rolled back
        raise RuntimeError("roll back")
    for i in range(0, 200, 2):
        del a[b"%04d" % i]  # merges free nodes
    for i in range(300):
        b[b"%04d" % i] = b"b" * (i % 60)  # in blocks the rollback and the merges freed
    reg.drop("a")
    c = PBPlusTree(pool, "c", fanout=8)
    for i in range(300):
        c[b"%04d" % (299 - i)] = b"c" * (i % 90)  # in the dropped tree's blocks
    tops = reg.shared("B+tree node tops", lambda: pytest.fail("no array of tops"))
    assert len(tops) == (pool.size >> B.NODE_SHIFT) + 1
    live = {node >> B.NODE_SHIFT for t in (b, c) for node, _ in t._core._all_nodes()}
    stale = [i << B.NODE_SHIFT for i in range(len(tops)) if tops[i] and i not in live]
    assert stale == [], f"tops left for freed nodes at {stale[:5]}"
    assert dict(b.items()) == {b"%04d" % i: b"b" * (i % 60) for i in range(300)}
    assert dict(c.items()) == {b"%04d" % (299 - i): b"c" * (i % 90) for i in range(300)}
    reg.check()


def test_check_detects_corruption():
    pool = new_pool()
    t = PBPlusTree(pool, "t", fanout=4)
    for i in range(20):
        t[b"%02d" % i] = b"v"
    core = t._core
    leaf = core._leftmost()
    e = core._entry(leaf, 0)
    pool.buf[e + 8:e + 10] = b"99"  # a key out of order
    with pytest.raises(StructureCorruptError):
        core.reload()
        t.check()


def test_snapshot_restore_round_trip():
    pool = new_pool()
    t = PBPlusTree(pool, "t", key_codec=int, fanout=5)
    for i in range(100):
        t[i * 3] = b"%d" % i
    data = registry_for(pool).snapshot()
    other = new_pool()
    registry_for(other).restore(data)
    u = PBPlusTree(other, "t")
    assert list(u.items()) == list(t.items())
    u.check()


def test_against_sorted_dict_randomised():
    """A seeded random walk of every operation (replay: change SEED)."""
    seed = 7
    rnd = random.Random(seed)
    t = PBPlusTree(new_pool(32 << 20), "t", fanout=5)
    m = SortedDict()
    for _ in range(3000):
        k = b"%03d" % rnd.randrange(400)
        r = rnd.random()
        if r < 0.55:
            v = bytes([rnd.randrange(256)]) * rnd.choice([0, 9, 100, 200])
            t[k] = v
            m[k] = v
        elif r < 0.9:
            assert t.pop(k, None) == m.pop(k, None)
        elif m:
            i = rnd.randrange(-len(m), len(m))
            assert t.popitem(i) == m.popitem(i), f"seed {seed}"
    t.check()
    assert list(t.items()) == list(m.items())


@pytest.mark.interpreted
@pytest.mark.parametrize("fanout", [4, 64])
def test_lookups_and_ranges_agree_with_a_sorted_list(fanout):
    """Lookups (searched in the pool when compiled) and range scans with every
    bound kind, both directions, against a sorted list: keys of 0-6 bytes from
    a small alphabet (many shared prefixes, the empty key), values inline and
    in blocks of their own. Replay: the seed is the fanout."""
    rnd = random.Random(fanout)
    t = PBPlusTree(new_pool(32 << 20), "t", fanout=fanout)
    ref: dict[bytes, bytes] = {}
    for _ in range(1500):
        k = bytes(rnd.choice(b"ab\x00\xff") for _ in range(rnd.randrange(7)))
        ref[k] = t[k] = bytes([len(ref) & 255]) * rnd.choice([0, 5, 64, 129, 300])
    keys = sorted(ref)
    core = t._core
    for k in keys:
        assert t[k] == ref[k], (fanout, k)
    for _ in range(300):
        probe = bytes(rnd.choice(b"ab\x00\xff\x01") for _ in range(rnd.randrange(8)))
        assert t.get(probe) == ref.get(probe), (fanout, probe)
        lo, hi = sorted(rnd.sample(keys, 2)) if rnd.random() < 0.7 else (probe, None)
        for lo_incl in (True, False):
            for hi_incl in (True, False):
                want = [k for k in keys if (k > lo or (lo_incl and k == lo))
                        and (hi is None or k < hi or (hi_incl and k == hi))]
                for reverse in (False, True):
                    got = list(core.items_range(lo, hi, lo_incl, hi_incl, reverse))
                    expect = [(k, ref[k]) for k in (want[::-1] if reverse else want)]
                    assert got == expect, (fanout, lo, hi, lo_incl, hi_incl, reverse)
                    only = list(core.items_range(lo, hi, lo_incl, hi_incl, reverse, False))
                    assert only == [(k, None) for k, _ in expect]
    t.check()


BPTreeMachine = make_machine(
    lambda pool, create: PBPlusTree(pool, "t", key_codec=int, fanout=4 if create else None))
TestBPTreeMachine = pytest.mark.interpreted(BPTreeMachine.TestCase)
TestBPTreeMachine.settings = settings(max_examples=budget(30), stateful_step_count=30,
                                      deadline=None)


def test_drop_frees_every_block_of_both_ordered_maps():
    """DROP (an Op) frees nodes, value blocks and headers; the name can be reused."""
    from blizzard.structures import PSkipList

    pool = new_pool(32 << 20)
    registry = registry_for(pool)
    used0 = pool.stats().used
    t, s = PBPlusTree(pool, "t", fanout=4), PSkipList(pool, "s")
    for i in range(300):
        t[b"%04d" % i] = b"x" * (i % 300)
        s[b"%04d" % i] = b"y" * (i % 5000)
    registry.drop("t")
    registry.drop("s")
    registry.check()
    assert len(t) == 0 and list(s) == []
    assert pool.stats().used - used0 <= 64  # the registry's own record
    again = PBPlusTree(pool, "t")
    again[b"a"] = b"b"
    assert list(again.items()) == [(b"a", b"b")] and again.fanout == B.FANOUT_DEFAULT


# -- version 2 nodes: a key word in each slot, past the prefix the node's keys share --


@pytest.mark.interpreted
def test_key_words_and_prefixes():
    """A key word is the 6 bytes past the prefix, big-endian, zero-padded; a node's
    prefix is what all its keys share (at most 255 bytes)."""
    for kb, p in [(b"", 0), (b"a", 0), (b"abcdefgh", 0), (b"abcdefgh", 3), (b"ab", 5)]:
        assert B.key_word(kb, p) == int.from_bytes(kb[p:p + 6].ljust(6, b"\0"), "big")
    assert B.shared_prefix(b"abcd", b"abxy", 9) == 2 and B.shared_prefix(b"ab", b"ab", 1) == 1
    assert B.prefix_of([]) == 0 and B.prefix_of([b"k" * 300]) == 255
    assert B.prefix_of([b"user:1", b"user:17", b"user:2"]) == 5
    assert B.prefix_of([b"", b"user:1"]) == 0
    rnd = random.Random(3)
    for _ in range(300):  # what the first and last of sorted keys share, all of them share
        keys = sorted({b"ab\x00"[:rnd.randrange(4)] + rnd.randbytes(rnd.randrange(4))
                       for _ in range(rnd.randrange(1, 6))})
        whole = min(len(keys[0]), 255)
        while any(k[:whole] != keys[0][:whole] or len(k) < whole for k in keys):
            whole -= 1
        assert B.prefix_of(keys) == whole, keys


def _with_layout(layout: int, make):
    """Create a tree in ``layout`` (version 1: a pool written before version 2)."""
    B.NEW_LAYOUT = layout
    try:
        return make()
    finally:
        B.NEW_LAYOUT = B.LAYOUT_VERSION


#: keys that share prefixes of every length around a 6-byte word: equal words,
#: keys that are prefixes of others, zero bytes where the padding is
prefixed_keys = st.builds(
    bytes.__add__,
    st.sampled_from([b"", b"a", b"ab", b"ab\x00", b"abcdefgh", b"abcdefghijk", b"\xff" * 7]),
    st.binary(max_size=9) | st.sampled_from([b"", b"\x00", b"\x00" * 7, b"0123456"]))


class PrefixedKeysMachine(RuleBasedStateMachine):
    """Puts, deletes, lookups and scans of keys sharing long prefixes, in version 1
    and version 2 trees (fanout 4: many nodes, splits and merges), against a
    SortedDict; the tree's ``check`` (prefix lengths, key words) after each step."""

    layout = 2

    def __init__(self) -> None:
        super().__init__()
        self.pool = new_pool(32 << 20)
        self.t = _with_layout(self.layout, lambda: PBPlusTree(self.pool, "t", fanout=4))
        assert self.t._core.layout == self.layout
        self.model: SortedDict = SortedDict()

    @rule(ks=st.lists(prefixed_keys, max_size=12), v=st.binary(max_size=140))
    def put(self, ks, v):
        for k in ks:
            self.t[k] = self.model[k] = v

    @rule(ks=st.lists(prefixed_keys, max_size=12))
    def delete(self, ks):
        for k in ks:
            assert self.t.pop(k, None) == self.model.pop(k, None)

    @rule(k=prefixed_keys)
    def lookup(self, k):
        assert self.t.get(k) == self.model.get(k)
        assert self.t.bisect_left(k) == self.model.bisect_left(k)
        assert self.t.bisect_right(k) == self.model.bisect_right(k)

    @rule(lo=prefixed_keys, hi=prefixed_keys, reverse=st.booleans())
    def scan(self, lo, hi, reverse):
        want = list(self.model.irange(lo, hi, (False, True), reverse))
        assert list(self.t.irange(lo, hi, (False, True), reverse)) == want

    @rule()
    def reopen(self):
        self.t = PBPlusTree(self.pool, "t")
        assert self.t._core.layout == self.layout

    @invariant()
    def agrees(self):
        self.t.check()
        assert list(self.t.items()) == list(self.model.items())


class PrefixedKeysMachineV1(PrefixedKeysMachine):
    layout = 1


_prefixed = settings(max_examples=budget(25), stateful_step_count=25, deadline=None)
TestPrefixedKeys = pytest.mark.interpreted(PrefixedKeysMachine.TestCase)
TestPrefixedKeys.settings = _prefixed
TestPrefixedKeysV1 = pytest.mark.interpreted(PrefixedKeysMachineV1.TestCase)
TestPrefixedKeysV1.settings = _prefixed


@pytest.mark.interpreted
def test_version_1_trees_open_and_grow_in_their_own_layout(tmp_path):
    """A tree written in layout version 1 (2-byte slots) opens, is read and written
    in that layout, and keeps its node size; a new tree beside it gets version 2."""
    path = tmp_path / "p.pool"
    pool = Pool.create(path, 16 << 20, mode="none")
    old = _with_layout(1, lambda: PBPlusTree(pool, "old", key_codec=int, fanout=8))
    for i in range(200):
        old[i] = b"%d" % i
    assert bytes(pool.buf[old._core.header_off:old._core.header_off + 8]) == B.MAGIC_V1
    pool.close()
    pool = Pool.open(path, mode="none")
    old = PBPlusTree(pool, "old")
    new = PBPlusTree(pool, "new", key_codec=int, fanout=8)
    assert (old._core.layout, new._core.layout) == (1, 2)
    assert old.stats()["node_bytes"] == B.node_bytes_for(8, 2) < B.node_bytes_for(8)
    for i in range(400):
        if i >= 200:
            old[i] = b"%d" % i
        new[i] = b"%d" % i
    for i in range(0, 400, 3):
        del old[i], new[i]
    assert list(old.items()) == list(new.items()) == [
        (i, b"%d" % i) for i in range(400) if i % 3]
    assert list(old.irange(10, 20, reverse=True)) == list(new.irange(10, 20, reverse=True))
    old.check()
    new.check()
    pool.close()


@pytest.mark.interpreted
def test_check_detects_bad_key_words_and_prefixes():
    """A slot's key word that disagrees with its key, a prefix longer than the keys
    share, a prefix length in a version 1 node: each a StructureCorruptError."""
    def tree(layout):
        t = _with_layout(layout, lambda: PBPlusTree(new_pool(), "t", fanout=4))
        for i in range(30):
            t[b"key:%02d" % i] = b"v"
        t.check()
        return t, t._core._leftmost()

    t, leaf = tree(2)
    assert t._core.u8[leaf + 1] == len(b"key:0")  # keys 00..03 share "key:0"
    t._core.u8[leaf + B.NODE_HEAD + 8 * 1 + 7] ^= 1  # the top byte of slot 1's word
    with pytest.raises(StructureCorruptError, match="key word"):
        t.check()
    t, leaf = tree(2)
    t._core.u8[leaf + 1] = 6  # "key:00" is not shared by the leaf's keys
    with pytest.raises(StructureCorruptError, match="prefix"):
        t.check()
    t, leaf = tree(1)
    t._core.u8[leaf + 1] = 2
    with pytest.raises(StructureCorruptError, match="version 1"):
        t.check()
