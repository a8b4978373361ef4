"""``blizzard bench failover``: how long writes pause when the leader is SIGKILLed.

A 3-node cluster of real ``blizzard serve`` processes on loopback (default
timing: 10 ms ticks, a 300 ms election timeout), and one remote client
(:func:`blizzard.client.connect`) in this process writing synchronous
PHashMap puts, one after another, without pause. Then, ``--kills`` times:
wait until every node is up and caught up, SIGKILL the leader's process
group, and measure

* the **write pause**: the longest stretch without a completed put from
  the last one completed before the kill until writes flow again
  (``RESUMED_S`` after the new leader is known) -- a put that was already
  committed may still complete just after the kill, the stall comes after;
* the **election time**: from the kill until a surviving node reports
  itself leader of a newer term (polled every ``POLL_S``);

then restart the killed node on its pools. Reported: p50 and max of both
over the kills, and the pause against the targets (p50 pause <= 1.5x the
p50 election time, and <= 600 ms).

Every process runs in its own process group and is killed, and the run's
directory under /dev/shm removed, whatever happens.

Usage: ``blizzard bench failover [--kills N] [--json PATH] [--check] [--keep]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import blizzard
from blizzard.bench import _report
from blizzard.cluster import config as configmod
from blizzard.cluster.client import Client, connect
from blizzard.cluster.ports import port_block
from blizzard.exceptions import BenchmarkError

NODES = 3
DEFAULT_KILLS = 10
POLL_S = 0.005
START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 120.0
RESUME_TIMEOUT_S = 30.0
WRITES_BETWEEN_KILLS = 200  # completed after a restart before the next kill
RESUMED_S = 1.0  # after the election, how long the pause is looked for
CAUGHT_UP_ENTRIES = 50  # a node this close to the leader's commit counts as caught up
TARGET_RATIO = 1.5
TARGET_PAUSE_MS = 600.0


@dataclass
class Kill:
    leader: int
    term: int
    new_leader: int
    election_ms: float
    pause_ms: float


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(blizzard.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop("BLIZZARD_CHECKS", None)  # expensive invariant walks: tests only
    return env


class Cluster:
    """The ``blizzard serve`` processes of one cluster config."""

    def __init__(self, config_path: Path, config, workdir: Path) -> None:
        self.config_path = config_path
        self.config = config
        self.workdir = workdir
        self.procs: dict[int, subprocess.Popen] = {}
        self._logs: list = []

    def start(self, node: int) -> None:
        log = open(self.workdir / f"node{node}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self._logs.append(log)
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "blizzard", "serve", "--config", str(self.config_path),
             "--node", str(node)], stdout=log, stderr=log, start_new_session=True,
            env=_child_env())

    def kill(self, node: int) -> None:
        proc = self.procs.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for node in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(node)
        for log in self._logs:
            log.close()

    def status(self, node: int, timeout_s: float = 1.0) -> dict[str, Any]:
        """One node's status (``role`` ``unreachable`` if it does not answer)."""
        client = Client([self.config.node(node).client], timeout_s=timeout_s)
        try:
            return next(iter(client.node_statuses().values()))
        finally:
            client.close()


class Writer(threading.Thread):
    """Synchronous puts, one after another, recording each completion time."""

    def __init__(self, config) -> None:
        super().__init__(name="bench-failover-writer", daemon=True)
        self.client = connect(config)
        self.map = self.client.hashmap("failover")
        self.done: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        value = b"v" * 64
        i = 0
        try:
            while not self.stop.is_set():
                self.map[b"k%08d" % (i % 10_000)] = value
                self.done.append(time.monotonic())
                i += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def completed_after(self, t: float) -> int:
        count = 0
        for d in reversed(self.done):
            if d <= t:
                break
            count += 1
        return count


