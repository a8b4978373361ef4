"""``blizzard bench structures``: PHashMap and PQueue against what a user would pick.

On a FileMedia pool under /dev/shm in ``pmem`` mode (real cache-line flushes
through libpmem), with 16-byte keys and 64-byte values, for each map size S
in 10^3 .. 10^6 (capped by ``--ops``):

* ``put``: inserting S keys into an empty map (the cost while growing to S);
* ``get``: ``--ops`` (at least S) lookups of random present keys, each value
  dropped as the next is read (as every reference's loop does);
* ``delete``: deleting the S keys again;
* ``queue put+get``: ``--ops`` pairs on a queue holding S items.

Every mutation is one Op through the LocalReplicator, one pool transaction.
References in the same run, where installed: Python ``dict`` (the upper
bound: no persistence), python-lmdb (one write transaction per put with
``sync=True`` on /dev/shm; gets in one read transaction), and pynvm's
PersistentDict over libpmemobj (str keys and values, as it cannot store
bytes; capped at ``--pynvm-ops`` because it is slow).

Usage: ``python -m blizzard.bench.structures [--ops N] [--sizes 1000,10000]``.
"""

from __future__ import annotations

import os
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
from blizzard.structures import PHashMap, PQueue

KEY_BYTES = 16
VALUE_BYTES = 64
TARGETS = {"put": 250_000, "get": 1_000_000, "delete": 200_000, "queue put+get": 300_000}


def keys_for(n: int) -> list[bytes]:
    return [b"%016d" % i for i in range(n)]


#: CPU seconds per op of the last ``timed`` blizzard measurements, by operation name.
CPU: dict[str, float] = {}


def timed(fn: Callable[[], None], ops: int, name: str | None = None) -> float:
    """Wall-clock ops per second of ``fn`` (which performs ``ops`` operations).

    With ``name``, also records CPU seconds per op in ``CPU``: on a shared
    machine the CPU time is the steadier figure.
    """
    start, cpu = time.perf_counter(), time.thread_time()
    fn()
    if name is not None:
        CPU[name] = (time.thread_time() - cpu) / ops
    return ops / (time.perf_counter() - start)


def pool_bytes(size: int) -> int:
    """Room for ``size`` entries in pages at half occupancy, plus slack, in 4 KiB units."""
    return ((64 << 20) + size * 400 + 4095) // 4096 * 4096


def bench_blizzard(workdir: Path, size: int, ops: int, mode: str) -> dict[str, float]:
    path = workdir / f"blizzard-{size}.pool"
    pool = Pool.create(path, pool_bytes(size), mode=mode)
    try:
        m = PHashMap(pool, "m")
        keys = keys_for(size)
        value = b"v" * VALUE_BYTES
        setitem = m.__setitem__
        delitem = m.__delitem__
        probe = [keys[i] for i in random.Random(1).choices(range(size), k=max(ops, size))]
        out = {"put": timed(lambda: [setitem(k, value) for k in keys], size, "put")}

        # m[k], as a program reads and as the dict reference's loop is written: a
        # bound m.__getitem__ is a method-wrapper, whose argument tuple per call
        # (and the collections those tuples start) cost more than the lookup's probe.
        # Each value is dropped as the next key is read, as in every reference's
        # loop: a list keeping 10^6 fresh values would time the process's heap
        # growing by ~110 MB (its page faults: a quarter of the first pass's time)
        def gets() -> None:
            for k in probe:
                _ = m[k]

        out["get"] = timed(gets, len(probe), "get")
        out["delete"] = timed(lambda: [delitem(k) for k in keys], size, "delete")
        q = PQueue(pool, "q")
        for _ in range(size):
            q.put(value)
        put, get = q.put, q.get

        def pairs() -> None:
            for _ in range(ops):
                put(value)
                get()

        out["queue put+get"] = timed(pairs, ops, "queue put+get")
        return out
    finally:
        pool.close()
        path.unlink(missing_ok=True)


