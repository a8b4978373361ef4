"""``blizzard bench pool``: transactions per second, against libpmemobj.

Two operations, each one transaction:

``add``    add two 16-byte ranges (in different cache lines), write them, commit;
``alloc``  allocate 64 bytes, write them, commit.

Subjects, all measured in the same run so their ratios mean something on a
noisy machine:

* ``blizzard-pmem``  -- our pool on ``FileMedia`` under /dev/shm, mode ``pmem``
  (real cache-line flushes through libpmem): the figure the targets are about;
* ``libpmemobj``     -- PMDK's libpmemobj doing the same from Python through
  cffi ABI mode, with ``PMEM_IS_PMEM_FORCE=1`` (see :mod:`._pmemobj`);
* ``blizzard-none``  -- ``FileMedia`` mode ``none`` (no flushes, same file);
* ``blizzard-dram``  -- ``DramMedia``: no flushing at all, the pure-Python ceiling.

Method: a warm-up pass, then ``--repeats`` passes of ``--ops`` transactions
per subject and op, interleaved (repeat-major, rotating the subject order) so
drift on a shared machine hits every subject alike. Memory allocated by
``alloc`` is freed between passes, untimed. A short extra pass on a
``RecordingMedia`` counts our flushes and fences per transaction.
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter_ns, thread_time_ns

from blizzard._argparse import ArgumentParser
from blizzard.bench import _pmemobj, _report
from blizzard.exceptions import PmemobjUnavailableError, PmemUnavailableError
from blizzard.pmem import DramMedia, FileMedia, Pool, RecordingMedia

OPS = ("add", "alloc")
OP_LABELS = {"add": "add 2x16 B", "alloc": "alloc 64 B"}
SUBJECTS = ("blizzard-pmem", "libpmemobj", "blizzard-none", "blizzard-dram")
SUBJECT_LABELS = {
    "blizzard-pmem": "blizzard FileMedia pmem",
    "libpmemobj": "libpmemobj (FORCE=1)",
    "blizzard-none": "blizzard FileMedia none",
    "blizzard-dram": "blizzard DramMedia",
}
REFERENCE = "libpmemobj"
TARGET_RATE = 250_000  # tx/s, for blizzard-pmem, each op
TARGET_SLOWDOWN = 1.5  # blizzard-pmem may be at most this much slower than libpmemobj
DEFAULT_OPS = 200_000
DEFAULT_REPEATS = 5
FREE_BATCH = 1000  # frees per transaction when resetting after an alloc pass

DATA16 = bytes(range(16))
DATA64 = bytes(range(64))


@dataclass
class Result:
    """One op on one subject: tx/s per repeat and their summary.

    ``rates`` are by wall-clock time; ``cpu_rates`` by the timing thread's CPU
    time, which a busy shared machine inflates much less (being descheduled
    costs wall time, not CPU time). ``ratio`` / ``cpu_ratio`` are this
    subject's median over libpmemobj's for the same op (None when the
    reference did not run). The ``*_per_tx`` counts come from the separate
    RecordingMedia pass (blizzard-pmem only).
    """

    op: str
    subject: str
    ops: int
    rates: list[float] = field(default_factory=list)
    median: float | None = None
    min: float | None = None
    max: float | None = None
    ratio: float | None = None
    cpu_rates: list[float] = field(default_factory=list)
    cpu_median: float | None = None
    cpu_ratio: float | None = None
    flush_calls_per_tx: float | None = None
    lines_per_tx: float | None = None
    fences_per_tx: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.rates)


# -- our pool ---------------------------------------------------------------------------


class _Ours:
    """Our pool on one kind of media, with the two timed loops."""

    def __init__(self, pool: Pool, path: Path | None = None) -> None:
        self.pool = pool
        self.path = path
        with pool.transaction() as tx:
            block = tx.alloc(512)
        self.a = (block + 63) & ~63  # as in the reference: 16 bytes at +0 and +128
        self.b = self.a + 128
        self._allocated: list[int] = []

    def run(self, op: str, n: int) -> tuple[int, int]:
        if op == "add":
            return self._run_add(n)
        if op == "alloc":
            return self._run_alloc(n)
        raise ValueError(f"unknown op {op!r}")

    def _run_add(self, n: int) -> tuple[int, int]:
        transaction, buf = self.pool.transaction, self.pool.buf
        a, b = self.a, self.b
        a_end, b_end = a + 16, b + 16
        data = DATA16
        t0, c0 = perf_counter_ns(), thread_time_ns()
        for _ in range(n):
            with transaction() as tx:
                tx.add(a, 16)
                buf[a:a_end] = data
                tx.add(b, 16)
                buf[b:b_end] = data
        return perf_counter_ns() - t0, thread_time_ns() - c0

    def _run_alloc(self, n: int) -> tuple[int, int]:
        transaction, buf = self.pool.transaction, self.pool.buf
        data = DATA64
        keep = self._allocated.append
        t0, c0 = perf_counter_ns(), thread_time_ns()
        for _ in range(n):
            with transaction() as tx:
                off = tx.alloc(64)
                buf[off:off + 64] = data
            keep(off)
        return perf_counter_ns() - t0, thread_time_ns() - c0

    def reset(self) -> None:
        offs = self._allocated
        for i in range(0, len(offs), FREE_BATCH):
            with self.pool.transaction() as tx:
                for off in offs[i:i + FREE_BATCH]:
                    tx.free(off)
        offs.clear()

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            if self.path is not None:
                self.path.unlink(missing_ok=True)


def _pool_path(directory: str | os.PathLike[str], tag: str) -> Path:
    return Path(directory) / f"blizzard-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}-{tag}.pool"


def _open_file_pool(directory, mode: str, size: int, wrap: Callable | None = None) -> _Ours:
    path = _pool_path(directory, mode)
    media = FileMedia(path, mode=mode, create_size=size)
    try:
        pool = Pool.create(wrap(media) if wrap else media, size, layout="bench")
    except BaseException:
        media.close()
        path.unlink(missing_ok=True)
        raise
    return _Ours(pool, path)


def pool_size(ops: int) -> int:
    """Room for one pass of ``alloc`` on either side (libpmemobj adds a 16-byte header)."""
    mib = 1 << 20
    return max(16 * mib, -(-(ops * 192 + 16 * mib) // mib) * mib)


def count_flushes(op: str, n: int, directory, size: int) -> tuple[float, float, float]:
    """Our ``(flush calls, cache lines flushed, fences)`` per transaction of ``op``."""
    lines = [0]

    def on_flush(off: int, length: int) -> None:
        lines[0] += ((off + length - 1) >> 6) - (off >> 6) + 1

    recorders: list[RecordingMedia] = []

    def wrap(media):
        rec = RecordingMedia(media, on_flush=on_flush)
        recorders.append(rec)
        return rec

    subject = _open_file_pool(directory, "pmem", size, wrap)
    try:
        rec = recorders[0]
        subject.run(op, min(n, 100))  # past the first-use costs
        rec.flushes = rec.drains = lines[0] = 0
        subject.run(op, n)
        return rec.flushes / n, lines[0] / n, rec.drains / n
    finally:
        subject.close()


# -- the run ----------------------------------------------------------------------------


def run(ops: int = DEFAULT_OPS, *, repeats: int = DEFAULT_REPEATS, warmup: int | None = None,
        directory: str | os.PathLike[str] = "/dev/shm", subjects: tuple[str, ...] = SUBJECTS,
        count_ops: int | None = None, progress: bool = False) -> list[Result]:
    """Measure every subject and op; returns one :class:`Result` per pair.

    ``warmup`` transactions per subject and op precede the timed repeats
    (default: a quarter of ``ops``, at least 1000). A subject that cannot run
    (libpmemobj missing, or its child process died) gets a Result with no
    rates and a ``note`` saying why; the others still run. Every pool file
    created under ``directory`` is removed before this returns.
    """
    if ops < 1 or repeats < 1:
        raise ValueError("ops and repeats must be at least 1")
    unknown = set(subjects) - set(SUBJECTS)
    if unknown:
        raise ValueError(f"unknown subjects {sorted(unknown)}; choose from {SUBJECTS}")
    warmup = max(1000, ops // 4) if warmup is None else warmup
    size = pool_size(max(ops, warmup))
    results = {(op, s): Result(op, s, ops) for op in OPS for s in subjects}
    opened: dict[str, object] = {}
    try:
        for s in subjects:
            try:
                opened[s] = _open(s, directory, size)
            except (PmemobjUnavailableError, PmemUnavailableError) as exc:
                _note(results, s, f"skipped: {exc}")
            except RuntimeError as exc:
                _note(results, s, f"failed: {exc}")
        passes = [("warm-up", warmup)] * (warmup > 0) + [
            (f"repeat {i + 1}/{repeats}", ops) for i in range(repeats)]
        meter = _report.Progress(len(passes) * len(OPS) * len(opened)) if progress else None
        for k, (what, n) in enumerate(passes):
            order = list(opened)
            order = order[k % len(order):] + order[:k % len(order)] if order else order
            for op in OPS:
                for s in order:
                    subject = opened.get(s)
                    if subject is None:
                        continue  # failed earlier in this loop
                    if meter:
                        meter.step(f"{what}: {OP_LABELS[op]} on {s} ({n:,} tx)")
                    try:
                        wall, cpu = subject.run(op, n)
                        if op == "alloc":
                            subject.reset()
                    except RuntimeError as exc:
                        if s != REFERENCE:
                            raise
                        _note(results, s, f"failed: {exc}", clear=True)
                        _close(opened.pop(s))
                        continue
                    if what != "warm-up":
                        results[op, s].rates.append(n * 1e9 / wall)
                        results[op, s].cpu_rates.append(n * 1e9 / max(cpu, 1))
        if meter:
            meter.finish()
    finally:
        for subject in opened.values():
            _close(subject)
    for r in results.values():
        if r.rates:
            r.median = statistics.median(r.rates)
            r.min, r.max = min(r.rates), max(r.rates)
            r.cpu_median = statistics.median(r.cpu_rates)
    for op in OPS:
        ref = results.get((op, REFERENCE))
        for s in subjects:
            r = results[op, s]
            if ref is not None and ref.median and r.median:
                r.ratio = r.median / ref.median
                r.cpu_ratio = r.cpu_median / ref.cpu_median
    if results.get((OPS[0], "blizzard-pmem")) and results[OPS[0], "blizzard-pmem"].rates:
        for op in OPS:
            r = results[op, "blizzard-pmem"]
            r.flush_calls_per_tx, r.lines_per_tx, r.fences_per_tx = count_flushes(
                op, count_ops or min(ops, 10_000), directory, size)
    return list(results.values())


def _open(subject: str, directory, size: int):
    if subject == "blizzard-pmem":
        return _open_file_pool(directory, "pmem", size)
    if subject == "blizzard-none":
        return _open_file_pool(directory, "none", size)
    if subject == "blizzard-dram":
        return _Ours(Pool.create(DramMedia(size), size, layout="bench"))
    return _pmemobj.ReferenceProcess(str(_pool_path(directory, "pmemobj")), size)


def _close(subject) -> None:
    subject.close()


def _note(results: dict, subject: str, note: str, *, clear: bool = False) -> None:
    for op in OPS:
        r = results.get((op, subject))
        if r is not None:
            r.note = note
            if clear:
                r.rates.clear()


# -- reporting --------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


HEADER = ["op", "system", "ops/s", "min", "max", "vs pmemobj", "cpu µs/op", "cpu vs pmemobj",
          "flush/line/fence"]


def format_results(results: list[Result]) -> str:
    """The results table (one row per op and subject), as text."""
    rows = []
    for op in OPS:
        for i, r in enumerate(r for r in results if r.op == op):
            rows.append([
                "" if i else OP_LABELS[op],
                SUBJECT_LABELS[r.subject],
                _report.rate(r.median) if r.median else "skipped",
                _report.rate(r.min) if r.min else "-",
                _report.rate(r.max) if r.max else "-",
                _ratio(r.ratio),
                _fmt(1e6 / r.cpu_median if r.cpu_median else None, ".2f"),
                _ratio(r.cpu_ratio),
                "-" if r.fences_per_tx is None else
                f"{r.flush_calls_per_tx:.1f}/{r.lines_per_tx:.1f}/{r.fences_per_tx:.1f}",
            ])
    return _report.table(HEADER, rows, align="<<" + ">" * 7)


def notes(results: list[Result]) -> list[str]:
    return sorted({f"{SUBJECT_LABELS[r.subject]}: {r.note}" for r in results if r.note}) + NOTES


NOTES = [
    "libpmemobj runs with PMEM_IS_PMEM_FORCE=1 (set for it alone, in its own process): "
    "on tmpfs it then flushes cache lines through libpmem, like ours, instead of msync.",
    "both sides are driven from Python through cffi ABI mode; libpmemobj's variadic "
    "pmemobj_tx_begin is the dearer call there.",
    "/dev/shm is tmpfs: both pools survive a process kill, not a power cut.",
    "ops/s (transactions per second), min, max and 'vs pmemobj' are by wall-clock time; "
    "'cpu' columns by the timing thread's CPU time (median), which other load on the "
    "machine distorts much less.",
    "flush/line/fence: flush calls, 64-byte lines they cover, and fences per tx, from a "
    "separate RecordingMedia pass (ours only).",
]


def targets(results: list[Result]) -> list[str]:
    """One line per op: the target figures and whether they were met."""
    lines = []
    for op in OPS:
        ours = next((r for r in results if r.op == op and r.subject == "blizzard-pmem"), None)
        if ours is None or not ours.median:
            continue
        verdict = "met" if ours.median >= TARGET_RATE else "MISSED"
        text = (f"{OP_LABELS[op]}: {_report.rate(ours.median)} tx/s "
                f"(target >= {_report.rate(TARGET_RATE)}: {verdict})")
        if ours.ratio is not None:
            ok = "met" if ours.ratio >= 1 / TARGET_SLOWDOWN else "MISSED"
            text += (f"; {ours.ratio:.2f}x libpmemobj "
                     f"(target >= {1 / TARGET_SLOWDOWN:.2f}x: {ok})")
        else:
            text += "; no libpmemobj figure to compare with"
        lines.append(text)
    return lines


def command_line(argv: list[str] | None) -> str:
    """How this run was started, in a form that can be pasted back."""
    if argv is not None:
        return _report.command_line("blizzard bench pool", argv)
    launcher = sys.argv[0]
    if Path(launcher).name == "pool.py":
        launcher = "python -m blizzard.bench.pool"
    return _report.command_line(launcher, sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; 0 unless ``--check`` finds a miss."""
    parser = ArgumentParser(
        prog="blizzard bench pool",
        description="Transactions per second of the pool, against libpmemobj.")
    parser.add_argument("--ops", type=int, default=DEFAULT_OPS,
                        help=f"transactions per repeat (default {DEFAULT_OPS:,})")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed repeats per subject and op (default {DEFAULT_REPEATS})")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up transactions (default: ops/4, at least 1000)")
    parser.add_argument("--dir", default="/dev/shm",
                        help="where the pool files go (default /dev/shm, tmpfs)")
    parser.add_argument("--subjects", default=",".join(SUBJECTS),
                        help=f"comma-separated, from {','.join(SUBJECTS)}")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    subjects = tuple(s for s in args.subjects.split(",") if s)
    params = {"ops": args.ops, "repeats": args.repeats, "warmup": args.warmup,
              "dir": args.dir, "subjects": list(subjects)}
    run_ = _report.Run("pool", command_line(argv), params)
    try:
        results = run(args.ops, repeats=args.repeats, warmup=args.warmup, directory=args.dir,
                      subjects=subjects, progress=not args.quiet)
    except ValueError as exc:
        parser.error(str(exc))
    run_.end()
    verdict = targets(results)
    _report.print_report(
        run_, [format_results(results)],
        title=f"blizzard bench pool: {args.ops:,} tx x {args.repeats} repeats per subject "
              f"and op", targets=verdict, notes=notes(results))
    _report.write_json(args.json, run_.record(
        targets={"rate": TARGET_RATE, "max_slowdown_vs_libpmemobj": TARGET_SLOWDOWN},
        verdict=verdict, results=[asdict(r) for r in results], notes=NOTES))
    return _report.exit_status(args.check, verdict)


if __name__ == "__main__":
    sys.exit(main())
