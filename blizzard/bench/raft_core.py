"""Raft core throughput: entries committed per second through a 3-node cluster.

Pure core cost: the network delivers every message at once and never loses
one, storage is a ``MemoryStorage``, the state machine does nothing. The
client proposes a batch of ``batch`` entries every round; each round every
node runs its Ready loop (persist, send, apply, advance) and then every
message is delivered, so batches pipeline behind one another.

Run: ``python -m blizzard.bench.raft_core [--entries N] [--batch B] [--runs R]``.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.replication.raft.core import Config, Raft
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.storage import MemoryStorage

__all__ = ["main", "run_once"]

COMPACT_EVERY_ROUNDS = 256
COMPACT_KEEP = 4096  # entries kept behind the applied index, for slow followers


def _cluster(nodes: int) -> tuple[list[Raft], list[MemoryStorage]]:
    ids = tuple(range(1, nodes + 1))
    storages = [MemoryStorage(ConfState(ids)) for _ in ids]
    cores = [
        Raft(
            Config(id=node_id, entries_per_msg_max=4096, inflight_max=256),
            storage,
            random.Random(node_id),
        )
        for node_id, storage in zip(ids, storages, strict=True)
    ]
    return cores, storages


def _round(cores: list[Raft], storages: list[MemoryStorage], by_id: dict[int, Raft]) -> int:
    """One Ready loop on every node, then deliver everything; return entries applied."""
    outbox = []
    applied = 0
    for core, storage in zip(cores, storages, strict=True):
        if not core.has_ready():
            continue
        ready = core.ready()
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        if ready.entries:
            storage.append(ready.entries)
        outbox.extend(ready.messages)
        applied += len(ready.committed_entries) if core is cores[0] else 0
        core.advance(ready)
    for message in outbox:
        by_id[message.target].step(message)
    return applied


def run_once(*, entries: int = 200_000, batch: int = 64, nodes: int = 3) -> tuple[float, float]:
    """Commit ``entries`` entries; return entries per second of (wall time, CPU time).

    The CPU-time rate is the robust one on a shared machine: it does not count
    the time other processes held the core.
    """
    cores, storages = _cluster(nodes)
    by_id = {core.id: core for core in cores}
    leader = cores[0]
    leader.campaign()
    for _ in range(10):
        _round(cores, storages, by_id)
    assert leader.lead == leader.id
    payloads = [b"%016d" % i for i in range(batch)]
    target = leader.log.committed + entries
    proposed = 0
    start = time.perf_counter()
    start_cpu = time.thread_time()
    rounds = 0
    while leader.log.applied < target:
        if proposed < entries:
            leader.propose_batch(payloads)
            proposed += batch
        _round(cores, storages, by_id)
        rounds += 1
        if rounds % COMPACT_EVERY_ROUNDS == 0:
            # As a deployment would: snapshot and drop the applied prefix, so
            # the in-memory log (and the garbage collector's work) stays bounded.
            for core in cores:
                index = core.log.applied - COMPACT_KEEP
                if index > core.log.storage.first_index():
                    core.compact(index, b"")
    elapsed = time.perf_counter() - start
    elapsed_cpu = time.thread_time() - start_cpu
    done = leader.log.applied - (target - entries)
    return done / elapsed, done / elapsed_cpu


TARGET_RATE = 1_000_000  # entries/s, by CPU time
HEADER = ["clock", "ops/s", "min", "max", "spread"]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="blizzard bench raft-core",
        description="Raft core throughput: entries committed per second through an "
                    "in-memory cluster (no I/O: messages delivered at once, MemoryStorage, "
                    "a state machine that does nothing), in CPU time and in wall-clock time.")
    parser.add_argument("--entries", type=int, default=200_000,
                        help="entries committed per measured run (a tenth of that warms up)")
    parser.add_argument("--batch", type=int, default=64,
                        help="entries the client proposes per round")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size")
    parser.add_argument("--runs", type=int, default=5, help="measured runs")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    launcher = "python -m blizzard.bench.raft_core" if argv is None else \
        "blizzard bench raft-core"
    run = _report.Run("raft-core", _report.command_line(
        launcher, list(sys.argv[1:] if argv is None else argv)),
        {"entries": args.entries, "batch": args.batch, "nodes": args.nodes, "runs": args.runs})
    results = []
    with _report.Progress(args.runs + 1, quiet=args.quiet) as progress:
        progress.step(f"warm-up: {args.entries // 10:,} entries")
        run_once(entries=args.entries // 10, batch=args.batch, nodes=args.nodes)
        for i in range(args.runs):
            progress.step(f"run {i + 1}/{args.runs}: {args.entries:,} entries")
            results.append(run_once(entries=args.entries, batch=args.batch, nodes=args.nodes))
    run.end()
    rows, summary = [], {}
    for label, key, rates in (("CPU time", "cpu", [r[1] for r in results]),
                              ("wall time", "wall", [r[0] for r in results])):
        median = statistics.median(rates)
        summary[key] = {"median": median, "min": min(rates), "max": max(rates), "rates": rates}
        rows.append([label, _report.rate(median), _report.rate(min(rates)),
                     _report.rate(max(rates)), f"{(max(rates) - min(rates)) / median:.0%}"])
    cpu = summary["cpu"]["median"]
    verdict = [f"entries/s by CPU time: {_report.rate(cpu)} (target >= "
               f"{_report.rate(TARGET_RATE)}: {'met' if cpu >= TARGET_RATE else 'MISSED'})"]
    _report.print_report(
        run, [_report.table(HEADER, rows)],
        title=f"blizzard bench raft-core: {args.nodes} nodes, batches of {args.batch}, "
              f"{args.runs} runs of {args.entries:,} entries (ops = entries committed)",
        targets=verdict,
        notes=["CPU time is this thread's: the steadier figure on a shared machine"])
    _report.write_json(args.json, run.record(targets={"entries_per_s": TARGET_RATE},
                                             verdict=verdict, results=summary))
    return _report.exit_status(args.check, verdict)


if __name__ == "__main__":
    sys.exit(main())
