"""``blizzard bench replication``: logical (Raft) against physical (mirrored bytes).

Per structure (hashmap, queue, B+tree, skiplist) and value size (64 B and
1 KiB, 16-byte keys; a queue puts the value alone), 3 nodes on loopback, all
processes, pools on /dev/shm in ``pmem`` mode, measured in one run:

* ``logical``   -- a 3-node Blizzard Raft cluster (:mod:`._replication_node`
  ``raft``); the load runs in the leader's process, ``--window`` requests in
  flight; every Op is shipped once per follower and applied by each node;
* ``physical-sync`` -- a primary and two ``BackupServer`` processes; each
  fence of each Op is shipped to both backups and waited for (RDMA WRITE +
  remote flush, waited): one Op at a time, so the throughput run is the
  synchronous one;
* ``physical-pipelined`` -- the same, fences shipped without waiting and each
  Op acknowledged once its last fence is: Ops apply back to back.

Reported per row: throughput and CPU per op (summed over the three
processes), synchronous p50/p99, bytes and messages on the wire per op
(summed over every node's sends, framing included), round trips per op
(logical: the leader's messages per follower per op; physical: waits for
acknowledgements per op), and flushes per op on the primary / leader and on
each backup / follower. Logical flushes are counted on a second, short run
with counting media (``blizzard.pmem.counting``: a Python call per flush, so its
throughput is not the one reported); physical ones come from the mirror's
own counters (it sees every flush anyway).

Usage: ``blizzard bench replication [--ops N] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.bench.cluster import (
    STALL_S,
    NodeProcess,
    Result,
    _measure,
    _wait,
    free_port_block,
)
from blizzard.exceptions import BenchmarkError

STRUCTURES = ("hashmap", "queue", "bptree", "skiplist")
VALUES = (64, 1024)
SYSTEMS = ("logical", "physical-sync", "physical-pipelined")
#: Each system over DPDK memif links instead of TCP: the name with this suffix.
DPDK = "-dpdk"
KNOWN_SYSTEMS = SYSTEMS + tuple(s + DPDK for s in SYSTEMS)
DEFAULT_OPS = 4000
DEFAULT_LATENCY_OPS = 500
DEFAULT_WINDOW = 500
QUICK_OPS = 600
QUICK_LATENCY_OPS = 100
COUNT_OPS_MAX = 1000  # puts of the logical counting run
LATENCY_MAX_S = 20.0
START_TIMEOUT_S = 120.0
NODE = "blizzard.bench._replication_node"


@dataclass
class Row:
    """One system on one structure and value size."""

    system: str
    structure: str
    value_bytes: int
    rate: float | None = None
    ops: int = 0
    failed: int = 0
    cpu_us_per_op: float | None = None
    cpu_by_process: list[float] = field(default_factory=list)
    p50_us: float | None = None
    p99_us: float | None = None
    bytes_per_op: float | None = None
    messages_per_op: float | None = None
    round_trips_per_op: float | None = None
    flushes_per_op_primary: float | None = None
    flushes_per_op_backup: float | None = None
    fences_per_op_primary: float | None = None
    fences_per_op_backup: float | None = None
    note: str = ""


def _delta(before: dict[str, Any], after: dict[str, Any], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def _pool_bytes(ops: int, vbytes: int, combos: int) -> int:
    return ((64 << 20) + combos * ops * (vbytes + 600) * 2 + 4095) // 4096 * 4096


class Cluster:
    """Three node processes of one system; killed on exit, whatever happens."""

    def __init__(self, workdir: Path, system: str, pool_size: int, *, count: bool = False):
        from blizzard.cluster.config import dump, local_cluster

        self.system = system
        directory = workdir / (system + ("-count" if count else ""))
        self.transport = "dpdk" if system.endswith(DPDK) else "tcp"
        config = local_cluster(3, directory, base_port=free_port_block(6),
                               cluster_id="bench", pool_size=pool_size,
                               log_pool_size=256 << 20, durability="pmem",
                               transport={"kind": self.transport})
        path = directory / "cluster.toml"
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(config))
        self.nodes: list[NodeProcess] = []
        try:
            if system.removesuffix(DPDK) == "logical":
                for i in (1, 2, 3):
                    argv = ["-m", NODE, "raft", str(path), str(i)] + (["count"] if count else [])
                    self.nodes.append(NodeProcess(f"raft node {i}", argv,
                                                  directory / f"node{i}.log"))
                lead = _wait(self._leader, START_TIMEOUT_S, "a Raft leader known to all")
                self.load = next(n for n in self.nodes if n.hello["node"] == lead)
            else:
                for i in (2, 3):
                    self.nodes.append(NodeProcess(f"backup {i}", ["-m", NODE, "backup",
                                                                  str(path), str(i)],
                                                  directory / f"node{i}.log"))
                fence = system.removesuffix(DPDK).removeprefix("physical-")
                self.load = NodeProcess("primary 1", ["-m", NODE, "primary", str(path), "1",
                                                      fence, "all"], directory / "node1.log")
                self.nodes.insert(0, self.load)
        except BaseException:
            self.kill()
            raise

    def _leader(self) -> int:
        leaders = {n.call("status")["status"]["leader"] for n in self.nodes}
        return leaders.pop() if len(leaders) == 1 and 0 not in leaders else 0

    def counters(self) -> list[dict[str, Any]]:
        """The load node's counters first."""
        order = [self.load, *(n for n in self.nodes if n is not self.load)]
        return [n.call("counters") for n in order]

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()


