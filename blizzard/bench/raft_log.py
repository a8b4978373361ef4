"""``blizzard bench raft-log``: CPU per entry of the persistent Raft log's two writes.

A replicated put is written into a Raft log on every node: on the leader by
an append (the driver's persist step saves the round's proposals), on a
follower by receiving its leader's records into the log's free tail and
accepting them (see :mod:`blizzard.replication.raft.pmem_storage`). This
measures each alone, on a pool under /dev/shm in ``pmem`` mode (real
cache-line flushes and fences), with no network and no core around it:

``append``
    ``save(None, batch)`` of ``--batch`` new entries of ``--value-bytes``
    each: records written, flushed, ``last_index`` stored, one fence.
``receive``
    the same entries as a leader's frame carries them: a region reserved at
    the log's tail (``tail_region``), the records put there (the kernel's
    ``recv_into`` would; here one slice assignment, outside the timing),
    checked and stamped (``received_entries``), then accepted by ``save``.

The log is compacted every so often, as a node does, so it stays small.
Reported: µs of this thread's CPU per entry, per path and value size.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.pmem import Pool
from blizzard.replication.raft import messages as m
from blizzard.replication.raft.pmem_storage import PmemStorage

__all__ = ["PATHS", "main", "run_once"]

PATHS = ("append", "receive")
POOL_BYTES = 256 << 20
COMPACT_EVERY = 64  # batches
_CONF = m.ConfState((1, 2, 3))


def _wire_records(first: int, count: int, data: bytes) -> bytes:
    """The records of entries ``first``.. as a MsgApp carries them (term 1)."""
    pad = bytes(-len(data) & 7)
    return b"".join(m.RECORD.pack(0, len(data), 1, first + i, 0) + data + pad
                    for i in range(count))


def run_once(path: str, *, directory: str, entries: int, batch: int,
             value_bytes: int) -> float:
    """Write ``entries`` entries through ``path``; return µs of CPU per entry."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; paths: {', '.join(PATHS)}")
    data = b"v" * value_bytes
    fd, name = tempfile.mkstemp(prefix="raft-log-", suffix=".pool", dir=directory)
    os.close(fd)
    os.unlink(name)
    pool = Pool.create(name, POOL_BYTES, mode="pmem")
    try:
        log = PmemStorage(pool, conf_state=_CONF)
        log.save(m.HardState(1, 0, 0), [m.Entry(1, 1, 0, data)])
        following = 2
        spent = 0.0
        for done in range(0, entries, batch):
            count = min(batch, entries - done)
            if path == "append":
                new = [m.Entry(1, following + i, 0, data) for i in range(count)]
                start = time.thread_time()
                log.save(None, new)
            else:
                records = _wire_records(following, count, data)
                start = time.thread_time()
                region = log.tail_region(following, 1, len(records))
                reserved = time.thread_time()
                region[:] = records  # (the kernel's recv_into: not the log's cost)
                start += time.thread_time() - reserved
                log.save(None, log.received_entries(region, count))
            spent += time.thread_time() - start
            following += count
            if (done // batch) % COMPACT_EVERY == COMPACT_EVERY - 1:
                keep = following - 1 - batch  # a record stays for the next region to follow
                log.compact(m.Snapshot(m.SnapshotMeta(keep, 1, _CONF), b""))
        log.check()  # every record written verifies (not timed)
        if log.last_index() != following - 1:
            raise AssertionError(f"log ends at {log.last_index()}, not {following - 1}")
        return spent / entries * 1e6
    finally:
        pool.close()
        Path(name).unlink(missing_ok=True)


HEADER = ["path", "value B", "µs/entry", "min", "max", "entries/s"]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="blizzard bench raft-log",
        description="CPU per entry of the persistent Raft log's appends (a leader "
                    "persisting its proposals) and receives (a follower taking its "
                    "leader's records where they landed), on a pmem-mode pool.")
    parser.add_argument("--entries", type=int, default=100_000,
                        help="entries written per run and path")
    parser.add_argument("--batch", type=int, default=64, help="entries per save (per frame)")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated, of: {', '.join(PATHS)}")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per path and size")
    _report.add_log_arguments(parser, sizes_help="comma-separated entry sizes in bytes")
    _report.add_arguments(parser, check=False)
    args = parser.parse_args(argv)
    sizes = _report.value_sizes(parser, args.value_bytes)
    paths = args.paths.split(",")
    for path in paths:
        if path not in PATHS:
            parser.error(f"--paths: unknown path {path!r}; paths: {', '.join(PATHS)}")
    if args.entries < 1 or args.batch < 1 or args.runs < 1:
        parser.error("--entries, --batch and --runs must be at least 1")
    if args.batch * (max(sizes) + 64) * 2 > POOL_BYTES // 4:
        parser.error(f"--batch x --value-bytes too large for a {POOL_BYTES >> 20} MiB pool")
    launcher = "python -m blizzard.bench.raft_log" if argv is None else "blizzard bench raft-log"
    run = _report.Run("raft-log", _report.command_line(
        launcher, list(sys.argv[1:] if argv is None else argv)),
        {"entries": args.entries, "batch": args.batch, "value_bytes": sizes, "paths": paths,
         "runs": args.runs})
    results = {}
    jobs = [(path, size) for size in sizes for path in paths]
    with _report.Progress(len(jobs) * (args.runs + 1), quiet=args.quiet) as progress:
        for path, size in jobs:
            progress.step(f"{path}, {size} B: warm-up")
            run_once(path, directory=args.dir, entries=max(args.entries // 10, 1),
                     batch=args.batch, value_bytes=size)
            samples = []
            for i in range(args.runs):
                progress.step(f"{path}, {size} B: run {i + 1}/{args.runs}")
                samples.append(run_once(path, directory=args.dir, entries=args.entries,
                                        batch=args.batch, value_bytes=size))
            results[f"{path} {size}"] = {"path": path, "value_bytes": size,
                                         "median_us": statistics.median(samples),
                                         "samples_us": samples}
    run.end()
    rows = [[r["path"], r["value_bytes"], f"{r['median_us']:.2f}", f"{min(r['samples_us']):.2f}",
             f"{max(r['samples_us']):.2f}", _report.rate(1e6 / r["median_us"])]
            for r in results.values()]
    _report.print_report(
        run, [_report.table(HEADER, rows)],
        title=f"blizzard bench raft-log: {args.runs} runs of {args.entries:,} entries per "
              f"path and size, {args.batch} per save, pool in pmem mode",
        notes=["µs/entry: this thread's CPU (the steadier figure on a shared machine), "
               "median of the runs; entries/s is its inverse",
               "receive: reserve the region, check and stamp the records, accept them "
               "(the records' arrival itself is not timed)"])
    _report.write_json(args.json, run.record(results=results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
