"""The whole-replica simulator: one seed, one deterministic run (after VOPR).

One seed derives everything: the fault rates (printed first), the network's
losses, duplicates and delays, partitions, process crashes and power
failures (each either between two turns or at a chosen fence in the middle
of one), restarts, and the clients' requests. Time is the step counter;
every live replica ticks once per step. The replicas run the production
code end to end (see :mod:`blizzard.sim.replica`).

Phases: a *safety* phase of ``steps`` steps with every fault on; then a
*liveness* phase: the network heals, every replica restarts, clients stop
starting requests, and within ``liveness_ticks_max`` steps every write must
be answered and every replica must apply up to the leader's commit index.
Then the checks of :mod:`blizzard.sim.checks` run over the whole history.

Replay a seed: ``python -m blizzard.sim --seed N --steps M`` (what a
failure prints); many seeds: ``python -m blizzard.sim --seeds 0:1000``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from blizzard.exceptions import LivenessFailure
from blizzard.replication.raft.core import Role
from blizzard.sim.checks import QUEUE_TAG, AppliedLog, check_run
from blizzard.sim.network import Network
from blizzard.sim.replica import POWER, PROCESS, Replica, ReplicaCrash
from blizzard.sim.workload import Workload

TICK_S = 0.01  # what one step stands for (the nodes' clocks)
TURNS_PER_STEP_MAX = 8
FENCES_AHEAD_MAX = 60  # an armed crash strikes within this many fences


@attrs.frozen
class FaultRates:
    """Per-step (or per-frame) probabilities, all drawn from the seed."""

    loss: float
    duplicate: float
    delay_max: int
    partition: float
    one_way: float
    heal: float
    crash: float
    power_share: float  # of crashes, the share that are power failures
    armed_share: float  # of crashes, the share that strike at a fence mid-turn
    restart: float
    request: float
    read_share: float
    large_values: float

    @classmethod
    def from_seed(cls, rng: random.Random) -> FaultRates:
        return cls(
            loss=rng.choice((0.0, rng.uniform(0.0, 0.2))),
            duplicate=rng.choice((0.0, rng.uniform(0.0, 0.1))),
            delay_max=rng.randint(1, 4),
            partition=rng.choice((0.0, rng.uniform(0.0, 0.02))),
            one_way=rng.uniform(0.0, 0.5),
            heal=rng.uniform(0.02, 0.1),
            crash=rng.choice((0.0, rng.uniform(0.0, 0.02), rng.uniform(0.02, 0.1))),
            power_share=rng.uniform(0.0, 1.0),
            armed_share=rng.uniform(0.0, 1.0),
            restart=rng.uniform(0.02, 0.1),
            request=rng.uniform(0.05, 0.5),
            read_share=rng.uniform(0.0, 0.4),
            large_values=rng.choice((0.0, rng.uniform(0.0, 0.2))),
        )

    def healed(self) -> FaultRates:
        return attrs.evolve(self, loss=0.0, duplicate=0.0, partition=0.0, crash=0.0,
                            request=0.0)


@attrs.frozen
class SimResult:
    seed: int
    steps: int
    applied: int  # the highest index applied
    acknowledged: int
    reads_served: int
    retries: int
    process_crashes: int
    power_failures: int
    liveness_ticks: int


def draw_params(rng: random.Random) -> dict:
    """The replicas' configuration for one run (drawn, so runs cover many)."""
    return {
        "data_pool_bytes": 2 << 20,
        "log_pool_bytes": 2 << 20,
        "segment_bytes": rng.choice((4096, 16384, 65536)),
        "sessions": 256,
        "election_tick": 10,
        "heartbeat_tick": 2,
        "snapshot_entries": rng.choice((8, 32, 128, 100_000)),
        "snapshot_tail_entries": rng.choice((0, 4, 16)),
        "images": rng.random() < 0.8,  # snapshots as pool images (else as data, copied)
        "entries_per_msg_max": rng.choice((1, 8, 64)),
        "inflight_max": rng.choice((1, 4, 64)),
    }


