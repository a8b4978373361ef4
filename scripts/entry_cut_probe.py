"""Would applying entries "in place" (views of the log) be cheaper than copying them out?

A follower's transport receives a MsgApp's records straight into the Raft
log; ``take_records`` then cuts each entry's data out of its record as
``bytes`` (counted as ``frame_to_entries``), which the core, the log's reads
and the apply share. The alternative is a ``memoryview`` slice of the
mapping per entry. This compiles both cuts (``entry_cut.pyx``, as the
compiled build does ``take_records``) and times them over a mapped region,
64 entries per call as in a full batch::

    .venv/bin/python scripts/entry_cut_probe.py [--calls 2000] [--repeats 7]

It prints the best of the repeats, in ns per entry, for 114-byte records (a
64-byte value's put) and 1,074-byte ones (a 1 KiB value's).
"""

from __future__ import annotations

import argparse
import mmap
import sys
import time
from pathlib import Path

import pyximport

SIZES = (114, 1074)  # an entry's data for a 64 B and a 1 KiB value's put
BATCH = 64


def best_ns_per_entry(cut, region, size: int, calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            cut(region, BATCH, size, size + 32)
        best = min(best, (time.perf_counter() - started) / (calls * BATCH))
    return best * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    pyximport.install(language_level=3)
    import entry_cut

    mapping = mmap.mmap(-1, 1 << 22)
    view = memoryview(mapping)
    for size in SIZES:
        copied = best_ns_per_entry(entry_cut.cut_bytes, view, size, args.calls, args.repeats)
        viewed = best_ns_per_entry(entry_cut.cut_views, view, size, args.calls, args.repeats)
        print(f"{size} B entries: bytes copied out {copied:.0f} ns, "
              f"memoryview slices {viewed:.0f} ns per entry")
    view.release()
    mapping.close()


if __name__ == "__main__":
    main()
