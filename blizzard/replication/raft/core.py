"""The Raft consensus state machine: pure, deterministic, single-threaded.

Modelled on etcd's raft library. The core owns no socket, thread, clock or
random source: time advances only through ``tick()``, randomness comes from
the ``random.Random`` it is given, and everything it wants done comes back
as a ``Ready`` (see its docstring for the order the driver must follow).

Roles and their handlers: ``_become_follower`` / ``_become_pre_candidate`` /
``_become_candidate`` / ``_become_leader`` set ``self._step`` (the per-role
message handler) and ``self._tick`` (election timer or heartbeat timer).

Invariants: ``log.applied <= log.committed <= log.last_index()``; a leader's
own progress ``match`` is its *persisted* last index (advanced in
``advance()``), so the leader counts itself towards a quorum only for
entries it has made durable; only entries of the current term are committed
by counting replicas (section 5.4.2), earlier ones commit with them.

Typed Python: ``core.pxd`` makes ``Raft`` an extension type with C fields
and C-callable handlers for the entry path (propose, send, acknowledge,
commit); the same source runs interpreted.
"""

from __future__ import annotations

import enum
import operator
import random
from collections.abc import Callable, Iterable

import attrs
import cython

from blizzard.exceptions import CompactedError, ProposalDroppedError
from blizzard.replication.raft import quorum
from blizzard.replication.raft.messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgApp,
    MsgAppResp,
    MsgHeartbeat,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgProp,
    MsgReadIndex,
    MsgReadIndexResp,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
    Snapshot,
    SnapshotMeta,
    untracked_entries,
    untracked_entry,
)
from blizzard.replication.raft.progress import Progress, ProgressState
from blizzard.replication.raft.raftlog import RaftLog
from blizzard.replication.raft.readonly import ReadOnly, ReadState
from blizzard.replication.raft.storage import Storage, data_bytes

__all__ = ["Config", "ProposalDroppedError", "Raft", "Ready", "Role", "SoftState"]

_type_of = operator.itemgetter(2)  # Entry.type
# Entries hold their type as a plain int (see EntryType): compared by value.
_NORMAL = EntryType.NORMAL.value
_CONF_CHANGE = EntryType.CONF_CHANGE.value
# Roles and progress states are always members of their enums: hot code
# compares them by identity.
_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


_FOLLOWER = Role.FOLLOWER
_PRE_CANDIDATE = Role.PRE_CANDIDATE
_CANDIDATE = Role.CANDIDATE
_LEADER = Role.LEADER


@attrs.frozen
class Config:
    """Tunables of one node. Ticks are the driver's unit of time."""

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    entries_per_msg_max: int = 256
    bytes_per_msg_max: int = 1 << 20
    inflight_max: int = 64
    read_pending_max: int = 4096
    uncommitted_bytes_max: int = 64 << 20  # a leader refuses proposals beyond this
    pre_vote: bool = True
    check_quorum: bool = True
    applied: int = 0  # where the driver's state machine resumes after a restart
    #: Followers learn of a commit from the next MsgApp (which carries the commit
    #: index) or, when none goes out sooner, from empty MsgApps one tick later;
    #: not from MsgApps sent for each commit, as etcd's raft does (False). See
    #: ``Raft._commit_made``.
    lazy_commit_notice: bool = False

    def __attrs_post_init__(self) -> None:
        assert self.id != NONE
        assert self.heartbeat_tick >= 1
        assert self.election_tick > self.heartbeat_tick
        assert self.entries_per_msg_max >= 1
        assert self.inflight_max >= 1


@attrs.frozen
class SoftState:
    """Volatile facts the driver may want (not persisted)."""

    leader: int
    role: Role


