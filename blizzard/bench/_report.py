"""The harness every ``blizzard bench`` command shares: progress, tables, the run's record.

One look for every benchmark:

* **stderr**: a progress bar (what is running, steps done, time spent, time
  left), drawn by ``rich`` on a terminal; off a terminal (CI logs) one line
  per step, so a log shows how far a run got before it was killed.
  ``--quiet`` turns it off.
* **stdout**: a header (the machine, the load average at the start and at the
  end of the run, the command that reproduces it), the results as ``rich``
  tables, the targets met or MISSED, and notes.
* ``--json PATH``: the same run for machines: machine, load, command,
  versions, parameters, and every raw sample the figures were made from.
* ``--check``: exit status 1 if a target was missed.

Columns that mean the same thing have the same name and come in the same
order in every benchmark's tables: :data:`COLUMNS` lists them, and
:func:`table` refuses a header that puts two of them the other way round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RichProgress
from rich.table import Table

#: Shared column names, in the order every table shows them: what was
#: measured first (its coordinates), then throughput, latency, costs, and
#: correctness. A benchmark's own columns may sit anywhere, but two of
#: these always appear in this order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("size", "entries in the structure when measured"),
    ("op", "the operation timed"),
    ("structure", "hashmap, queue, bptree (B+ tree) or skiplist"),
    ("system", "what was measured (implementation and configuration)"),
    ("backend", "the replication backend and its transport"),
    ("replicas", "copies of the data: nodes of the cluster"),
    ("value B", "bytes per value (keys are 16 bytes)"),
    ("in flight", "requests outstanding at once (asynchronous clients)"),
    ("ops/s", "operations per second, wall clock (median of the repeats)"),
    ("min", "lowest of the repeats' ops/s"),
    ("max", "highest of the repeats' ops/s"),
    ("spread", "(max - min) / median of the repeats' ops/s"),
    ("p50 ms", "median latency of one operation, request to acknowledgement"),
    ("p99 ms", "99th percentile latency"),
    ("cpu µs/op", "CPU time per operation, summed over every process of the system"),
    ("cpu µs/op by process", "the same per process, the load's process first"),
    ("B/op wire", "bytes sent on the network per operation, by every node, framing included"),
    ("msgs/op", "messages sent per operation"),
    ("round trips/op", "waits for an acknowledgement per operation"),
    ("flushes/op", "cache-line flush calls per operation (primary / leader)"),
    ("fences/op", "fences per operation (primary / leader)"),
    ("failed", "requests that completed with an error or never did"),
    ("lost", "acknowledged writes missing afterwards (anything but 0 is a bug)"),
    ("load", "'busy' when other processes used the machine during the measurement"),
)
_ORDER = {name: i for i, (name, _) in enumerate(COLUMNS)}

#: The machine counts as busy when its 1-minute load average exceeds this
#: share of its cores, at the start or the end of a run.
BUSY_LOAD_PER_CORE = 0.5
#: Software whose version a figure may depend on; each listed if installed.
VERSIONED = ("blizzard", "cffi", "msgpack", "rich", "matplotlib", "pysyncobj", "lmdb",
             "cython")
#: Terminal width for tables written to a file or a pipe (no wrapping).
WIDTH_OFF_TERMINAL = 400


def check_header(header: Sequence[str]) -> None:
    """Raise ValueError if two shared columns appear out of :data:`COLUMNS` order."""
    known = [h for h in header if h in _ORDER]
    if known != sorted(known, key=_ORDER.__getitem__):
        wanted = sorted(known, key=_ORDER.__getitem__)
        raise ValueError(f"shared columns out of order: {known}; the order is {wanted}")


def console(file=None, *, width: int | None = None) -> Console:
    """A console that prints text as given: no markup, no highlighting, no emoji."""
    target = sys.stdout if file is None else file
    terminal = bool(getattr(target, "isatty", lambda: False)())
    return Console(file=target, markup=False, highlight=False, emoji=False,
                   width=width or (None if terminal else WIDTH_OFF_TERMINAL),
                   soft_wrap=False)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None,
          *, title: str | None = None, markdown: bool = False) -> str:
    """The rows under the header as a ``rich`` table, rendered to text.

    ``align`` holds one character per column, ``<`` or ``>``; by default the
    first column is left-aligned and the others right-aligned (numbers).
    ``None`` cells print as ``-``. With ``markdown`` the table is a GitHub
    Markdown table (for reports). Raises ValueError for a row of the wrong
    length or shared columns out of order (:func:`check_header`).
    """
    header = [str(h) for h in header]
    check_header(header)
    ncols = len(header)
    align = align or "<" + ">" * (ncols - 1)
    if len(align) != ncols:
        raise ValueError("align needs one character per header column")
    grid = Table(title=title, box=box.MARKDOWN if markdown else box.SIMPLE_HEAD,
                 show_edge=markdown, pad_edge=markdown, title_justify="left")
    for name, a in zip(header, align, strict=True):
        grid.add_column(name, justify="left" if a == "<" else "right", no_wrap=True)
    for row in rows:
        if len(row) != ncols:
            raise ValueError("every row needs one cell per header column")
        grid.add_row(*("-" if c is None else str(c) for c in row))
    out = io.StringIO()
    console(out, width=WIDTH_OFF_TERMINAL).print(grid)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip("\n")


def legend(header: Sequence[str]) -> list[str]:
    """``name: meaning`` for each shared column in ``header``."""
    meaning = dict(COLUMNS)
    return [f"{h}: {meaning[h]}" for h in header if h in meaning]


def rate(x: float | None) -> str:
    """A rate with thousands separators (``1,234,567``): easy to compare by eye."""
    return "-" if x is None else f"{x:,.0f}"


# -- the machine ---------------------------------------------------------------------------


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, object]:
    """What a figure depends on: CPU model, cores, Python, OS, and how busy it is now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for text in f:
                if text.startswith("model name"):
                    cpu = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = load_average()
    return {
        "cpu": cpu,
        "load_1min": load[0] if load else None,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "host": platform.node(),
    }


