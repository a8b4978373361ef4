"""LocalReplicator: immediate apply, increasing indexes, futures, stop."""

from __future__ import annotations

import asyncio

import pytest

from blizzard.exceptions import ReplicatorStoppedError
from blizzard.replication.base import Replicator
from blizzard.replication.local import LocalReplicator


class ListMachine:
    """A trivial StateMachine: remembers what it applied."""

    def __init__(self) -> None:
        self.log: list[tuple[int, bytes]] = []

    @property
    def last_applied(self) -> int:
        return self.log[-1][0] if self.log else 0

    def apply(self, batch):
        self.log.extend(batch)
        return [ValueError("bad") if op == b"bad" else len(op) for _, op in batch]

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        self.log.clear()


def test_submit_applies_at_once_with_increasing_indexes():
    sm = ListMachine()
    rep = LocalReplicator(sm)
    assert isinstance(rep, Replicator)
    assert rep.submit(b"a") == 1 and rep.submit(b"bcd") == 3
    assert sm.log == [(1, b"a"), (2, b"bcd")]
    assert rep.stats()["submitted"] == 2 and rep.stats()["last_applied"] == 2
    rep.read_barrier()


def test_exception_results_are_raised():
    rep = LocalReplicator(ListMachine())
    with pytest.raises(ValueError, match="bad"):
        rep.submit(b"bad")


def test_futures_and_asyncio():
    rep = LocalReplicator(ListMachine())
    assert rep.submit_async(b"xy").result() == 2
    assert isinstance(rep.submit_async(b"bad").exception(), ValueError)

    async def main():
        return await asyncio.wrap_future(rep.submit_async(b"abc"))

    assert asyncio.run(main()) == 3


def test_stop_refuses_and_context_manager_restarts():
    rep = LocalReplicator(ListMachine())
    rep.stop()
    with pytest.raises(ReplicatorStoppedError):
        rep.submit(b"a")
    with rep:
        assert rep.submit(b"a") == 1
    with pytest.raises(ReplicatorStoppedError):
        rep.submit(b"a")


def test_with_a_pool_registry():
    """The registry's apply_one fast path gives the same indexes."""
    from blizzard.pmem import DramMedia, Pool
    from blizzard.structures import PHashMap, registry_for

    pool = Pool.create(DramMedia(4 << 20))
    reg = registry_for(pool)
    rep = LocalReplicator(reg)
    m = PHashMap(pool, "m", replicator=rep)
    m[b"a"] = b"1"
    assert reg.last_applied == 2 and rep.stats()["submitted"] == 2
