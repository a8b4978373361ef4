"""``blizzard bench report``: the logical-versus-physical study, from one command.

The sweep: structure {hashmap, queue, bptree, skiplist} x backend {local,
raft-tcp, raft-dpdk, physical-tcp, physical-dpdk} x replicas {1, 3, 5} x
value size {64 B, 1 KiB} x clients in flight {1, 16, 256}, plus PySyncObj
(3 replicas, the reference Raft in Python) as reference rows. ``local`` has
one replica only; it is the denominator of every replicated/local ratio.

Each backend and replica count is one cluster of real processes
(:mod:`._store_node`: ``blizzard.open`` of a generated config; physical
backups are their own processes), pools on /dev/shm in ``pmem`` mode, the
load generated inside the process that holds the primary or the leader (the
embedded use). Per structure and value size, a warm-up fills a key space of
``--keys`` keys; each measured run then puts for at most ``--seconds`` with
the given number of requests in flight, overwriting those keys (a steady
state; the queue alternates puts and gets so it keeps its length). Each
point is run ``--repeats`` times: the report gives the median and the
spread. Every run records:

* throughput, and the latency of every request (p50, p99);
* CPU time of every process of the cluster, per operation;
* the backend's own counters (``store.status()["counters"]``) before and
  after: bytes and messages on the wire, round trips, flushes and fences,
  per operation;
* the load: the machine's CPU used by *other* processes meanwhile (from
  /proc/stat less this run's processes) and the load average; a run where
  others used more than ``OTHERS_CORES_MAX`` cores is flagged busy.

Outputs: ``--out`` (docs/) gets ``report.json`` (every point, every raw
run), ``report.md`` (tables, machine, date, command) and ``report/*.png``
(:mod:`._plots`); with the default ``--out`` the README's report section
is rewritten too. ``--resume`` keeps the points already in report.json
and runs the rest. A backend that is not built or not installed here is
skipped with one line saying why.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.bench.cluster import NodeProcess, _wait, free_port_block
from blizzard.exceptions import BenchmarkError, BenchmarkSkippedError

STRUCTURES = ("hashmap", "queue", "bptree", "skiplist")
#: backend name -> (``[replication] backend``, ``[transport] kind``)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "local": ("local", None),
    "raft-tcp": ("raft", "tcp"),
    "raft-dpdk": ("raft", "dpdk"),
    "physical-tcp": ("physical", "tcp"),
    "physical-dpdk": ("physical", "dpdk"),
}
REPLICAS = (1, 3, 5)
VALUES = (64, 1024)
IN_FLIGHT = (1, 16, 256)
REFERENCES = ("pysyncobj", "etcd")
REFERENCE_REPLICAS = 3

OTHERS_CORES_MAX = 0.5  # other processes' CPU use (in cores) above which a run is 'busy'
START_TIMEOUT_S = 120.0
WARM_SECONDS_MAX = 10.0
NODE = "blizzard.bench._store_node"
DATA_POOL_BYTES = 128 << 20
LOG_POOL_BYTES = 512 << 20


@dataclass(frozen=True)
class Sweep:
    """What to measure and how long each run may take."""

    structures: tuple[str, ...] = STRUCTURES
    backends: tuple[str, ...] = tuple(BACKENDS)
    replicas: tuple[int, ...] = REPLICAS
    values: tuple[int, ...] = VALUES
    in_flight: tuple[int, ...] = IN_FLIGHT
    references: tuple[str, ...] = REFERENCES
    repeats: int = 3
    seconds: float = 1.5  # per measured run, at most
    ops_max: int = 20_000  # per measured run, at most
    keys: int = 4096  # key space of each structure
    physical_fence: str = "pipelined"

    def clusters(self) -> list[tuple[str, int]]:
        """(backend, replicas) in the order they run; local once, with one replica."""
        out = []
        for backend in self.backends:
            for n in (1,) if backend == "local" else self.replicas:
                out.append((backend, n))
        return out

    def points(self) -> list[tuple[str, int, int]]:
        """(structure, value bytes, in flight) measured on each cluster."""
        return [(s, v, w) for s in self.structures for v in self.values for w in self.in_flight]


FULL = Sweep()
QUICK = Sweep(replicas=(3,), repeats=1, seconds=0.3, ops_max=3000, keys=512)


def point_key(structure: str, backend: str, replicas: int, value: int, in_flight: int) -> str:
    return f"{structure}/{backend}/{replicas}/{value}/{in_flight}"


# -- which backends can run here ------------------------------------------------------------


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine, or None if it can be tried."""
    from blizzard.cluster.backends import BACKENDS as REGISTERED
    from blizzard.exceptions import ConfigError
    from blizzard.replication.transport.registry import TRANSPORTS

    kind, transport = BACKENDS[backend]
    try:
        REGISTERED.get(kind)
        if transport is not None:
            TRANSPORTS.get(transport)
    except ConfigError as exc:
        return str(exc)
    return None


