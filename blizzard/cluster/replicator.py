"""RaftReplicator: this process is one node of a Raft cluster (embedded use).

::

    rep = RaftReplicator("cluster.toml", node_id=1)     # opens the node's pools, joins
    users = PHashMap(rep.pool, "users", replicator=rep)
    users[b"k"] = b"v"      # returns once committed by a quorum and applied here

The node runs on an asyncio loop in a background thread. A call from any
thread becomes a session envelope ``(client id, seq, op)`` handed to the loop;
if the attempt is lost (no leader yet, a leader change, a slow quorum) it is
retried with the *same* envelope until ``request_timeout_s``, and the session
table applies it at most once. Writes on a follower are forwarded to the
leader by the Raft core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blizzard.cluster import config as configmod
from blizzard.cluster.config import ClusterConfig
from blizzard.cluster.images import FileImages, finish_interrupted_install
from blizzard.cluster.membership import Membership
from blizzard.exceptions import (
    ProposalDroppedError,
    ReplicatorStoppedError,
    RequestTimeoutError,
)
from blizzard.pmem import FileMedia, Media, Pool
from blizzard.replication.base import Replicator
from blizzard.replication.node import RaftNode
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.replication.transport.base import Transport, new_event_loop
from blizzard.replication.transport.registry import build_transport
from blizzard.structures.registry import registry_for

SWEEP_S = 0.05
MEMBERSHIP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = 0.02


def open_node_pools(config: ClusterConfig, node_id: int, *,
                    wrap_media: Callable[[Media], Media] | None = None) -> tuple[Pool, Pool]:
    """The node's structures pool and Raft log pool, created on first use.

    ``wrap_media``, when given, wraps each pool's media (a ``CountingMedia``, say).
    """
    directory = config.node_dir(node_id)
    directory.mkdir(parents=True, exist_ok=True)
    pools = []
    for name, size, layout in (("data.pool", config.pool_size, "blizzard.data"),
                               ("log.pool", config.log_pool_size, "blizzard.raftlog")):
        path = directory / name
        if name == "data.pool" and path.exists():
            finish_interrupted_install(directory, path)  # a crash in the middle of one
        fresh = not path.exists()
        if wrap_media is None and fresh:
            pools.append(Pool.create(path, size, layout=layout, mode=config.durability))
        elif wrap_media is None:
            pools.append(Pool.open(path, layout=layout, mode=config.durability))
        else:
            media = wrap_media(FileMedia(path, mode=config.durability,
                                   create_size=size if fresh else None))
            pools.append(Pool.create(media, layout=layout) if fresh
                         else Pool.open(media, layout=layout))
    return pools[0], pools[1]


class RaftReplicator(Replicator):
    """A :class:`Replicator` backed by a Raft cluster this process belongs to.

    Structures bound to it read linearizably by default (a ReadIndex round
    before each read; pass ``linearizable=False`` to a structure for fast,
    possibly stale local reads), and hold ``read_lock`` while reading, since
    the node applies Ops on its own thread.
    """

    linearizable_default = True

    def __init__(self, config: ClusterConfig | str | os.PathLike[str], node_id: int, *,
                 start: bool = True, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 seed: int | None = None,
                 media_wrapper: Callable[[Media], Media] | None = None) -> None:
        if not isinstance(config, ClusterConfig):
            config = configmod.load(Path(config))
        config.require_nodes("a Raft node")
        config.node(node_id)  # validates the id
        self.config = config
        self.node_id = node_id
        self.request_timeout_s = request_timeout_s
        # An attempt unanswered for an election timeout is sent again. Only a
        # fallback, for frames lost without a leader change: when a new leader
        # becomes known the node proposes every waiting entry again at once.
        self.attempt_timeout_s = config.raft.tick_ms * config.raft.election_ticks / 1000
        self._seed = seed
        # built before any file is opened: a bad [transport] makes nothing on disk
        self.transport: Transport = build_transport(
            configmod.transport_spec(config, node_id, seed=seed))
        self.pool, self.log_pool = open_node_pools(config, node_id, wrap_media=media_wrapper)
        self.state_machine = SessionStateMachine(registry_for(self.pool), self.pool)
        # snapshot images for followers too far behind, and from the leader when this one is
        self.images = FileImages(config.node_dir(node_id), self.pool, self.state_machine.reload)
        # Every new log starts with the founders as its voters, also on a node
        # added at run time (not one of them, so it never campaigns): replaying
        # the leader's log from index 1 then yields the membership of today.
        self.storage = PmemStorage(self.log_pool, conf_state=ConfState(config.founders))
        self.membership = Membership(self)
        self.membership.restore_peers(self.transport)
        self._submit_lock = threading.Lock()
        self.read_lock = threading.Lock()
        self._inbox: list = []  # (op, deliver) from any thread, drained by the loop
        self._lanes: list[list[int]] = []  # idle [client id, next seq]; loop thread only
        self._inflight: dict[tuple[int, int], list] = {}  # key -> [envelope, deliver,
        #                                                   deadline, last attempt, lane, key]
        # (due, attempts' time, [key, ...]), in the order they fall due: attempts
        # to answer within attempt_timeout_s, and dropped ones to retry after a
        # backoff. One entry for all the requests sent at once, and keys, not
        # the requests: an answered request is freed at once by its reference
        # count, where queues holding every request of the last
        # attempt_timeout_s kept thousands alive under load, for the collector
        # to walk again at each collection (see blizzard._heap).
        self._attempts: deque[tuple[float, float, list[tuple[int, int]]]] = deque()
        self._backoffs: deque[tuple[float, float, list[tuple[int, int]]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.node: RaftNode | None = None
        self.submitted = 0
        if start:
            try:
                self.start()
            except BaseException:
                self.pool.close()  # nobody else holds them: a retry must find them unlocked
                self.log_pool.close()
                raise

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        started = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name=f"blizzard-node-{self.node_id}", daemon=True)
        self._thread.start()
        try:
            started.result()  # re-raises a failure to start (say, the port is taken)
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    def _run(self, started: concurrent.futures.Future) -> None:
        loop = new_event_loop(self.transport)  # a poll-mode transport brings its own
        self._loop = loop
        raft = self.config.raft
        try:
            # RaftNode() may fail too (finishing a snapshot install can fill the pool):
            # inside the try, so start() re-raises instead of waiting forever.
            self.node = RaftNode(self.node_id, storage=self.storage,
                                 state_machine=self.state_machine, transport=self.transport,
                                 tick_s=raft.tick_ms / 1000, election_tick=raft.election_ticks,
                                 heartbeat_tick=raft.heartbeat_ticks,
                                 snapshot_entries=raft.snapshot_entries,
                                 snapshot_tail_entries=raft.snapshot_tail_entries,
                                 images=self.images,
                                 apply_lock=self.read_lock, seed=self._seed)
            self.node.on_conf_change = self.membership.conf_changed
            loop.run_until_complete(self.node.start())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()
        self._fail_pending(ReplicatorStoppedError("the replicator stopped"))
        loop.run_until_complete(self.node.stop())
        loop.close()

    def _fail_pending(self, error: BaseException) -> None:
        """Answer every request not yet answered (on the loop thread, at stop)."""
        with self._submit_lock:
            waiting, self._inbox = self._inbox, []
        for _, deliver in waiting:
            deliver(None, error)
        for request in self._inflight.values():
            request[1](None, error)
        self._inflight.clear()
        self._attempts.clear()
        self._backoffs.clear()

    def stop(self) -> None:
        """Leave the cluster (this node stops) and close the pools."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None  # new requests are refused from here
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join()
        self.pool.close()
        self.log_pool.close()

    # -- requests ------------------------------------------------------------------------

    # -- requests ------------------------------------------------------------------------
    #
    # Every request in flight owns a *lane*: a session (client id) with its
    # own sequence numbers, at most one request at a time. Sequence numbers
    # of one lane are therefore applied in order, and a retry after a leader
    # change can never be mistaken for an old request (which a single session
    # with many requests in flight would do: a lower seq retried after a
    # higher one was applied looks stale). Lanes are reused, so their number
    # is the peak concurrency, and the session table bounds it.

    def submit_async(self, op: bytes) -> concurrent.futures.Future:
        """Replicate ``op``; the future holds its result once applied on this node.

        An Op whose result is an exception (say, popping an empty queue)
        completes the future with that exception.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()

        def deliver(value: Any, error: BaseException | None) -> None:
            if error is None and not isinstance(value, BaseException):
                future.set_result(value)
            else:
                future.set_exception(error if error is not None else value)

        self._enqueue(op, deliver)
        return future

    def submit_callback(self, op: bytes, callback) -> None:
        """Replicate ``op``; ``callback(result, error)`` runs on the node's thread
        once it is applied here (``error`` None) or has failed.

        The cheapest form for many requests in flight (no future per request,
        as PySyncObj's ``callback=``); the callback must be quick and must not
        block, it runs on the node's loop.
        """
        self._enqueue(op, callback)

    def submit(self, op: bytes) -> Any:
        """Replicate ``op`` and return its result (raising it if it is an exception)."""
        waiter = threading.Lock()
        waiter.acquire()
        box: list = []

        def deliver(value: Any, error: BaseException | None) -> None:
            box.append((value, error))
            waiter.release()

        self._enqueue(op, deliver)
        if not waiter.acquire(timeout=self.request_timeout_s + 10):
            raise RequestTimeoutError("the node's loop did not answer")
        value, error = box[0]
        if error is not None:
            raise error
        if isinstance(value, BaseException):
            raise value
        return value

    def _enqueue(self, op: bytes, deliver) -> None:
        """Hand a request to the loop: one wake-up for a whole burst of callers."""
        if self._thread is None:
            raise ReplicatorStoppedError("the replicator is stopped")
        with self._submit_lock:
            self.submitted += 1
            self._inbox.append((op, deliver))
            wake = len(self._inbox) == 1
        if wake:
            self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._submit_lock:
            batch, self._inbox = self._inbox, []
        now = self._loop.time()
        deadline = now + self.request_timeout_s
        due = now + self.attempt_timeout_s
        lanes = self._lanes
        inflight = self._inflight
        attempts = self._attempts
        submit = self.node.submit
        settled = self._settled
        sent: list[tuple[int, int]] = []
        dropped: list[tuple[int, int]] = []
        for op, deliver in batch:
            lane = lanes.pop() if lanes else [self._new_client(), 1]
            client, seq = lane
            key = (client, seq)
            envelope = wrap(client, seq, op)
            request = [envelope, deliver, deadline, now, lane, key]
            inflight[key] = request
            try:
                submit(envelope, settled, key)
            except ProposalDroppedError:
                dropped.append(key)
            else:
                sent.append(key)
        if sent:
            attempts.append((due, now, sent))
        if dropped:
            self._backoffs.append((now + RETRY_BACKOFF_S, now, dropped))
        if self._sweeper is None and inflight:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    def _new_client(self) -> int:
        return int.from_bytes(os.urandom(8), "little") or 1

    def _settled(self, key: tuple[int, int], value: Any, error: BaseException | None) -> None:
        """The node's callback: applied (``error`` None) or dropped (retry soon)."""
        request = self._inflight.get(key)
        if request is None:
            return
        if error is not None:
            now = request[3] = self._loop.time()
            self._backoffs.append((now + RETRY_BACKOFF_S, now, [key]))
            return
        del self._inflight[key]
        lane = request[4]
        lane[1] += 1
        self._lanes.append(lane)
        request[1](value, None)

    def _sweep(self) -> None:
        """Retry attempts that went unanswered; fail requests past their deadline.

        Only the attempts fallen due are visited (each queue is in the order its
        entries fall due), not every request in flight: under load thousands
        are, and nearly all of them are answered long before they fall due.
        """
        self._sweeper = None
        now = self._loop.time()
        inflight = self._inflight
        again: list[tuple[int, int]] = []
        for queue in (self._backoffs, self._attempts):
            while queue and queue[0][0] <= now:
                _, attempted, keys = queue.popleft()
                for key in keys:
                    request = inflight.get(key)
                    # else answered, failed, or attempted again since
                    if request is not None and request[3] == attempted:
                        self._retry(request, now, again)
        if again:
            self._attempts.append((now + self.attempt_timeout_s, now, again))
        if inflight:
            self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    def _retry(self, request: list, now: float, again: list[tuple[int, int]]) -> None:
        """Fail ``request`` past its deadline, else send it again (its key joins
        ``again``, the attempts made now)."""
        envelope, deliver, deadline, _, lane, key = request
        if now > deadline:
            del self._inflight[key]
            self.node.forget(key)
            lane[1] += 1  # the entry may still commit later; the lane moves on
            self._lanes.append(lane)
            deliver(None, RequestTimeoutError(
                f"not committed within {self.request_timeout_s} s (is a quorum reachable?)"))
            return
        request[3] = now
        again.append(key)
        with contextlib.suppress(ProposalDroppedError):
            self.node.submit(envelope, self._settled, key)  # same envelope: applied at most once

    def read_barrier(self) -> None:
        """Wait until this node has applied everything committed before the call."""
        if self._thread is None:
            raise ReplicatorStoppedError("the replicator is stopped")
        done: concurrent.futures.Future = concurrent.futures.Future()
        loop = self._loop
        loop.call_soon_threadsafe(self._read_attempt, done, loop.time() + self.request_timeout_s)
        done.result()

    def _read_attempt(self, done: concurrent.futures.Future, deadline: float) -> None:
        loop = self._loop
        if loop.time() > deadline:
            done.set_exception(RequestTimeoutError("read barrier timed out"))
            return
        future = self.node.read_barrier()
        timer = loop.call_later(self.attempt_timeout_s, self._read_attempt, done, deadline)

        def finished(f: asyncio.Future) -> None:
            if done.done():
                return
            timer.cancel()
            if f.cancelled() or f.exception() is not None:
                loop.call_later(RETRY_BACKOFF_S, self._read_attempt, done, deadline)
            else:
                done.set_result(None)

        future.add_done_callback(finished)

    # -- membership -------------------------------------------------------------------------

    def add_node(self, node_id: int, raft: tuple[str, int], client: tuple[str, int] | None = None,
                 *, timeout_s: float = MEMBERSHIP_TIMEOUT_S) -> dict[str, Any]:
        """Add node ``node_id`` (listening for Raft on ``raft``) to the cluster: a
        learner first, a voter once it has caught up. Run on the leader (elsewhere
        :class:`~blizzard.exceptions.NotLeaderError`); returns the members."""
        return self._membership("add", node_id, raft=raft, client=client, timeout_s=timeout_s)

    def remove_node(self, node_id: int, *, timeout_s: float = MEMBERSHIP_TIMEOUT_S
                    ) -> dict[str, Any]:
        """Remove node ``node_id`` from the cluster (a dead one too); on the leader."""
        return self._membership("remove", node_id, timeout_s=timeout_s)

    def transfer_leader(self, node_id: int, *, timeout_s: float = MEMBERSHIP_TIMEOUT_S
                        ) -> dict[str, Any]:
        """Hand leadership to voter ``node_id``; on the leader."""
        return self._membership("transfer", node_id, timeout_s=timeout_s)

    def members(self) -> dict[str, Any]:
        """``{"voters": [...], "learners": [...], "leader": id}`` as this node sees them."""
        return self._on_loop(self._members(), 10.0)

    async def _members(self) -> dict[str, Any]:
        return self.membership.members()

    def _membership(self, operation: str, node_id: int, *, timeout_s: float,
                    **addresses: Any) -> dict[str, Any]:
        return self._on_loop(self.membership.run(operation, node_id, timeout_s=timeout_s,
                                                 **addresses), timeout_s + 10)

    def _on_loop(self, coroutine, timeout_s: float) -> Any:
        if self._thread is None:
            coroutine.close()
            raise ReplicatorStoppedError("the replicator is stopped")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        status = self.status()
        status.update(backend="raft", submitted=self.submitted,
                      last_applied=self.state_machine.last_applied)
        return status

    def status(self) -> dict[str, Any]:
        """The node's role, term, indexes, log size and peers' progress."""
        if self._thread is None:
            return {"node": self.node_id, "role": "stopped"}
        future = asyncio.run_coroutine_threadsafe(self._status(), self._loop)
        return future.result()

    async def _status(self) -> dict[str, Any]:
        return self.node.status()

    def wait_for_leader(self, timeout_s: float = 10.0) -> int:
        """Block until a leader is known; returns its id."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.status().get("leader", 0)
            if leader:
                return leader
            time.sleep(0.01)
        raise RequestTimeoutError(f"no leader within {timeout_s} s")

    def __repr__(self) -> str:
        return f"<RaftReplicator node {self.node_id} of {self.config.cluster_id!r}>"