def _account(row: Row, system: str, before: list[dict], after: list[dict], ops: int) -> None:
    """Wire and flush figures per op from counters taken around a run of ``ops``."""
    if not ops:
        return
    if system.removesuffix(DPDK) == "logical":
        row.bytes_per_op = sum(_delta(b, a, "bytes_sent") for b, a in zip(before, after,
                                                                         strict=True)) / ops
        row.messages_per_op = sum(_delta(b, a, "messages_sent")
                                  for b, a in zip(before, after, strict=True)) / ops
        row.round_trips_per_op = _delta(before[0], after[0], "messages_sent") / 2 / ops
        return
    primary_b, primary_a = before[0], after[0]
    row.bytes_per_op = sum(_delta(b, a, "bytes_sent") for b, a in zip(before, after,
                                                                     strict=True)) / ops
    # primary: fence messages; backups: acknowledgements (ACK frames, counted by size)
    backup_messages = sum(_delta(b, a, "batches") for b, a in zip(before[1:], after[1:],
                                                                  strict=True))
    row.messages_per_op = (_delta(primary_b, primary_a, "messages_sent") + backup_messages) / ops
    # each ACK: 9 bytes plus the channel's framing (TCP: 4-byte length; DPDK: channel header)
    row.bytes_per_op += backup_messages * (9 + _channel_header_bytes(system)) / ops
    row.round_trips_per_op = _delta(primary_b, primary_a, "round_trips") / ops
    row.flushes_per_op_primary = _delta(primary_b, primary_a, "flushes") / ops
    row.fences_per_op_primary = _delta(primary_b, primary_a, "fences") / ops
    backups = list(zip(before[1:], after[1:], strict=True))
    row.flushes_per_op_backup = sum(_delta(b, a, "flushes") for b, a in backups) / len(
        backups) / ops
    row.fences_per_op_backup = sum(_delta(b, a, "fences") for b, a in backups) / len(
        backups) / ops


def _channel_header_bytes(system: str) -> int:
    if system.endswith(DPDK):
        from blizzard.replication.physical.dpdk import HEADER_BYTES

        return HEADER_BYTES
    return 4


