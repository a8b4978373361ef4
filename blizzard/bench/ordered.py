"""``blizzard bench ordered``: PBPlusTree and PSkipList against SortedDict and LMDB.

On a FileMedia pool under /dev/shm in ``pmem`` mode (real cache-line flushes
through libpmem), with 16-byte keys and 64-byte values, N keys (``--keys``,
default 1M) inserted in random order:

* ``insert``: N puts into an empty map, one Op and one transaction each;
* ``get``: ``--gets`` lookups of random present keys, measured at every
  power of ten on the way to N (so the growth of a lookup's cost with n
  shows);
* ``scan``: ranges of 1,000 consecutive keys from random starting keys,
  keys and values (keys/s).

References in the same run: ``sortedcontainers.SortedDict`` plus a dict
for values (the DRAM upper bound: no persistence) and python-lmdb (a
memory-mapped persistent B+tree; one write transaction per put with
``sync=True`` on /dev/shm; gets and scans in one read transaction).

Usage: ``python -m blizzard.bench.ordered [--keys N] [--structures bptree,skiplist]``.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.bench._report import command_line, rate, table
from blizzard.pmem import Pool
from blizzard.structures import PBPlusTree, PSkipList

KEY_BYTES = 16
VALUE_BYTES = 64
SCAN_KEYS = 1000
#: PBPlusTree's targets at 10^6 keys; its get rate is held against lmdb's in the same run.
TARGETS: dict[str, int | str] = {"insert": 150_000, "get": "lmdb", "scan": 3_000_000}


def make_keys(n: int, seed: int) -> list[bytes]:
    """``n`` distinct 16-byte keys in random order."""
    rnd = random.Random(seed)
    keys = [b"%016d" % i for i in range(n)]
    rnd.shuffle(keys)
    return keys


def checkpoints(n: int) -> list[int]:
    out = [p for p in (10**e for e in range(3, 10)) if p < n]
    return [*out, n]


class Workload:
    """The adapter a contestant offers: put, get, scan (count of keys seen)."""

    def __init__(self, put: Callable, get: Callable, scan: Callable[[bytes, bytes], int],
                 close: Callable[[], None]) -> None:
        self.put, self.get, self.scan, self.close = put, get, scan, close


def run(workload: Workload, keys: list[bytes], gets: int, scans: int, seed: int
        ) -> dict[str, object]:
    """Insert in stages, measuring gets at each checkpoint; then scans."""
    value = b"v" * VALUE_BYTES
    put, get = workload.put, workload.get
    rnd = random.Random(seed + 1)
    insert_s = insert_cpu = 0.0
    get_us: dict[int, float] = {}
    get_cpu_us = 0.0
    done = 0
    for stop in checkpoints(len(keys)):
        batch = keys[done:stop]
        start, cpu = time.perf_counter(), time.process_time()
        for k in batch:
            put(k, value)
        insert_s += time.perf_counter() - start
        insert_cpu += time.process_time() - cpu
        done = stop
        probe = [keys[i] for i in rnd.choices(range(done), k=gets)]
        start, cpu = time.perf_counter(), time.process_time()
        for k in probe:
            get(k)
        get_us[done] = (time.perf_counter() - start) / len(probe) * 1e6
        get_cpu_us = (time.process_time() - cpu) / len(probe) * 1e6
    ordered = sorted(keys)
    n = len(ordered)
    starts = [rnd.randrange(max(1, n - SCAN_KEYS)) for _ in range(scans)]
    seen = 0
    start, cpu = time.perf_counter(), time.process_time()
    for s in starts:
        seen += workload.scan(ordered[s], ordered[min(n - 1, s + SCAN_KEYS - 1)])
    scan_s = time.perf_counter() - start
    scan_cpu = time.process_time() - cpu
    return {"insert": len(keys) / insert_s, "get": 1e6 / get_us[len(keys)],
            "scan": seen / scan_s, "get_us": get_us,
            "insert_cpu_us": insert_cpu / len(keys) * 1e6, "get_cpu_us": get_cpu_us,
            "scan_cpu": seen / max(scan_cpu, 1e-9)}


def blizzard_workload(kind: str, workdir: Path, n: int, mode: str, fanout: int) -> Workload:
    path = workdir / f"{kind}.pool"
    per_key = 400 if kind == "bptree" else 260
    size = ((64 << 20) + n * per_key + 4095) // 4096 * 4096
    pool = Pool.create(path, size, mode=mode)
    m = PBPlusTree(pool, "m", fanout=fanout) if kind == "bptree" else PSkipList(pool, "m")
    items = m._core.items_range

    def scan(lo: bytes, hi: bytes) -> int:
        count = 0
        for _ in items(lo, hi, True, True, False):
            count += 1
        return count

    def close() -> None:
        pool.close()
        path.unlink(missing_ok=True)

    return Workload(m.__setitem__, m.__getitem__, scan, close)


def sorteddict_workload() -> Workload | str:
    try:
        from sortedcontainers import SortedDict
    except ImportError:
        return ("sortedcontainers not installed (pip install sortedcontainers): "
                "no SortedDict reference")

    d = SortedDict()

    def scan(lo: bytes, hi: bytes) -> int:
        count = 0
        for k in d.irange(lo, hi):
            d[k]
            count += 1
        return count

    return Workload(d.__setitem__, d.__getitem__, scan, lambda: None)


def lmdb_workload(workdir: Path, n: int) -> Workload | str:
    try:
        import lmdb
    except ImportError:
        return "python-lmdb not installed (pip install lmdb): no LMDB reference"
    path = workdir / "lmdb"
    env = lmdb.open(str(path), map_size=(256 << 20) + n * 400, sync=True, metasync=True)
    reader = [None]

    def put(k: bytes, v: bytes) -> None:
        if reader[0] is not None:
            reader[0].abort()
            reader[0] = None
        with env.begin(write=True) as txn:
            txn.put(k, v)

    def txn():
        if reader[0] is None:
            reader[0] = env.begin()
        return reader[0]

    def get(k: bytes) -> bytes | None:
        return txn().get(k)

    def scan(lo: bytes, hi: bytes) -> int:
        count = 0
        with txn().cursor() as cur:
            if cur.set_range(lo):
                for k, _ in cur:
                    if k > hi:
                        break
                    count += 1
        return count

    def close() -> None:
        if reader[0] is not None:
            reader[0].abort()
        env.close()
        shutil.rmtree(path, ignore_errors=True)

    return Workload(put, get, scan, close)


HEADER = ["system", "insert ops/s", "get ops/s", f"scan keys/s ({SCAN_KEYS})",
          "insert cpu µs", "get cpu µs", "scan keys/cpu s"]


def targets(results: dict[str, dict[str, object]]) -> list[str]:
    """PBPlusTree's figures against the targets (a named goal: that system's rate
    for the same operation in this run)."""
    ours = results.get("PBPlusTree")
    if ours is None:
        return []
    lines = []
    for op, goal in TARGETS.items():
        unit = "keys" if op == "scan" else "ops"
        if isinstance(goal, str):
            other = results.get(goal)
            if other is None:
                lines.append(f"PBPlusTree {op}: {rate(ours[op])} {unit}/s (target >= {goal}'s "
                             f"in the same run: no {goal} in this run)")
                continue
            want, said = other[op], f"{goal}'s {rate(other[op])}"
        else:
            want, said = goal, rate(goal)
        verdict = "met" if ours[op] >= want else "MISSED"  # type: ignore[operator]
        lines.append(f"PBPlusTree {op}: {rate(ours[op])} {unit}/s (target >= {said}: {verdict})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="blizzard bench ordered",
                            description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1M)")
    parser.add_argument("--gets", type=int, default=100_000,
                        help="lookups per measurement (default 100k)")
    parser.add_argument("--scans", type=int, default=300,
                        help=f"ranges of {SCAN_KEYS} keys scanned (default 300)")
    parser.add_argument("--structures", default="bptree,skiplist",
                        help="which Blizzard structures (bptree, skiplist)")
    parser.add_argument("--fanout", type=int, default=64, help="B+tree fanout (default 64)")
    parser.add_argument("--mode", default="pmem", choices=("pmem", "msync", "none"))
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the pool files go (default /dev/shm)")
    parser.add_argument("--no-references", action="store_true", help="skip SortedDict and lmdb")
    parser.add_argument("--seed", type=int, default=1)
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    launcher = "python -m blizzard.bench.ordered" if argv is None else "blizzard bench ordered"
    run_ = _report.Run("ordered", command_line(launcher, list(argv if argv is not None
                                                              else sys.argv[1:])),
                       {k: getattr(args, k) for k in ("keys", "gets", "scans", "structures",
                                                      "fanout", "mode", "dir", "seed")})
    keys = make_keys(args.keys, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-", dir=args.dir))
    results: dict[str, dict[str, object]] = {}
    notes: list[str] = []
    try:
        contestants: list[tuple[str, Callable[[], Workload | str]]] = []
        for kind in [s.strip() for s in args.structures.split(",") if s.strip()]:
            if kind not in ("bptree", "skiplist"):
                parser.error(f"unknown structure {kind!r}")
            label = "PBPlusTree" if kind == "bptree" else "PSkipList"
            contestants.append((label, lambda kind=kind: blizzard_workload(
                kind, workdir, args.keys, args.mode, args.fanout)))
        if not args.no_references:
            contestants.append(("SortedDict", sorteddict_workload))
            contestants.append(("lmdb", lambda: lmdb_workload(workdir, args.keys)))
        with _report.Progress(len(contestants), quiet=args.quiet) as progress:
            for label, make in contestants:
                progress.step(f"{label}: {args.keys:,} inserts, gets, scans")
                workload = make()
                if isinstance(workload, str):
                    notes.append(workload)
                    continue
                try:
                    results[label] = run(workload, keys, args.gets, args.scans, args.seed)
                finally:
                    workload.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run_.end()
    rows = [[label, rate(r["insert"]), rate(r["get"]), rate(r["scan"]),
             f"{r['insert_cpu_us']:.2f}", f"{r['get_cpu_us']:.2f}", rate(r["scan_cpu"])]
            for label, r in results.items()]
    sizes = checkpoints(args.keys)
    growth = table(["system", *[f"n={s:,}" for s in sizes]],
                   [[label, *[f"{r['get_us'][s]:.2f}" for s in sizes]]
                    for label, r in results.items()])
    body = [table(HEADER, rows), "get latency (µs) as the map grows:\n" + growth]
    if "PBPlusTree" in results and "PSkipList" in results:
        b, s = results["PBPlusTree"], results["PSkipList"]
        body.append("PSkipList / PBPlusTree: " + ", ".join(
            f"{op} {s[op] / b[op]:.2f}x" for op in ("insert", "get", "scan")))
    verdict = targets(results)
    notes = ["ops/s are wall clock; the cpu columns count this process's CPU time only, "
             "which the machine's other load disturbs less",
             "lmdb: one write transaction per put (sync=True); gets and scans in one read "
             "transaction", *notes]
    _report.print_report(
        run_, body, title=f"blizzard bench ordered: {args.keys:,} keys of {KEY_BYTES} bytes, "
                          f"{VALUE_BYTES}-byte values, random insert order; FileMedia "
                          f"mode={args.mode} in {args.dir}; B+tree fanout {args.fanout}",
        targets=verdict, notes=notes)
    _report.write_json(args.json, run_.record(
        targets=TARGETS, verdict=verdict, notes=notes,
        results=[{"system": label, **r} for label, r in results.items()]))
    return _report.exit_status(args.check, verdict)


if __name__ == "__main__":
    raise SystemExit(main())
