"""The simulator: a seed sweep in CI, a longer one under ``-m slow`` (make soak).

Every seed runs a safety phase then a liveness phase (see ``sim.py``); a
failing seed is reported with the command that replays it.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from blizzard.replication.raft import sim
from blizzard.replication.raft.sim import SafetyViolation, Simulator, replay_command

SEEDS_3 = range(0, 800)  # 3-node clusters
SEEDS_5 = range(100_000, 100_200)  # 5-node clusters
STEPS = 2000


def _run(job: tuple[int, int, int]) -> str | None:
    seed, steps, nodes = job
    try:
        Simulator(seed, steps=steps, nodes=nodes).run()
    except Exception as error:
        return f"{type(error).__name__}: {error}\n  replay: {replay_command(seed, steps, nodes)}"
    return None


def _sweep(jobs: list[tuple[int, int, int]]) -> list[str]:
    workers = max(1, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_run, jobs, chunksize=8))
    return [failure for failure in results if failure is not None]


def test_sweep_1000_seeds():
    """1,000 seeds x 2,000 steps (800 three-node, 200 five-node clusters)."""
    jobs = [(seed, STEPS, 3) for seed in SEEDS_3] + [(seed, STEPS, 5) for seed in SEEDS_5]
    failures = _sweep(jobs)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.slow
def test_sweep_soak():
    """A longer sweep: more seeds, longer runs, both cluster sizes."""
    jobs = [(seed, 10_000, 3) for seed in range(10_000, 12_000)]
    jobs += [(seed, 10_000, 5) for seed in range(200_000, 201_000)]
    failures = _sweep(jobs)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.interpreted  # run again on the interpreted build
def test_same_seed_same_run():
    """Determinism: one seed, one outcome (the replay command depends on it)."""
    first = Simulator(7, steps=500).run()
    second = Simulator(7, steps=500).run()
    assert first == second


def test_fault_rates_come_from_the_seed():
    assert Simulator(1).rates == Simulator(1).rates
    assert Simulator(1).rates != Simulator(2).rates


def test_cli_prints_seed_rates_and_result(capsys):
    assert sim.main(["--seed", "3", "--steps", "300", "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "SEED=3" in out and "rates FaultRates(" in out and "ok SimResult(" in out


def test_cli_reports_a_failure_with_its_replay_command(capsys, monkeypatch):
    def broken(self):
        raise SafetyViolation("election safety", "planted")

    monkeypatch.setattr(Simulator, "run", broken)
    assert sim.main(["--seed", "5", "--steps", "10"]) == sim.EXIT_CODES["safety"]
    err = capsys.readouterr().err
    assert "planted" in err
    assert "python -m blizzard.replication.raft.sim --seed 5 --steps 10 --nodes 3" in err


@pytest.mark.interpreted  # run again on the interpreted build
def test_checkers_catch_a_planted_bug(monkeypatch):
    """A core that forgets the vote it cast breaks election safety, and the
    simulator notices (some seed among a few). The bug is planted in a
    subclass the simulator builds its nodes from (the compiled Raft is an
    immutable type)."""
    from blizzard.replication.raft import core

    class Forgetful(core.Raft):
        def _handle_vote_request(self, m):
            self.vote = 0
            self.lead = 0
            super()._handle_vote_request(m)

    monkeypatch.setattr(sim, "Raft", Forgetful)
    caught = 0
    for seed in range(30):
        try:
            Simulator(seed, steps=1500).run()
        except (SafetyViolation, AssertionError):
            caught += 1
            break
    assert caught > 0
