"""Malformed Op records reach every core and change nothing.

The registry commits a deterministic failure (an ``OpDecodeError``...) as
the Op's result: the batch's transaction commits, so a core that wrote
anything before noticing the record was bad would leave that write in the
pool for good. Every core must therefore validate before it mutates. Here
records that pass the registry's header check -- the right name, an opcode
of the core's group -- but whose arguments are truncated, overlong, garbage
or missing are applied to populated structures of every kind; the pool's
bytes (directory, chunk table, heap) must be unchanged but for the
registry's own ``applied`` stamp.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from blizzard.exceptions import OpDecodeError
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList, registry_for
from blizzard.structures.ops import HEAD, OP_VERSION
from tests.conftest import budget

APPLIED_AT = 16  # every core's header: magic, count, then the last applied index

FACES = {"map": PHashMap, "queue": PQueue, "bptree": PBPlusTree, "skiplist": PSkipList}
GROUPS = {"map": 0x10, "queue": 0x20, "bptree": 0x30, "skiplist": 0x30}
VALUES = (b"", b"v", b"x" * 100, b"y" * 2000, b"z" * 5000)  # inline and block values


def populated(kind: str) -> tuple[Pool, object]:
    pool = Pool.create(DramMedia(4 << 20))
    face = FACES[kind](pool, "s")
    for i in range(60):
        value = VALUES[i % len(VALUES)]
        if kind == "queue":
            face.put(value)
        else:
            face[b"k%03d" % i] = value
    return pool, face


def differences(a: bytes, b: bytes) -> list[int]:
    """Offsets where ``a`` and ``b`` differ (pages compared first: most are equal)."""
    found = []
    for page in range(0, len(a), 4096):
        if a[page:page + 4096] != b[page:page + 4096]:
            found += [i for i in range(page, min(page + 4096, len(a))) if a[i] != b[i]]
    return found


def record(code: int, args: bytes, name: bytes = b"s") -> bytes:
    return HEAD.pack(OP_VERSION, code, len(name), len(args)) + name + args


@st.composite
def bad_args(draw, group: int) -> tuple[int, bytes]:
    """An opcode of ``group`` (or just past its known ones) and broken arguments."""
    code = group | draw(st.integers(0, 15))
    how = draw(st.sampled_from(["garbage", "short length", "long length", "huge key",
                                "extra", "empty"]))
    if how == "garbage":
        args = draw(st.binary(max_size=64))
    elif how == "short length":  # a key length field cut short
        args = draw(st.binary(max_size=3))
    elif how == "long length":  # a key running past the record's end
        rest = draw(st.binary(max_size=32))
        args = struct.pack("<I", len(rest) + draw(st.integers(1, 1 << 31))) + rest
    elif how == "huge key":  # a key longer than any core allows, present in full
        key = draw(st.binary(min_size=1025, max_size=1100))
        args = struct.pack("<I", len(key)) + key + draw(st.binary(max_size=8))
    elif how == "extra":  # arguments for an opcode that takes none
        args = draw(st.binary(min_size=1, max_size=16))
    else:
        args = b""
    return code, args


@settings(max_examples=budget(200))
@given(st.sampled_from(sorted(FACES)), st.data())
def test_a_malformed_op_leaves_the_pool_unchanged(kind, data):
    pool, face = populated(kind)
    reg = registry_for(pool)
    code, args = data.draw(bad_args(GROUPS[kind]))
    op = record(code, args)
    stamp = reg._off + 8  # the registry's applied word: the only bytes that may change
    lo = pool._dir_off
    before = bytes(pool.buf[lo:])
    contents = reg.snapshot()
    index = reg.last_applied + 1
    for apply in (lambda: reg.apply_one(index, op), lambda: reg.apply([(index + 1, op)])[0]):
        result = apply()
        if not isinstance(result, BaseException):
            return  # the drawn bytes happened to be a valid Op: nothing to check
        changed = [off + lo for off in differences(before, bytes(pool.buf[lo:]))]
        words = [stamp]
        if not isinstance(result, OpDecodeError):
            # a well-formed Op whose result is an error (popitem at an index out of
            # range) is applied all the same: its structure records the index
            words += [core.header_off + APPLIED_AT for core in reg._cores.values()]
        assert all(any(w <= off < w + 8 for w in words) for off in changed), (
            f"{kind}: {result!r} left bytes changed at {changed[:8]}")
        assert reg.snapshot()[16:] == contents[16:]  # same structures (applied aside)
        reg.check()
    # and the structure still works
    if kind == "queue":
        face.put(b"after")
    else:
        face[b"after"] = b"1"
    reg.check()