def wait_for(predicate, timeout_s: float, what: str, *, poll_s: float = 0.02):
    """``predicate()``'s first true value, polled; BenchmarkError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


def _settled(cluster: Cluster) -> tuple[int, int] | None:
    """(leader, term) if every node is up, agrees on it and has nearly caught up."""
    statuses = {n: cluster.status(n) for n in range(1, NODES + 1)}
    if any(s.get("role") == "unreachable" for s in statuses.values()):
        return None
    leaders = [n for n, s in statuses.items() if s.get("role") == "leader"]
    if len(leaders) != 1:
        return None
    commit = statuses[leaders[0]]["commit"]
    if any(s["applied"] < commit - CAUGHT_UP_ENTRIES for s in statuses.values()):
        return None
    return leaders[0], statuses[leaders[0]]["term"]


def one_kill(cluster: Cluster, writer: Writer) -> Kill:
    """Kill the leader once, measure, restart it."""
    leader, term = wait_for(lambda: _settled(cluster), SETTLE_TIMEOUT_S, "a settled cluster")
    mark = time.monotonic()
    wait_for(lambda: writer.completed_after(mark) >= WRITES_BETWEEN_KILLS or writer.error,
          SETTLE_TIMEOUT_S, "writes flowing")
    if writer.error:
        raise BenchmarkError(f"the writer failed: {writer.error!r}")
    killed_at = time.monotonic()
    cluster.kill(leader)
    survivors = [n for n in range(1, NODES + 1) if n != leader]
    elected = None
    new_leader = 0
    while elected is None:
        if time.monotonic() > killed_at + RESUME_TIMEOUT_S:
            raise BenchmarkError(f"no new leader within {RESUME_TIMEOUT_S:.0f} s "
                                 f"of killing {leader}")
        for node in survivors:
            status = cluster.status(node, timeout_s=0.5)
            if status.get("role") == "leader" and status.get("term", 0) > term:
                elected, new_leader = time.monotonic(), node
                break
        else:
            time.sleep(POLL_S)
    horizon = elected + RESUMED_S
    wait_for(lambda: (writer.done and writer.done[-1] > horizon) or writer.error,
          RESUME_TIMEOUT_S, "writes flowing again after the election")
    if writer.error:
        raise BenchmarkError(f"the writer failed: {writer.error!r}")
    cluster.start(leader)
    return Kill(leader=leader, term=term, new_leader=new_leader,
                election_ms=(elected - killed_at) * 1000,
                pause_ms=_longest_gap(writer.done, killed_at, horizon) * 1000)


def _longest_gap(done: list[float], start: float, end: float) -> float:
    """The longest time between two completions, from the last one at or before
    ``start`` to the first one after ``end``."""
    times = [t for t in done if t > start]
    before = [t for t in done if t <= start]
    points = ([before[-1]] if before else [start]) + times
    last = next((i for i, t in enumerate(points) if t > end), len(points) - 1)
    points = points[:last + 1]
    return max((b - a for a, b in pairwise(points)), default=0.0)


def run_kills(kills: int = DEFAULT_KILLS, *, directory: str = "/dev/shm", keep: bool = False,
              quiet: bool = True) -> dict[str, Any]:
    """Start the cluster, kill its leader ``kills`` times, return the summary."""
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-failover-", dir=directory))
    config = configmod.local_cluster(NODES, workdir / "data", base_port=port_block(2 * NODES),
                                     pool_size="64M", log_pool_size="64M")
    config_path = workdir / "cluster.toml"
    config_path.write_text(configmod.dump(config))
    cluster = Cluster(config_path, config, workdir)
    writer = None
    try:
        for node in range(1, NODES + 1):
            cluster.start(node)
        wait_for(lambda: _settled(cluster), START_TIMEOUT_S, "a leader")
        writer = Writer(config)
        writer.start()
        results = []
        with _report.Progress(kills, quiet=quiet) as progress:
            for i in range(kills):
                progress.step(f"kill {i + 1}/{kills}")
                results.append(one_kill(cluster, writer))
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(5)
            with contextlib.suppress(Exception):
                writer.client.close()
        cluster.stop_all()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return summarize(results, config)


def summarize(kills: list[Kill], config) -> dict[str, Any]:
    pauses = [k.pause_ms for k in kills]
    elections = [k.election_ms for k in kills]
    summary: dict[str, Any] = {
        "kills": [asdict(k) for k in kills],
        "pause_ms_p50": statistics.median(pauses),
        "pause_ms_max": max(pauses),
        "election_ms_p50": statistics.median(elections),
        "election_ms_max": max(elections),
        "election_timeout_ms": config.raft.tick_ms * config.raft.election_ticks,
    }
    summary["pause_over_election_p50"] = summary["pause_ms_p50"] / summary["election_ms_p50"]
    summary["targets"] = {
        f"p50 pause <= {TARGET_RATIO}x p50 election time":
            summary["pause_over_election_p50"] <= TARGET_RATIO,
        f"p50 pause <= {TARGET_PAUSE_MS:.0f} ms": summary["pause_ms_p50"] <= TARGET_PAUSE_MS,
    }
    return summary


def body(summary: dict[str, Any]) -> list[str]:
    rows = [(i + 1, k["leader"], k["new_leader"], f"{k['election_ms']:.0f}",
             f"{k['pause_ms']:.0f}") for i, k in enumerate(summary["kills"])]
    return [_report.table(("kill", "leader", "new leader", "election ms", "write pause ms"),
                          rows),
            f"write pause: p50 {summary['pause_ms_p50']:.0f} ms, "
            f"max {summary['pause_ms_max']:.0f} ms\n"
            f"election:    p50 {summary['election_ms_p50']:.0f} ms, "
            f"max {summary['election_ms_max']:.0f} ms "
            f"(election timeout {summary['election_timeout_ms']} ms, randomized up to 2x)\n"
            f"pause / election (p50): {summary['pause_over_election_p50']:.2f}"]


def verdict(summary: dict[str, Any]) -> list[str]:
    return [f"{name}: {'met' if ok else 'MISSED'}" for name, ok in summary["targets"].items()]


def format_summary(summary: dict[str, Any]) -> str:
    return "\n\n".join([*body(summary), *verdict(summary)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blizzard bench failover",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS)
    parser.add_argument("--dir", default="/dev/shm", help="where the run's directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the run's files")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    run = _report.Run("failover", _report.command_line(
        "blizzard bench failover", list(sys.argv[1:] if argv is None else argv)),
        {"kills": args.kills, "nodes": NODES})
    try:
        summary = run_kills(args.kills, directory=args.dir, keep=args.keep, quiet=args.quiet)
    except BenchmarkError as exc:
        print(f"failover benchmark failed: {exc}", file=sys.stderr)
        return 1
    run.end()
    lines = verdict(summary)
    _report.print_report(run, body(summary), title=f"blizzard bench failover: {NODES} "
                         f"nodes, the leader SIGKILLed {args.kills} times under synchronous puts",
                         targets=lines)
    _report.write_json(args.json, run.record(verdict=lines, results=summary))
    return _report.exit_status(args.check, lines)


if __name__ == "__main__":
    sys.exit(main())
