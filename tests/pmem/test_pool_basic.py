"""Pool basics: create, write in a transaction, reopen, roots, stats."""

from __future__ import annotations

import pytest

from blizzard.exceptions import PoolExistsError, TransactionError
from blizzard.pmem import DramMedia, Pool


def test_round_trip_through_a_file(tmp_path):
    """What a committed transaction wrote is there after close and reopen."""
    path = tmp_path / "p.pool"
    with Pool.create(path, 4 << 20, layout="t", mode="msync") as pool:
        with pool.transaction() as tx:
            off = tx.alloc(100)
            pool.buf[off:off + 5] = b"hello"
            tx.set_root("r", off, b"tag")
        pool.check()
    with Pool.open(path, layout="t", mode="msync") as pool:
        root = pool.root("r")
        assert root is not None and root.tag == b"tag"
        assert pool.read(root.off, 5) == b"hello"
        assert pool.usable_size(root.off) == 112
        pool.check()
    with pytest.raises(PoolExistsError):
        Pool.create(path, 4 << 20)


def test_exception_rolls_back_everything():
    """An exception escaping the outermost transaction undoes adds, allocs and frees."""
    pool = Pool.create(DramMedia(4 << 20))
    with pool.transaction() as tx:
        keep = tx.alloc(64)
        pool.buf[keep:keep + 3] = b"old"
    before = pool.stats()
    with pytest.raises(RuntimeError), pool.transaction() as tx:
        tx.write(keep, b"new")
        tx.free(keep)
        with pool.transaction() as inner:  # nesting joins the outer transaction
            inner.alloc(300_000)
        raise RuntimeError("boom")
    assert pool.read(keep, 3) == b"old"
    assert pool.stats() == before
    pool.check()


def test_misuse_is_refused():
    pool = Pool.create(DramMedia(4 << 20))
    with pytest.raises(TransactionError, match="outside a transaction"):
        pool.transaction().add(pool.size - 8, 8)
    with pool.transaction() as tx:
        with pytest.raises(TransactionError, match="outside the pool"):
            tx.add(pool.size - 4, 8)
        with pytest.raises(TransactionError, match="not an allocated block"):
            tx.free(pool.size - 64)
    pool.check()


def test_a_block_freed_in_a_transaction_is_not_reused_by_it():
    """Frees become reusable at commit, also when a run's free list is built lazily."""
    pool = Pool.create(DramMedia(4 << 20))
    with pool.transaction() as tx:
        a = tx.alloc(4096)
        tx.alloc(4096)
    pool = Pool.open(DramMedia.from_bytes(bytes(pool.buf)))  # free lists rebuilt lazily
    with pool.transaction() as tx:
        tx.free(a)
        assert tx.alloc(4096) != a
    pool.check()
    with pool.transaction() as tx:
        assert tx.alloc(4096) == a  # reusable after the commit
    pool.check()


def test_on_commit_runs_after_the_outermost_commit_only():
    """Callbacks wait for the outermost commit; a rollback discards them."""
    pool = Pool.create(DramMedia(4 << 20))
    calls = []
    with pool.transaction() as tx:
        with pool.transaction() as inner:
            inner.on_commit(lambda: calls.append(pool.transaction().active))
        assert calls == []
    assert calls == [False]
    with pytest.raises(RuntimeError), pool.transaction() as tx:
        tx.on_commit(lambda: calls.append("rolled back"))
        raise RuntimeError("boom")
    with pool.transaction():
        pass
    assert calls == [False]
    with pytest.raises(TransactionError, match="outside a transaction"):
        pool.transaction().on_commit(lambda: None)
