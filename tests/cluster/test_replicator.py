"""RaftReplicator: three nodes in one process, on loopback TCP, real pools.

(Multi-process clusters with SIGKILL are tested in test_processes.py.)
"""

from __future__ import annotations

import time

from blizzard.cluster.replicator import RaftReplicator
from blizzard.structures import PHashMap, PQueue


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _contents(rep: RaftReplicator, name: str) -> dict:
    rep.read_barrier()
    return dict(PHashMap(rep.pool, name, replicator=rep).items())


def test_writes_on_any_node_reach_every_replica(cluster_config):
    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        leader = reps[1].wait_for_leader()
        follower = next(i for i in reps if i != leader)
        on_follower = PHashMap(reps[follower].pool, "users", replicator=reps[follower])
        for i in range(50):
            on_follower[f"k{i}".encode()] = f"v{i}".encode()  # forwarded to the leader
        on_leader = PHashMap(reps[leader].pool, "users", replicator=reps[leader])
        del on_leader[b"k0"]
        queue = PQueue(reps[leader].pool, "jobs", replicator=reps[leader])
        for i in range(10):
            queue.put(f"job{i}".encode())
        assert queue.get() == b"job0"
        expected = {f"k{i}".encode(): f"v{i}".encode() for i in range(1, 50)}
        for rep in reps.values():
            assert _contents(rep, "users") == expected
            assert list(PQueue(rep.pool, "jobs", replicator=rep)) == [
                f"job{i}".encode() for i in range(1, 10)]
            rep.pool.check()
        status = reps[leader].status()
        assert status["role"] == "leader" and set(status["match"]) == {1, 2, 3}
    finally:
        for rep in reps.values():
            rep.stop()


def test_leader_loss_then_restart_from_its_pools(cluster_config):
    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        leader = reps[1].wait_for_leader()
        m = PHashMap(reps[leader].pool, "m", replicator=reps[leader])
        for i in range(20):
            m[b"a%d" % i] = b"1"
        reps[leader].stop()
        survivors = [i for i in reps if i != leader]
        _wait(lambda: reps[survivors[0]].status()["leader"] not in (0, leader))
        m2 = PHashMap(reps[survivors[0]].pool, "m", replicator=reps[survivors[0]])
        for i in range(20):
            m2[b"b%d" % i] = b"2"
        reps[leader] = RaftReplicator(cluster_config, leader, seed=leader + 10)  # same pool files
        expected = {b"a%d" % i: b"1" for i in range(20)}
        expected.update({b"b%d" % i: b"2" for i in range(20)})
        _wait(lambda: reps[leader].status()["applied"] >= reps[survivors[0]].status()["commit"])
        for rep in reps.values():
            assert _contents(rep, "m") == expected
    finally:
        for rep in reps.values():
            rep.stop()


def test_a_retried_request_is_applied_once(cluster_config):
    """The same envelope proposed twice (a client retry) pops the queue once."""
    from blizzard.replication.sessions import wrap
    from blizzard.structures import ops

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        leader = reps[1].wait_for_leader()
        rep = reps[leader]
        queue = PQueue(rep.pool, "q", replicator=rep)
        for item in (b"first", b"second"):
            queue.put(item)
        pop = ops.encode(ops.Op("q", ops.OpCode.QUEUE_GET, ()))
        envelope = wrap(12345, 1, pop)
        import asyncio

        async def twice():
            a = rep.node.propose(envelope)
            b = rep.node.propose(envelope)
            return await a, await b

        first, again = asyncio.run_coroutine_threadsafe(twice(), rep._loop).result(10)
        assert first == again == b"first"
        later = asyncio.run_coroutine_threadsafe(_propose(rep, envelope), rep._loop).result(10)
        assert later == b"first"  # the recorded result, not a second pop
        assert list(queue) == [b"second"]
    finally:
        for r in reps.values():
            r.stop()


async def _propose(rep, envelope):
    return await rep.node.propose(envelope)


def test_many_requests_in_flight_survive_a_leader_change(cluster_config):
    """Thousands of writes in flight from a follower while the leader stops:
    every acknowledged write is present, none is misreported as stale."""
    import concurrent.futures

    from blizzard.structures import ops

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        leader = reps[1].wait_for_leader()
        writer = next(i for i in reps if i != leader)
        rep = reps[writer]
        PHashMap(rep.pool, "m", replicator=rep)  # create it
        futures = {}

        def put(i):
            key = b"k%05d" % i
            futures[key] = rep.submit_async(ops.encode(ops.Op("m", ops.OpCode.MAP_PUT,
                                                              (key, b"v" * 64))))
        for i in range(1500):
            put(i)
        reps[leader].stop()  # takes its uncommitted tail of the first burst with it
        _wait(lambda: rep.status()["leader"] not in (0, leader))
        for i in range(1500, 3000):  # these commit before the lost ones are retried
            put(i)
        acknowledged = []
        for key, future in futures.items():
            try:
                future.result(timeout=60)
                acknowledged.append(key)
            except concurrent.futures.TimeoutError:
                raise
            except Exception as exc:
                raise AssertionError(f"write {key!r} failed: {exc!r}") from exc
        contents = _contents(rep, "m")
        assert set(acknowledged) <= set(contents)
        assert len(acknowledged) == 3000
    finally:
        for r in reps.values():
            r.stop()