# -- one cluster ----------------------------------------------------------------------------


class Cluster:
    """The processes of one backend with ``replicas`` copies; killed by :meth:`kill`."""

    def __init__(self, workdir: Path, backend: str, replicas: int, sweep: Sweep) -> None:
        from blizzard.cluster.config import dump, local_cluster

        kind, transport = BACKENDS[backend]
        self.backend, self.replicas = backend, replicas
        directory = workdir / f"{backend}-{replicas}"
        directory.mkdir(parents=True)
        options: dict[str, Any] = {"backend": kind}
        if kind == "physical":
            options.update(fence=sweep.physical_fence, ready_timeout_s=START_TIMEOUT_S)
        settings: dict[str, Any] = {"pool_size": DATA_POOL_BYTES, "durability": "pmem",
                                    "replication": options}
        if kind != "local":
            settings.update(log_pool_size=LOG_POOL_BYTES, transport={"kind": transport},
                            raft={"election_ticks": 50})
        config = local_cluster(0 if kind == "local" else replicas, directory,
                               base_port=free_port_block(2 * replicas), cluster_id="report",
                               **settings)
        path = directory / "config.toml"
        path.write_text(dump(config))
        self.nodes: list[NodeProcess] = []
        try:
            if kind == "local":
                self.load = self._start("store", path, None, directory)
            elif kind == "physical":  # backups first: the primary waits for them
                for i in range(2, replicas + 1):
                    self._start("backup", path, i, directory)
                self.load = self._start("store", path, 1, directory)
            else:
                for i in range(1, replicas + 1):
                    self._start("store", path, i, directory)
                lead = _wait(self._leader, START_TIMEOUT_S, "a Raft leader known to all")
                self.load = next(n for n in self.nodes if n.hello["node"] == lead)
            self.nodes.remove(self.load)
            self.nodes.insert(0, self.load)  # the load's process first
        except BaseException:
            self.kill()
            raise

    def _start(self, role: str, path: Path, node: int | None, directory: Path) -> NodeProcess:
        name = f"{self.backend} {role}" + ("" if node is None else f" {node}")
        argv = ["-m", NODE, role, str(path)] + ([] if node is None else [str(node)])
        process = NodeProcess(name, argv, directory / f"{role}-{node or 0}.log")
        self.nodes.append(process)
        if process.hello.get("skipped"):
            raise BenchmarkSkippedError(process.hello["skipped"])
        return process

    def _leader(self) -> int:
        leaders = {n.call("status")["status"]["leader"] for n in self.nodes}
        return (leaders.pop() or 0) if len(leaders) == 1 else 0

    def counters(self) -> list[dict[str, float]]:
        return [n.call("counters")["counters"] for n in self.nodes]

    def kill(self) -> None:
        while self.nodes:
            self.nodes.pop().kill()


# -- one point ------------------------------------------------------------------------------


def _delta(before: dict[str, float], after: dict[str, float], *keys: str) -> float | None:
    """The first of ``keys`` both readings have, after minus before."""
    for key in keys:
        if key in before and key in after:
            return after[key] - before[key]
    return None


