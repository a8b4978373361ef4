"""A deterministic Raft cluster simulator with fault injection (after VOPR).

One seed derives everything: the fault rates (printed at start), the
network's losses, duplicates and delays, partitions (symmetric and one-way),
crashes and restarts, membership changes, leadership transfers, compactions
and the clients' puts and ReadIndex reads against a key-value state machine.
Time is the step counter; every live node ticks once per step.

Phases: a *safety* phase of ``steps`` steps with all faults on; then a
*liveness* phase: faults heal (every node restarts, the network becomes
lossless) and the cluster must commit every proposal made in this phase and
converge within ``liveness_ticks_max`` steps.

Checked as it runs (``SafetyViolation`` names the property):

- election safety: at most one leader per term;
- log matching: two persisted entries with the same (index, term) carry the
  same data and follow entries with the same term (so, by induction, the
  logs are identical up to there);
- leader completeness: a new leader's log holds every entry applied so far;
- state machine safety: every node applies the same entry at each index;
- no acknowledged put is lost (checked on every member once converged);
- the client history (puts acknowledged when first applied, ReadIndex reads
  served once applied >= the read index) is linearizable.

The driver obeys the ``Ready`` contract exactly: persist (a node's
``MemoryStorage`` holds only what it persisted, and is all that survives a
crash), send, apply, advance.

Replay a seed: ``python -m blizzard.replication.raft.sim --seed N --steps M --nodes K``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import pickle
import random
import struct
import sys
from collections.abc import Callable

import attrs

from blizzard.exceptions import (
    CompactedError,
    LivenessFailure,
    ProposalDroppedError,
    SafetyViolation,
)
from blizzard.replication.linearizability import GET, PUT, Operation, check_history
from blizzard.replication.raft.core import Config, Raft, Role
from blizzard.replication.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
)
from blizzard.replication.raft.storage import MemoryStorage

__all__ = ["FaultRates", "LivenessFailure", "SafetyViolation", "SimResult", "Simulator", "main"]

_PUT = struct.Struct("<QH")  # op id, key; the value written is the op id
KEYS_MAX = 4
ELECTION_TICK = 10
HEARTBEAT_TICK = 2
READ_TIMEOUT_TICKS = 5 * ELECTION_TICK  # a client abandons a read after this long


@attrs.frozen
class FaultRates:
    """Per-step (or per-message) probabilities, all drawn from the seed."""

    loss: float
    duplicate: float
    delay_max: int
    partition: float
    partition_one_way: float
    heal: float
    crash: float
    restart: float
    propose: float
    read: float
    conf_change: float
    transfer: float
    compact: float

    @classmethod
    def from_seed(cls, rng: random.Random) -> FaultRates:
        return cls(
            loss=rng.choice((0.0, rng.uniform(0.0, 0.2))),
            duplicate=rng.choice((0.0, rng.uniform(0.0, 0.1))),
            delay_max=rng.randint(1, 4),
            partition=rng.choice((0.0, rng.uniform(0.0, 0.02))),
            partition_one_way=rng.uniform(0.0, 0.5),
            heal=rng.uniform(0.02, 0.1),
            crash=rng.choice((0.0, rng.uniform(0.0, 0.01))),
            restart=rng.uniform(0.02, 0.1),
            propose=rng.uniform(0.05, 0.4),
            read=rng.uniform(0.02, 0.2),
            conf_change=rng.choice((0.0, rng.uniform(0.0, 0.01))),
            transfer=rng.choice((0.0, rng.uniform(0.0, 0.01))),
            compact=rng.choice((0.0, rng.uniform(0.0, 0.05))),
        )

    def healed(self) -> FaultRates:
        return attrs.evolve(
            self,
            loss=0.0,
            duplicate=0.0,
            partition=0.0,
            crash=0.0,
            conf_change=0.0,
            transfer=0.0,
        )


@attrs.frozen
class SimResult:
    seed: int
    steps: int
    committed: int
    puts_acknowledged: int
    reads_served: int
    elections: int
    liveness_ticks: int


class _Node:
    """A node's driver: its storage (durable), core and state machine (volatile)."""

    __slots__ = ("applied", "core", "durable_state", "id", "kv", "reads", "role", "seen", "storage")

    def __init__(self, node_id: int, storage: MemoryStorage, *, durable_state: bool) -> None:
        self.id = node_id
        self.storage = storage
        # Whether the state machine survives crashes (as the pmem structures
        # do, with last_applied in the same transaction as the effects).
        self.durable_state = durable_state
        self.core: Raft | None = None
        self.kv: dict[int, int] = {}
        self.seen: set[int] = set()
        # context -> [history position, read index or None, step the client gives up]
        self.reads: dict[bytes, list] = {}
        self.role = Role.FOLLOWER
        self.applied = 0  # index the state machine reflects


