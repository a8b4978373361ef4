"""The garbage collector of a serving process, set for serving.

CPython's collector walks every tracked object of the oldest generation on
each full collection. In a process that only serves a node, most of those
objects are the modules, classes and functions imported at start-up, which
live as long as the process: walking them again and again finds nothing.
Freezing them (``gc.freeze``) leaves the full collections only the objects
the node allocated since.

The youngest generation is collected every 700 net allocations of tracked
objects by default. A node under load keeps each request's objects (its
future, its callbacks, its entry in the waiting table) alive for thousands
of allocations, so at 700 the same objects are walked again at every
collection, and moved on into the older generations to be walked there
too. At ``SERVING_GEN0_THRESHOLD`` most of them are freed, by their
reference counts, before a collection comes. What it costs: cyclic garbage
may wait that many allocations longer to be freed.

Only processes the package owns call this (``blizzard serve``, ``blizzard
mirror serve``, the benchmarks' nodes): both settings are process-wide, so a
library must not make them inside an application.
"""

from __future__ import annotations

import gc

#: Net allocations of tracked objects between two collections of the youngest
#: generation in a serving process (CPython's default: 700).
SERVING_GEN0_THRESHOLD = 50_000


def prepare_serving_heap() -> int:
    """Collect once, freeze every object that survived, and collect the youngest
    generation less often; returns how many objects are frozen in all."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, SERVING_GEN0_THRESHOLD), gen1, gen2)
    return gc.get_freeze_count()