def test_reads_on_another_thread_while_the_node_applies(cluster_config):
    """An application thread reads (point gets, scans, len) while the node's
    thread applies a stream of writes: no read fails or sees a torn value."""
    import threading

    from blizzard.structures import PBPlusTree, ops

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        leader = reps[1].wait_for_leader()
        follower = next(i for i in reps if i != leader)
        writer = PBPlusTree(reps[leader].pool, "t", replicator=reps[leader], fanout=8)
        reader = PBPlusTree(reps[follower].pool, "t", replicator=reps[follower],
                            linearizable=False)
        errors: list[BaseException] = []
        stop = threading.Event()

        def read_loop():
            try:
                while not stop.is_set():
                    for key, value in reader.items():
                        assert value == key * 2, (key, value)
                    reader.get(b"k0001")
                    len(reader)
            except BaseException as exc:  # reported below
                errors.append(exc)

        import sys

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often: make a torn read likely
        thread = threading.Thread(target=read_loop)
        thread.start()
        futures = [writer.replicator.submit_async(
            writer._put_op(int(ops.OpCode.ORD_PUT), b"k%04d" % i, b"k%04d" % i * 2))
            for i in range(2000)]
        for future in futures:
            future.result(timeout=60)
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
        assert not errors, errors[0]
        reps[follower].read_barrier()
        assert len(reader) == 2000
    finally:
        for rep in reps.values():
            rep.stop()


def test_submit_callback_reports_results_and_errors(cluster_config):
    """The callback form delivers each Op's result, or its error, once."""
    import threading

    from blizzard.structures import ops

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        rep = reps[reps[1].wait_for_leader()]
        PQueue(rep.pool, "q", replicator=rep).put(b"only")
        got: list = []
        done = threading.Event()

        def callback(result, error):
            got.append((result, error))
            if len(got) == 2:
                done.set()

        get = ops.encode(ops.Op("q", ops.OpCode.QUEUE_GET, ()))
        rep.submit_callback(get, callback)
        rep.submit_callback(get, callback)
        assert done.wait(30)
        assert got[0] == (b"only", None)
        assert got[1][1] is None and got[1][0] is None  # an empty queue's get yields None
    finally:
        for r in reps.values():
            r.stop()


def test_an_answered_request_is_released_at_once(cluster_config):
    """Nothing of a request outlives its answer: the retry queues name requests
    by key, so its callback (and envelope) are freed by their reference counts
    as soon as it is answered, not when its attempt would have fallen due.
    Under load, thousands of answered requests kept alive that long cost the
    collector a walk over each at every collection."""
    import threading
    import weakref

    from blizzard.structures import ops

    class Answer:
        def __init__(self) -> None:
            self.got = threading.Event()

        def __call__(self, result, error) -> None:
            self.got.set()

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        rep = reps[reps[1].wait_for_leader()]
        rep.attempt_timeout_s = 60.0  # an attempt falls due long after this test
        put = ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k", b"v")))
        answers = [Answer() for _ in range(20)]
        refs = [weakref.ref(a) for a in answers]
        for answer in answers:
            rep.submit_callback(put, answer)
        assert all(a.got.wait(30) for a in answers)
        del answer, answers
        _wait(lambda: all(r() is None for r in refs), timeout=5.0)
        assert rep._attempts  # the attempts are still queued, by key
    finally:
        for r in reps.values():
            r.stop()


def test_a_request_without_a_quorum_fails_at_its_deadline_then_the_node_serves(cluster_config):
    """One node of three, alone: each attempt is dropped for want of a leader and
    retried after a backoff until the request's deadline, when it fails with
    RequestTimeoutError; once its peers start, the same node commits new writes."""
    import pytest

    from blizzard.cluster.replicator import RaftReplicator
    from blizzard.exceptions import RequestTimeoutError
    from blizzard.structures import ops

    alone = RaftReplicator(cluster_config, 1, seed=1, request_timeout_s=0.6)
    others: list[RaftReplicator] = []
    try:
        put = ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k", b"v")))
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=r"not committed within 0\.6 s"):
            alone.submit(put)
        waited = time.monotonic() - started
        assert 0.6 <= waited < 0.6 + alone.attempt_timeout_s + 2.0, waited
        assert not alone._inflight  # the request left the replicator with its answer
        alone.request_timeout_s = 30.0  # the next requests wait out an election
        others = [RaftReplicator(cluster_config, i, seed=i) for i in (2, 3)]
        alone.wait_for_leader()
        m = PHashMap(alone.pool, "m", replicator=alone)
        m[b"k2"] = b"v2"
        assert dict(m.items()) == {b"k2": b"v2"}  # the timed-out put was never applied
    finally:
        for rep in (alone, *others):
            rep.stop()


def test_an_attempt_left_unanswered_is_retried_with_the_same_envelope(cluster_config):
    """The node loses the waiter of a request's first attempt (as a lost forward
    would): no apply answers it, so the sweep retries it once an attempt's
    timeout has passed, and the session table answers the retry with the
    result recorded for the first -- the queue is popped once."""
    from blizzard.structures import ops

    reps = {i: RaftReplicator(cluster_config, i, seed=i) for i in (1, 2, 3)}
    try:
        rep = reps[reps[1].wait_for_leader()]
        queue = PQueue(rep.pool, "q", replicator=rep)
        for item in (b"first", b"second"):
            queue.put(item)
        node = rep.node
        submit = node.submit
        lost: list = []

        def losing_submit(data, callback, key=None):
            submit(data, callback, key)
            if not lost:
                lost.append(key)
                node.forget(key)  # this attempt's answer will reach no one

        node.submit = losing_submit
        started = time.monotonic()
        assert rep.submit(ops.encode(ops.Op("q", ops.OpCode.QUEUE_GET, ()))) == b"first"
        assert time.monotonic() - started >= rep.attempt_timeout_s * 0.9
        assert len(lost) == 1 and list(queue) == [b"second"]
    finally:
        for r in reps.values():
            r.stop()
