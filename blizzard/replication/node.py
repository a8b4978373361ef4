"""RaftNode: drives a Raft core on an asyncio loop.

The core decides; this module does the I/O, in the order the ``Ready``
contract fixes: persist (one fence), send, apply (one pool transaction per
batch), advance. Everything between ``ready()`` and ``advance()`` is
synchronous, so nothing else can touch the core in between.

What comes in:

* ticks, every ``tick_s`` seconds;
* frames from the transport (a frame that does not decode is counted and
  dropped, the node keeps serving);
* proposals and read requests from this process, queued and handed to the
  core in batches at the next turn of the loop -- many concurrent writers
  share one AppendEntries round and one fence.

A proposal's future resolves when its entry is applied here, recognised by
the (client id, seq) of its session envelope; a proposal lost to a leader
change times out at the caller, who retries with the same envelope (the
session table makes the retry harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from blizzard.exceptions import MessageDecodeError, ProposalDroppedError
from blizzard.replication.base import StateMachine
from blizzard.replication.raft import messages
from blizzard.replication.raft.core import Config, Raft, Role
from blizzard.replication.sessions import ENVELOPE
from blizzard.replication.transport.base import Transport

log = logging.getLogger("blizzard.node")

# Bounded so one turn (persist + send + apply) stays well inside an election
# timeout even on a busy machine.
PROPOSALS_PER_TURN_MAX = 512
PENDING_PROPOSALS_MAX = 100_000
SNAPSHOT_ENTRIES_DEFAULT = 100_000


class NotLeaderError(ProposalDroppedError):
    """No leader is known right now; retry shortly."""


def _settle(waiter, key: tuple[int, int], result: Any, error: BaseException | None) -> None:
    """Deliver an outcome to a future (``propose``) or a ``(callback,)`` (``submit``)."""
    if waiter is None:
        return
    if type(waiter) is tuple:
        waiter[0](key, result, error)
    elif not waiter.done():
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)


class RaftNode:
    """One member of a Raft cluster, running on the current asyncio loop.

    ``storage`` is the persistent log (``PmemStorage``), ``state_machine``
    applies committed entries (normally a ``SessionStateMachine``).
    """

    def __init__(self, node_id: int, *, storage, state_machine: StateMachine,
                 transport: Transport, tick_s: float = 0.01, election_tick: int = 10,
                 heartbeat_tick: int = 1, snapshot_entries: int = SNAPSHOT_ENTRIES_DEFAULT,
                 apply_lock: Any = None, seed: int | None = None) -> None:
        self.node_id = node_id
        self.storage = storage
        self.state_machine = state_machine
        self.transport = transport
        self.tick_s = tick_s
        self.snapshot_entries = snapshot_entries
        self._apply_lock = apply_lock if apply_lock is not None else contextlib.nullcontext()
        applied = state_machine.last_applied
        snapshot = storage.snapshot()
        if applied < snapshot.meta.index:
            # A crash between installing a snapshot in the log and in the
            # state machine: finish the job.
            state_machine.restore(snapshot.data)
            applied = state_machine.last_applied
        hard_state, _ = storage.initial_state()
        applied = min(applied, hard_state.commit)  # never ahead of what the log vouches for
        applied = max(applied, storage.first_index() - 1)
        config = Config(id=node_id, election_tick=election_tick, heartbeat_tick=heartbeat_tick,
                        applied=applied)
        self.raft = Raft(config, storage, random.Random(seed if seed is not None else node_id))
        self._proposals: deque[bytes] = deque()
        self._waiting: dict[tuple[int, int], Any] = {}  # key -> Future or (callback,)
        self._reads: dict[bytes, asyncio.Future] = {}
        self._reads_at: list[tuple[int, asyncio.Future]] = []
        self._read_ids = itertools.count(1)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._running = False
        self.applied = applied
        self.bad_frames = 0
        self._rate_mark = (time.monotonic(), applied)
        self.ops_per_s = 0.0
        self._cpu_mark = (time.monotonic(), time.process_time())
        self.cpu_percent = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._running = True
        self.transport.set_receiver(self._receive)
        await self.transport.start()
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.tick_s, self._tick)
        self._task = loop.create_task(self._loop())

    async def stop(self) -> None:
        self._running = False
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            self._wake.set()
            await self._task
        await self.transport.stop()
        stopped = ProposalDroppedError("the node stopped")
        for key, waiter in list(self._waiting.items()):
            _settle(waiter, key, None, stopped)
        self._waiting.clear()
        for future in [*self._reads.values(), *(f for _, f in self._reads_at)]:
            if not future.done():
                future.set_exception(stopped)

    def _tick(self) -> None:
        if not self._running:
            return
        self.raft.tick()
        self._wake.set()
        self._ticker = asyncio.get_running_loop().call_later(self.tick_s, self._tick)

    def _receive(self, source: int, frame: bytes) -> None:
        try:
            msg = messages.decode(frame)
        except MessageDecodeError as exc:
            self.bad_frames += 1
            log.warning("node %d dropped a malformed frame from node %d: %s",
                        self.node_id, source, exc)
            return
        if msg.source != source or msg.target != self.node_id:
            self.bad_frames += 1
            log.warning("node %d dropped a frame from node %d addressed %d -> %d",
                        self.node_id, source, msg.source, msg.target)
            return
        self.raft.step(msg)
        self._wake.set()

    # -- requests ---------------------------------------------------------------------------

    def propose(self, data: bytes) -> asyncio.Future:
        """Queue an enveloped entry; the future resolves with its apply result.

        Resubmitting the same envelope (a retry) reuses the pending future.
        """
        key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
        future = self._waiting.get(key)
        if future is None or (type(future) is not tuple and future.done()):
            future = asyncio.get_running_loop().create_future()
        self._queue(key, data, future)
        return future

    def submit(self, data: bytes, callback) -> None:
        """Queue an enveloped entry; ``callback(key, result, error)`` runs on this
        loop when it is applied here (``error`` None), or when the proposal is
        dropped for want of a leader (``error`` a :class:`NotLeaderError`).

        The cheap form of :meth:`propose`: no future per entry.
        """
        key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
        self._queue(key, data, (callback,))

    def forget(self, key: tuple[int, int]) -> None:
        """Stop waiting for the entry of ``key`` (its requester gave up)."""
        self._waiting.pop(key, None)

    def _queue(self, key: tuple[int, int], data: bytes, waiter) -> None:
        if len(self._proposals) >= PENDING_PROPOSALS_MAX:
            raise ProposalDroppedError("too many pending proposals")
        self._waiting[key] = waiter
        self._proposals.append(data)
        self._wake.set()

    def read_barrier(self) -> asyncio.Future:
        """Resolves once this node has applied everything committed before the call."""
        context = next(self._read_ids).to_bytes(8, "little") + self.node_id.to_bytes(8, "little")
        future = asyncio.get_running_loop().create_future()
        try:
            self.raft.read_index(context)
        except ProposalDroppedError as exc:
            future.set_exception(NotLeaderError(str(exc)))
            return future
        self._reads[context] = future
        self._wake.set()
        return future

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        wake = self._wake
        while self._running:
            await wake.wait()
            wake.clear()
            try:
                self._turn()
            except Exception:
                log.exception("node %d: error while processing a Ready", self.node_id)
                raise

    def _turn(self) -> None:
        raft = self.raft
        if self._proposals:
            batch = [self._proposals.popleft()
                     for _ in range(min(len(self._proposals), PROPOSALS_PER_TURN_MAX))]
            try:
                raft.propose_batch(batch)
            except ProposalDroppedError as exc:
                self._fail(batch, exc)
            if self._proposals:
                self._wake.set()
        while raft.has_ready():
            rd = raft.ready()
            self._persist(rd)
            send = self.transport.send
            encode = messages.encode
            for msg in rd.messages:
                send(msg.target, encode(msg))
            self._apply(rd)
            raft.advance(rd)
        self._maybe_compact()

    def _fail(self, batch: Sequence[bytes], exc: Exception) -> None:
        error = NotLeaderError(str(exc))
        for data in batch:
            key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
            _settle(self._waiting.pop(key, None), key, None, error)

    def _persist(self, rd) -> None:
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None or rd.entries:
            self.storage.save(rd.hard_state, rd.entries)

    def _apply(self, rd) -> None:
        with self._apply_lock:
            self._apply_locked(rd)

    def _apply_locked(self, rd) -> None:
        if rd.snapshot is not None:
            self.state_machine.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
        committed = rd.committed_entries
        if committed:
            normal = messages.EntryType.NORMAL
            # Membership entries are the core's business: the state machine
            # only records that their index was applied.
            batch = [(e.index, e.data if e.type == normal else b"") for e in committed]
            results = self.state_machine.apply(batch) if batch else []
            waiting = self._waiting
            if waiting:
                unpack = ENVELOPE.unpack_from
                for (_, data), result in zip(batch, results, strict=True):
                    if data:
                        key = tuple(unpack(data, 0)[1:])
                        waiter = waiting.pop(key, None)
                        if waiter is not None:
                            _settle(waiter, key, result, None)
            self.applied = committed[-1].index
        for state in rd.read_states:
            future = self._reads.pop(state.context, None)
            if future is not None:
                self._reads_at.append((state.index, future))
        if self._reads_at:
            ready = [f for index, f in self._reads_at if index <= self.applied]
            if ready:
                self._reads_at = [(i, f) for i, f in self._reads_at if i > self.applied]
                for future in ready:
                    if not future.done():
                        future.set_result(None)

    def _maybe_compact(self) -> None:
        storage = self.storage
        if self.applied - storage.first_index() + 1 <= self.snapshot_entries:
            return
        index = min(self.applied, storage.last_index())
        self.raft.compact(index, self.state_machine.snapshot())

    # -- inspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Role, term, indexes, log size, followers' progress, recent ops/s, the
        CPU this node's process used (percent of one core, over the time since
        the previous call, at least a second), and the transport's own status."""
        raft = self.raft
        now = time.monotonic()
        mark_time, mark_applied = self._rate_mark
        if now - mark_time >= 1.0:
            self.ops_per_s = (self.applied - mark_applied) / (now - mark_time)
            self._rate_mark = (now, self.applied)
        mark_time, mark_cpu = self._cpu_mark
        if now - mark_time >= 1.0:
            cpu = time.process_time()
            self.cpu_percent = 100.0 * (cpu - mark_cpu) / (now - mark_time)
            self._cpu_mark = (now, cpu)
        status = {
            "node": self.node_id,
            "role": Role(raft.role).name.lower(),
            "term": raft.term,
            "leader": raft.lead,
            "commit": raft.log.committed,
            "applied": self.applied,
            "first_index": self.storage.first_index(),
            "last_index": self.storage.last_index(),
            "log_entries": self.storage.last_index() - self.storage.first_index() + 1,
            "ops_per_s": round(self.ops_per_s, 1),
            "cpu_percent": round(self.cpu_percent, 1),
            "cpu_s": round(time.process_time(), 3),
            "bad_frames": self.bad_frames,
            "transport": self.transport.status(),
        }
        if raft.role == Role.LEADER:
            status["match"] = {pid: pr.match for pid, pr in raft.prs.items()}
        return status