class Simulator:
    """Runs one seeded scenario; ``run()`` returns a ``SimResult`` or raises."""

    def __init__(
        self,
        seed: int,
        *,
        steps: int = 2000,
        nodes: int = 3,
        liveness_ticks_max: int = 1000,
        log: Callable[[str], None] | None = None,
    ) -> None:
        assert nodes >= 1
        self.seed = seed
        self.steps = steps
        self.node_count = nodes
        self.liveness_ticks_max = liveness_ticks_max
        self.rng = random.Random(seed)
        self.rates = FaultRates.from_seed(self.rng)
        self._rates = self.rates
        self._log = log or (lambda line: None)
        ids = tuple(range(1, nodes + 1))
        self.ids = ids
        conf = ConfState(ids, ())
        self.nodes = {
            node_id: _Node(node_id, MemoryStorage(conf), durable_state=self.rng.random() < 0.5)
            for node_id in ids
        }
        self.now = 0
        self._clock = 0  # orders history events within a step
        self._sequence = 0
        self._queue: list[tuple[int, int, Message]] = []
        self._blocked: set[tuple[int, int]] = set()
        self._leaders: dict[int, int] = {}  # term -> leader
        self._entries: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> ...
        self._applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self._history: list[Operation] = []
        self._put_ops: dict[int, int] = {}  # op id -> history position
        self._op_next = 1
        self._read_next = 1
        self._acknowledged: set[int] = set()
        self._reads_served = 0
        for node in self.nodes.values():
            self._start(node)

    # --- running -----------------------------------------------------------

    def run(self) -> SimResult:
        self._log(f"SEED={self.seed} nodes={self.node_count} steps={self.steps}")
        self._log(f"rates {self.rates}")
        for _ in range(self.steps):
            self._step_once(self.rates)
        liveness_ticks = self._liveness()
        self._check_linearizable()
        return SimResult(
            seed=self.seed,
            steps=self.steps,
            committed=len(self._applied),
            puts_acknowledged=len(self._acknowledged),
            reads_served=self._reads_served,
            elections=len(self._leaders),
            liveness_ticks=liveness_ticks,
        )

    def _step_once(self, rates: FaultRates) -> None:
        rng = self.rng
        self.now += 1
        self._rates = rates
        self._inject_faults(rates)
        if rng.random() < rates.propose:
            self._client_put(self._random_live())
        if rng.random() < rates.read:
            self._client_read(self._random_live())
        for node in self.nodes.values():
            if node.core is not None:
                node.core.tick()
        self._deliver_due()
        for node in self.nodes.values():
            if node.core is not None:
                self._process_ready(node)

    def _liveness(self) -> int:
        """Heal everything; every put proposed now must commit, all members converge."""
        rates = self.rates.healed()
        self._blocked.clear()
        for node in self.nodes.values():
            if node.core is None:
                self._start(node)
        wanted = []
        for _ in range(3):
            wanted.append(self._op_next)
            self._client_put(self._random_live(), op_id=self._op_next)
        for tick in range(1, self.liveness_ticks_max + 1):
            self._step_once(rates)
            missing = [op for op in wanted if op not in self._acknowledged]
            if missing and tick % (ELECTION_TICK * 2) == 0:
                for op in missing:  # a client retry: the state machine dedups it
                    self._client_put(self._random_live(), op_id=op)
            if not missing and tick % 10 == 0 and self._converged():
                self._check_nothing_lost()
                return tick
        raise LivenessFailure(
            f"not converged after {self.liveness_ticks_max} ticks:"
            f" acknowledged {sorted(set(wanted) & self._acknowledged)} of {wanted};"
            f" nodes {[repr(node.core) for node in self.nodes.values()]}"
        )

    def _converged(self) -> bool:
        leaders = [n.core for n in self.nodes.values() if n.core and n.core.role == Role.LEADER]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        committed = leader.log.committed
        members = leader.voters | leader.learners
        return all(self.nodes[m].core.log.applied == committed for m in members)

    # --- faults ------------------------------------------------------------

    def _inject_faults(self, rates: FaultRates) -> None:
        rng = self.rng
        if self._blocked and rng.random() < rates.heal:
            self._blocked.clear()
        elif not self._blocked and rng.random() < rates.partition:
            self._partition(one_way=rng.random() < rates.partition_one_way)
        if rng.random() < rates.crash:
            live = [node for node in self.nodes.values() if node.core is not None]
            if live:
                self._crash(rng.choice(live))
        for node in self.nodes.values():
            if node.core is None and rng.random() < rates.restart:
                self._start(node)
        if rng.random() < rates.conf_change:
            self._change_membership()
        if rng.random() < rates.transfer:
            leader = self._leader()
            if leader is not None:
                leader.transfer_leadership(rng.choice(self.ids))
        if rng.random() < rates.compact:
            self._compact(self.nodes[rng.choice(self.ids)])

    def _partition(self, *, one_way: bool) -> None:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
        side, other = ids[:cut], ids[cut:]
        for a in side:
            for b in other:
                self._blocked.add((a, b))
                if not one_way:
                    self._blocked.add((b, a))

    def _crash(self, node: _Node) -> None:
        """Lose everything volatile: the core, pending reads, and the state
        machine unless it is durable."""
        node.core = None
        node.reads.clear()
        if not node.durable_state:
            node.kv, node.seen, node.applied = {}, set(), -1

    def _start(self, node: _Node) -> None:
        """(Re)start from the node's storage: exactly what it had persisted.

        A volatile state machine restarts from the stored snapshot and has the
        log re-applied; a durable one resumes where it was (``Config.applied``).
        """
        if node.applied < 0 or not node.durable_state:
            snapshot = node.storage.snapshot()
            if snapshot.data:
                node.kv, node.seen = pickle.loads(snapshot.data)
            else:
                node.kv, node.seen = {}, set()
            node.applied = snapshot.meta.index
        config = Config(
            id=node.id,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            entries_per_msg_max=8,
            inflight_max=4,
            applied=node.applied,
            lazy_commit_notice=True,  # as a Node's
        )
        node.core = Raft(config, node.storage, random.Random(self.rng.getrandbits(32)))
        node.role = Role.FOLLOWER

    def _change_membership(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        rng = self.rng
        voters, learners = leader.voters, leader.learners
        outsiders = [n for n in self.ids if n not in voters and n not in learners]
        voters_min = self.node_count // 2 + 1
        choices = []
        if len(voters) > voters_min:
            choices.append(ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(sorted(voters))))
        if learners:
            choices.append(ConfChange(ConfChangeType.ADD_NODE, rng.choice(sorted(learners))))
        if outsiders:
            choices.append(ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(outsiders)))
        if choices:
            with contextlib.suppress(ProposalDroppedError):
                leader.propose_conf_change(rng.choice(choices))

    def _compact(self, node: _Node) -> None:
        core = node.core
        if core is None:
            return
        applied = core.log.applied
        if applied - node.storage.first_index() < 16:
            return
        core.compact(applied, pickle.dumps((node.kv, node.seen)))

    # --- network -----------------------------------------------------------

    def _send(self, m: Message) -> None:
        rng = self.rng
        rates = self._rates
        if rates.loss and rng.random() < rates.loss:
            return
        copies = 2 if rates.duplicate and rng.random() < rates.duplicate else 1
        for _ in range(copies):
            self._sequence += 1
            deliver_at = self.now + 1 + int(rng.random() * rates.delay_max)
            heapq.heappush(self._queue, (deliver_at, self._sequence, m))

    def _deliver_due(self) -> None:
        queue = self._queue
        blocked = self._blocked
        nodes = self.nodes
        while queue and queue[0][0] <= self.now:
            _, _, m = heapq.heappop(queue)
            if (m.source, m.target) in blocked:
                continue
            node = nodes.get(m.target)
            if node is not None and node.core is not None:
                node.core.step(m)

    # --- the Ready loop ----------------------------------------------------

    def _process_ready(self, node: _Node) -> None:
        core = node.core
        if not core.has_ready():
            return
        ready = core.ready()
        role = ready.soft_state.role
        if role == Role.LEADER and node.role != Role.LEADER:
            self._check_new_leader(node, core)
        node.role = role
        # 1. persist
        storage = node.storage
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        if ready.snapshot is not None:
            storage.apply_snapshot(ready.snapshot)
        if ready.entries:
            storage.append(ready.entries)
            self._check_log_matching(node, ready.entries)
        # 2. send
        for m in ready.messages:
            self._send(m)
        # 3. apply
        if ready.snapshot is not None:
            node.kv, node.seen = pickle.loads(ready.snapshot.data)
            node.applied = ready.snapshot.meta.index
        for entry in ready.committed_entries:
            if entry.index != node.applied + 1:
                raise SafetyViolation("apply order", f"node {node.id} skips to {entry.index}")
            node.applied = entry.index
            self._apply(node, entry)
        if node.applied != core.log.applied:
            raise SafetyViolation("apply order", f"node {node.id} core and state machine differ")
        for state in ready.read_states:
            pending = node.reads.get(state.context)
            if pending is not None:
                pending[1] = state.index
        if node.reads:
            self._serve_reads(node, core.log.applied)
        # 4. advance
        core.advance(ready)

    def _apply(self, node: _Node, entry: Entry) -> None:
        index = entry.index
        known = self._applied.get(index)
        if known is None:
            self._applied[index] = (entry.term, entry.data)
        elif known != (entry.term, entry.data):
            raise SafetyViolation(
                "state machine safety",
                f"node {node.id} applied {entry} at {index}, another node applied {known}",
            )
        if entry.type != EntryType.NORMAL or not entry.data:
            return
        op_id, key = _PUT.unpack(entry.data)
        if op_id in node.seen:
            return  # a duplicate proposal: applied once only
        node.seen.add(op_id)
        node.kv[key] = op_id
        if op_id not in self._acknowledged:
            self._acknowledged.add(op_id)
            position = self._put_ops[op_id]
            self._history[position] = attrs.evolve(self._history[position], ret=self._tick())

    def _serve_reads(self, node: _Node, applied: int) -> None:
        now = self.now
        done = [
            ctx
            for ctx, (_, index, deadline) in node.reads.items()
            if index is not None or deadline < now
        ]
        for context in done:
            position, index, deadline = node.reads[context]
            if deadline < now:
                # The client gave up: an unanswered read, left out of the history.
                del node.reads[context]
                continue
            if index > applied:
                continue
            del node.reads[context]
            op = self._history[position]
            value = node.kv.get(op.key)
            self._history[position] = attrs.evolve(op, value=value, ret=self._tick())
            self._reads_served += 1

    # --- clients -----------------------------------------------------------

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _client_put(self, node: _Node | None, *, op_id: int | None = None) -> None:
        if node is None:
            return
        if op_id is None:
            op_id = self._op_next
        if op_id == self._op_next:
            self._op_next += 1
            key = self.rng.randrange(KEYS_MAX)
            self._put_ops[op_id] = len(self._history)
            self._history.append(Operation(PUT, key, op_id, self._tick()))
        else:
            key = self._history[self._put_ops[op_id]].key
        # A dropped put is never acknowledged: it may or may not take effect.
        with contextlib.suppress(ProposalDroppedError):
            node.core.propose(_PUT.pack(op_id, key))

    def _client_read(self, node: _Node | None) -> None:
        if node is None:
            return
        context = b"r%d" % self._read_next
        self._read_next += 1
        key = self.rng.randrange(KEYS_MAX)
        try:
            node.core.read_index(context)
        except ProposalDroppedError:
            return
        node.reads[context] = [len(self._history), None, self.now + READ_TIMEOUT_TICKS]
        self._history.append(Operation(GET, key, None, self._tick()))

    # --- checks ------------------------------------------------------------

    def _check_new_leader(self, node: _Node, core: Raft) -> None:
        term = core.term
        other = self._leaders.setdefault(term, node.id)
        if other != node.id:
            raise SafetyViolation("election safety", f"nodes {other} and {node.id} lead {term}")
        log = core.log
        first = log.first_index()
        for index, (entry_term, _) in self._applied.items():
            if index < first:
                continue
            try:
                term_here = log.term(index)
            except CompactedError:
                continue
            if term_here != entry_term:
                raise SafetyViolation(
                    "leader completeness",
                    f"leader {node.id} of term {term} lacks applied entry {index}",
                )

    def _check_log_matching(self, node: _Node, entries: tuple[Entry, ...]) -> None:
        known = self._entries
        storage = node.storage
        previous_term = None
        for entry in entries:
            if previous_term is None:
                try:
                    previous_term = storage.term(entry.index - 1)
                except CompactedError:
                    previous_term = -1  # unknown: covered by a snapshot
            record = (entry.data, previous_term)
            seen = known.setdefault((entry.index, entry.term), record)
            if seen != record and previous_term != -1 and seen[1] != -1:
                raise SafetyViolation(
                    "log matching",
                    f"node {node.id} has entry {entry.index}@{entry.term} = {record},"
                    f" another node {seen}",
                )
            if seen[0] != entry.data:
                raise SafetyViolation("log matching", f"entry {entry.index} data differs")
            previous_term = entry.term

    def _check_nothing_lost(self) -> None:
        """Every acknowledged put is in every converged member's state machine."""
        leader = self._leader()
        assert leader is not None
        for member in leader.voters | leader.learners:
            lost = self._acknowledged - self.nodes[member].seen
            if lost:
                raise SafetyViolation(
                    "acknowledged write lost", f"node {member} lacks ops {sorted(lost)[:10]}"
                )

    def _check_linearizable(self) -> None:
        if not check_history(self._history):
            raise SafetyViolation("linearizability", "client history is not linearizable")

    # --- helpers -----------------------------------------------------------

    def _random_live(self) -> _Node | None:
        live = [node for node in self.nodes.values() if node.core is not None]
        return self.rng.choice(live) if live else None

    def _leader(self) -> Raft | None:
        best = None
        for node in self.nodes.values():
            core = node.core
            if (
                core is not None
                and core.role == Role.LEADER
                and (best is None or core.term > best.term)
            ):
                best = core
        return best


