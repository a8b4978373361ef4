"""PQueue: behaviour, and a stateful test against collections.deque."""

from __future__ import annotations

import collections
import queue
import shutil
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blizzard import Empty
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PQueue, registry_for
from blizzard.structures import _queuecore as Q
from tests.conftest import budget
from tests.structures.conftest import shm_tempdir


def new_pool(size: int = 16 << 20) -> Pool:
    return Pool.create(DramMedia(size))


def test_fifo_basics():
    q = PQueue(new_pool(), "q", value_codec=int)
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.peek()
    for i in range(1000):
        q.put(i)
    assert len(q) == 1000 and q.peek() == 0 and list(q)[:3] == [0, 1, 2]
    assert [q.get() for _ in range(500)] == list(range(500))
    q.check()
    q.clear()
    assert len(q) == 0 and not q and q.empty()
    q.check()
    import queue

    assert issubclass(Empty, queue.Empty)


def test_values_from_empty_to_megabytes():
    pool = new_pool(64 << 20)
    q = PQueue(pool, "q")
    sizes = [0, 1, Q.INLINE_MAX - 8, Q.INLINE_MAX - 7, 4090, 5 << 20, 0]
    for n in sizes:
        q.put(b"x" * n)
    q.check()
    assert [len(v) for v in q] == sizes
    assert [len(q.get()) for _ in sizes] == sizes
    q.check()
    assert pool.stats().used < 64 << 10  # every value block and spent chunk was freed


def test_steady_put_get_allocates_nothing():
    pool = new_pool()
    q = PQueue(pool, "q")
    q.put(b"warm")
    q.get()
    used = pool.stats().used
    for _ in range(5000):
        q.put(b"v" * 64)
        assert q.get() == b"v" * 64
    assert pool.stats().used == used


def test_blocking_get_waits_for_a_put():
    q = PQueue(new_pool(), "q")
    timer = threading.Timer(0.05, q.put, args=(b"late",))
    timer.start()
    assert q.get(block=True, timeout=5) == b"late"
    with pytest.raises(Empty, match="still empty"):
        q.get(block=True, timeout=0.01)


def test_get_waits_by_default_as_queue_get_does():
    """``get()`` with no arguments blocks until an item comes, like
    ``queue.SimpleQueue().get()``; it does not raise Empty at once."""
    q = PQueue(new_pool(), "q", value_codec=str)
    got: list[str] = []
    taker = threading.Thread(target=lambda: got.append(q.get()))
    taker.start()
    taker.join(0.2)
    assert taker.is_alive() and not got  # still waiting on the empty queue
    q.put("job")
    taker.join(10)
    assert got == ["job"] and not taker.is_alive()
    with pytest.raises(Empty):
        q.get(timeout=0)  # a zero timeout tries once


def test_the_queue_module_signatures_are_accepted():
    """The calls written for ``queue.Queue`` / ``SimpleQueue`` run unchanged, and
    their errors are the ones ``queue`` code catches."""
    q = PQueue(new_pool(), "q", value_codec=int)
    q.put(1, block=True, timeout=None)
    q.put(2, False)
    q.put(3, block=False, timeout=1.0)
    q.put_nowait(4)
    assert q.qsize() == 4 and not q.empty()
    assert [q.get(True, 1.0), q.get(False), q.get_nowait(), q.get()] == [1, 2, 3, 4]
    with pytest.raises(queue.Empty):  # blizzard.Empty is a queue.Empty
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)  # as queue.Queue.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        queue.Queue().get(timeout=-1)
    assert q.empty() and q.qsize() == 0


class QueueMachine(RuleBasedStateMachine):
    """PQueue against deque, with reopen steps on a real file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = shm_tempdir()
        self.path = self.dir / "q.pool"
        self.pool = Pool.create(self.path, 8 << 20, mode="none")
        self.queue = PQueue(self.pool, "q")
        self.model: collections.deque[bytes] = collections.deque()

    values = st.one_of(st.binary(max_size=200), st.binary(min_size=1020, max_size=3000))

    @rule(v=values)
    def put(self, v):
        self.queue.put(v)
        self.model.append(v)

    @rule(n=st.integers(1, 150), size=st.integers(0, 300))
    def put_many(self, n, size):
        for i in range(n):
            v = bytes([i % 256]) * size
            self.queue.put(v)
            self.model.append(v)

    @rule(n=st.integers(1, 150))
    def get_many(self, n):
        for _ in range(n):
            if self.model:
                assert self.queue.get() == self.model.popleft()
            else:
                with pytest.raises(Empty):
                    self.queue.get_nowait()

    @rule()
    def peek(self):
        if self.model:
            assert self.queue.peek() == self.model[0]
        else:
            with pytest.raises(Empty):
                self.queue.peek()

    @rule()
    def clear(self):
        self.queue.clear()
        self.model.clear()

    @rule()
    def reopen(self):
        self.pool.close()
        self.pool = Pool.open(self.path, mode="none")
        self.queue = PQueue(self.pool, "q")

    @invariant()
    def agrees(self):
        self.queue.check()
        assert len(self.queue) == len(self.model)
        assert list(self.queue) == list(self.model)
        registry_for(self.pool).check()

    def teardown(self):
        self.pool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestQueueMachine = pytest.mark.interpreted(QueueMachine.TestCase)
TestQueueMachine.settings = settings(max_examples=budget(40), stateful_step_count=30)
