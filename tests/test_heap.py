"""The collector of serving processes (blizzard._heap): the start-up heap frozen,
the youngest generation collected less often.

Run in child processes: freezing is process-wide and must not touch the
test runner's own collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from blizzard._heap import SERVING_GEN0_THRESHOLD

CHILD = textwrap.dedent("""
    import gc, json, sys
    import blizzard.structures  # a serving process's imports
    from blizzard._heap import prepare_serving_heap

    tracked = len(gc.get_objects())
    frozen = prepare_serving_heap()
    after = len(gc.get_objects())  # what a full collection would still walk
    made = [[i] for i in range(1000)]  # allocated after the freeze: tracked, not frozen
    print(json.dumps({"tracked": tracked, "frozen": frozen, "after": after,
                      "later": len(gc.get_objects()) - after,
                      "count": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
""")


def test_freezing_moves_the_startup_heap_out_of_the_collectors_walk() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    import json

    seen = json.loads(out)
    assert seen["frozen"] == seen["count"] > 10_000  # the imported modules' objects
    assert seen["after"] < seen["tracked"] // 10  # the full collection's walk, before/after
    assert seen["later"] >= 1000  # objects made later are collected as usual
    assert seen["threshold"] == [SERVING_GEN0_THRESHOLD, 10, 10]  # (CPython's gen1, gen2 kept)

