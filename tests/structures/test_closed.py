"""A structure whose pool is closed refuses every use with PoolClosedError.

Not ``ValueError: operation forbidden on released memoryview object`` from
deep inside a read, and not a stale answer from ``len`` (a count kept in
DRAM): every operation of every structure, including iterators started
before the close, on a real pool file and through a Store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import blizzard
from blizzard.exceptions import PoolClosedError
from blizzard.pmem import Pool
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

MAP_OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "len": len,
    "getitem": lambda m: m["a"],
    "getitem of a missing key": lambda m: m["zz"],
    "get": lambda m: m.get("a"),
    "contains": lambda m: "a" in m,
    "iter": lambda m: list(m),
    "keys": lambda m: list(m.keys()),
    "values": lambda m: list(m.values()),
    "items": lambda m: list(m.items()),
    "items_bytes": lambda m: list(m.items_bytes()),
    "copy": lambda m: m.copy(),
    "eq": lambda m: m == {"a": b"1"},
    "bool": bool,
    "setitem": lambda m: m.__setitem__("b", b"2"),
    "delitem": lambda m: m.__delitem__("a"),
    "pop": lambda m: m.pop("a"),
    "pop with default": lambda m: m.pop("zz", None),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("c", b"3"),
    "update": lambda m: m.update({"d": b"4"}),
    "clear": lambda m: m.clear(),
    "check": lambda m: m.check(),
    "stats": lambda m: m.stats(),
}
ORDERED_OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "irange": lambda m: list(m.irange()),
    "irange_items": lambda m: list(m.irange_items()),
    "reversed": lambda m: list(reversed(m)),
    "peekitem": lambda m: m.peekitem(0),
    "bisect_left": lambda m: m.bisect_left("a"),
    "index": lambda m: m.index("a"),
}
QUEUE_OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "len": len,
    "qsize": lambda q: q.qsize(),
    "empty": lambda q: q.empty(),
    "bool": bool,
    "iter": list,
    "peek": lambda q: q.peek(),
    "put": lambda q: q.put(b"x"),
    "put_nowait": lambda q: q.put_nowait(b"x"),
    "get": lambda q: q.get(),
    "get_nowait": lambda q: q.get_nowait(),
    "get with a timeout": lambda q: q.get(timeout=0.01),
    "clear": lambda q: q.clear(),
    "check": lambda q: q.check(),
}

KINDS = {
    "PHashMap": lambda pool: PHashMap(pool, "h", key_codec=str),
    "PBPlusTree": lambda pool: PBPlusTree(pool, "b", key_codec=str, fanout=4),
    "PSkipList": lambda pool: PSkipList(pool, "s", key_codec=str),
}


def _closed_map(tmp_path, kind: str):
    pool = Pool.create(tmp_path / "p.pool", 4 << 20, mode="none")
    m = KINDS[kind](pool)
    m.update({"a": b"1", "b": b"2"})
    pool.close()
    return m


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_map_operation_after_close_raises_pool_closed(tmp_path, kind):
    operations = dict(MAP_OPERATIONS)
    if kind != "PHashMap":
        operations.update(ORDERED_OPERATIONS)
    m = _closed_map(tmp_path, kind)
    for name, operation in operations.items():
        with pytest.raises(PoolClosedError, match="pool is closed"):
            operation(m)
            pytest.fail(f"{kind}: {name} answered after the pool was closed")
    assert "pool closed" in repr(m)


def test_every_queue_operation_after_close_raises_pool_closed(tmp_path):
    pool = Pool.create(tmp_path / "p.pool", 4 << 20, mode="none")
    q = PQueue(pool, "q")
    q.put(b"first")
    pool.close()
    for name, operation in QUEUE_OPERATIONS.items():
        with pytest.raises(PoolClosedError, match="pool is closed"):
            operation(q)
            pytest.fail(f"PQueue: {name} answered after the pool was closed")
    assert "pool closed" in repr(q)


@pytest.mark.parametrize("kind", [*sorted(KINDS), "PQueue"])
def test_an_iterator_started_before_close_raises_pool_closed(tmp_path, kind):
    pool = Pool.create(tmp_path / "p.pool", 8 << 20, mode="none")
    if kind == "PQueue":
        s = PQueue(pool, "q", value_codec=int)
        for i in range(2000):
            s.put(i)
    else:
        s = KINDS[kind](pool)
        s.update({f"k{i:05}": b"v" * 40 for i in range(2000)})
    iterators = [iter(s)] if kind == "PQueue" else [iter(s), iter(s.items()),
                                                    s.items_bytes()]
    for it in iterators:
        next(it)
    pool.close()
    for it in iterators:
        with pytest.raises(PoolClosedError):
            for _ in it:
                pass


def test_a_blocked_get_ends_with_pool_closed_when_the_pool_closes(tmp_path):
    import threading

    pool = Pool.create(tmp_path / "p.pool", 4 << 20, mode="none")
    q = PQueue(pool, "q")
    errors: list[BaseException] = []

    def take() -> None:
        try:
            q.get()
        except BaseException as exc:
            errors.append(exc)

    taker = threading.Thread(target=take)
    taker.start()
    taker.join(0.1)
    assert taker.is_alive()
    pool.close()
    taker.join(10)
    assert not taker.is_alive() and len(errors) == 1
    assert isinstance(errors[0], PoolClosedError)


def test_structures_of_a_closed_store_raise_pool_closed(tmp_path):
    store = blizzard.open({"data_dir": str(tmp_path), "pool_size": "4M",
                           "replication": {"backend": "local"}})
    users = store.hashmap("users", key_codec=str, value_codec=int)
    users["ada"] = 1815
    jobs = store.queue("jobs")
    store.close()
    for operation in (lambda: len(users), lambda: users["ada"], lambda: len(jobs),
                      jobs.get_nowait):
        with pytest.raises(PoolClosedError):
            operation()


def test_pool_closed_is_still_a_value_error():
    """Code that caught the ValueError of a released buffer keeps working."""
    assert issubclass(PoolClosedError, ValueError)
