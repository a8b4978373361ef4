"""Pool.open_copy: looking at a pool another handle holds, without its lock."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from blizzard.exceptions import (
    InvalidSizeError,
    NotAPoolError,
    PoolLockedError,
    PoolNotFoundError,
)
from blizzard.pmem import Pool


def test_a_locked_pool_is_read_from_a_copy(tmp_path):
    path = tmp_path / "p.pool"
    with Pool.create(path, 4 << 20, layout="app", mode="none") as pool:
        with pool.transaction() as tx:
            off = tx.alloc(100)
            pool.buf[off:off + 5] = b"hello"
            tx.set_root("greeting", off)
        with pytest.raises(PoolLockedError) as locked:
            Pool.open(path, mode="none")
        assert locked.value.holders == [__import__("os").getpid()]
        assert "by this process" in str(locked.value)
        before = hashlib.sha256(path.read_bytes()).digest()
        with Pool.open_copy(path, layout="app") as copy:
            assert copy.layout == "app" and copy.uuid == pool.uuid
            assert copy.read(copy.root("greeting").off, 5) == b"hello"
            assert copy.stats() == pool.stats()
            with copy.transaction() as tx:  # the copy is private: writing it is harmless
                tx.free(copy.root("greeting").off)
        assert hashlib.sha256(path.read_bytes()).digest() == before
        assert pool.read(off, 5) == b"hello"


def test_copies_taken_while_the_owner_writes_are_consistent(tmp_path):
    """Transactions run in another thread while copies are read: a torn copy
    fails its check and is read again; every copy returned passes check()."""
    path = tmp_path / "p.pool"
    stop = threading.Event()
    with Pool.create(path, 8 << 20, mode="none") as pool:
        def write() -> None:
            blocks: list[int] = []
            n = 0
            while not stop.is_set():
                with pool.transaction() as tx:
                    if len(blocks) > 50:
                        tx.free(blocks.pop(0))
                    blocks.append(tx.alloc(64 + n % 3000))
                    tx.set_root(f"r{n % 20}", blocks[-1])
                n += 1
                if n % 20 == 0:  # a pause now and then: a starved reader still gets a copy
                    time.sleep(0.005)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(20):
                with Pool.open_copy(path, attempts=50) as copy:
                    copy.check()
                    assert len(copy.roots()) <= 20
        finally:
            stop.set()
            writer.join()


def test_open_copy_refusals(tmp_path):
    with pytest.raises(PoolNotFoundError):
        Pool.open_copy(tmp_path / "none.pool")
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 8192)
    with pytest.raises(NotAPoolError):
        Pool.open_copy(junk)
    path = tmp_path / "p.pool"
    Pool.create(path, 4 << 20, mode="none").close()
    with pytest.raises(InvalidSizeError, match="too large to copy"):
        Pool.open_copy(path, bytes_max=1 << 20)