def account(kind: str, before: list[dict], after: list[dict], ops: int,
            replicas: int) -> dict[str, float | None]:
    """Wire and flush figures per op from the counters of every process around a run."""
    out: dict[str, float | None] = dict.fromkeys(
        ("bytes_per_op", "messages_per_op", "round_trips_per_op", "flushes_per_op",
         "fences_per_op"))
    if not ops or kind == "local":
        if kind == "local" and ops:
            out.update(bytes_per_op=0.0, messages_per_op=0.0, round_trips_per_op=0.0)
        return out
    sent = [_delta(b, a, "bytes_sent", "transport_bytes_sent") for b, a in zip(before, after,
                                                                                strict=True)]
    messages = [_delta(b, a, "messages_sent", "transport_frames_sent")
                for b, a in zip(before, after, strict=True)]
    if all(x is not None for x in sent):
        out["bytes_per_op"] = sum(sent) / ops
    if all(x is not None for x in messages):
        out["messages_per_op"] = sum(messages) / ops
    lead_b, lead_a = before[0], after[0]
    if kind == "physical":
        rt = _delta(lead_b, lead_a, "round_trips")
        out["round_trips_per_op"] = None if rt is None else rt / ops
    elif replicas > 1 and messages[0] is not None:
        # each AppendEntries a leader sends a follower is one round, answered
        out["round_trips_per_op"] = messages[0] / (replicas - 1) / ops
    elif replicas == 1:
        out["round_trips_per_op"] = 0.0
    for key, name in (("flushes", "flushes_per_op"), ("fences", "fences_per_op")):
        d = _delta(lead_b, lead_a, key)
        out[name] = None if d is None else d / ops
    return out


def timed_run(processes: list[NodeProcess], command: str) -> dict[str, Any]:
    """Send a ``load`` command to ``processes[0]``: its figures, the CPU of every process
    per op (``processes`` order), and what the rest of the machine did meanwhile."""
    before = [n.cpu_seconds() for n in processes]
    ticks0, load0, own0 = _report.cpu_ticks(), _report.load_average(), time.process_time()
    wall0 = time.monotonic()
    reply = processes[0].call(command)
    wall = time.monotonic() - wall0
    after = [n.cpu_seconds() for n in processes]
    ticks1, load1, own1 = _report.cpu_ticks(), _report.load_average(), time.process_time()
    ops = reply["ops"]
    by_process = [round((a - b) * 1e6 / ops, 1) if ops else None
                  for a, b in zip(after, before, strict=True)]
    others = None
    if ticks0 and ticks1 and wall > 0:
        ours = sum(after) - sum(before) + own1 - own0
        others = round(max((ticks1[0] - ticks0[0]) - ours, 0.0) / wall, 2)
    latency = reply["latency"]
    return {"ops": ops, "seconds": reply["seconds"],
            "failed": reply["failed"] + reply["unanswered"],
            "rate": ops / reply["seconds"] if ops else None,
            "p50_us": latency.get("p50_us"), "p99_us": latency.get("p99_us"),
            "mean_us": latency.get("mean_us"), "cpu_by_process": by_process,
            "cpu_us_per_op": round(sum(by_process), 1) if ops else None,
            "load_before": load0, "load_after": load1, "others_cores": others,
            "errors": reply["errors"][:2]}


def measure(cluster: Cluster, kind: str, name: str, value: int, in_flight: int,
            sweep: Sweep, offset: int) -> dict[str, Any]:
    """One measured run: rate, latency, CPU per process, counters per op, load."""
    before = cluster.counters()
    sample = timed_run(cluster.nodes, f"load {name} {sweep.ops_max} {in_flight} {sweep.keys} "
                                      f"{offset} {value} {sweep.seconds}")
    sample.update(account(kind, before, cluster.counters(), sample["ops"], cluster.replicas))
    return sample


