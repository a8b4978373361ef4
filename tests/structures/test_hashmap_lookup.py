"""PHashMap lookups: the face's direct call into the core and the core's slot scan.

Compiled, ``m[k]``, ``m.get(k)`` and ``k in m`` call a local core's ``get`` as
a C method (``MapFace._reader``), and the core scans a page's slots through
one pointer, bounds-checked per page. These tests hold both to what the
interpreted build does: keys sharing a CRC-32 (the slot's hash) with other
keys or with empty slots, missing and unencodable keys, reads behind a
replicator's lock, a closed pool, and a page offset outside the pool.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any

import pytest

from blizzard import _compiled
from blizzard.exceptions import EncodeError, PoolClosedError
from blizzard.pmem import DramMedia, Pool
from blizzard.replication.local import LocalReplicator
from blizzard.structures import PHashMap, registry_for


def new_pool(size: int = 16 << 20) -> Pool:
    return Pool.create(DramMedia(size))


def with_crc(prefix: bytes, target: int) -> bytes:
    """``prefix`` + 4 bytes whose CRC-32 is ``target``.

    CRC-32 is affine over GF(2) in the message's bits, so the 4 suffix bytes
    solve a 32x32 linear system: each suffix bit flips a fixed set of CRC bits.
    """
    base = zlib.crc32(prefix + bytes(4))
    basis: list[tuple[int, int]] = []  # (CRC bits flipped, suffix bits), reduced
    for j in range(32):
        vec = zlib.crc32(prefix + (1 << j).to_bytes(4, "little")) ^ base
        comb = 1 << j
        for bv, bc in basis:
            if vec ^ bv < vec:
                vec, comb = vec ^ bv, comb ^ bc
        if vec:
            basis.append((vec, comb))
            basis.sort(reverse=True)
    want, suffix = base ^ target, 0
    for bv, bc in basis:
        if want ^ bv < want:
            want, suffix = want ^ bv, suffix ^ bc
    key = prefix + suffix.to_bytes(4, "little")
    assert zlib.crc32(key) == target
    return key


@pytest.mark.interpreted
@pytest.mark.parametrize("h", [0, 0xDEADBEEF])
def test_keys_sharing_a_hash_are_told_apart(h):
    """Keys whose CRC-32 is ``h``: of equal and of different lengths, stored beside
    absent ones with the same hash. With h == 0 every empty slot's low word
    matches too (b"" is such a key): the scan must skip them."""
    m = PHashMap(new_pool(), "m")
    same_length = [with_crc(b"key-%d" % i, h) for i in range(4)]
    other_lengths = [with_crc(b"k" * n, h) for n in (0, 3, 12)]
    stored = same_length[:2] + other_lengths[:2] + ([b""] if h == 0 else [])
    absent = same_length[2:] + other_lengths[2:]
    for i, k in enumerate(stored):
        m[k] = b"v%d" % i
    core = m._core
    assert core.nbuckets == 1  # one page: every key's slot is among the ones scanned
    for i, k in enumerate(stored):
        assert m[k] == m.get(k) == b"v%d" % i and k in m
        assert core.find(k, h) == core._find_interpreted(k, h) != (0, 0, 0)
    for k in absent:
        assert zlib.crc32(k) == h
        with pytest.raises(KeyError) as caught:
            m[k]
        assert caught.value.args == (k,)
        assert m.get(k, "default") == "default" and k not in m
        assert core.find(k, h) == core._find_interpreted(k, h) == (0, 0, 0)
    del m[stored[0]]
    assert stored[0] not in m and m[stored[1]] == b"v1"
    m.check()


@pytest.mark.interpreted
@pytest.mark.parametrize(("codec", "present", "missing", "wrong"), [
    (bytes, b"k", b"zz", "not bytes"),
    (str, "k", "zz", b"not str"),
    (int, 7, 8, "7"),
])
def test_missing_and_unencodable_keys(codec, present, missing, wrong):
    """A missing key is a KeyError carrying the key. A key the codec cannot encode is
    absent on reads (the map cannot hold it: see ``_mapping``) and refused on
    writes with the codec's own EncodeError."""
    m = PHashMap(new_pool(), "m", key_codec=codec, value_codec=int)
    m[present] = 1
    assert m[present] == 1 and m.get(present) == 1 and present in m
    for key in (missing, wrong):
        with pytest.raises(KeyError) as caught:
            m[key]
        assert caught.value.args == (key,)
        assert m.get(key) is None and m.get(key, 5) == 5 and key not in m
    with pytest.raises(EncodeError, match=f"the {m.key_codec.name} codec takes"):
        m[wrong] = 1
    with pytest.raises(KeyError):
        del m[missing]
    assert dict(m.items()) == {present: 1}


def test_only_a_local_unlocked_core_is_read_directly():
    """Reads behind a replicator's lock hold it (so they do not take the direct call),
    and after the pool closes the direct call is gone: PoolClosedError."""
    pool = new_pool()
    m = PHashMap(pool, "m")
    m[b"a"] = b"1"
    assert m._reader is m._core

    class CountingLock:
        def __init__(self) -> None:
            self.held = 0
            self._lock = threading.Lock()

        def __enter__(self) -> Any:
            self.held += 1
            return self._lock.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            return self._lock.__exit__(*exc)

    replicator = LocalReplicator(registry_for(pool))
    replicator.read_lock = CountingLock()
    locked = PHashMap(pool, "m", replicator=replicator)
    assert locked._reader is None
    assert locked[b"a"] == b"1" and locked.get(b"a") == b"1" and b"a" in locked
    assert replicator.read_lock.held == 3
    pool.close()
    assert m._reader is None
    for read in (lambda: m[b"a"], lambda: m.get(b"a"), lambda: b"a" in m):
        with pytest.raises(PoolClosedError):
            read()


@pytest.mark.skipif(not _compiled.compiled(), reason="the compiled slot scan's bounds check")
def test_a_page_outside_the_pool_raises_instead_of_being_read():
    """The slot scan reads a page's slots unchecked after one bounds check of the
    page: a directory entry pointing past the pool must raise IndexError."""
    pool = new_pool(4 << 20)
    m = PHashMap(pool, "m")
    m[b"a"] = b"1"
    core = m._core
    core.pages[0] = pool.size - 64  # its slots would run past the pool's end
    with pytest.raises(IndexError, match="outside the pool"):
        m[b"a"]
    core.pages[0] = 1 << 62
    with pytest.raises(IndexError, match="outside the pool"):
        m.get(b"a")
