"""``python -m blizzard.sim``: run seeds of the whole-replica simulator.

One seed (``--seed N``) prints its rates and events and replays exactly;
a range (``--seeds A:B``) runs many and prints one line per failure, each
with the command that replays it. Exit codes: 0 ok, 1 safety violation,
2 liveness failure, 3 any other error (a crash of the code under test).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback

from blizzard.sim.checks import SafetyViolation
from blizzard.sim.simulator import LivenessFailure, Simulator

EXIT_CODES = {"ok": 0, "safety": 1, "liveness": 2, "error": 3}


def replay_command(seed: int, steps: int, nodes: int, clients: int) -> str:
    return (f"python -m blizzard.sim --seed {seed} --steps {steps} --nodes {nodes} "
            f"--clients {clients}")


def run_one(seed: int, *, steps: int, nodes: int, clients: int, verbose: bool):
    """Run one seed; a failure carries its replay command as a note."""
    simulator = Simulator(seed, steps=steps, nodes=nodes, clients=clients,
                          log=print if verbose else None)
    try:
        return simulator.run()
    except Exception as error:
        error.add_note(f"replay: {replay_command(seed, steps, nodes, clients)}")
        raise


def outcome(error: BaseException) -> str:
    if isinstance(error, SafetyViolation):
        return "safety"
    if isinstance(error, LivenessFailure):
        return "liveness"
    return "error"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blizzard.sim",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="run this seed, verbosely")
    parser.add_argument("--seeds", default=None, help="run seeds A:B (B excluded)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    if args.seeds is not None:
        first, _, last = args.seeds.partition(":")
        seeds = range(int(first), int(last))
    else:
        seeds = [args.seed if args.seed is not None
                 else random.SystemRandom().randrange(1 << 32)]
    verbose = args.seeds is None
    worst = 0
    started = time.monotonic()
    for seed in seeds:
        replay = replay_command(seed, args.steps, args.nodes, args.clients)
        try:
            result = run_one(seed, steps=args.steps, nodes=args.nodes, clients=args.clients,
                             verbose=verbose)
        except Exception as error:  # any failure of the code under test is a finding
            kind = outcome(error)
            if verbose:
                traceback.print_exc()
            print(f"{kind.upper()} seed {seed}: {error}\nreplay: {replay}", file=sys.stderr)
            worst = max(worst, EXIT_CODES[kind])
            continue
        if verbose:
            print(f"ok {result}")
    if args.seeds is not None:
        print(f"{len(seeds)} seeds x {args.steps} steps in {time.monotonic() - started:.1f} s")
    return worst


if __name__ == "__main__":
    sys.exit(main())