def busy(load: Sequence[float] | None, cores: int | None = None) -> bool:
    """Whether a 1-minute load average says other work shared the machine."""
    cores = cores or os.cpu_count() or 1
    return bool(load) and load[0] > BUSY_LOAD_PER_CORE * cores


def cpu_ticks() -> tuple[float, float] | None:
    """``(busy, total)`` CPU seconds of the whole machine since boot, from /proc/stat.

    Differences of two readings, less what one's own processes used, say how
    much CPU *other* work took meanwhile: the fairest sign that a figure was
    measured on a shared machine.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    ticks = [int(x) for x in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def versions() -> dict[str, str]:
    """Versions of Python and of the installed packages in :data:`VERSIONED`."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    commit = _source_commit()
    if commit:
        out["blizzard_commit"] = commit
    return out


def _source_commit() -> str | None:
    """The git commit of the source this blizzard runs from, if it is a checkout."""
    root = Path(__file__).resolve().parent.parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def command_line(launcher: str, args: Sequence[str]) -> str:
    """The command that produced a report, quoted so it can be pasted back."""
    return " ".join([launcher, *(shlex.quote(a) for a in args)])


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr: what runs now, steps done, time spent and left.

    ``step(what)`` starts a step (the previous one is then done); ``total``
    counts steps, or any units of work if steps pass ``units``. On a terminal
    ``rich`` redraws one bar in place; elsewhere each step prints one line
    with the time spent and an estimate of the time left.
    """

    def __init__(self, total: float, stream=None, *, quiet: bool = False) -> None:
        self.total = total
        self.done = 0.0
        self.quiet = quiet
        self._pending = 0.0
        self._t0 = time.monotonic()
        stream = stream if stream is not None else sys.stderr
        self._console = console(stream)
        self._bar: _RichProgress | None = None
        if not quiet and self._console.is_terminal:
            self._bar = _RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                console=self._console, transient=True)
            self._task = self._bar.add_task("starting", total=total)
            self._bar.start()

    def step(self, what: str, units: float = 1) -> None:
        """Begin the step ``what`` (worth ``units`` of the total)."""
        self.done += self._pending
        self._pending = units
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=what)
            return
        spent = time.monotonic() - self._t0
        left = ""
        if self.done > 0 and self.total > self.done:
            left = f", ~{_duration(spent * (self.total - self.done) / self.done)} left"
        self._console.print(f"[{self.done + units:g}/{self.total:g}] {what} "
                            f"({_duration(spent)} spent{left})")

    def finish(self) -> None:
        """Mark the last step done and take the bar off the screen."""
        self.done += self._pending
        self._pending = 0
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


# -- a run, from start to report ------------------------------------------------------------


@dataclass
class Run:
    """One benchmark run: how it was started, the machine, its load at start and end.

    Create it before measuring, call :meth:`end` after; :meth:`header` and
    :meth:`record` then give the same facts to people and to machines.
    """

    benchmark: str
    command: str
    params: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, object] = field(default_factory=machine)
    load_start: list[float] | None = field(default_factory=load_average)
    load_end: list[float] | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    seconds: float | None = None
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def end(self) -> None:
        self.load_end = load_average()
        self.seconds = round(time.monotonic() - self._t0, 1)

    @property
    def busy(self) -> bool:
        cores = self.machine.get("cores")
        return busy(self.load_start, cores) or busy(self.load_end, cores)

    def header(self) -> list[str]:
        m = self.machine
        start = self.load_start[0] if self.load_start else None
        end = self.load_end[0] if self.load_end else None
        lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['python']}, {m['os']}",
                 f"load average (1 min): {start} at start, {end} at end"
                 + (f"; {self.seconds:g} s" if self.seconds is not None else ""),
                 f"command: {self.command}"]
        if self.busy:
            lines.append("warning: the machine was busy with other work; absolute rates are "
                         "depressed -- compare the ratios (measured in the same run) and the "
                         "CPU times")
        return lines

    def record(self, **extra: Any) -> dict[str, Any]:
        """The JSON document's common part, then ``extra`` (results, samples...)."""
        return {"benchmark": self.benchmark, "command": self.command, "started": self.started,
                "seconds": self.seconds, "machine": self.machine,
                "load": {"start": self.load_start, "end": self.load_end, "busy": self.busy},
                "versions": versions(), "params": self.params, **extra}