def run_seed(seed: int, *, steps: int, nodes: int, verbose: bool = False) -> SimResult:
    """Run one seed; a failure carries the command that replays it as a note."""
    simulator = Simulator(seed, steps=steps, nodes=nodes, log=print if verbose else None)
    try:
        return simulator.run()
    except Exception as error:
        error.add_note(f"replay: {replay_command(seed, steps, nodes)}")
        raise


EXIT_CODES = {"ok": 0, "safety": 1, "liveness": 2, "crash": 3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    replay = replay_command(seed, args.steps, args.nodes)
    simulator = Simulator(seed, steps=args.steps, nodes=args.nodes, log=print)
    try:
        result = simulator.run()
    except SafetyViolation as error:
        print(f"SAFETY VIOLATION {error}\nreplay: {replay}", file=sys.stderr)
        return EXIT_CODES["safety"]
    except LivenessFailure as error:
        print(f"LIVENESS FAILURE {error}\nreplay: {replay}", file=sys.stderr)
        return EXIT_CODES["liveness"]
    except Exception as error:  # a crash inside the core is a failure too
        print(f"CRASH {error!r}\nreplay: {replay}", file=sys.stderr)
        return EXIT_CODES["crash"]
    print(f"ok {result}")
    return EXIT_CODES["ok"]


def replay_command(seed: int, steps: int, nodes: int) -> str:
    return f"python -m blizzard.replication.raft.sim --seed {seed} --steps {steps} --nodes {nodes}"


if __name__ == "__main__":
    sys.exit(main())
