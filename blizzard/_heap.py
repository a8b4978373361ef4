"""A serving process's start-up heap, moved out of the garbage collector's sight.

CPython's collector walks every tracked object of the oldest generation on
each full collection. In a process that only serves a node, most of those
objects are the modules, classes and functions imported at start-up, which
live as long as the process: walking them again and again finds nothing.
Freezing them (``gc.freeze``) leaves the full collections only the objects
the node allocated since. Only processes the package owns call this (``blizzard
serve``, ``blizzard mirror serve``, the benchmarks' nodes): freezing is
process-wide, so a library must not do it inside an application.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object that survived; returns how many
    objects are frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