def bench_dict(size: int, ops: int) -> dict[str, float]:
    d: dict[bytes, bytes] = {}
    keys = keys_for(size)
    value = b"v" * VALUE_BYTES
    probe = [keys[i] for i in random.Random(1).choices(range(size), k=max(ops, size))]
    out = {"put": timed(lambda: [d.__setitem__(k, value) for k in keys], size)}

    def gets() -> None:
        for k in probe:
            _ = d[k]

    out["get"] = timed(gets, len(probe))
    out["delete"] = timed(lambda: [d.__delitem__(k) for k in keys], size)
    import collections

    dq = collections.deque([value] * size)

    def pairs() -> None:
        for _ in range(ops):
            dq.append(value)
            dq.popleft()

    out["queue put+get"] = timed(pairs, ops)
    return out


def bench_lmdb(workdir: Path, size: int, ops: int) -> dict[str, float] | str:
    try:
        import lmdb
    except ImportError:
        return "python-lmdb not installed (pip install lmdb)"
    path = workdir / f"lmdb-{size}"
    env = lmdb.open(str(path), map_size=pool_bytes(size) * 4, sync=True, metasync=True,
                    writemap=False, max_dbs=0)
    try:
        keys = keys_for(size)
        value = b"v" * VALUE_BYTES
        probe = [keys[i] for i in random.Random(1).choices(range(size), k=max(ops, size))]

        def puts() -> None:
            for k in keys:
                with env.begin(write=True) as txn:
                    txn.put(k, value)

        def gets() -> None:
            with env.begin() as txn:
                get = txn.get
                for k in probe:
                    get(k)

        def deletes() -> None:
            for k in keys:
                with env.begin(write=True) as txn:
                    txn.delete(k)

        return {"put": timed(puts, size), "get": timed(gets, len(probe)),
                "delete": timed(deletes, size)}
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)


def bench_pynvm(workdir: Path, size: int, ops_max: int) -> dict[str, float] | str:
    os.environ.setdefault("PMEM_IS_PMEM_FORCE", "1")  # flush cache lines, as our pmem mode
    try:
        from nvm import pmemobj
    except Exception as exc:  # pynvm fails in several ways when libpmemobj is missing
        return (f"pynvm unavailable ({type(exc).__name__}: {exc}); "
                "needs libpmemobj-dev + pip install pynvm")
    n = min(size, ops_max)
    path = workdir / f"pynvm-{size}.pool"
    pop = pmemobj.PersistentObjectPool(str(path), flag="x", pool_size=max(64 << 20, n * 2000))
    try:
        pop.root = pop.new(pmemobj.PersistentDict)
        d = pop.root
        keys = [k.decode() for k in keys_for(n)]
        value = "v" * VALUE_BYTES
        out = {"put": timed(lambda: [d.__setitem__(k, value) for k in keys], n)}
        out["get"] = timed(lambda: [d[k] for k in keys], n)
        out["delete"] = timed(lambda: [d.__delitem__(k) for k in keys], n)
        return out
    finally:
        pop.close()
        path.unlink(missing_ok=True)


HEADER = ["size", "op", "ops/s", "µs/op", "cpu µs/op", "ops/cpu-s", "dict ops/s", "lmdb ops/s",
          "pynvm ops/s"]