class Simulator:
    """Runs one seeded scenario; ``run()`` returns a :class:`SimResult` or raises."""

    def __init__(self, seed: int, *, steps: int = 400, nodes: int = 3, clients: int = 4,
                 liveness_ticks_max: int = 3000,
                 log: Callable[[str], None] | None = None) -> None:
        self.seed = seed
        self.steps = steps
        self.liveness_ticks_max = liveness_ticks_max
        self.rng = random.Random(seed)
        self.rates = FaultRates.from_seed(self.rng)
        self.params = draw_params(self.rng)
        self._log = log or (lambda line: None)
        self.now = 0
        self.network = Network(random.Random(self.rng.getrandbits(64)))
        self.applied_log = AppliedLog()
        ids = tuple(range(1, nodes + 1))
        self.replicas = {
            i: Replica(i, voters=ids, network=self.network, applied_log=self.applied_log,
                       rng=random.Random(self.rng.getrandbits(64)), params=self.params,
                       clock=self._clock)
            for i in ids}
        self.workload = Workload(random.Random(self.rng.getrandbits(64)), self.replicas,
                                 clients=clients, retry_ticks=self.params["election_tick"] * 3,
                                 large_values=self.rates.large_values)
        for replica in self.replicas.values():
            self._boot(replica)

    def _clock(self) -> float:
        return self.now * TICK_S

    # -- running --------------------------------------------------------------------------

    def run(self) -> SimResult:
        self._log(f"SEED={self.seed} replicas={len(self.replicas)} steps={self.steps}")
        self._log(f"rates {self.rates}")
        self._log(f"params {self.params}")
        for _ in range(self.steps):
            self._step(self.rates)
        liveness_ticks = self._liveness()
        final = {i: self._contents(r) for i, r in self.replicas.items()}
        check_run(self.applied_log, self.workload.requests, final)
        crashes = [r.crashes for r in self.replicas.values()]
        return SimResult(
            seed=self.seed, steps=self.steps, applied=self.applied_log.applied_max,
            acknowledged=self.workload.acknowledged, reads_served=self.workload.reads_served,
            retries=self.workload.retries,
            process_crashes=sum(c[PROCESS] for c in crashes),
            power_failures=sum(c[POWER] for c in crashes), liveness_ticks=liveness_ticks)

    def _step(self, rates: FaultRates) -> None:
        self.now += 1
        network = self.network
        network.now = self.now
        network.loss, network.duplicate, network.delay_max = (
            rates.loss, rates.duplicate, rates.delay_max)
        self._faults(rates)
        self.workload.step(self.now, rates.request, rates.read_share)
        for replica in self.replicas.values():
            if replica.up:
                replica.node.tick()
        network.deliver_due()
        for _ in range(TURNS_PER_STEP_MAX):
            busy = False
            for replica in self.replicas.values():
                if replica.up and replica.woken:
                    replica.woken = False
                    busy = True
                    self._guard(replica, replica.node.turn)
            if not busy:
                break

    def _guard(self, replica: Replica, action: Callable[[], None]) -> None:
        """Run ``action`` in ``replica``; a crash striking there takes it down."""
        try:
            action()
        except ReplicaCrash:
            replica.crashed()
            self._log(f"step {self.now}: node {replica.node_id} crashed mid-turn")

    def _boot(self, replica: Replica) -> None:
        try:
            replica.boot()
        except ReplicaCrash:
            replica.crashed()
            self._log(f"step {self.now}: node {replica.node_id} crashed while recovering")

    # -- faults ---------------------------------------------------------------------------

    def _faults(self, rates: FaultRates) -> None:
        rng = self.rng
        network = self.network
        if network.blocked and rng.random() < rates.heal:
            network.heal()
        elif not network.blocked and rates.partition and rng.random() < rates.partition:
            network.partition(sorted(self.replicas), one_way=rng.random() < rates.one_way)
        if rates.crash and rng.random() < rates.crash:
            live = [r for r in self.replicas.values() if r.up]
            if live:
                self._crash(rng.choice(live), rates)
        for replica in self.replicas.values():
            if not replica.up and rng.random() < rates.restart:
                if rates.crash and rng.random() < rates.armed_share * 0.2:
                    self._arm(replica, rates)  # crash again while recovering
                self._boot(replica)

    def _crash(self, replica: Replica, rates: FaultRates) -> None:
        if self.rng.random() < rates.armed_share:
            self._arm(replica, rates)
            return
        kind = POWER if self.rng.random() < rates.power_share else PROCESS
        replica.crash_now(kind)
        self._log(f"step {self.now}: node {replica.node_id} {kind} crash")

    def _arm(self, replica: Replica, rates: FaultRates) -> None:
        kind = POWER if self.rng.random() < rates.power_share else PROCESS
        replica.arm(self.rng.randint(1, FENCES_AHEAD_MAX), kind)

    # -- liveness -------------------------------------------------------------------------

    def _liveness(self) -> int:
        """Heal; every replica up; every write answered; everyone applied to the commit."""
        rates = self.rates.healed()
        self.network.heal()
        for tick in range(1, self.liveness_ticks_max + 1):
            for replica in self.replicas.values():
                if not replica.up:
                    replica.disarm()
                    self._boot(replica)
            self._step(rates)
            if tick % 10 == 0 and self.workload.idle() and self._converged():
                for replica in self.replicas.values():
                    replica.check()
                return tick
        pending = [c.pending for c in self.workload.clients if c.pending is not None]
        raise LivenessFailure(
            f"not converged after {self.liveness_ticks_max} ticks: {len(pending)} requests "
            f"unanswered; nodes {[self._describe(r) for r in self.replicas.values()]}")

    def _converged(self) -> bool:
        if not all(r.up for r in self.replicas.values()):
            return False
        leaders = [r for r in self.replicas.values() if r.node.raft.role == Role.LEADER]
        if len(leaders) != 1:
            return False
        commit = leaders[0].node.raft.log.committed
        return all(r.node.applied == commit for r in self.replicas.values())

    def _describe(self, replica: Replica) -> str:
        if not replica.up:
            return f"{replica.node_id}: down"
        return f"{replica.node_id}: {replica.node.raft!r} applied {replica.node.applied}"

    def _contents(self, replica: Replica) -> dict[str, tuple[bytes, list]]:
        registry = replica.registry
        contents = {}
        for name in registry.names():
            core = registry.core(name)
            if core.tag == QUEUE_TAG:
                contents[name] = (core.tag, [bytes(v) for v in core.values()])
            else:
                contents[name] = (core.tag, sorted(tuple(bytes(f) for f in item)
                                                   for item in core.dump()))
        return contents
