"""The node driver: a Raft core wired to its log, its state machine and a transport.

:class:`Node` does no I/O of its own and owns no timer, thread or event
loop (sans I/O): whoever runs it calls

* ``tick()`` every ``tick_s`` (the core's unit of time);
* ``receive(source, frame)`` for every frame the transport delivers (a frame
  that does not decode is counted and dropped, the node keeps serving);
* ``turn()`` soon after ``wake()`` was called -- the node calls the ``wake``
  it was given whenever it has work (a message stepped, a tick, a proposal);

and the node calls ``transport.send(target, payload)`` (which never blocks)
and its clock (``clock()``, seconds) for the statistics. A turn does the
work in the order the core's ``Ready`` contract fixes: persist (one fence),
send, apply (one pool transaction per batch), advance; nothing can touch
the core in between, since a turn runs to its end.

:class:`RaftNode` is the asyncio adapter that the servers use: it ticks with
``loop.call_later``, turns from a task woken by an event, and offers futures.
The whole-replica simulator (:mod:`blizzard.sim`) is another
runner: virtual time, a simulated network, crashes at any fence.

Proposals and reads from this process are queued and handed to the core in
batches at the next turn -- many concurrent writers share one
AppendEntries round and one fence. A proposal is settled when its entry is
applied here, recognised by the (client id, seq) of its session envelope; a
proposal lost to a leader change is retried by its requester with the same
envelope (the session table makes the retry harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

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

#: ``callback(key, result, error)``: the outcome of a submitted entry.
Settled = Callable[[tuple[int, int], Any, BaseException | None], None]
#: ``callback(error)``: a read barrier passed (``error`` None) or failed.
ReadDone = Callable[[BaseException | None], None]


class NotLeaderError(ProposalDroppedError):
    """No leader is known right now; retry shortly."""


class Sender(Protocol):
    """What a node needs of a transport: a send that never blocks (and may drop)."""

    def send(self, target: int, payload: bytes) -> bool: ...


class Node:
    """One member of a Raft cluster, driven from outside (see the module docstring).

    ``storage`` is the persistent log (``PmemStorage``), ``state_machine``
    applies committed entries (normally a ``SessionStateMachine``),
    ``transport`` carries frames (only its ``send`` is used here).
    """

    def __init__(self, node_id: int, *, storage, state_machine: StateMachine,
                 transport: Sender, wake: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 0.01,
                 election_tick: int = 10, heartbeat_tick: int = 1,
                 snapshot_entries: int = SNAPSHOT_ENTRIES_DEFAULT,
                 apply_lock: Any = None, seed: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.node_id = node_id
        self.storage = storage
        self.state_machine = state_machine
        self.transport = transport
        self.wake: Callable[[], None] = wake or (lambda: None)
        self.clock = clock
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
        core_config = Config(id=node_id, election_tick=election_tick,
                             heartbeat_tick=heartbeat_tick, applied=applied, **(config or {}))
        self.raft = Raft(core_config, storage,
                         random.Random(seed if seed is not None else node_id))
        self._proposals: deque[bytes] = deque()
        self._waiting: dict[tuple[int, int], Settled] = {}
        self._reads: dict[bytes, ReadDone] = {}
        self._reads_at: list[tuple[int, ReadDone]] = []
        self._read_ids = itertools.count(1)
        self.applied = applied
        self.bad_frames = 0
        self._rate_mark = (clock(), applied)
        self.ops_per_s = 0.0

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One tick of logical time (call every ``tick_s``)."""
        self.raft.tick()
        self.wake()

    def receive(self, source: int, frame: bytes) -> None:
        """A frame from node ``source`` (the transport's receiver)."""
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
        self.wake()

    def submit(self, data: bytes, callback: Settled) -> None:
        """Queue an enveloped entry; ``callback(key, result, error)`` runs when it is
        applied here (``error`` None), or when the proposal is dropped for want of
        a leader (``error`` a :class:`NotLeaderError`). Resubmitting the same
        envelope replaces the callback."""
        key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
        if len(self._proposals) >= PENDING_PROPOSALS_MAX:
            raise ProposalDroppedError("too many pending proposals")
        self._waiting[key] = callback
        self._proposals.append(data)
        self.wake()

    def forget(self, key: tuple[int, int]) -> None:
        """Stop waiting for the entry of ``key`` (its requester gave up)."""
        self._waiting.pop(key, None)

    def read(self, callback: ReadDone) -> None:
        """``callback(None)`` once this node has applied everything committed
        before the call; ``callback(error)`` if no leader is known."""
        context = next(self._read_ids).to_bytes(8, "little") + self.node_id.to_bytes(8, "little")
        try:
            self.raft.read_index(context)
        except ProposalDroppedError as exc:
            callback(NotLeaderError(str(exc)))
            return
        self._reads[context] = callback
        self.wake()

    def fail_pending(self, error: BaseException) -> None:
        """Answer every waiting proposal and read with ``error`` (the node stops)."""
        waiting, self._waiting = self._waiting, {}
        for key, callback in waiting.items():
            callback(key, None, error)
        reads = [*self._reads.values(), *(done for _, done in self._reads_at)]
        self._reads, self._reads_at = {}, []
        for done in reads:
            done(error)

    # -- a turn ---------------------------------------------------------------------------

    def turn(self) -> None:
        """Do the work pending: hand queued proposals to the core, then carry out
        every Ready (persist, send, apply, advance)."""
        raft = self.raft
        if self._proposals:
            batch = [self._proposals.popleft()
                     for _ in range(min(len(self._proposals), PROPOSALS_PER_TURN_MAX))]
            try:
                raft.propose_batch(batch)
            except ProposalDroppedError as exc:
                self._fail(batch, exc)
            if self._proposals:
                self.wake()
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
            callback = self._waiting.pop(key, None)
            if callback is not None:
                callback(key, None, error)

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
                        callback = waiting.pop(key, None)
                        if callback is not None:
                            callback(key, result, None)
            self.applied = committed[-1].index
        for state in rd.read_states:
            done = self._reads.pop(state.context, None)
            if done is not None:
                self._reads_at.append((state.index, done))
        if self._reads_at:
            applied = self.applied
            ready = [done for index, done in self._reads_at if index <= applied]
            if ready:
                self._reads_at = [(i, d) for i, d in self._reads_at if i > applied]
                for done in ready:
                    done(None)

    def _maybe_compact(self) -> None:
        storage = self.storage
        if self.applied - storage.first_index() + 1 <= self.snapshot_entries:
            return
        index = min(self.applied, storage.last_index())
        self.raft.compact(index, self.state_machine.snapshot())

    # -- inspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Role, term, indexes, log size, followers' progress, recent ops/s."""
        raft = self.raft
        now = self.clock()
        mark_time, mark_applied = self._rate_mark
        if now - mark_time >= 1.0:
            self.ops_per_s = (self.applied - mark_applied) / (now - mark_time)
            self._rate_mark = (now, self.applied)
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
            "bad_frames": self.bad_frames,
        }
        if raft.role == Role.LEADER:
            status["match"] = {pid: pr.match for pid, pr in raft.prs.items()}
        return status


