"""PHashMap: behaviour, growth and shrinking, and a stateful test against dict."""

from __future__ import annotations

import shutil
import zlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blizzard.exceptions import CodecMismatchError, StructureKindError
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PHashMap, PQueue, registry_for
from blizzard.structures import _hashcore as H
from tests.conftest import budget
from tests.structures.conftest import shm_tempdir


def new_pool(size: int = 16 << 20) -> Pool:
    return Pool.create(DramMedia(size))


def test_mapping_basics():
    """The MutableMapping surface behaves like dict."""
    m = PHashMap(new_pool(), "m", key_codec=str, value_codec="msgpack")
    m["a"] = {"x": 1}
    m["b"] = [1, 2]
    m["a"] = "replaced"
    assert m["a"] == "replaced" and len(m) == 2 and "b" in m and 3 not in m
    assert sorted(m) == ["a", "b"] and dict(m.items()) == {"a": "replaced", "b": [1, 2]}
    assert m.pop("b") == [1, 2] and m.pop("b", None) is None
    with pytest.raises(KeyError):
        del m["zz"]
    with pytest.raises(KeyError):
        m["zz"]
    assert m.setdefault("c", 5) == 5 and m.get("c") == 5
    m.update({"d": 4})
    m.clear()
    assert len(m) == 0 and list(m) == []
    m.check()


def test_key_type_errors_are_clear():
    m = PHashMap(new_pool(), "m", key_codec=int)
    with pytest.raises(TypeError, match="int codec takes int"):
        m["x"] = b"v"
    with pytest.raises(TypeError, match="bytes codec"):
        m[1] = "not bytes"
    assert "x" not in m
    with pytest.raises(ValueError, match="at most"):
        PHashMap(m.pool, "b")[b"k" * 2000] = b""


def test_reopen_needs_no_codecs_and_refuses_others():
    pool = new_pool()
    PHashMap(pool, "m", key_codec=str, value_codec=int)["a"] = 1
    again = PHashMap(pool, "m")
    assert again["a"] == 1 and again.key_codec.name == "str"
    with pytest.raises(CodecMismatchError, match="key codec 'str'"):
        PHashMap(pool, "m", key_codec=bytes)
    PQueue(pool, "q")
    with pytest.raises(StructureKindError, match="is a pqueue"):
        PHashMap(pool, "q")


def test_values_from_empty_to_megabytes():
    m = PHashMap(new_pool(64 << 20), "m")
    sizes = [0, 1, H.INLINE_MAX - 9, H.INLINE_MAX - 8, H.INLINE_MAX, 5000, 3 << 20]
    for i, n in enumerate(sizes):
        m[b"%d" % i] = bytes([i]) * n
    for i, n in enumerate(sizes):
        assert m[b"%d" % i] == bytes([i]) * n
    m[b"6"] = b"small now"  # the big value's block is freed
    m.check()
    used = m.pool.stats().used
    assert used < 1 << 20, used


def test_growth_is_incremental_and_deletes_shrink():
    """Splits happen one bucket at a time; deleting everything merges back to one bucket."""
    pool = new_pool(64 << 20)
    m = PHashMap(pool, "m", key_codec=int, value_codec=int)
    core = m._core
    seen = set()
    for i in range(5000):
        m[i] = i * i
        seen.add(core.nbuckets)
        assert core.nbuckets <= i // H.LOAD_SPLIT + 2
    assert len(seen) > 200  # grew through many sizes, one split at a time
    m.check()
    assert all(m[i] == i * i for i in range(5000))
    used_full = pool.stats().used
    for i in range(5000):
        del m[i]
    m.check()
    assert core.nbuckets == 1 and len(m) == 0
    assert pool.stats().used < used_full // 20


def test_updates_compact_pages():
    """Rewriting the same keys keeps reusing space (compaction), not growing the pool."""
    pool = new_pool()
    m = PHashMap(pool, "m")
    for round_ in range(60):
        for k in range(20):
            m[b"k%d" % k] = bytes([round_]) * 100
    m.check()
    assert m.stats()["pages"] == 1
    assert pool.stats().used < 64 << 10


def test_hash_spreads_sequential_keys():
    pool = new_pool(64 << 20)
    m = PHashMap(pool, "m")
    for i in range(20000):
        m[b"user%012d" % i] = b""
    stats = m.stats()
    assert stats["pages"] < stats["buckets"] * 1.25, stats