def targets(results: list[dict]) -> list[str]:
    """Each target against Blizzard's figure at the largest size measured."""
    if not results:
        return []
    largest = max(r["size"] for r in results)
    lines = []
    for r in results:
        if r["size"] == largest and r["op"] in TARGETS:
            goal = TARGETS[r["op"]]
            verdict = "met" if r["ops_s"] >= goal else "MISSED"
            lines.append(f"{r['op']} at {largest:,} entries: {rate(r['ops_s'])} ops/s "
                         f"(target >= {rate(goal)}: {verdict})")
        if r["size"] == largest and r["op"] == "put" and r.get("lmdb_ops_s"):
            ratio = r["ops_s"] / r["lmdb_ops_s"]
            lines.append(f"put at {largest:,} entries: {ratio:.2f}x lmdb's put rate in this run "
                         f"(target >= 1x: {'met' if ratio >= 1 else 'MISSED'})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="blizzard bench structures",
                            description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=1_000_000,
                        help="operations per measurement, and the largest map size (default 1M)")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated map sizes (capped at --ops)")
    parser.add_argument("--mode", default="pmem", choices=("pmem", "msync", "none"))
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the pool files go (default /dev/shm)")
    parser.add_argument("--no-references", action="store_true", help="skip dict, lmdb and pynvm")
    parser.add_argument("--pynvm-ops", type=int, default=20_000,
                        help="cap on pynvm operations per measurement (it is slow)")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    sizes = sorted({min(int(s), args.ops) for s in args.sizes.split(",") if s.strip()})
    launcher = "python -m blizzard.bench.structures" if argv is None else \
        "blizzard bench structures"
    run = _report.Run("structures", command_line(launcher, list(argv if argv is not None
                                                                 else sys.argv[1:])),
                      {"ops": args.ops, "sizes": sizes, "mode": args.mode, "dir": args.dir,
                       "references": not args.no_references, "pynvm_ops": args.pynvm_ops})
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-", dir=args.dir))
    notes: list[str] = []
    results: list[dict] = []
    steps = len(sizes) * (1 if args.no_references else 4)
    try:
        with _report.Progress(steps, quiet=args.quiet) as progress:
            for size in sizes:
                progress.step(f"blizzard, {size:,} entries")
                ours = bench_blizzard(workdir, size, args.ops, args.mode)
                refs: dict[str, dict[str, float]] = {}
                if not args.no_references:
                    progress.step(f"dict, {size:,} entries")
                    refs["dict"] = bench_dict(size, args.ops)
                    for name in ("lmdb", "pynvm"):
                        progress.step(f"{name}, {size:,} entries")
                        result = (bench_lmdb(workdir, size, args.ops) if name == "lmdb"
                                  else bench_pynvm(workdir, size, args.pynvm_ops))
                        if isinstance(result, str):
                            if result not in notes:
                                notes.append(result)
                        else:
                            refs[name] = result
                for op, ops_s in ours.items():
                    results.append({"size": size, "op": op, "ops_s": ops_s,
                                    "cpu_us_per_op": CPU[op] * 1e6,
                                    **{f"{name}_ops_s": refs.get(name, {}).get(op)
                                       for name in ("dict", "lmdb", "pynvm")}})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.end()
    rows = [[f"{r['size']:,}", r["op"], rate(r["ops_s"]), f"{1e6 / r['ops_s']:.2f}",
             f"{r['cpu_us_per_op']:.2f}", rate(1e6 / r["cpu_us_per_op"]),
             *(rate(r[f"{name}_ops_s"]) if r[f"{name}_ops_s"] else "-"
               for name in ("dict", "lmdb", "pynvm"))] for r in results]
    verdict = targets(results)
    notes = ["ops/s and µs/op are wall clock; cpu µs/op is this thread's CPU time per op, "
             "steadier on a busy machine",
             *([] if any("pynvm" in n for n in notes) else
               [f"pynvm: PersistentDict, str keys/values, at most {args.pynvm_ops:,} ops per "
                "cell"]),
             "lmdb: one write transaction per put/delete (sync=True), all gets in one read "
             "transaction", *notes]
    _report.print_report(
        run, [table(HEADER, rows)],
        title=f"blizzard bench structures: {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values, "
              f"FileMedia mode={args.mode} in {args.dir}", targets=verdict, notes=notes)
    _report.write_json(args.json, run.record(targets=TARGETS, verdict=verdict, results=results,
                                             notes=notes))
    return _report.exit_status(args.check, verdict)


if __name__ == "__main__":
    raise SystemExit(main())
