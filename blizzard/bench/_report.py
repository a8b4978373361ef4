"""Plain-text report helpers shared by the benchmarks.

Kept dependency-free and tiny on purpose: a benchmark's output is read in
terminals, CI logs and issue comments, where aligned plain text survives.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]],
          align: str | None = None) -> str:
    """Format rows as aligned columns under a header and a rule.

    ``align`` holds one character per column, ``<`` or ``>``; by default the
    first column is left-aligned and the others right-aligned (numbers).
    """
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    ncols = len(header)
    if any(len(r) != ncols for r in cells):
        raise ValueError("every row needs one cell per header column")
    align = align or "<" + ">" * (ncols - 1)
    widths = [max(len(r[i]) for r in cells) for i in range(ncols)]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "<" else c.rjust(w)
                         for c, w, a in zip(r, widths, align, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def rate(x: float) -> str:
    """A rate with thousands separators (``1,234,567``): easy to compare by eye."""
    return f"{x:,.0f}"


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
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "load_1min": load,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }


def command_line(launcher: str, args: Sequence[str]) -> str:
    """The command that produced a report, quoted so it can be pasted back."""
    return " ".join([launcher, *(shlex.quote(a) for a in args)])


class Progress:
    """One progress line on stderr, rewritten in place on a terminal.

    Off a terminal (CI logs) each step prints its own line, so the log shows
    how far a run got before it was killed.
    """

    def __init__(self, total: int, stream=None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def step(self, what: str) -> None:
        self.done += 1
        text = f"[{self.done}/{self.total}] {what}"
        if self._tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