def test_two_handles_share_one_structure():
    pool = new_pool()
    a = PHashMap(pool, "m")
    b = PHashMap(pool, "m")
    a[b"x"] = b"1"
    assert b[b"x"] == b"1" and len(b) == 1


class HashMapMachine(RuleBasedStateMachine):
    """PHashMap against dict, with reopen steps on a real file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = shm_tempdir()
        self.path = self.dir / "m.pool"
        self.pool = Pool.create(self.path, 8 << 20, mode="none")
        self.map = PHashMap(self.pool, "m")
        self.model: dict[bytes, bytes] = {}

    keys = st.binary(min_size=0, max_size=3)
    values = st.one_of(st.binary(max_size=60), st.binary(min_size=1000, max_size=1500))

    @rule(k=keys, v=values)
    def put(self, k, v):
        self.map[k] = v
        self.model[k] = v

    @rule(ks=st.lists(keys, min_size=10, max_size=60), v=st.binary(max_size=20))
    def put_many(self, ks, v):
        for k in ks:
            self.map[k] = v
            self.model[k] = v

    @rule(k=keys)
    def delete(self, k):
        if k in self.model:
            del self.map[k]
            del self.model[k]
        else:
            with pytest.raises(KeyError):
                del self.map[k]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_many(self, data):
        for k in data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=40)):
            assert self.map.pop(k, None) == self.model.pop(k, None)

    @rule(k=keys)
    def get(self, k):
        assert self.map.get(k) == self.model.get(k)

    @rule()
    def clear(self):
        self.map.clear()
        self.model.clear()

    @rule()
    def reopen(self):
        self.pool.close()
        self.pool = Pool.open(self.path, mode="none")
        self.map = PHashMap(self.pool, "m")

    @invariant()
    def agrees(self):
        self.map.check()
        assert len(self.map) == len(self.model)
        assert dict(self.map.items()) == self.model
        registry_for(self.pool).check()

    def teardown(self):
        self.pool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestHashMapMachine = pytest.mark.interpreted(HashMapMachine.TestCase)
TestHashMapMachine.settings = settings(max_examples=budget(40), stateful_step_count=30)


def test_directory_segments_come_and_go(monkeypatch):
    """With tiny directory segments, growth allocates many and shrinking frees them."""
    monkeypatch.setattr(H, "SEG_SLOTS", 4)
    monkeypatch.setattr(H, "SEG_BYTES", 32)
    pool = new_pool(64 << 20)
    m = PHashMap(pool, "m", key_codec=int)
    for i in range(3000):
        m[i] = b"%d" % i
        if i % 500 == 0:
            m.check()
    assert len(m._core.segs) == -(-m._core.nbuckets // 4) > 20
    m.check()
    for i in range(3000):
        del m[i]
        if i % 500 == 0:
            m.check()
    assert m._core.nbuckets == 1 and len(m._core.segs) == 1
    m.check()
    registry_for(pool).check()


def test_both_lookups_agree_even_on_hash_bytes_that_straddle_two_slots():
    """The interpreted lookup searches a page's slots as bytes, where a hash can
    also match across two slots. Both finders are asked for every such byte
    pattern of a one-bucket map (none is a key's hash: no slot is found), and
    for each of its keys (the same slot is found)."""
    pool = new_pool()
    m = PHashMap(pool, "m", key_codec=bytes, value_codec=bytes)
    keys = [b"k%d" % i for i in range(5)]
    for k in keys:
        m[k] = k * 3
    core = m._core
    assert core.nbuckets == 1  # every hash lands in the one page searched below
    page = core.pages[0]
    slots = bytes(core.buf[page + H.SLOTS_OFF:page + H.HEAP_START])
    straddling = {int.from_bytes(slots[i:i + 4], "little")
                  for i in range(1, len(slots) - 4) if i & 7}
    words = {int.from_bytes(slots[i:i + 4], "little") for i in range(0, len(slots), 8)}
    for h in straddling - words:
        assert core._find_interpreted(b"absent", h) == (0, 0, 0)
        assert core.find(b"absent", h) == (0, 0, 0)
    for k in keys:
        found = core.find(k, zlib.crc32(k))
        assert found[0] and core._find_interpreted(k, zlib.crc32(k)) == found
    pool.close()