def run_system(cluster: Cluster, structures, values, ops: int, latency_ops: int, window: int,
               step) -> list[Row]:
    rows = []
    for kind in structures:
        for vbytes in values:
            name = f"{kind}-{vbytes}"
            row = Row(cluster.system, kind, vbytes)
            load = cluster.load
            load.call(f"open {kind} {name}")
            warm = max(ops // 10, 50)
            step(f"{cluster.system}: {kind}, {vbytes} B values: warm-up {warm:,} puts")
            load.call(f"load {name} {warm} {window} w {vbytes} {STALL_S}")
            step(f"{cluster.system}: {kind}, {vbytes} B values: {ops:,} puts")
            before = cluster.counters()
            result = Result(cluster.system)
            _measure(cluster.nodes, load, f"load {name} {ops} {window} t {vbytes}", result)
            after = cluster.counters()
            row.rate, row.ops, row.failed = result.rate, result.ops, result.failed
            row.cpu_us_per_op, row.cpu_by_process = result.cpu_us_per_op, result.cpu_by_process
            row.note = result.note.lstrip("; ")
            _account(row, cluster.system, before, after, result.ops)
            step(f"{cluster.system}: {kind}, {vbytes} B values: {latency_ops:,} synchronous puts")
            lat = load.call(f"latency {name} {latency_ops} l {vbytes} {LATENCY_MAX_S}")
            row.p50_us, row.p99_us = lat.get("p50_us"), lat.get("p99_us")
            if "error" in lat:
                row.note += f"; a synchronous put failed: {lat['error']}"
            rows.append(row)
    return rows


def count_logical_flushes(cluster: Cluster, rows: list[Row], ops: int, window: int,
                          step) -> None:
    """Flushes and fences per op on the leader and (mean) followers, from the counting run."""
    for row in rows:
        name = f"{row.structure}-{row.value_bytes}"
        step(f"logical (counting flushes): {row.structure}, {row.value_bytes} B values")
        cluster.load.call(f"open {row.structure} {name}")
        cluster.load.call(f"load {name} {max(ops // 10, 50)} {window} w {row.value_bytes}")
        before = cluster.counters()
        reply = cluster.load.call(f"load {name} {ops} {window} t {row.value_bytes} {STALL_S}")
        after = cluster.counters()
        n = reply["ops"]
        if not n:
            continue
        row.flushes_per_op_primary = _delta(before[0], after[0], "flushes") / n
        row.fences_per_op_primary = _delta(before[0], after[0], "fences") / n
        followers = list(zip(before[1:], after[1:], strict=True))
        row.flushes_per_op_backup = sum(_delta(b, a, "flushes") for b, a in followers) / 2 / n
        row.fences_per_op_backup = sum(_delta(b, a, "fences") for b, a in followers) / 2 / n


def run(*, ops: int, latency_ops: int, window: int, systems, structures, values,
        directory: str, count: bool, progress: bool) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-repl-", dir=directory))
    combos = len(structures) * len(values)
    steps = len(systems) * combos * 3 + (combos if count and "logical" in systems else 0)
    bar = _report.Progress(steps) if progress else None
    step = bar.step if bar else (lambda what: None)
    rows: list[Row] = []
    pool_size = _pool_bytes(ops + latency_ops, max(values), combos)
    try:
        for system in systems:
            cluster = Cluster(workdir, system, pool_size)
            try:
                got = run_system(cluster, structures, values, ops, latency_ops, window, step)
            finally:
                cluster.kill()
            if system.removesuffix(DPDK) == "logical" and count:
                counting = Cluster(workdir, system, pool_size, count=True)
                try:
                    count_logical_flushes(counting, got, min(ops, COUNT_OPS_MAX), window, step)
                finally:
                    counting.kill()
            rows += got
    finally:
        if bar:
            bar.finish()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


HEADER = ["structure", "system", "value B", "ops/s", "p50 ms", "p99 ms", "cpu µs/op",
          "B/op wire", "msgs/op", "round trips/op", "flush/op P", "flush/op B", "fence/op P",
          "fence/op B"]


def format_rows(rows: list[Row]) -> str:
    """The results table and this run's ratios, as text."""
    table = [[r.structure, r.system, r.value_bytes, _f(r.rate),
              _f(r.p50_us and r.p50_us / 1000, "{:.2f}"), _f(r.p99_us and r.p99_us / 1000,
                                                               "{:.2f}"),
              _f(r.cpu_us_per_op), _f(r.bytes_per_op), _f(r.messages_per_op, "{:.1f}"),
              _f(r.round_trips_per_op, "{:.2f}"), _f(r.flushes_per_op_primary, "{:.1f}"),
              _f(r.flushes_per_op_backup, "{:.1f}"), _f(r.fences_per_op_primary, "{:.1f}"),
              _f(r.fences_per_op_backup, "{:.1f}")] for r in rows]
    out = [_report.table(HEADER, table, "<<" + ">" * 12)]
    ratio_lines = ratios(rows)
    if ratio_lines:
        out += ["", "physical / logical, this run (bytes on the wire per op; throughput "
                "logical / physical):", *("  " + x for x in ratio_lines)]
    dpdk_lines = transport_ratios(rows)
    if dpdk_lines:
        out += ["", "over DPDK / over TCP, this run:", *("  " + x for x in dpdk_lines)]
    return "\n".join(out)


def notes(rows: list[Row]) -> list[str]:
    return [f"{r.structure} {r.value_bytes} B {r.system}: {r.note}" for r in rows
            if r.note] + NOTES


def ratios(rows: list[Row]) -> list[str]:
    by = {(r.system, r.structure, r.value_bytes): r for r in rows}
    lines = []
    for (system, kind, vbytes), logical in by.items():
        if system != "logical":
            continue
        parts = []
        for phys in ("physical-sync", "physical-pipelined"):
            p = by.get((phys, kind, vbytes))
            if p is None or not p.bytes_per_op or not logical.bytes_per_op:
                continue
            speed = (logical.rate / p.rate) if logical.rate and p.rate else None
            parts.append(f"{phys}: bytes {p.bytes_per_op / logical.bytes_per_op:.1f}x, "
                         f"throughput {'-' if speed is None else f'{speed:.1f}x'}")
        if parts:
            lines.append(f"{kind} {vbytes} B: " + "; ".join(parts))
    return lines


def transport_ratios(rows: list[Row]) -> list[str]:
    """Each system over DPDK against itself over TCP, this run: throughput, p50, CPU."""
    by = {(r.system, r.structure, r.value_bytes): r for r in rows}
    lines = []
    for (system, kind, vbytes), dpdk in by.items():
        tcp = by.get((system.removesuffix(DPDK), kind, vbytes))
        if not system.endswith(DPDK) or tcp is None:
            continue
        parts = []
        for name, a, b in (("ops/s", dpdk.rate, tcp.rate), ("p50", dpdk.p50_us, tcp.p50_us),
                           ("cpu/op", dpdk.cpu_us_per_op, tcp.cpu_us_per_op)):
            parts.append(f"{name} {a / b:.2f}x" if a and b else f"{name} -")
        lines.append(f"{system.removesuffix(DPDK)} {kind} {vbytes} B: " + ", ".join(parts))
    return lines


NOTES = [
    "ops/s: puts of fresh 16-byte keys (queue: put of the value); logical: 'window' requests in "
    "flight from the leader's process; physical-sync: one Op at a time (each fence waits); "
    "physical-pipelined: Ops back to back, each acknowledged when its last fence is.",
    "cpu us/op: summed over the 3 processes (load's first); on 2 cores a 3-process system "
    "cannot exceed ~2e6 / that.",
    "B/op wire: every byte every node sent, framing included (logical: Raft frames both "
    "ways; physical: fence messages to both backups plus their 13-byte ACKs).",
    "rtt/op: logical: the leader's messages per follower per op (a replication round); "
    "physical: waits for acknowledgements per op.",
    "flush/op, fence/op: P = leader / primary, B = mean follower / backup; logical figures "
    "from a separate counting run (counting media add a Python call per flush).",
]


def command_line(argv: list[str] | None) -> str:
    return _report.command_line("blizzard bench replication",
                                sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="blizzard bench replication",
        description="Logical (Raft) against physical (mirrored persisted bytes) replication, "
                    "per structure and value size, 3 nodes on loopback, in one run.")
    parser.add_argument("--ops", type=int, default=None,
                        help=f"puts per throughput run (default {DEFAULT_OPS:,}; --quick "
                             f"{QUICK_OPS})")
    parser.add_argument("--latency-ops", type=int, default=None,
                        help=f"synchronous puts timed (default {DEFAULT_LATENCY_OPS}; --quick "
                             f"{QUICK_LATENCY_OPS})")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help=f"logical: requests in flight (default {DEFAULT_WINDOW})")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"of {', '.join(KNOWN_SYSTEMS)} (-dpdk: over DPDK memif "
                             "links instead of TCP); default %(default)s")
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    parser.add_argument("--values", default=",".join(map(str, VALUES)),
                        help="value sizes in bytes, comma-separated (default 64,1024)")
    parser.add_argument("--no-count", action="store_true",
                        help="skip the logical flush-counting run")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--dir", default="/dev/shm")
    _report.add_arguments(parser, check=False)  # it has no targets: it measures the shape
    args = parser.parse_args(argv)
    systems = tuple(s for s in args.systems.split(",") if s)
    structures = tuple(s for s in args.structures.split(",") if s)
    for s in systems:
        if s not in KNOWN_SYSTEMS:
            parser.error(f"--systems: unknown {s!r} (known: {', '.join(KNOWN_SYSTEMS)})")
    for s in structures:
        if s not in STRUCTURES:
            parser.error(f"--structures: unknown {s!r} (known: {', '.join(STRUCTURES)})")
    try:
        values = tuple(int(v) for v in args.values.split(",") if v)
    except ValueError:
        parser.error(f"--values: expected integers, got {args.values!r}")
    ops = args.ops or (QUICK_OPS if args.quick else DEFAULT_OPS)
    latency_ops = args.latency_ops or (QUICK_LATENCY_OPS if args.quick else DEFAULT_LATENCY_OPS)
    run_ = _report.Run("replication", command_line(argv), {
        "ops": ops, "latency_ops": latency_ops, "window": args.window, "systems": list(systems),
        "structures": list(structures), "values": list(values)})
    try:
        rows = run(ops=ops, latency_ops=latency_ops, window=args.window, systems=systems,
                   structures=structures, values=values, directory=args.dir,
                   count=not args.no_count, progress=not args.quiet)
    except BenchmarkError as exc:
        print(f"blizzard bench replication: {exc}", file=sys.stderr)
        return 1
    run_.end()
    _report.print_report(
        run_, [format_rows(rows)],
        title=f"blizzard bench replication: {ops:,} puts per throughput run, "
              f"{latency_ops:,} synchronous puts, logical window {args.window}",
        notes=notes(rows))
    _report.write_json(args.json, run_.record(results=[asdict(r) for r in rows],
                                              ratios=ratios(rows), notes=NOTES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