class Ready:
    """Everything the driver must do, in this order, before ``advance(ready)``:

    1. persist ``hard_state`` (if not None), append ``entries`` (replacing any
       stored suffix from ``entries[0].index``) and install ``snapshot`` (if
       not None) — all durable, one fence — *before* step 2;
    2. send ``messages`` (they may vouch for the state persisted in step 1);
    3. restore the state machine from ``snapshot`` (if any), then apply
       ``committed_entries`` in order, and serve ``read_states`` once applied
       reaches their index;
    4. call ``advance(ready)``; do not step, tick or propose between
       ``ready()`` and ``advance()``.

    Read-only: compiled, an extension type with read-only fields (one is
    built per node per round, and an attrs class costs several times as
    much to build); interpreted, a plain class with slots.
    """

    __slots__ = ("committed_entries", "entries", "hard_state", "messages", "read_states",
                 "snapshot", "soft_state")

    soft_state: SoftState
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    def __init__(self, soft_state: SoftState, hard_state: HardState | None,
                 entries: tuple[Entry, ...], snapshot: Snapshot | None,
                 messages: tuple[Message, ...], committed_entries: tuple[Entry, ...],
                 read_states: tuple[ReadState, ...]) -> None:
        self.soft_state = soft_state
        self.hard_state = hard_state
        self.entries = entries
        self.snapshot = snapshot
        self.messages = messages
        self.committed_entries = committed_entries
        self.read_states = read_states

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _READY_FIELDS)
        return f"Ready({fields})"


_READY_FIELDS = ("soft_state", "hard_state", "entries", "snapshot", "messages",
                 "committed_entries", "read_states")


def _has_conf_change(entries: tuple[Entry, ...]) -> bool:
    """Whether a membership change is among ``entries``."""
    if cython.compiled:  # a C loop over the types, compared as C integers
        for entry in entries:
            kind = cython.cast(tuple, entry)[2]  # entry.type, read from the tuple
            if kind == _CONF_CHANGE:
                return True
        return False
    return _CONF_CHANGE in map(_type_of, entries)  # scanned in C