def add_arguments(parser: argparse.ArgumentParser, *, check: bool = True) -> None:
    """The options every benchmark takes: ``--json``, ``--quiet`` and ``--check``."""
    parser.add_argument("--json", metavar="PATH",
                        help="also write the run as JSON: machine, load, command, versions, "
                             "every raw sample")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    if check:
        parser.add_argument("--check", action="store_true",
                            help="exit status 1 if a target is missed")


def add_log_arguments(parser: argparse.ArgumentParser, *, sizes_help: str) -> None:
    """``--value-bytes`` and ``--dir``, as the benchmarks of a node's own work take them."""
    parser.add_argument("--value-bytes", default="64,1024", help=sizes_help)
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the pool files go (default /dev/shm)")


def value_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """``--value-bytes`` as integers; a usage error names the option otherwise."""
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        parser.error(f"--value-bytes: comma-separated integers, not {text!r}")
    if min(sizes) < 0:
        parser.error(f"--value-bytes: sizes are at least 0, not {text!r}")
    return sizes


def print_report(run: Run, body: Iterable[str], *, title: str, targets: Sequence[str] = (),
                 notes: Sequence[str] = (), file=None) -> None:
    """Title, header, the body's blocks, the targets and the notes, on stdout."""
    out = console(file)
    out.print(title)
    for line in run.header():
        out.print(line)
    for block in body:
        out.print()
        out.print(block)
    if targets:
        out.print()
        out.print("targets (this run):")
        for t in targets:
            out.print("  " + t)
    if notes:
        out.print()
        out.print("notes:")
        for n in notes:
            out.print("  " + n)


def write_json(path: str | os.PathLike[str] | None, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` (nothing if ``path`` is None)."""
    if path is not None:
        Path(path).write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, set | frozenset | tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def exit_status(check: bool, targets: Sequence[str]) -> int:
    """1 if ``--check`` was given and a target line says MISSED, else 0."""
    return 1 if check and any("MISSED" in t for t in targets) else 0
