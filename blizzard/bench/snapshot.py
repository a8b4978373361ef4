"""``blizzard bench snapshot``: put latency while a big snapshot is taken and sent.

A 3-node cluster of ``blizzard serve`` processes whose map holds ``--keys``
keys (10^6 by default; built once in one pool and copied to every node, the
Raft logs starting at a snapshot of that index). Then:

1. **baseline** -- synchronous puts from one remote client, one after
   another, for ``--seconds``: their latency;
2. a follower is SIGKILLed; the leader takes more writes than
   ``snapshot_entries + snapshot_tail_entries`` so its log is compacted past
   the follower (compaction copies nothing: the pool is the snapshot);
3. the follower restarts: the leader copies its pool into an image a slice
   per turn, streams it, the follower installs it; **during** that window --
   from the restart until the follower has applied the leader's commit
   index -- the same synchronous puts run, and their latency is reported
   against the target (p99 <= 10 ms).

Reported: p50, p99 and max put latency in both phases, the window's length,
the image's bytes, and the load average. Every process runs in its own
process group and is killed, the run's directory removed, whatever happens.

Usage: ``blizzard bench snapshot [--keys N] [--seconds S] [--json PATH] [--check] [--keep]``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from blizzard.bench import _report
from blizzard.bench.failover import Cluster, wait_for
from blizzard.cluster import config as configmod
from blizzard.cluster.client import connect
from blizzard.cluster.ports import port_block
from blizzard.exceptions import BenchmarkError
from blizzard.pmem import Pool
from blizzard.replication.raft.messages import ConfState, HardState, Snapshot, SnapshotMeta
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine
from blizzard.structures import PHashMap, ops, registry_for

NODES = 3
DEFAULT_KEYS = 1_000_000
DEFAULT_SECONDS = 5.0
VALUE = b"v" * 64
SNAPSHOT_ENTRIES = 20_000
TAIL_ENTRIES = 5_000
TARGET_P99_MS = 10.0
START_TIMEOUT_S = 120.0
CATCH_UP_TIMEOUT_S = 600.0


def _pool_bytes(keys: int) -> int:
    return max(64 << 20, (keys * 220 // (64 << 20) + 2) * (64 << 20))


def build_nodes(config, keys: int, progress) -> int:
    """One pool with ``keys`` keys, copied to every node; logs that start at its
    index. Returns that index."""
    first = config.node_dir(1)
    first.mkdir(parents=True, exist_ok=True)
    with Pool.create(first / "data.pool", config.pool_size, layout="blizzard.data") as pool:
        SessionStateMachine(registry_for(pool), pool)
        m = PHashMap(pool, "m")
        for i in range(keys):
            m[b"key%013d" % i] = VALUE
            if i % 100_000 == 99_999:
                progress(f"built {i + 1:,} keys")
        index = registry_for(pool).last_applied
    voters = ConfState(tuple(n.id for n in config.nodes))
    for node in config.nodes:
        directory = config.node_dir(node.id)
        directory.mkdir(parents=True, exist_ok=True)
        if node.id != 1:
            shutil.copyfile(first / "data.pool", directory / "data.pool")
        with Pool.create(directory / "log.pool", config.log_pool_size,
                         layout="blizzard.raftlog") as log_pool:
            storage = PmemStorage(log_pool, conf_state=voters)
            storage.apply_snapshot(Snapshot(SnapshotMeta(index, 1, voters), b""))
            storage.save(HardState(1, 0, index))
    return index


class Putter(threading.Thread):
    """Synchronous puts, one after another: each one's latency, and when."""

    def __init__(self, config) -> None:
        super().__init__(name="bench-snapshot-putter", daemon=True)
        self.client = connect(config, timeout_s=60.0)
        self.map = self.client.hashmap("m")
        self.samples: list[tuple[float, float]] = []  # (completed at, latency s)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                start = time.perf_counter()
                self.map[b"new%012d" % i] = VALUE
                end = time.perf_counter()
                self.samples.append((time.monotonic(), end - start))
                i += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def between(self, start: float, end: float) -> list[float]:
        return [latency for at, latency in self.samples if start <= at <= end]