class Raft:
    """One node's Raft state machine (RawNode-style API)."""

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self._rng = rng
        self.log = RaftLog(storage)
        hard_state, conf_state = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        if hard_state.commit:
            self.log.commit_to(hard_state.commit)
        if config.applied > self.log.applied:
            assert config.applied <= self.log.committed
            self.log.applied = config.applied
        self.voters: set[int] = set(conf_state.voters)
        self.learners: set[int] = set(conf_state.learners)
        snapshot_index = storage.first_index() - 1
        self._conf_history: list[tuple[int, ConfState]] = [(snapshot_index, conf_state)]
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.prs: dict[int, Progress] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._read_only = ReadOnly(config.read_pending_max)
        self._reads_waiting_commit: list[tuple[int, bytes]] = []
        self._votes: dict[int, bool] = {}
        self._lead_transferee = NONE
        self._pending_conf_index = 0
        self._bcast_pending = False
        self._commit_unsent = False
        self._forwarded_upto = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_tick
        self._prev_hard_state = hard_state
        self._prev_soft_state = SoftState(NONE, Role.FOLLOWER)
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        if self.log.applied > snapshot_index:
            # The state machine already holds entries past the snapshot: their
            # membership changes will not be handed out again, so replay them.
            for entry in storage.entries(snapshot_index + 1, self.log.applied + 1):
                if entry.type == _CONF_CHANGE:
                    self._apply_conf_change(entry)
        self._become_follower(self.term, NONE)

    def __repr__(self) -> str:
        return f"Raft(id={self.id}, term={self.term}, role={self.role.name}, {self.log!r})"

    # --- public inputs -----------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._tick()

    def campaign(self) -> None:
        """Start an election now (as if the election timer fired)."""
        self._hup(transfer=False)

    def propose(self, data: bytes) -> None:
        """Append ``data`` to the replicated log (via the leader)."""
        self.propose_batch((data,))

    def propose_batch(self, items: Iterable[bytes]) -> None:
        """Propose several entries at once; they travel in the same MsgApps."""
        if self.role is _LEADER:
            self._check_accepting()
            items = items if isinstance(items, (list, tuple)) else list(items)
            if not self._admit(sum(map(len, items))):
                raise ProposalDroppedError("too many uncommitted bytes: followers are behind")
            self._append_data(items, _NORMAL)
            return
        if self.lead == NONE:
            raise ProposalDroppedError("no leader is known")
        entries = tuple([untracked_entry(0, 0, _NORMAL, data) for data in items])
        self.msgs.append(MsgProp(self.id, self.lead, 0, entries))

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose one membership change; it takes effect when applied."""
        if self.role is not _LEADER:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader is known")
            entry = untracked_entry(0, 0, _CONF_CHANGE, change.encode())
            self.msgs.append(MsgProp(self.id, self.lead, 0, (entry,)))
            return
        self._check_accepting()
        if self._pending_conf_index > self.log.applied:
            raise ProposalDroppedError("a membership change is still pending")
        self._append_data((change.encode(),), _CONF_CHANGE)
        self._pending_conf_index = self.log.last_index()

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a ``ReadState`` with ``context`` comes back
        in a later ``Ready``. ``context`` must be unique among pending reads."""
        if self.role is _LEADER:
            self._handle_read_index(self.id, context)
        elif self.lead == NONE:
            raise ProposalDroppedError("no leader is known")
        else:
            self.msgs.append(MsgReadIndex(self.id, self.lead, 0, context))

    def transfer_leadership(self, target: int) -> None:
        """Ask the leader to hand leadership to ``target`` (ignored elsewhere)."""
        if self.role is not _LEADER or target == self.id or target not in self.voters:
            return
        if self._lead_transferee == target:
            return
        self._lead_transferee = target
        self._election_elapsed = 0  # the transfer must finish within a timeout
        if self.prs[target].match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Replace the log up to ``index`` (<= applied) with a snapshot holding
        ``data``, the state machine as of ``index``."""
        log = self.log
        if index > log.applied or index > log.stable_last_index():
            raise ValueError(f"cannot compact to {index}: only applied, persisted entries")
        if index < log.first_index():
            return log.storage.snapshot()  # already compacted that far
        meta = SnapshotMeta(index, log.term(index), self._conf_state_at(index))
        snapshot = Snapshot(meta, data)
        log.storage.compact(snapshot)
        # Forget membership history the snapshot made unreachable.
        history = self._conf_history
        while len(history) > 1 and history[1][0] <= index:
            del history[0]
        return snapshot

    def step(self, m: Message) -> None:
        """Process one message from another node."""
        term = m.term
        cls = type(m)
        if term == 0:
            pass  # forwarded client request: not bound to a term
        elif term > self.term:
            if cls is MsgVote or cls is MsgPreVote:
                in_lease = (
                    self.config.check_quorum
                    and self.lead != NONE
                    and self._election_elapsed < self.config.election_tick
                )
                if in_lease and not m.transfer:
                    return  # a leader is alive: ignore the disruptor
            if cls is MsgPreVote or (cls is MsgPreVoteResp and not m.reject):
                pass  # pre-votes never change anybody's term
            elif cls is MsgApp or cls is MsgHeartbeat or cls is MsgSnap:
                self._become_follower(term, m.source)
            else:
                self._become_follower(term, NONE)
        elif term < self.term:
            if cls is MsgApp or cls is MsgHeartbeat:
                # Tell a stale leader about the newer term so it steps down.
                self.msgs.append(MsgAppResp(self.id, m.source, self.term, 0))
            elif cls is MsgPreVote:
                self.msgs.append(MsgPreVoteResp(self.id, m.source, self.term, True))
            return
        if cls is MsgVote or cls is MsgPreVote:
            self._handle_vote_request(m)
        else:
            self._step(m)

    # --- Ready / advance ---------------------------------------------------

    def has_ready(self) -> bool:
        self._flush_broadcast()
        log = self.log
        if self.msgs or log.unstable or log.committed > log.applied or self.read_states:
            return True
        hard = self._prev_hard_state
        soft = self._prev_soft_state
        return (
            log.pending_snapshot is not None
            or self.term != hard.term
            or self.vote != hard.vote
            or log.committed != hard.commit
            or self.lead != soft.leader
            or self.role != soft.role
        )

    def ready(self) -> Ready:
        """Collect the work accumulated since the last ``advance``."""
        self._flush_broadcast()
        log = self.log
        previous = self._prev_hard_state
        hard_state = None
        if (
            self.term != previous.term
            or self.vote != previous.vote
            or log.committed != previous.commit
        ):
            hard_state = self._hard_state()
        snapshot = log.pending_snapshot
        if snapshot is not None:
            log.applied = snapshot.meta.index
        committed: tuple[Entry, ...] = ()
        if log.committed > log.applied:
            committed = tuple(log.entries(log.applied + 1, log.committed + 1))
            # Set before applying: a membership change may advance the commit
            # index, and what it newly commits belongs to the next Ready.
            log.applied = committed[-1].index
            if _has_conf_change(committed):  # usually absent
                for entry in committed:
                    if entry.type == _CONF_CHANGE:
                        self._apply_conf_change(entry)
        soft_state = self._prev_soft_state
        if self.lead != soft_state.leader or self.role != soft_state.role:
            soft_state = self._soft_state()
        ready = Ready(soft_state, hard_state, tuple(log.unstable), snapshot, tuple(self.msgs),
                      committed, tuple(self.read_states))
        self.msgs = []
        self.read_states = []
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver has carried out ``ready`` (see ``Ready``)."""
        log = self.log
        self._prev_soft_state = ready.soft_state
        if ready.hard_state is not None:
            self._prev_hard_state = ready.hard_state
        if ready.snapshot is not None:
            log.stable_snapshot_to(ready.snapshot.meta.index)
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if self.role is _LEADER:
            progress = self.prs.get(self.id)
            stable = log.stable_last_index()
            if progress is not None and progress.maybe_update(stable) and self._maybe_commit():
                self._commit_made()

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    # --- role transitions --------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        election_tick = self.config.election_tick
        self._randomized_election_timeout = election_tick + self._rng.randrange(election_tick)
        self._lead_transferee = NONE
        self._votes = {}
        self._pending_conf_index = 0
        self._bcast_pending = False
        self._commit_unsent = False
        self._forwarded_upto = 0
        self._uncommitted_bytes = 0
        self._read_only.clear()
        self._reads_waiting_commit = []
        next_index = self.log.last_index() + 1
        inflight_max = self.config.inflight_max
        self.prs = {
            node: Progress(
                next_index=next_index, inflight_max=inflight_max, is_learner=node in self.learners
            )
            for node in self.voters | self.learners
        }

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        assert self.role is not _LEADER
        # Neither the term nor the vote change: a pre-candidate disturbs nobody.
        self._votes = {}
        self.lead = NONE
        election_tick = self.config.election_tick
        self._randomized_election_timeout = election_tick + self._rng.randrange(election_tick)
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        assert self.role is not _LEADER
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        assert self.role is _CANDIDATE
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        own = self.prs.get(self.id)
        if own is not None:
            own.become_replicate()
            own.match = self.log.stable_last_index()
            own.next = self.log.last_index() + 1
        # Conf changes already in the log may be uncommitted: allow no new one
        # before this term's first entry is applied.
        self._pending_conf_index = self.log.last_index()
        # An empty entry of the new term lets earlier entries commit (5.4.2).
        self._append_data((b"",), _NORMAL)

    # --- elections ---------------------------------------------------------

    def _promotable(self) -> bool:
        return self.id in self.voters and self.log.pending_snapshot is None

    def _hup(self, *, transfer: bool) -> None:
        if self.role is _LEADER or not self._promotable():
            return
        log = self.log
        if log.committed > log.applied:
            pending = log.entries(log.applied + 1, log.committed + 1)
            if any(entry.type == _CONF_CHANGE for entry in pending):
                return  # apply the membership change first
        if self.config.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
            request = MsgPreVote
        else:
            self._become_candidate()
            term = self.term
            request = MsgVote
        if self._poll(self.id, True) == quorum.VoteResult.WON:
            # A single-voter cluster wins at once.
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for node in sorted(self.voters):
            if node != self.id:
                self.msgs.append(request(self.id, node, term, last_term, last_index, transfer))

    def _poll(self, node: int, granted: bool) -> quorum.VoteResult:
        self._votes.setdefault(node, granted)
        return quorum.majority_vote_result(self.voters, self._votes)

    def _handle_vote_request(self, m: MsgVote | MsgPreVote) -> None:
        is_pre = type(m) is MsgPreVote
        can_vote = (
            self.vote == m.source
            or (self.vote == NONE and self.lead == NONE)
            or (is_pre and m.term > self.term)
        )
        response = MsgPreVoteResp if is_pre else MsgVoteResp
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote echoes the future term the candidate will use.
            self.msgs.append(response(self.id, m.source, m.term, False))
            if not is_pre:
                self._election_elapsed = 0
                self.vote = m.source
        else:
            self.msgs.append(response(self.id, m.source, self.term, True))

    # --- timers ------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        # A node that cannot campaign keeps counting: once past the timeout it
        # has lost its leader's lease and will vote for a candidate.
        if self._election_elapsed >= self._randomized_election_timeout and self._promotable():
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        config = self.config
        if self._election_elapsed >= config.election_tick:
            self._election_elapsed = 0
            if config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            self._lead_transferee = NONE  # a transfer that took too long is abandoned
            for node, progress in self.prs.items():
                if node != self.id and progress.state is _SNAPSHOT:
                    progress.become_probe()  # the snapshot was probably lost: retry
        if self._commit_unsent:  # a lazy commit notice falls due (see _commit_made)
            self._bcast_pending = True
        if self._heartbeat_elapsed >= config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(self._read_only.last_context())

    def _quorum_active(self) -> bool:
        """Whether a quorum was heard from since the last check (and reset the marks)."""
        active = {}
        for node, progress in self.prs.items():
            active[node] = node == self.id or progress.recent_active
            progress.recent_active = False
        result = quorum.majority_vote_result(self.voters, active)
        return result == quorum.VoteResult.WON

    # --- per-role message handlers -----------------------------------------

    def _step_follower(self, m: Message) -> None:
        cls = type(m)
        if cls is MsgApp:
            self._election_elapsed = 0
            self.lead = m.source
            self._handle_append(m)
        elif cls is MsgHeartbeat:
            self._election_elapsed = 0
            self.lead = m.source
            self.log.commit_to(m.commit)
            self.msgs.append(MsgHeartbeatResp(self.id, m.source, self.term, m.context))
        elif cls is MsgSnap:
            self._election_elapsed = 0
            self.lead = m.source
            self._handle_snapshot(m)
        elif cls is MsgProp:
            if self.lead != NONE:
                self.msgs.append(MsgProp(self.id, self.lead, m.term, m.entries))
        elif cls is MsgReadIndex:
            if self.lead != NONE:
                self.msgs.append(MsgReadIndex(self.id, self.lead, m.term, m.context))
        elif cls is MsgReadIndexResp:
            self.read_states.append(ReadState(m.index, m.context))
        elif cls is MsgTimeoutNow:
            self._hup(transfer=True)

    def _step_candidate(self, m: Message) -> None:
        cls = type(m)
        if cls is MsgApp or cls is MsgHeartbeat or cls is MsgSnap:
            self._become_follower(m.term, m.source)
            self._step(m)
        elif (cls is MsgPreVoteResp and self.role is _PRE_CANDIDATE) or (
            cls is MsgVoteResp and self.role is _CANDIDATE
        ):
            result = self._poll(m.source, not m.reject)
            if result == quorum.VoteResult.WON:
                if self.role is _PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self._become_leader()
            elif result == quorum.VoteResult.LOST:
                self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        cls = type(m)
        if cls is MsgProp:
            self._handle_forwarded_proposal(m)
            return
        if cls is MsgReadIndex:
            self._handle_read_index(m.source, m.context)
            return
        progress = self.prs.get(m.source)
        if progress is None:
            return
        if cls is MsgAppResp:
            progress.recent_active = True
            self._handle_append_response(m, progress)
        elif cls is MsgHeartbeatResp:
            progress.recent_active = True
            self._handle_heartbeat_response(m, progress)

    # --- replication: leader side ------------------------------------------

    def _check_accepting(self) -> None:
        if self._lead_transferee != NONE:
            raise ProposalDroppedError("leadership transfer in progress")
        if self.id not in self.prs:
            raise ProposalDroppedError("this leader was removed from the cluster")

    def _append_data(self, items: Iterable[bytes], kind: int) -> None:
        log = self.log
        index = log.last_index()
        entries = untracked_entries(self.term, index + 1, kind, items)
        if entries:
            log.append(entries)
            self._bcast_pending = True

    def _admit(self, size: int) -> bool:
        """Count ``size`` more uncommitted bytes, unless over the bound. One
        proposal is always admitted when nothing is uncommitted, however big."""
        total = self._uncommitted_bytes
        if total and total + size > self.config.uncommitted_bytes_max:
            return False
        self._uncommitted_bytes = total + size
        return True

    def _handle_forwarded_proposal(self, m: MsgProp) -> None:
        if self._lead_transferee != NONE or self.id not in self.prs:
            return  # dropped; the proposer retries
        for entry in m.entries:
            if entry.type == _CONF_CHANGE:
                if self._pending_conf_index > self.log.applied:
                    # Keep one change in flight at a time; this one is dropped.
                    self._append_data((b"",), _NORMAL)
                else:
                    self._append_data((entry.data,), _CONF_CHANGE)
                    self._pending_conf_index = self.log.last_index()
            elif self._admit(len(entry.data)):
                self._append_data((entry.data,), _NORMAL)
        self._forwarded_upto = self.log.last_index()  # see _commit_made

    def _flush_broadcast(self) -> None:
        """Send what proposals and commits since the last Ready made necessary,
        so that everything proposed between two Readys shares MsgApps."""
        if not self._bcast_pending:
            return
        self._bcast_pending = False
        if self.role is not _LEADER:
            return
        self._commit_unsent = False  # each MsgApp carries the commit index
        for node in self.prs:
            if node != self.id:
                self._send_append(node)

    def _send_append(self, target: int, send_if_empty: bool = True) -> bool:
        """Send entries (or a heartbeat-like empty MsgApp) to ``target``, as many
        MsgApps as the inflight window allows; return whether any was sent."""
        progress = self.prs[target]
        log = self.log
        if not send_if_empty and progress.next > log.last_index():
            return False  # caught up: the common case on every acknowledgement
        config = self.config
        sent = False
        while not progress.is_paused():
            next_index = progress.next
            last_index = log.last_index()
            try:
                previous_term = log.term(next_index - 1)
                entries = log.entries(
                    next_index,
                    min(last_index + 1, next_index + config.entries_per_msg_max),
                    config.bytes_per_msg_max,
                )
            except CompactedError:
                return self._send_snapshot(target, progress) or sent
            if not entries and (sent or not send_if_empty):
                return sent
            self.msgs.append(
                MsgApp(
                    self.id,
                    target,
                    self.term,
                    previous_term,
                    next_index - 1,
                    tuple(entries),
                    log.committed,
                )
            )
            sent = True
            if entries:
                progress.sent_entries(entries[-1].index)
            else:
                progress.probe_sent = progress.state is not _REPLICATE
                return sent
            if progress.state is not _REPLICATE:
                return sent
        return sent

    def _send_snapshot(self, target: int, progress: Progress) -> bool:
        if not progress.recent_active:
            return False
        snapshot = self.log.storage.snapshot()
        self.msgs.append(MsgSnap(self.id, target, self.term, snapshot))
        progress.become_snapshot(snapshot.meta.index)
        return True

    def _send_timeout_now(self, target: int) -> None:
        self.msgs.append(MsgTimeoutNow(self.id, target, self.term))

    def _bcast_heartbeat(self, context: bytes) -> None:
        committed = self.log.committed
        for node, progress in self.prs.items():
            if node != self.id:
                commit = min(progress.match, committed)
                self.msgs.append(MsgHeartbeat(self.id, node, self.term, commit, context))

    def _commit_made(self) -> None:
        """The commit index advanced: tell the followers in the next Ready, or,
        with ``lazy_commit_notice``, by the next tick at the latest.

        A MsgApp sent for a commit alone costs every follower a turn (it applies
        and answers) and the leader the answers. On a synchronous client's path
        that is every commit, and that work contends with the next proposal's
        messages for the CPU; under load the next MsgApp carries the commit
        anyway. The price: an idle follower applies up to a tick later. Two
        kinds of waiter on a follower are not made to wait for it: a proposal
        it forwarded (while any is uncommitted, or just committed, commits go
        out at once: that follower answers its client once it applies), and a
        read through ReadIndex (the leader's heartbeats for it carry the commit)."""
        if self._forwarded_upto:
            if self.log.committed >= self._forwarded_upto:
                self._forwarded_upto = 0
            self._bcast_pending = True
        elif self.config.lazy_commit_notice:
            self._commit_unsent = True
        else:
            self._bcast_pending = True

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, if of this term."""
        log = self.log
        matched = {node: progress.match for node, progress in self.prs.items()}
        index = quorum.majority_committed_index(self.voters, matched)
        if index <= log.committed or log.term(index) != self.term:
            return False
        first_in_term = log.term(log.committed) != self.term
        if self._uncommitted_bytes:
            newly = log.entries(log.committed + 1, index + 1)
            released = data_bytes(newly)
            self._uncommitted_bytes = max(0, self._uncommitted_bytes - released)
        log.committed = index
        if first_in_term and self._reads_waiting_commit:
            waiting = self._reads_waiting_commit
            self._reads_waiting_commit = []
            for source, context in waiting:
                self._handle_read_index(source, context)
        return True

    def _handle_append_response(self, m: MsgAppResp, progress: Progress) -> None:
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(hint, m.log_term)
            if progress.maybe_decrease_to(m.index, hint):
                if progress.state is _REPLICATE:
                    progress.become_probe()
                self._send_append(m.source)
            return
        was_paused = progress.is_paused()
        if not progress.maybe_update(m.index):
            return
        state = progress.state
        if state is _PROBE:
            progress.become_replicate()
        elif state is _SNAPSHOT:
            if progress.match >= progress.pending_snapshot:
                progress.become_replicate()
        else:
            progress.inflights.free_le(m.index)
        if self._maybe_commit():
            self._commit_made()
        if was_paused or progress.match < self.log.last_index():
            self._send_append(m.source, send_if_empty=False)
        if m.source == self._lead_transferee and progress.match == self.log.last_index():
            self._send_timeout_now(m.source)

    def _handle_heartbeat_response(self, m: MsgHeartbeatResp, progress: Progress) -> None:
        progress.probe_sent = False
        if progress.state is _REPLICATE and progress.inflights.full():
            progress.inflights.free_first_one()
        if progress.match < self.log.last_index():
            self._send_append(m.source)
        if not m.context:
            return
        acks = self._read_only.ack(m.source, m.context)
        if acks is None:
            return
        votes = {node: True for node in acks}
        if quorum.majority_vote_result(self.voters, votes) != quorum.VoteResult.WON:
            return
        for request in self._read_only.release_through(m.context):
            self._respond_read(request.source, request.index, request.context)

    def _handle_read_index(self, source: int, context: bytes) -> None:
        log = self.log
        if log.term(log.committed) != self.term:
            # Until an entry of this term commits, our commit index may lag.
            if len(self._reads_waiting_commit) < self.config.read_pending_max:
                self._reads_waiting_commit.append((source, context))
            elif source == self.id:
                raise ProposalDroppedError("too many reads are pending")
            return
        if self.voters == {self.id}:
            self._respond_read(source, log.committed, context)
            return
        if self._read_only.add(log.committed, source, context):
            self._read_only.ack(self.id, context)
            self._bcast_heartbeat(context)
        elif source == self.id and len(self._read_only) >= self.config.read_pending_max:
            raise ProposalDroppedError("too many reads are pending")

    def _respond_read(self, source: int, index: int, context: bytes) -> None:
        if source == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self.msgs.append(MsgReadIndexResp(self.id, source, self.term, index, context))

    # --- replication: follower side ----------------------------------------

    def _handle_append(self, m: MsgApp) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs.append(MsgAppResp(self.id, m.source, self.term, log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.msgs.append(MsgAppResp(self.id, m.source, self.term, last_new))
            return
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        try:
            hint_term = log.term(hint)
        except CompactedError:
            hint_term = 0
        self.msgs.append(MsgAppResp(self.id, m.source, self.term, m.index, True, hint, hint_term))

    def _handle_snapshot(self, m: MsgSnap) -> None:
        log = self.log
        meta = m.snapshot.meta
        if meta.index <= log.committed:
            pass
        elif log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # we already have it: just fast-forward
        else:
            log.restore(m.snapshot)
            self._set_conf_state(meta.index, meta.conf_state, reset_history=True)
        self.msgs.append(MsgAppResp(self.id, m.source, self.term, log.committed))

    # --- membership --------------------------------------------------------

    def _conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)), tuple(sorted(self.learners)))

    def conf_state_at(self, index: int) -> ConfState:
        """The membership in force at ``index`` (which must not be compacted away)."""
        return self._conf_state_at(index)

    def _conf_state_at(self, index: int) -> ConfState:
        state = self._conf_history[0][1]
        for changed_at, conf_state in self._conf_history:
            if changed_at > index:
                break
            state = conf_state
        return state

    def _set_conf_state(self, index: int, conf_state: ConfState, *, reset_history: bool) -> None:
        self.voters = set(conf_state.voters)
        self.learners = set(conf_state.learners)
        if reset_history:
            self._conf_history = [(index, conf_state)]
        else:
            self._conf_history.append((index, conf_state))

    def _apply_conf_change(self, entry: Entry) -> None:
        """Take a committed CONF_CHANGE into effect (at the time it is applied)."""
        change = ConfChange.decode(entry.data)
        node = change.node_id
        voters = set(self.voters)
        learners = set(self.learners)
        if change.type == ConfChangeType.ADD_NODE:
            voters.add(node)
            learners.discard(node)
        elif change.type == ConfChangeType.ADD_LEARNER:
            voters.discard(node)
            learners.add(node)
        else:
            voters.discard(node)
            learners.discard(node)
        if not voters:
            return  # never remove the last voter
        conf_state = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        self._set_conf_state(entry.index, conf_state, reset_history=False)
        if self.role is not _LEADER:
            return
        for member in voters | learners:
            progress = self.prs.get(member)
            if progress is None:
                progress = Progress(
                    next_index=self.log.last_index() + 1,
                    inflight_max=self.config.inflight_max,
                )
                self.prs[member] = progress
                self._bcast_pending = True  # start probing the newcomer
            progress.is_learner = member in learners
        for member in list(self.prs):
            if member not in voters and member not in learners:
                del self.prs[member]
        if self.id not in voters:
            self._become_follower(self.term, NONE)  # removed or demoted: step down
            return
        if self._lead_transferee not in voters:
            self._lead_transferee = NONE
        if self._maybe_commit():
            self._bcast_pending = True  # a smaller quorum may commit more