def summarize(sample_list: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of a point's runs (the figures its row shows)."""
    def median(key: str) -> float | None:
        xs = [s[key] for s in sample_list if s.get(key) is not None]
        return statistics.median(xs) if xs else None

    rates = [s["rate"] for s in sample_list if s.get("rate")]
    out: dict[str, Any] = {key: median(key) for key in (
        "rate", "p50_us", "p99_us", "cpu_us_per_op", "bytes_per_op", "messages_per_op",
        "round_trips_per_op", "flushes_per_op", "fences_per_op")}
    out["rate_min"] = min(rates) if rates else None
    out["rate_max"] = max(rates) if rates else None
    out["spread"] = ((max(rates) - min(rates)) / out["rate"]) if len(rates) > 1 else None
    processes = max((len(s["cpu_by_process"]) for s in sample_list), default=0)
    out["cpu_by_process"] = [
        statistics.median(xs) if (xs := [s["cpu_by_process"][i] for s in sample_list
                                         if s["cpu_by_process"][i] is not None]) else None
        for i in range(processes)]
    out["failed"] = sum(s["failed"] for s in sample_list)
    others = [s["others_cores"] for s in sample_list if s.get("others_cores") is not None]
    out["others_cores"] = max(others) if others else None
    out["busy"] = bool(others) and max(others) > OTHERS_CORES_MAX
    return out


# -- the sweep ------------------------------------------------------------------------------


class Sink:
    """The JSON document of the sweep, rewritten as points complete (for --resume)."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self.document = document

    def add(self, point: dict[str, Any]) -> None:
        self.document["points"][point["key"]] = point
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.document, indent=1, default=str) + "\n")
        tmp.replace(self.path)


def run_cluster(workdir: Path, backend: str, replicas: int, sweep: Sweep, sink: Sink,
                run_id: str, progress: _report.Progress) -> None:
    """Every point of one cluster not already in the sink."""
    kind = BACKENDS[backend][0]
    todo = [(s, v, w) for s, v, w in sweep.points()
            if point_key(s, backend, replicas, v, w) not in sink.document["points"]]
    if not todo:
        return
    progress.step(f"{backend}, {replicas} replica(s): starting", units=2)
    cluster = Cluster(workdir, backend, replicas, sweep)
    try:
        opened: set[str] = set()
        offset = 0
        for structure, value, in_flight in todo:
            name = f"{structure}-{value}"
            key = point_key(structure, backend, replicas, value, in_flight)
            if name not in opened:
                cluster.load.call(f"open {structure} {name}")
                cluster.load.call(f"load {name} {sweep.keys} 256 {sweep.keys} 0 {value} "
                                  f"{WARM_SECONDS_MAX}")
                opened.add(name)
            samples = []
            for r in range(sweep.repeats):
                progress.step(f"{backend}, {replicas} replica(s): {structure}, {value} B, "
                              f"{in_flight} in flight ({r + 1}/{sweep.repeats})")
                samples.append(measure(cluster, kind, name, value, in_flight, sweep, offset))
                offset += samples[-1]["ops"] + samples[-1]["failed"]
            sink.add({"key": key, "structure": structure, "backend": backend,
                      "replicas": replicas, "value_bytes": value, "in_flight": in_flight,
                      "status": "ok", "run": run_id, **summarize(samples),
                      "samples": samples})
    finally:
        cluster.kill()


def skip_cluster(backend: str, replicas: int, sweep: Sweep, sink: Sink, run_id: str,
                 status: str, note: str) -> None:
    """Record every point of a cluster that did not run, with the reason."""
    for structure, value, in_flight in sweep.points():
        key = point_key(structure, backend, replicas, value, in_flight)
        sink.document["points"][key] = {
            "key": key, "structure": structure, "backend": backend, "replicas": replicas,
            "value_bytes": value, "in_flight": in_flight, "status": status, "note": note,
            "run": run_id, "samples": []}
    sink.save()


def run_sweep(sweep: Sweep, sink: Sink, run_id: str, *, directory: str, quiet: bool,
              say=print) -> None:
    """Every cluster of the sweep, then the references; points go to ``sink``."""
    from blizzard.bench import _references

    clusters = sweep.clusters()
    reasons = {b: unavailable(b) for b in sweep.backends}
    runnable = [(b, n) for b, n in clusters if reasons[b] is None]
    references = [r for r in sweep.references if _references.unavailable(r) is None]
    steps = (len(runnable) * (2 + len(sweep.points()) * sweep.repeats)
             + len(references) * (1 + len(sweep.values) * len(sweep.in_flight) * sweep.repeats))
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-report-", dir=directory))
    try:
        with _report.Progress(steps, quiet=quiet) as progress:
            for backend, replicas in clusters:
                if reasons[backend] is not None:
                    continue
                try:
                    run_cluster(workdir, backend, replicas, sweep, sink, run_id, progress)
                except BenchmarkSkippedError as exc:
                    reasons[backend] = str(exc)
                except BenchmarkError as exc:
                    note = str(exc).splitlines()[0][:500]
                    say(f"{backend}, {replicas} replica(s): FAILED: {note}")
                    skip_cluster(backend, replicas, sweep, sink, run_id, "failed", note)
            for name in sweep.references:
                _references.run(name, workdir, sweep, sink, run_id, progress, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for backend, reason in reasons.items():
        if reason is not None:
            say(f"{backend}: skipped: {reason}")
            for n in (1,) if backend == "local" else sweep.replicas:
                skip_cluster(backend, n, sweep, sink, run_id, "skipped", reason)


# -- the command ----------------------------------------------------------------------------


def _names(text: str, known: tuple[str, ...], what: str, parser) -> tuple[str, ...]:
    names = tuple(x for x in text.split(",") if x)
    for x in names:
        if x not in known:
            parser.error(f"--{what}: unknown {x!r} (known: {', '.join(known)})")
    return names


def _ints(text: str, what: str, parser) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        parser.error(f"--{what}: comma-separated integers, got {text!r}")
    if not out or min(out) < 1:
        parser.error(f"--{what}: positive integers, got {text!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="blizzard bench report",
        description="Regenerate the logical-versus-physical replication study: a sweep over "
                    "structures, backends, replicas, value sizes and clients in flight; JSON "
                    "of every point, a Markdown report and PNG plots.")
    parser.add_argument("--quick", action="store_true",
                        help="3 replicas only, one run of 0.3 s per point (a few minutes)")
    parser.add_argument("--structures", help=f"default {','.join(STRUCTURES)}")
    parser.add_argument("--backends", help=f"default {','.join(BACKENDS)}")
    parser.add_argument("--replicas", help="default 1,3,5 (--quick: 3)")
    parser.add_argument("--values", help="value sizes in bytes, default 64,1024")
    parser.add_argument("--in-flight", help="requests outstanding, default 1,16,256")
    parser.add_argument("--references", help=f"default {','.join(REFERENCES)}; 'none' for none")
    parser.add_argument("--repeats", type=int, help="runs per point (default 3; --quick 1)")
    parser.add_argument("--seconds", type=float,
                        help="length of each run, at most (default 1.5; --quick 0.3)")
    parser.add_argument("--physical-fence", choices=("sync", "pipelined"),
                        default="pipelined",
                        help="the physical backends' fence mode (default pipelined: Ops apply "
                             "back to back, each acknowledged once its last fence is)")
    parser.add_argument("--out", default="docs",
                        help="where report.md, report.json and report/*.png go (default docs)")
    parser.add_argument("--readme", default=None,
                        help="README whose report section is rewritten (default: README.md "
                             "when --out is the default)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the points already in OUT/report.json, run the rest")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: write report.md, the plots and the README "
                             "section again from OUT/report.json")
    parser.add_argument("--dir", default="/dev/shm", help="where the pools go (tmpfs)")
    # --json PATH: a copy of OUT/report.json; --check: the expected shape, met or MISSED
    _report.add_arguments(parser)
    return parser


def sweep_from(args: argparse.Namespace, parser) -> Sweep:
    base = QUICK if args.quick else FULL
    sweep = base
    if args.structures:
        sweep = replace(sweep, structures=_names(args.structures, STRUCTURES, "structures",
                                                 parser))
    if args.backends:
        sweep = replace(sweep, backends=_names(args.backends, tuple(BACKENDS), "backends",
                                               parser))
    if args.replicas:
        sweep = replace(sweep, replicas=_ints(args.replicas, "replicas", parser))
    if args.values:
        sweep = replace(sweep, values=_ints(args.values, "values", parser))
    if args.in_flight:
        sweep = replace(sweep, in_flight=_ints(args.in_flight, "in-flight", parser))
    if args.references:
        sweep = replace(sweep, references=() if args.references == "none" else
                        _names(args.references, REFERENCES, "references", parser))
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats: at least 1")
        sweep = replace(sweep, repeats=args.repeats)
    if args.seconds is not None:
        if args.seconds <= 0:
            parser.error("--seconds: a positive number")
        sweep = replace(sweep, seconds=args.seconds)
    return replace(sweep, physical_fence=args.physical_fence)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sweep = sweep_from(args, parser)
    out = Path(args.out)
    json_path = out / "report.json"
    readme = Path(args.readme) if args.readme else (
        Path("README.md") if args.out == parser.get_default("out") else None)
    if args.render_only:
        if not json_path.exists():
            parser.error(f"--render-only: no {json_path} to render")
        document = json.loads(json_path.read_text())
        run = None
    else:
        command = _report.command_line("blizzard bench report",
                                       sys.argv[1:] if argv is None else argv)
        document, run = measure_sweep(sweep, args, command, json_path)
    status = render(document, run, out, readme, check=args.check)
    if args.json and Path(args.json).resolve() != json_path.resolve():
        shutil.copyfile(json_path, args.json)
    return status


def measure_sweep(sweep: Sweep, args: argparse.Namespace, command: str,
                  json_path: Path) -> tuple[dict[str, Any], _report.Run]:
    """Run the sweep (keeping an earlier run's points with ``--resume``); the document."""
    run = _report.Run("report", command, {"sweep": asdict(sweep), "dir": args.dir})
    document = (_resume(json_path, sweep) if args.resume else None) or {"points": {}}
    runs = document.get("runs", [])
    document.update(run.record(runs=runs))
    sink = Sink(json_path, document)
    err = _report.console(sys.stderr)
    run_sweep(sweep, sink, run.started, directory=args.dir, quiet=args.quiet,
              say=lambda line: err.print(line))
    run.end()
    measured = sum(1 for p in document["points"].values() if p.get("run") == run.started)
    document.update(run.record(runs=[*runs, {
        "started": run.started, "command": command, "seconds": run.seconds,
        "load_start": run.load_start, "load_end": run.load_end, "points": measured}]))
    document["sweep"] = asdict(sweep)
    sink.save()
    return document, run


def render(document: dict[str, Any], run: _report.Run | None, out: Path,
           readme: Path | None, *, check: bool = False) -> int:
    """report.md, the plots and the README's section from ``document``; the summary."""
    from blizzard.bench import _plots, _report_doc

    plots = _plots.write(document, out / "report")
    _report_doc.write(document, out / "report.md", plots)
    if readme is not None:
        _report_doc.update_readme(document, readme, out / "report.md", plots)
    verdict = _report_doc.targets(document)
    title = (f"blizzard bench report: {len(document['points'])} points; {out / 'report.md'}, "
             f"{out / 'report.json'}, {len(plots)} plots in {out / 'report'}")
    if run is None:  # rendered again: the header is the measuring run's
        run = _report.Run("report", document["command"], machine=document["machine"],
                          load_start=document["load"]["start"],
                          load_end=document["load"]["end"], started=document["started"],
                          seconds=document.get("seconds"))
    _report.print_report(run, [_report_doc.headline_table(document)], title=title,
                         targets=verdict, notes=_report_doc.skipped_lines(document))
    return _report.exit_status(check, verdict)


def _resume(path: Path, sweep: Sweep) -> dict[str, Any] | None:
    """The document of an earlier run whose points may be kept (same run lengths)."""
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    previous = document.get("sweep", document.get("params", {}).get("sweep", {}))
    same = all(previous.get(k) == getattr(sweep, k) for k in ("seconds", "ops_max", "keys",
                                                              "physical_fence"))
    kept = {k: p for k, p in document.get("points", {}).items()
            if same and p.get("status") == "ok"}
    document["points"] = kept
    return document


if __name__ == "__main__":
    sys.exit(main())