class RaftNode(Node):
    """A :class:`Node` run by the current asyncio loop, over an asyncio transport.

    ``start()`` starts the transport, a ticker (``loop.call_later``) and the
    task that turns the node whenever it is woken; ``propose`` and
    ``read_barrier`` return futures.
    """

    def __init__(self, node_id: int, *, transport: Transport, **kwargs: Any) -> None:
        super().__init__(node_id, transport=transport, **kwargs)
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._running = False
        self._futures: dict[tuple[int, int], asyncio.Future] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.wake = self._event.set
        self._running = True
        self.transport.set_receiver(self.receive)
        await self.transport.start()
        self._ticker = loop.call_later(self.tick_s, self._tick)
        self._task = loop.create_task(self._loop())

    async def stop(self) -> None:
        self._running = False
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            self._event.set()
            await self._task
        await self.transport.stop()
        self.fail_pending(ProposalDroppedError("the node stopped"))

    def _tick(self) -> None:
        if not self._running:
            return
        self.tick()
        self._ticker = asyncio.get_running_loop().call_later(self.tick_s, self._tick)

    async def _loop(self) -> None:
        event = self._event
        while self._running:
            await event.wait()
            event.clear()
            try:
                self.turn()
            except Exception:
                log.exception("node %d: error while processing a Ready", self.node_id)
                raise

    def propose(self, data: bytes) -> asyncio.Future:
        """Queue an enveloped entry; the future resolves with its apply result.

        Resubmitting the same envelope (a retry) reuses the pending future.
        """
        key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
        future = self._futures.get(key)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self._futures[key] = future
        self.submit(data, self._settle_future)
        return future

    def _settle_future(self, key: tuple[int, int], result: Any,
                       error: BaseException | None) -> None:
        future = self._futures.pop(key, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def read_barrier(self) -> asyncio.Future:
        """Resolves once this node has applied everything committed before the call."""
        future = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)

        self.read(done)
        return future
