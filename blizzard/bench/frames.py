"""``blizzard bench frames``: one message's round trip between two processes.

How much of a round trip is the network, and how much is Python around it.
Two processes, each with a DPDK transport (a net_memif link between them)
and a TCP transport (loopback), bounce a 64-byte message back and forth,
one round trip at a time, in four ways (:mod:`._frames_node` describes
each): ``floor`` (the least Python can do over memif: copy into an mbuf and
burst; burst and copy out), ``frame`` (Blizzard frames through the C helper:
header, CRC32C, validation), ``dpdk`` (the transport on its polling asyncio
loop, as a Raft node uses it) and ``tcp`` (the TCP transport, asyncio
streams). Reported: p50 / p99 / mean round trip, each against the floor,
and the CPU both processes spent per round trip.

``blizzard bench cluster --transport tcp,dpdk`` runs this too, in the same
run as the clusters it compares.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report

MODES = ("floor", "frame", "dpdk", "tcp")
LABELS = {
    "floor": "memif floor (copy + burst of 1, busy poll)",
    "frame": "blizzard frames (C helper, busy poll)",
    "dpdk": "dpdk transport (asyncio, adaptive poll)",
    "tcp": "tcp transport (asyncio streams)",
}
SYNC_ROUNDS = 20_000
ASYNC_ROUNDS = 3_000
QUICK_SYNC_ROUNDS = 2_000
QUICK_ASYNC_ROUNDS = 300
SIZE = 64
WARMUP = 200


@dataclass
class FrameResult:
    mode: str
    latency: dict[str, Any] = field(default_factory=dict)
    cpu_us_per_round_trip: float | None = None
    note: str = ""


def run(sync_rounds: int = SYNC_ROUNDS, async_rounds: int = ASYNC_ROUNDS, size: int = SIZE,
        directory: str = "/dev/shm", modes: tuple[str, ...] = MODES, step=None
        ) -> list[FrameResult]:
    """Measure each mode; every child is killed and the directory removed on return."""
    from blizzard.bench.cluster import NodeProcess, free_port_block
    from blizzard.exceptions import BenchmarkError

    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-frames-", dir=directory))
    base = free_port_block(2)
    spec = {"nodes": [1, 2], "run_dir": str(workdir), "cluster_id": "bench-frames",
            "tcp": {"1": ["127.0.0.1", base], "2": ["127.0.0.1", base + 1]}}
    ends: list[NodeProcess] = []
    results = []
    try:
        for node in (1, 2):
            ends.append(NodeProcess(f"frames end {node}", [
                "-m", "blizzard.bench._frames_node", json.dumps({**spec, "node": node})],
                workdir / f"end{node}.log"))
        pinger, echo = ends
        for mode in modes:
            rounds = sync_rounds if mode in ("floor", "frame") else async_rounds
            if step:
                step(f"frames: {rounds:,} round trips, {mode}")
            result = FrameResult(mode)
            try:
                echo.start_call(f"echo {mode} {rounds + WARMUP}")
                pinger.call(f"ping {mode} {WARMUP} {size}")
                reply = pinger.call(f"ping {mode} {rounds} {size}")
                echoed = echo.finish_call(f"echo {mode}")
            except BenchmarkError as exc:
                result.note = f"failed: {exc}".splitlines()[0]
                results.append(result)
                break
            result.latency = {k: reply[k] for k in ("n", "p50_us", "p99_us", "mean_us")
                              if k in reply}
            if reply.get("resent"):
                result.note = f"{reply['resent']} pings unanswered for 20 ms and sent again"
            result.cpu_us_per_round_trip = round(
                (reply["cpu_seconds"] + echoed["cpu_seconds"]) * 1e6 / max(1, reply["n"]), 2)
            results.append(result)
    finally:
        for end in ends:
            end.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def format_results(results: list[FrameResult]) -> str:
    floor = next((r.latency.get("p50_us") for r in results if r.mode == "floor"), None)
    rows = []
    for r in results:
        p50 = r.latency.get("p50_us")
        rows.append([LABELS[r.mode], f"{p50:.1f}" if p50 else "-",
                     f"{r.latency['p99_us']:.1f}" if p50 else "-",
                     f"{r.latency['mean_us']:.1f}" if p50 else "-",
                     f"{p50 / floor:.1f}x" if p50 and floor else "-",
                     "-" if r.cpu_us_per_round_trip is None else f"{r.cpu_us_per_round_trip:.1f}"])
    out = [_report.table(["64-byte round trip", "p50 us", "p99 us", "mean us", "vs floor",
                          "cpu us/rt"], rows)]
    notes = [f"{LABELS[r.mode]}: {r.note}" for r in results if r.note]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="blizzard bench frames", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=SYNC_ROUNDS,
                        help="round trips of the busy-polling modes (floor, frame)")
    parser.add_argument("--async-rounds", type=int, default=ASYNC_ROUNDS,
                        help="round trips through the transports (dpdk, tcp)")
    parser.add_argument("--size", type=int, default=SIZE, help="message bytes")
    parser.add_argument("--dir", default="/dev/shm", help="where the run's files go")
    _report.add_arguments(parser, check=False)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    run_ = _report.Run("frames", _report.command_line("blizzard bench frames", given),
                       {"rounds": args.rounds, "async_rounds": args.async_rounds,
                        "size": args.size, "dir": args.dir})
    with _report.Progress(len(MODES), quiet=args.quiet) as meter:
        results = run(args.rounds, args.async_rounds, args.size, directory=args.dir,
                      step=meter.step)
    run_.end()
    _report.print_report(
        run_, [format_results(results)],
        title=f"blizzard bench frames: {args.rounds:,} / {args.async_rounds:,} round trips of "
              f"{args.size} bytes between two processes")
    _report.write_json(args.json, run_.record(results=[asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
