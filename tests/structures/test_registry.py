"""The registry as a StateMachine: exactly-once apply, batches, snapshots, bad Ops."""

from __future__ import annotations

import contextlib

import pytest

from blizzard.exceptions import OpDecodeError, PoolFullError, StructureKindError
from blizzard.pmem import DramMedia, Pool
from blizzard.replication.base import StateMachine
from blizzard.structures import PHashMap, PQueue, ops, registry_for
from blizzard.structures.ops import Op, OpCode


def fresh():
    pool = Pool.create(DramMedia(16 << 20))
    return pool, registry_for(pool)


def create(name: str, tag: bytes = b"phashmap") -> bytes:
    return ops.encode(Op(name, OpCode.CREATE, (tag, b"bytes", b"bytes")))


def put(name: str, k: bytes, v: bytes) -> bytes:
    return ops.encode(Op(name, OpCode.MAP_PUT, (k, v)))


def test_registry_is_a_state_machine():
    pool, reg = fresh()
    assert isinstance(reg, StateMachine)
    assert registry_for(pool) is reg


def test_batches_apply_in_one_transaction_and_replays_are_skipped():
    pool, reg = fresh()
    batch = [(1, create("m")), (2, put("m", b"a", b"1")), (3, put("m", b"b", b"2"))]
    assert reg.apply(batch) == [None, None, None]
    assert reg.last_applied == 3
    # a replay after a crash: entries at or below last_applied are skipped
    pop = ops.encode(Op("m", OpCode.MAP_POP, (b"b",)))
    assert reg.apply([(2, put("m", b"a", b"X")), (4, pop)]) == [None, b"2"]
    m = PHashMap(pool, "m")
    assert dict(m.items()) == {b"a": b"1"}
    reg.check()


def test_last_applied_survives_reopen():
    """last_applied is the max of the registry's and every structure's stamp."""
    media = DramMedia(16 << 20)
    pool = Pool.create(media)
    m = PHashMap(pool, "m")
    q = PQueue(pool, "q")
    m[b"k"] = b"v"
    q.put(b"x")
    m[b"k2"] = b"v"
    reg = registry_for(pool)
    assert reg.last_applied == 5
    image = bytes(pool.buf)
    pool.close()
    again = Pool.open(DramMedia.from_bytes(image))
    assert registry_for(again).last_applied == 5
    registry_for(again).check()


def test_invalid_ops_are_results_and_still_count():
    _, reg = fresh()
    results = reg.apply([(1, b"\x01junk"), (2, put("nope", b"k", b"v")),
                         (3, create("m")), (4, ops.encode(Op("m", OpCode.QUEUE_GET))),
                         (5, create("m", b"pqueue")), (6, create("x", b"unknown"))])
    assert isinstance(results[0], OpDecodeError) and "truncated" in str(results[0])
    assert isinstance(results[1], OpDecodeError) and "does not exist" in str(results[1])
    assert results[2] is None
    assert isinstance(results[3], OpDecodeError) and "does not apply" in str(results[3])
    assert isinstance(results[4], StructureKindError)
    assert isinstance(results[5], OpDecodeError)
    assert reg.last_applied == 6
    reg.check()


def test_records_are_applied_where_they_lie_after_a_prefix():
    """apply_at(batch, start) reads each Op after ``start`` bytes of its entry (a
    session envelope): the same results, errors and pool as apply of the bare Ops."""
    entries = [(1, create("m")), (2, put("m", b"a", b"1")), (3, b"\x01junk"),
               (4, put("nope", b"k", b"v")), (5, ops.encode(Op("m", OpCode.QUEUE_GET))),
               (6, ops.encode(Op("m", OpCode.MAP_POP, (b"a",)))),
               (7, ops.encode(Op("m", OpCode.DROP))), (8, b"")]
    image = bytes(Pool.create(DramMedia(16 << 20)).buf)
    pool, other_pool = (Pool.open(DramMedia.from_bytes(image)) for _ in range(2))
    reg, other = registry_for(pool), registry_for(other_pool)
    bare = reg.apply(entries)
    prefixed = other.apply_at([(i, b"ENVELOPE-" + op) for i, op in entries], 9)
    assert [(type(r), str(r)) for r in prefixed] == [(type(r), str(r)) for r in bare]
    assert bare[5] == b"1" and bare[6] is None
    assert other.last_applied == reg.last_applied == 8
    assert bytes(other_pool.buf) == bytes(pool.buf)


def test_an_exception_rolls_the_whole_batch_back():
    pool = Pool.create(DramMedia(2 << 20))
    reg = registry_for(pool)
    reg.apply([(1, create("m")), (2, put("m", b"a", b"1"))])
    with pytest.raises(PoolFullError):
        reg.apply([(3, put("m", b"b", b"2")), (4, put("m", b"big", bytes(8 << 20)))])
    assert reg.last_applied == 2
    m = PHashMap(pool, "m")
    assert dict(m.items()) == {b"a": b"1"}
    reg.check()
    m[b"c"] = b"3"  # and it keeps working
    reg.check()


