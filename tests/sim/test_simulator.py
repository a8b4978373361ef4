"""The whole-replica simulator: a seed sweep in CI (more under make soak),
determinism, and proof that its checks catch planted bugs.

A failing seed's error carries the command that replays it.
"""

from __future__ import annotations

import pytest

from blizzard.replication import sessions
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.sim import SafetyViolation, Simulator, checks, replica
from blizzard.sim.__main__ import EXIT_CODES, main, run_one
from tests.conftest import budget

SEEDS = budget(200)
STEPS = 300


@pytest.mark.parametrize("seed", range(SEEDS))
def test_seed(seed):
    """Safety with every fault on, then liveness; then every check over the history."""
    run_one(seed, steps=STEPS, nodes=3, clients=4, verbose=False)


@pytest.mark.parametrize("seed", range(budget(10)))
def test_five_replicas(seed):
    run_one(1_000_000 + seed, steps=STEPS, nodes=5, clients=6, verbose=False)


def test_same_seed_same_run():
    """Determinism: the replay command depends on it."""
    assert Simulator(11, steps=200).run() == Simulator(11, steps=200).run()


def test_the_sweep_crashes_replicas_both_ways():
    """The faults the sweep claims to inject are injected: process crashes and
    power failures, between turns and at fences, and the restarts recover."""
    results = [Simulator(seed, steps=STEPS).run() for seed in range(40)]
    assert sum(r.process_crashes for r in results) > 10
    assert sum(r.power_failures for r in results) > 10
    assert sum(r.acknowledged for r in results) > 1000


def test_a_session_table_that_forgets_is_caught(monkeypatch):
    """Planted bug: retries are never recognised, so a retried request applies
    twice -- the exactly-once check names it. (The compiled table is an
    immutable type: the replicas get a subclass whose table forgets.)"""

    class Forgetful(sessions.SessionStateMachine):
        def _last_seq(self, client):
            return 0

    monkeypatch.setattr(checks, "SessionStateMachine", Forgetful)
    with pytest.raises(SafetyViolation, match="exactly once"):
        for seed in range(40):
            Simulator(seed, steps=STEPS).run()


def test_a_log_that_does_not_fence_is_caught(monkeypatch):
    """Planted bug: appends are never fenced, so a power failure loses entries a
    replica acknowledged -- some check notices (which one depends on the seed)."""
    class Unfenced(PmemStorage):
        def save(self, hard_state=None, entries=()):
            drain, self._media.drain = self._media.drain, lambda: None
            try:
                super().save(hard_state, entries)
            finally:
                self._media.drain = drain

    monkeypatch.setattr(replica, "PmemStorage", Unfenced)  # an extension type: subclassed
    with pytest.raises(Exception):  # noqa: B017 - any check may be first to notice
        for seed in range(100, 140):
            Simulator(seed, steps=STEPS).run()


def test_cli_prints_seed_rates_and_result(capsys):
    assert main(["--seed", "3", "--steps", "100"]) == 0
    out = capsys.readouterr().out
    assert "SEED=3" in out and "rates FaultRates(" in out and "ok SimResult(" in out


def test_cli_reports_a_failure_with_its_replay_command(capsys, monkeypatch):
    def broken(self):
        raise SafetyViolation("replica divergence", "planted")

    monkeypatch.setattr(Simulator, "run", broken)
    assert main(["--seeds", "5:7", "--steps", "10"]) == EXIT_CODES["safety"]
    err = capsys.readouterr().err
    assert "planted" in err
    assert "python -m blizzard.sim --seed 6 --steps 10 --nodes 3 --clients 4" in err