def _summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"puts": 0}
    ordered = sorted(latencies)
    return {"puts": len(ordered), "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "max_ms": ordered[-1] * 1000}


def run_snapshot(keys: int = DEFAULT_KEYS, *, seconds: float = DEFAULT_SECONDS,
        directory: str = "/dev/shm", keep: bool = False, progress=None) -> dict[str, Any]:
    progress = progress or (lambda line: None)
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-snapshot-", dir=directory))
    size = _pool_bytes(keys)
    config = configmod.local_cluster(
        NODES, workdir / "data", base_port=port_block(2 * NODES), pool_size=size,
        log_pool_size=256 << 20,
        raft={"snapshot_entries": SNAPSHOT_ENTRIES, "snapshot_tail_entries": TAIL_ENTRIES})
    config_path = workdir / "cluster.toml"
    config_path.write_text(configmod.dump(config))
    config = configmod.load(config_path)
    cluster = Cluster(config_path, config, workdir)
    putter = None
    try:
        index = build_nodes(config, keys, progress)
        progress(f"{keys:,} keys in every node's pool ({size >> 20} MiB), index {index}")
        for node in range(1, NODES + 1):
            cluster.start(node)
        leader = wait_for(lambda: _leader(cluster), START_TIMEOUT_S, "a leader", poll_s=0.05)
        putter = Putter(config)
        putter.start()
        t0 = time.monotonic()
        time.sleep(seconds)
        baseline = _summary(putter.between(t0, time.monotonic()))
        leader = wait_for(lambda: _leader(cluster), START_TIMEOUT_S, "a leader", poll_s=0.05)
        follower = next(n for n in range(1, NODES + 1) if n != leader)
        cluster.kill(follower)
        progress(f"node {follower} killed; writing past the leader's compaction point")
        behind = cluster.status(leader)["commit"]
        with connect(config, timeout_s=60.0) as loader:
            fill = SNAPSHOT_ENTRIES + TAIL_ENTRIES + 5_000
            loader.submit_many(ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"fill%010d" % i,
                                                                          VALUE)))
                               for i in range(fill))
        first = cluster.status(leader)["first_index"]
        if first <= behind + 1:
            raise BenchmarkError(f"the leader's log was not compacted past {behind} (first index "
                                 f"{first})")
        restarted = time.monotonic()
        cluster.start(follower)
        progress(f"node {follower} restarted; waiting for it to install an image")

        def caught_up() -> bool:
            lead = cluster.status(leader)
            mine = cluster.status(follower)
            return ("applied" in mine and mine.get("snapshots_installed", 0) >= 1
                    and mine["applied"] >= lead.get("commit", 1 << 62) - 10)

        wait_for(caught_up, CATCH_UP_TIMEOUT_S, f"node {follower} catching up", poll_s=0.05)
        caught = time.monotonic()
        during = _summary(putter.between(restarted, caught))
        sent = cluster.status(leader)
        if putter.error:
            raise BenchmarkError(f"the putter failed: {putter.error!r}")
    finally:
        if putter is not None:
            putter.stop.set()
            putter.join(30)
            with contextlib.suppress(Exception):
                putter.client.close()
        cluster.stop_all()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "keys": keys, "pool_bytes": size, "baseline": baseline, "during_snapshot": during,
        "window_s": caught - restarted, "leader_snapshots_sent": sent.get("snapshots_sent"),
        "target_p99_ms": TARGET_P99_MS,
    }
    result["met"] = during.get("p99_ms", 1e9) <= TARGET_P99_MS
    return result


def _leader(cluster: Cluster) -> int | None:
    statuses = {n: cluster.status(n) for n in range(1, NODES + 1)}
    leaders = [n for n, s in statuses.items() if s.get("role") == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def body(result: dict[str, Any]) -> list[str]:
    def row(name: str, s: dict) -> tuple:
        return (name, s.get("puts", 0), f"{s.get('p50_ms', 0):.2f}", f"{s.get('p99_ms', 0):.2f}",
                f"{s.get('max_ms', 0):.2f}")

    return [_report.table(("synchronous puts", "n", "p50 ms", "p99 ms", "max ms"),
                          [row("baseline", result["baseline"]),
                           row("during the snapshot", result["during_snapshot"])]),
            f"map of {result['keys']:,} keys, pools of {result['pool_bytes'] >> 20} MiB; "
            f"snapshot window {result['window_s']:.1f} s (image copied, sent, installed)"]


def verdict(result: dict[str, Any]) -> list[str]:
    p99 = result["during_snapshot"].get("p99_ms")
    return [f"put p99 during the snapshot <= {result['target_p99_ms']:.0f} ms: "
            f"{p99:.2f} ms, {'met' if result['met'] else 'MISSED'}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blizzard bench snapshot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="length of the baseline phase")
    parser.add_argument("--dir", default="/dev/shm", help="where the run's directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the run's files")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    run = _report.Run("snapshot", _report.command_line(
        "blizzard bench snapshot", list(sys.argv[1:] if argv is None else argv)),
        {"keys": args.keys, "seconds": args.seconds, "snapshot_entries": SNAPSHOT_ENTRIES,
         "snapshot_tail_entries": TAIL_ENTRIES})
    say = (lambda line: None) if args.quiet else (
        lambda line: print(line, file=sys.stderr, flush=True))
    try:
        result = run_snapshot(args.keys, seconds=args.seconds, directory=args.dir,
                              keep=args.keep, progress=say)
    except BenchmarkError as exc:
        print(f"snapshot benchmark failed: {exc}", file=sys.stderr)
        return 1
    run.end()
    lines = verdict(result)
    _report.print_report(run, body(result), title="blizzard bench snapshot: synchronous put "
                         "latency while a follower gets a snapshot image", targets=lines)
    _report.write_json(args.json, run.record(verdict=lines, results=result))
    return _report.exit_status(args.check, lines)


if __name__ == "__main__":
    sys.exit(main())