def test_snapshot_restore_round_trip():
    pool, reg = fresh()
    m = PHashMap(pool, "m", key_codec=str, value_codec=int)
    q = PQueue(pool, "q")
    for i in range(300):
        m[str(i)] = i
        q.put(b"%d" % i)
    data = reg.snapshot()
    other_pool, other = fresh()
    PHashMap(other_pool, "gone")[b"x"] = b"y"
    other.restore(data)
    assert other.last_applied == reg.last_applied
    assert other.names() == ["m", "q"]
    m2 = PHashMap(other_pool, "m")
    assert dict(m2.items()) == dict(m.items())
    assert list(PQueue(other_pool, "q")) == list(q)
    other.check()
    assert other.snapshot() == data
    with pytest.raises(OpDecodeError):
        other.restore(data[:-1])


def test_drop_frees_everything():
    pool, reg = fresh()
    before = pool.stats().used
    m = PHashMap(pool, "m")
    for i in range(500):
        m[b"%d" % i] = bytes(2000)
    reg.drop("m")
    assert reg.core("m") is None and pool.root("m") is None
    assert pool.stats().used == before
    assert len(m) == 0
    reg.check()


def test_a_nested_abort_rebuilds_once_from_the_rolled_back_pool(monkeypatch):
    """The session table wraps every batch in an outer transaction. When a batch fails
    inside it, the registry's volatile state is rebuilt once, after the outermost
    rollback -- never from the pool as the failed batch left it."""
    pool, reg = fresh()
    reg.apply([(1, create("m")), (2, put("m", b"a", b"1"))])
    seen = []
    load_cores = reg._load_cores

    def observed_load_cores():  # (the cores' classes may be compiled, hence immutable)
        load_cores()
        seen.append((pool.transaction().active, reg.core("m").count))

    monkeypatch.setattr(reg, "_load_cores", observed_load_cores)
    with pytest.raises(PoolFullError), pool.transaction():
        reg.apply([(3, put("m", b"b", b"2")), (4, put("m", b"big", bytes(32 << 20)))])
    assert seen == [(False, 1)]
    assert reg.last_applied == 2
    reg.check()


def test_maps_share_one_page_top_array_per_pool():
    """The hash maps' page tops (2 bytes per 4 KiB of pool) are the pool's, not each
    map's: forty maps on a 256 MiB pool neither hold nor rebuild forty arrays after a
    rollback, and every map is right afterwards."""
    import tracemalloc

    pool = Pool.create(DramMedia(256 << 20))
    reg = registry_for(pool)
    one_array = 2 * (pool.size >> 12)
    maps = [PHashMap(pool, f"m{i}") for i in range(40)]
    for i, m in enumerate(maps):
        m[b"k"] = b"%d" % i
    tracemalloc.start()
    try:
        with pytest.raises(RuntimeError, match="roll back"), pool.transaction():
            for i, m in enumerate(maps):
                m[b"k"] = b"x"
                m[b"j%d" % i] = bytes(3000)  # grows the page's top in the rolled back tx
            raise RuntimeError("roll back")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * one_array, f"a rollback allocated {peak} bytes for 40 maps"
    for i, m in enumerate(maps):
        assert dict(m.items()) == {b"k": b"%d" % i}
        m[b"k2"] = bytes(3000)  # written where the rolled back entries were
        assert len(m) == 2
    reg.check()


@pytest.mark.parametrize("nested", [False, True], ids=["alone", "nested"])
def test_a_handle_survives_a_rolled_back_drop(nested):
    """DROP then a failing Op in one batch: the batch rolls back, the structure is
    still there, and the handle opened before keeps reading it."""
    pool, reg = fresh()
    m = PHashMap(pool, "m")
    m[b"a"] = b"1"
    applied = reg.last_applied
    batch = [(applied + 1, ops.encode(Op("m", OpCode.DROP))),
             (applied + 2, create("m")),
             (applied + 3, put("m", b"big", bytes(32 << 20)))]
    with pytest.raises(PoolFullError), pool.transaction() if nested else contextlib.nullcontext():
        reg.apply(batch)
    assert dict(m.items()) == {b"a": b"1"}
    m[b"b"] = b"2"
    assert dict(PHashMap(pool, "m").items()) == {b"a": b"1", b"b": b"2"}
    reg.check()


def test_a_dropped_structure_dies_when_the_drop_commits():
    """Handles on a dropped structure look empty and refuse writes once the DROP
    is durable; a second structure of that name is a new one."""
    pool, reg = fresh()
    m = PHashMap(pool, "m")
    m[b"a"] = b"1"
    with pool.transaction():
        reg.drop("m")
    assert len(m) == 0 and reg.core("m") is None
    with pytest.raises(OpDecodeError, match="does not exist"):
        m[b"b"] = b"2"
    again = PHashMap(pool, "m")
    again[b"c"] = b"3"
    assert len(m) == 0 and dict(again.items()) == {b"c": b"3"}
    reg.check()


def test_handles_follow_a_restore():
    """A replica that installs a snapshot keeps its users' handles: they read the
    restored contents (a structure of another kind or codecs is a new structure)."""
    pool, reg = fresh()
    m = PHashMap(pool, "m")
    q = PQueue(pool, "q")
    m[b"old"] = b"x"
    q.put(b"old")
    source_pool, source = fresh()
    PHashMap(source_pool, "m")[b"new"] = b"y"
    PHashMap(source_pool, "q")[b"k"] = b"v"  # same name, another kind
    reg.restore(source.snapshot())
    assert dict(m.items()) == {b"new": b"y"}
    m[b"more"] = b"z"
    assert len(q) == 0  # its structure is gone
    assert dict(PHashMap(pool, "q").items()) == {b"k": b"v"}
    reg.check()
