"""SessionStateMachine: at most once per (client, seq), results recorded,
sessions in snapshots, and a batch that does not fit fails only its culprits."""

from __future__ import annotations

import pytest

from blizzard.exceptions import PoolFullError
from blizzard.pmem import DramMedia, Pool
from blizzard.replication.sessions import (
    SessionStateMachine,
    StaleRequestError,
    decode_result,
    encode_result,
    wrap,
)
from blizzard.structures import PQueue, ops, registry_for


def _machine(size: int = 4 << 20) -> tuple[Pool, SessionStateMachine]:
    pool = Pool.create(DramMedia(size))
    PQueue(pool, "q")  # created through the local replicator: index 1
    return pool, SessionStateMachine(registry_for(pool), pool, capacity=64)


def _put(value: bytes) -> bytes:
    return ops.encode(ops.Op("q", ops.OpCode.QUEUE_PUT, (value,)))


GET = ops.encode(ops.Op("q", ops.OpCode.QUEUE_GET, ()))


@pytest.mark.parametrize("value", [None, True, False, 0, -5, 2**70, b"", b"x" * 100, "é",
                                   KeyError("k")])
def test_results_round_trip(value):
    back = decode_result(*encode_result(value))
    if isinstance(value, BaseException):
        assert type(back) is type(value) and str(back) == str(value)
    else:
        assert back == value and type(back) is type(value)


def test_a_retry_is_applied_once_and_gets_the_first_result():
    pool, sm = _machine()
    base = sm.last_applied
    sm.apply([(base + 1, wrap(7, 1, _put(b"a"))), (base + 2, wrap(7, 2, _put(b"b")))])
    first = sm.apply([(base + 3, wrap(7, 3, GET))])
    again = sm.apply([(base + 4, wrap(7, 3, GET))])  # the same request, retried
    assert first == again == [b"a"]
    assert list(PQueue(pool, "q")) == [b"b"]
    stale = sm.apply([(base + 5, wrap(7, 2, _put(b"b")))])[0]
    assert isinstance(stale, StaleRequestError)
    assert sm.last_applied == base + 5
    # a replay of applied indexes (after a crash) does nothing
    assert sm.apply([(base + 4, wrap(7, 4, GET))]) == [None]
    assert list(PQueue(pool, "q")) == [b"b"]


def test_duplicates_within_one_batch():
    pool, sm = _machine()
    base = sm.last_applied
    out = sm.apply([(base + 1, wrap(9, 1, _put(b"x"))), (base + 2, wrap(9, 1, _put(b"x")))])
    assert out == [None, None]
    assert list(PQueue(pool, "q")) == [b"x"]


def test_sessions_travel_with_snapshots():
    _, sm = _machine()
    base = sm.last_applied
    sm.apply([(base + 1, wrap(5, 1, _put(b"v"))), (base + 2, wrap(5, 2, GET))])
    image = sm.snapshot()
    other_pool, other = _machine()
    other.restore(image)
    assert other.last_applied == base + 2
    assert other.apply([(base + 3, wrap(5, 2, GET))]) == [b"v"]  # recognised as a retry
    assert len(PQueue(other_pool, "q")) == 0
    other_pool.check()


def test_a_batch_that_does_not_fit_fails_only_the_ops_that_do_not():
    pool, sm = _machine(size=2 << 20)
    base = sm.last_applied
    huge = b"h" * (3 << 20)
    out = sm.apply([(base + 1, wrap(1, 1, _put(b"small"))), (base + 2, wrap(2, 1, _put(huge))),
                    (base + 3, wrap(3, 1, _put(b"also small")))])
    assert out[0] is None and out[2] is None
    assert isinstance(out[1], PoolFullError)
    assert list(PQueue(pool, "q")) == [b"small", b"also small"]
    assert sm.last_applied == base + 3
    retried = sm.apply([(base + 4, wrap(2, 1, _put(huge)))])[0]  # the retry gets the failure
    assert isinstance(retried, PoolFullError)
    pool.check()
