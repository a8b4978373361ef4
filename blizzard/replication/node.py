"""The node driver: a Raft core wired to its log, its state machine and a transport.

:class:`Node` does no I/O of its own and owns no timer, thread or event
loop (sans I/O): whoever runs it calls

* ``tick()`` every ``tick_s`` (the core's unit of time);
* ``receive(source, frame)`` for every frame the transport delivers (a frame
  that does not decode is counted and dropped, the node keeps serving);
* ``turn()`` soon after ``wake()`` was called -- the node calls the ``wake``
  it was given whenever it has work (a message stepped, a tick, a proposal);

and the node calls ``transport.send(target, payload)`` (which never blocks;
or ``send_parts``, which sends a leader's entries from its log, see
``_send``) and its clock (``clock()``, seconds) for the statistics. A turn does the
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
applied here, recognised by the (client id, seq) of its session envelope.
When a new leader becomes known, every entry still waiting is proposed
again at once, since the old leader may have taken it down with it; the
requester's own retry with the same envelope remains for frames lost
otherwise. The session table applies an envelope proposed twice once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import random
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from blizzard.exceptions import (
    MessageDecodeError,
    NotLeaderError,
    ProposalDroppedError,
    SnapshotInstallError,
)
from blizzard.replication._settle import batch_of, settle
from blizzard.replication.base import StateMachine
from blizzard.replication.copies import Copies
from blizzard.replication.raft import messages
from blizzard.replication.raft.core import Config, Raft, Role
from blizzard.replication.raft.messages import (
    NONE,
    ConfChange,
    ConfState,
    MsgApp,
    MsgProp,
    MsgSnap,
    SnapshotMeta,
)
from blizzard.replication.sessions import ENVELOPE
from blizzard.replication.snapshots import (
    SEND_BYTES_PER_TURN,
    ImageJob,
    ImageReceiver,
    StateImages,
    is_stream_frame,
)
from blizzard.replication.transport.base import Transport

log = logging.getLogger("blizzard.node")

# Bounded so one turn (persist + send + apply) stays well inside an election
# timeout even on a busy machine.
PROPOSALS_PER_TURN_MAX = 512
PENDING_PROPOSALS_MAX = 100_000
FORWARDED_KEYS_MAX = 1 << 20  # forwarded keys a leader remembers in a term (_step_forwarded)
SNAPSHOT_ENTRIES_DEFAULT = 100_000
SNAPSHOT_TAIL_ENTRIES_DEFAULT = 5_000  # as etcd's snapshot catch-up entries

_data_of = operator.itemgetter(3)  # Entry.data
_LEADER = Role.LEADER  # roles are singletons: compared with ``is`` on the hot paths
_FOLLOWER = Role.FOLLOWER

#: ``callback(key, result, error)``: the outcome of a submitted entry.
Settled = Callable[[tuple[int, int], Any, BaseException | None], None]
#: ``callback(error)``: a read barrier passed (``error`` None) or failed.
ReadDone = Callable[[BaseException | None], None]
#: ``callback(change, conf_state)``: a membership change was applied here.
ConfChanged = Callable[[ConfChange, ConfState], None]


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
                 snapshot_tail_entries: int = SNAPSHOT_TAIL_ENTRIES_DEFAULT,
                 images: StateImages | None = None,
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
        self.snapshot_tail_entries = snapshot_tail_entries
        self.images = images
        self._apply_lock = apply_lock if apply_lock is not None else contextlib.nullcontext()
        applied = state_machine.last_applied
        snapshot = storage.snapshot()
        if applied < snapshot.meta.index:
            # A crash between installing a snapshot in the log and in the
            # state machine: finish the job.
            self._restore(snapshot)
            applied = state_machine.last_applied
        hard_state, _ = storage.initial_state()
        applied = min(applied, hard_state.commit)  # never ahead of what the log vouches for
        applied = max(applied, storage.first_index() - 1)
        # a node's commits reach its followers lazily (see Config.lazy_commit_notice)
        core_config = Config(id=node_id, election_tick=election_tick,
                             heartbeat_tick=heartbeat_tick, applied=applied,
                             **{"lazy_commit_notice": True, **(config or {})})
        self.raft = Raft(core_config, storage,
                         random.Random(seed if seed is not None else node_id))
        self._proposals: deque[bytes] = deque()
        # key -> (callback, entry): the entry is proposed again if the leader changes
        self._waiting: dict[tuple[int, int], tuple[Settled, bytes]] = {}
        self._leader = NONE  # the leader the waiting entries were last proposed to
        self._leader_term = 0  # ...in this term
        self._reads: dict[bytes, ReadDone] = {}
        self._reads_at: list[tuple[int, ReadDone]] = []
        self._read_ids = itertools.count(1)
        self.applied = applied
        self.bad_frames = 0
        #: Called (on the node's loop) for every membership change applied here.
        self.on_conf_change: ConfChanged | None = None
        self._conf_waiting: dict[int, tuple[bytes, ReadDone]] = {}  # index -> (entry, callback)
        self.reproposed = 0  # entries proposed again after a leader change
        self.resubmits_held = 0  # resubmissions a leader already held (see submit)
        self.forwards_held = 0  # forwarded entries a leader already held (_step_forwarded)
        self._led: set[tuple[int, int]] = set()  # waiting keys the leader sent back (_note_led)
        # keys of the entries followers forwarded that this leader appended in
        # ``_forwarded_term`` (see _hold_forwarded)
        self._forwarded: dict[tuple[int, int], None] = {}
        self._forwarded_term = 0
        self._image_job: ImageJob | None = None  # the leader's image for lagging followers
        self._receiver = ImageReceiver(node_id, images) if images is not None else None
        self.snapshots_sent = 0
        self.snapshots_installed = 0
        self._rate_mark = (clock(), applied)
        self.ops_per_s = 0.0
        self._cpu_mark = (time.monotonic(), time.process_time())
        self.cpu_percent = 0.0
        #: Payload bytes copied on their way from the network to the structures
        #: (see :mod:`blizzard.replication.copies`); the log and the state
        #: machine add their own stages when they can count.
        self.copies = Copies()
        self.received_in_place = 0  # entries the transport received straight into the log
        for part in (storage, state_machine):
            count_copies = getattr(part, "count_copies", None)
            if count_copies is not None:
                count_copies(self.copies)

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One tick of logical time (call every ``tick_s``)."""
        self.raft.tick()
        self.wake()

    def receive(self, source: int, frame: bytes) -> None:
        """A frame from node ``source`` (the transport's receiver)."""
        if self._receiver is not None and is_stream_frame(frame):
            msg = self._receiver.receive(source, frame)
            if msg is not None:  # a complete image: the core takes it as a snapshot...
                self.raft.step(msg)
                if self.raft.log.pending_snapshot is None:
                    # ...unless it needs none by now (it caught up meanwhile, or the
                    # image is of an older leader): the image goes, nothing waits on it
                    self.images.discard()
                self.wake()
            return
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
        cls = type(msg)
        if cls is MsgApp or cls is MsgProp:  # decoding cut the entries' data out of the frame
            self.copies.counts["frame_to_entries"] += sum(map(len, map(_data_of, msg.entries)))
            if cls is MsgProp and self.raft.role is _LEADER:
                self._step_forwarded(msg)
                self.wake()
                return
        self.raft.step(msg)
        if cls is MsgApp and self._waiting:
            self._note_led(msg)
        self.wake()

    # -- receiving entries straight into the log -------------------------------------------
    #
    # A transport that can receive a frame's tail into memory it is handed asks
    # the node (its region sink) where: ``reserve_region`` looks at a MsgApp's
    # fixed part and, when its entries would go exactly at the end of the log
    # (this node follows that leader in that term, and its log ends at the
    # entry they follow, durably or received in place), hands out the log's own free
    # space; the transport receives the records there and calls
    # ``region_received``. Every other frame, and a MsgApp the log cannot take
    # where it lies, arrives as bytes through ``receive``.

    head_bytes = messages.APP_HEAD_BYTES

    def wants_regions(self, source: int) -> bool:
        """Whether frames from ``source`` may be received into the log: it leads
        this follower, whose log can take entries in place. Otherwise the
        transport reads whole bursts of frames at once (a leader's answers)."""
        raft = self.raft
        return (raft.lead == source and raft.role is _FOLLOWER
                and hasattr(self.storage, "tail_region"))

    def reserve_region(self, source: int, head: bytes, length: int) -> memoryview | None:
        """Where to receive the ``length`` bytes that follow ``head`` (the frame's
        first :attr:`head_bytes`), or None: deliver the whole frame to ``receive``."""
        tail_region = getattr(self.storage, "tail_region", None)
        fields = messages.decode_app_head(head) if tail_region is not None else None
        if fields is None:
            return None
        msg_source, target, term, log_term, index, _, count = fields
        raft = self.raft
        if (msg_source != source or target != self.node_id or not count
                or term != raft.term or raft.lead != source or raft.role is not _FOLLOWER
                or raft.log.pending_snapshot is not None or raft.log.last_index() != index):
            return None
        # the log checks its own end: the last record, or the last received in place
        return tail_region(index + 1, log_term, length)

    def region_received(self, source: int, head: bytes, region: memoryview) -> None:
        """The records of the MsgApp ``head`` arrived in ``region`` (from
        :meth:`reserve_region`): step it with the entries they hold."""
        _, target, term, log_term, index, commit, count = messages.decode_app_head(head)
        try:
            entries = self.storage.received_entries(region, count)
        except MessageDecodeError as exc:
            self.bad_frames += 1
            log.warning("node %d dropped entries received in place from node %d: %s",
                        self.node_id, source, exc)
            return
        self.received_in_place += len(entries)
        # each entry's data was cut from its record, which stays where it landed
        self.copies.counts["frame_to_entries"] += sum(map(len, map(_data_of, entries)))
        msg = MsgApp(source, target, term, log_term, index, tuple(entries), commit)
        self.raft.step(msg)
        if self._waiting:
            self._note_led(msg)
        self.wake()

    def _note_led(self, msg: MsgApp) -> None:
        """Remember which entries waiting here the leader of this term sent: it
        holds them, so they commit unless the term ends (see ``submit``)."""
        raft = self.raft
        if msg.term != raft.term or raft.lead != msg.source:
            return
        waiting = self._waiting
        led = self._led
        unpack = ENVELOPE.unpack_from
        size = ENVELOPE.size
        for entry in msg.entries:
            data = entry.data
            if len(data) >= size:
                key = tuple(unpack(data, 0)[1:])
                if key in waiting:
                    led.add(key)

    def _step_forwarded(self, msg: MsgProp) -> None:
        """Append the entries a follower forwarded, but those this leader already
        appended in its term (the follower's requester retried: see ``submit``).

        A follower cannot know whether its forward arrived, so it forwards a
        retry again; the leader can. What it appended in its term commits
        unless the term ends, and then every follower proposes its waiting
        entries again. Keys are remembered once the core took them, until
        the leader applies them: a key forwarded after that (the same request
        sent to another node, whose waiter needs an entry applied after it
        arrived) is appended again, and the session table answers it. A
        follower that applied the entry before this leader did and forwards
        the key anew meanwhile is held once, then its retry goes through.
        """
        raft = self.raft
        forwarded = self._forwarded
        if self._forwarded_term != raft.term or len(forwarded) > FORWARDED_KEYS_MAX:
            forwarded.clear()  # forgetting only lets a duplicate through
            self._forwarded_term = raft.term
        unpack = ENVELOPE.unpack_from
        fresh: list = []
        keys: dict[tuple[int, int], None] = {}
        for entry in msg.entries:
            try:
                key = tuple(unpack(entry.data, 0)[1:])
            except struct.error:  # not enveloped: the core and the state machine judge it
                fresh.append(entry)
                continue
            if key in forwarded or key in keys:
                self.forwards_held += 1
                continue
            fresh.append(entry)
            keys[key] = None
        if not fresh:
            return
        if len(fresh) < len(msg.entries):
            msg = MsgProp(msg.source, msg.target, msg.term, tuple(fresh))
        before = raft.log.last_index()
        raft.step(msg)
        if (raft.role is _LEADER and raft.term == self._forwarded_term
                and raft.log.last_index() - before == len(fresh)):
            forwarded.update(keys)

    def submit(self, data: bytes, callback: Settled,
               key: tuple[int, int] | None = None) -> None:
        """Queue an enveloped entry; ``callback(key, result, error)`` runs when it is
        applied here (``error`` None), or when the proposal is dropped for want of
        a leader (``error`` a :class:`NotLeaderError`). Resubmitting the same
        envelope replaces the callback; on a leader whose term has not changed
        since the first submission, that is all it does. ``key``, the envelope's
        ``(client id, seq)``, saves reading it again when the caller has it.

        A requester retries an entry that takes long to apply, not knowing
        why. A leader holds (or has queued) every entry still waiting here in
        its current term: each is proposed again as soon as the leader or the
        term changes (``_leader_changed``), so another copy in its log would
        only be replicated, persisted and recognised as a duplicate on every
        node -- work that, under load, makes the next retries come sooner.
        A follower knows as much of the entries the leader of this term sent
        it (``_note_led``); any other retry is forwarded again, since a
        forward can be lost (a dropped connection, a leader refusing
        proposals) while the leader and term stay.
        """
        if key is None:
            key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
        if len(self._proposals) >= PENDING_PROPOSALS_MAX:
            raise ProposalDroppedError("too many pending proposals")
        waiting = self._waiting
        held = key in waiting
        waiting[key] = (callback, data)
        raft = self.raft
        if (held and self._leader_term == raft.term and self._leader == raft.lead != NONE
                and (raft.role is _LEADER or key in self._led)):
            self.resubmits_held += 1
            return
        proposals = self._proposals
        proposals.append(data)
        if len(proposals) == 1:  # else a wake is pending: every append to an empty queue wakes
            self.wake()

    def forget(self, key: tuple[int, int]) -> None:
        """Stop waiting for the entry of ``key`` (its requester gave up)."""
        self._waiting.pop(key, None)
        self._led.discard(key)

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

    def propose_conf_change(self, change: ConfChange, callback: ReadDone) -> None:
        """Propose a membership change; this node must lead. ``callback(None)``
        once it is applied here, ``callback(error)`` if another entry took its
        index (a leader change). Raises :class:`NotLeaderError` elsewhere,
        ``ProposalDroppedError`` while another change is pending."""
        raft = self.raft
        if raft.role != Role.LEADER:
            raise NotLeaderError(f"node {self.node_id} does not lead (leader: {raft.lead})")
        raft.propose_conf_change(change)
        self._conf_waiting[raft.log.last_index()] = (change.encode(), callback)
        self.wake()

    def transfer_leadership(self, target: int) -> None:
        """Ask the core to hand leadership to ``target`` (this node must lead)."""
        if self.raft.role != Role.LEADER:
            raise NotLeaderError(f"node {self.node_id} does not lead (leader: {self.raft.lead})")
        self.raft.transfer_leadership(target)
        self.wake()

    def fail_pending(self, error: BaseException) -> None:
        """Answer every waiting proposal and read with ``error`` (the node stops)."""
        waiting, self._waiting = self._waiting, {}
        self._led.clear()
        for key, (callback, _) in waiting.items():
            callback(key, None, error)
        reads = [*self._reads.values(), *(done for _, done in self._reads_at),
                 *(done for _, done in self._conf_waiting.values())]
        self._reads, self._reads_at, self._conf_waiting = {}, [], {}
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
            if rd.messages:
                self._send(rd.messages)
            self._apply(rd)
            raft.advance(rd)
        if raft.lead != self._leader or raft.term != self._leader_term:
            self._leader_changed(raft.lead)
        if self._image_job is not None:
            self._image_work()
        self._maybe_compact()

    # -- sending ------------------------------------------------------------------------------
    #
    # A MsgApp's entries are already in this node's log when it is sent (a turn
    # persists before it sends), laid out there exactly as the frame carries
    # them. Over a transport that takes a frame as parts (``send_parts``) and
    # a log that lends views of its records (``record_views``), the frame is
    # its fixed part followed by those views: no entry byte is copied into a
    # frame here. The views live only for the call: ``send_parts`` promises to
    # keep no reference to the parts once it returns (it copies, and counts,
    # whatever it could not send at once), and they are released before this
    # turn goes on to apply, advance or compact, so neither a compaction
    # freeing their segments, a truncation after stepping down, nor a pool
    # closing can change bytes a send still refers to. Every other message,
    # and every message over a transport without ``send_parts``, is encoded
    # whole: its entries' data copied into the frame, counted as
    # ``entries_to_frame``. (TLS joins the parts, DPDK gathers them into its
    # mbufs: those transports count that copy themselves.)

    def _send(self, msgs) -> None:
        transport = self.transport
        send = transport.send
        send_parts = getattr(transport, "send_parts", None)
        record_views = getattr(self.storage, "record_views", None) if send_parts else None
        encode = messages.encode
        counts = self.copies.counts
        for msg in msgs:
            cls = type(msg)
            if cls is MsgApp and msg.entries:
                views = record_views(msg.entries) if record_views is not None else None
                if views is not None:
                    try:
                        send_parts(msg.target, [messages.encode_app_head(msg), *views])
                    finally:
                        for view in views:
                            view.release()
                    continue
                counts["entries_to_frame"] += sum(map(len, map(_data_of, msg.entries)))
            elif cls is MsgSnap and not msg.snapshot.data and self.images is not None:
                self._image_for(msg.target)  # a data-less snapshot: send an image instead
                continue
            elif cls is MsgProp:
                counts["entries_to_frame"] += sum(map(len, map(_data_of, msg.entries)))
            send(msg.target, encode(msg))

    # -- images for lagging followers (see blizzard.replication.snapshots) ----------------

    def _image_for(self, target: int) -> None:
        if self._image_job is None:
            self._image_job = ImageJob(self.images.pool)
        self._image_job.add_target(target)

    def _image_work(self) -> None:
        """One slice of copying, or of sending; between Readys, so the pool is quiet."""
        job = self._image_job
        raft = self.raft
        if raft.role is not _LEADER:
            job.close()  # only a leader sends snapshots; the next one makes its own
            self._image_job = None
            return
        if not job.finished:
            if job.step():
                index = self.applied
                meta = SnapshotMeta(index, raft.log.term(index), raft.conf_state_at(index))
                job.finish(meta, raft.term)
            self.wake()
            return
        send = self.transport.send
        budget = SEND_BYTES_PER_TURN
        for target, sender in list(job.senders.items()):
            if target not in raft.prs:
                del job.senders[target]  # removed from the cluster meanwhile
                continue
            budget -= sender.pump(send, max(budget, 0))
            if sender.done:
                del job.senders[target]
                self.snapshots_sent += 1
        if job.senders:
            if budget < SEND_BYTES_PER_TURN:
                self.wake()
            # else the transport refused every frame (a full outbox, a peer not
            # connected yet): the next tick tries again, rather than spinning
        else:
            job.close()
            self._image_job = None

    def _leader_changed(self, leader: int) -> None:
        """A new leader, or a new term, is known: propose every waiting entry
        again, now.

        An entry forwarded to (or appended by) the old leader may be lost
        with it; waiting for the requester to time out would stall writes
        for that long after every election. The same envelope proposed
        twice is applied once (the session table), so there is no harm in
        proposing what the new leader may already hold.
        """
        self._leader = leader
        self._leader_term = self.raft.term
        self._led.clear()  # what the old leader held may be lost
        if self._reads:
            # ReadIndex requests sent to the old leader may never be answered
            reads, self._reads = self._reads, {}
            error = NotLeaderError("the leader changed before the read was confirmed")
            for done in reads.values():
                done(error)
        if leader == NONE or not self._waiting:
            return
        queued = set(self._proposals)
        again = [data for _, data in self._waiting.values() if data not in queued]
        self._proposals.extend(again)
        self.reproposed += len(again)
        self.wake()

    def _fail(self, batch: Sequence[bytes], exc: Exception) -> None:
        error = NotLeaderError(str(exc))
        for data in batch:
            key = tuple(ENVELOPE.unpack_from(data, 0)[1:])
            waiter = self._waiting.pop(key, None)
            if waiter is not None:
                waiter[0](key, None, error)

    def _persist(self, rd) -> None:
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None or rd.entries:
            self.storage.save(rd.hard_state, rd.entries)

    def _apply(self, rd) -> None:
        with self._apply_lock:
            self._apply_locked(rd)

    def _restore(self, snapshot) -> None:
        """Replace the state machine by ``snapshot``: its data, or the image
        received for it (a data-less snapshot)."""
        if snapshot.data or self.images is None:
            self.state_machine.restore(snapshot.data)
            return
        self.images.install(snapshot.meta.index)
        if self.state_machine.last_applied < snapshot.meta.index:
            raise SnapshotInstallError(
                f"the image installed for index {snapshot.meta.index} holds only "
                f"{self.state_machine.last_applied}")
        self.snapshots_installed += 1

    def _apply_locked(self, rd) -> None:
        if rd.snapshot is not None:
            self._restore(rd.snapshot)
            self.applied = rd.snapshot.meta.index
            self._led.clear()  # entries applied by the image settle no waiter here...
            if self._waiting:
                self._settle_restored()  # ...but the session table knows their results
        committed = rd.committed_entries
        if committed:
            normal = messages.EntryType.NORMAL
            batch = batch_of(committed, normal)
            results = self.state_machine.apply(batch)
            if self._waiting or self._forwarded:
                settle(batch, results, self._waiting, self._forwarded, self._led)
            self.applied = committed[-1].index
            if self.on_conf_change is not None or self._conf_waiting:
                for entry in committed:
                    if entry.type != normal:
                        self._conf_applied(entry)
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

    def _settle_restored(self) -> None:
        """Answer the waiting requests that a snapshot applied: their entries
        reached this node inside it, so no apply here settles them, and their
        requesters would wait for a retry to be answered from the session table.
        Ask the table now (a state machine without one leaves them waiting)."""
        outcome = getattr(self.state_machine, "outcome", None)
        if outcome is None:
            return
        for key in list(self._waiting):
            applied, result = outcome(*key)
            if applied:
                self._forwarded.pop(key, None)
                callback = self._waiting.pop(key)[0]
                callback(key, result, None)

    def _conf_applied(self, entry) -> None:
        waiting = self._conf_waiting.pop(entry.index, None)
        if waiting is not None:
            data, done = waiting
            done(None if data == entry.data else ProposalDroppedError(
                "the membership change lost its place in the log to a new leader's entry"))
        if self.on_conf_change is not None:
            raft = self.raft
            self.on_conf_change(ConfChange.decode(entry.data),
                                ConfState(tuple(sorted(raft.voters)), tuple(sorted(raft.learners))))

    def _maybe_compact(self) -> None:
        """Forget applied entries once there are more than ``snapshot_entries``
        of them, keeping the last ``snapshot_tail_entries`` (a follower briefly
        away catches up from those, without a snapshot).

        With ``images``, the state machine's pool is its own snapshot: the log
        records only the index, term and membership (nothing is copied: O(1)
        but for freeing segments); a follower that needs more gets an image.
        Without, the snapshot holds ``state_machine.snapshot()``, a copy of the
        state as applied now, so it is taken at the applied index (no tail).
        """
        storage = self.storage
        first = storage.first_index()
        if self.images is None:  # the snapshot's data is the state now: no tail
            if self.applied - first + 1 > self.snapshot_entries:
                index = min(self.applied, storage.last_index())
                self.raft.compact(index, self.state_machine.snapshot())
            return
        if self.applied - first + 1 <= self.snapshot_entries + self.snapshot_tail_entries:
            return
        index = min(self.applied - self.snapshot_tail_entries, storage.last_index())
        if self._image_job is not None and self._image_job.finished:
            index = min(index, self._image_job.meta.index)  # its followers go on from there
        if index >= first:
            self.raft.compact(index, b"")

    # -- inspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Role, term, indexes, log size, followers' progress, recent ops/s, the
        CPU this node's process used (percent of one core, over the time since
        the previous call, at least a second), and the transport's own status."""
        raft = self.raft
        now = self.clock()
        mark_time, mark_applied = self._rate_mark
        if now - mark_time >= 1.0:
            self.ops_per_s = (self.applied - mark_applied) / (now - mark_time)
            self._rate_mark = (now, self.applied)
        # CPU against real time (the injected clock may be a simulated one)
        wall = time.monotonic()
        mark_time, mark_cpu = self._cpu_mark
        if wall - mark_time >= 1.0:
            cpu = time.process_time()
            self.cpu_percent = 100.0 * (cpu - mark_cpu) / (wall - mark_time)
            self._cpu_mark = (wall, cpu)
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
            "received_in_place": self.received_in_place,
            "reproposed": self.reproposed,
            "resubmits_held": self.resubmits_held,
            "forwards_held": self.forwards_held,
            "snapshots_sent": self.snapshots_sent,
            "snapshots_installed": self.snapshots_installed,
            "snapshots_refused": self._receiver.installs_refused if self._receiver else 0,
            "snapshot_error": self._receiver.last_error if self._receiver else None,
            "voters": sorted(raft.voters),
            "learners": sorted(raft.learners),
        }
        copies = self.copies.snapshot()
        stats = getattr(self.transport, "stats", None)
        if stats is not None:  # a bare Sender (the simulator's) has none
            copies["socket_to_buffer"] += stats.bytes_copied
            copies["entries_to_frame"] += getattr(stats, "bytes_copied_sending", 0)
        status["copies"] = copies
        transport_status = getattr(self.transport, "status", None)
        if transport_status is not None:  # a bare Sender (the simulator's) has none
            status["transport"] = transport_status()
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
        set_region_sink = getattr(self.transport, "set_region_sink", None)
        if set_region_sink is not None:  # it can receive entries straight into the log
            set_region_sink(self)
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
        if self._image_job is not None:
            self._image_job.close()
            self._image_job = None

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
            if event.is_set():
                # The turn woke the node again (an image being copied or sent):
                # ``wait()`` on a set event returns without yielding, and the
                # transport's reads, its dials and the client server would starve.
                await asyncio.sleep(0)

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
