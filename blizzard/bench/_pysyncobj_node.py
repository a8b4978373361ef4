"""One PySyncObj node for ``blizzard bench cluster``: the reference system.

``python -m blizzard.bench._pysyncobj_node CONF SELF PEER [PEER...]`` runs a
``SyncObj`` holding one ``ReplDict`` (``pysyncobj.batteries``) at address
SELF (``host:port``) with the given peers, and answers the same JSON command
loop as :mod:`blizzard.bench._cluster_node`:

``status``                leader, whether this node leads, ``isReady()``;
``load N WINDOW PREFIX [STALL VBYTES SECONDS]``  N ``d.set(k, v, callback=...)``
                          with at most WINDOW in flight (16-byte keys, 64-byte
                          values unless VBYTES), for at most SECONDS; with the
                          latency of every request;
``latency N PREFIX [S]``  N ``d.set(k, v, sync=True)`` one after another;
``count``                 ``len(d)``;
``quit``                  ``destroy()`` and exit.

CONF is ``default`` (PySyncObj's defaults: batched AppendEntries every
``appendEntriesPeriod`` = 0.1 s, in-memory journal, compaction every 5000
entries), ``nobatch`` (``appendEntriesUseBatch=False``: each command is
sent at once) or ``nocompact`` (defaults, but no log compaction).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from blizzard.bench._cluster_node import (
    VALUE,
    make_key,
    serve,
    summarize,
    sync_latency,
    windowed,
)

CONFIGS = {
    "default": {},
    "nobatch": {"appendEntriesUseBatch": False},
    # its compaction pickles the whole state (in a forked child) every 5000 entries
    "nocompact": {"logCompactionMinEntries": 1 << 62, "logCompactionMinTime": 1 << 62},
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in CONFIGS:
        print("usage: python -m blizzard.bench._pysyncobj_node "
              f"{'|'.join(CONFIGS)} SELF PEER...", file=sys.stderr)
        return 2
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    reasons = {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}
    d = ReplDict()
    conf = SyncObjConf(**CONFIGS[argv[0]])
    obj = SyncObj(argv[1], argv[2:], conf=conf, consumers=[d])

    def status() -> dict[str, Any]:
        leader = obj._getLeader()
        return {"status": {"leader": None if leader is None else str(leader),
                           "is_leader": bool(obj._isLeader()), "ready": bool(obj.isReady()),
                           "self": argv[1]}}

    def load(n: str, window: str, prefix: str, stall_s: str = "20", vbytes: str | None = None,
             seconds: str | None = None) -> dict[str, Any]:
        prep = time.process_time()
        count = int(n)
        keys = [make_key(prefix, i) for i in range(count)]
        value = VALUE if vbytes is None else bytes(i & 0xFF for i in range(int(vbytes)))
        dset = d.set

        def start(i: int, done: Callable[[Any], None]) -> None:
            def callback(result: Any, error: Any) -> None:
                done(None if error == FAIL_REASON.SUCCESS
                     else f"FAIL_REASON.{reasons.get(error, error)}")

            dset(keys[i], value, callback=callback)

        samples: list[int] = []
        t = time.process_time()
        result = windowed(count, int(window), start, float(stall_s),
                          max_seconds=None if seconds is None else float(seconds),
                          latencies=samples)
        result["cpu_seconds"] = time.process_time() - t
        result["prep_cpu_seconds"] = t - prep  # making the keys: not the sets' cost
        result["latency"] = summarize(samples)
        return result

    def latency(n: str, prefix: str, max_seconds: str = "60") -> dict[str, Any]:
        keys = [make_key(prefix, i) for i in range(int(n))]
        dset = d.set

        def put(i: int) -> None:
            dset(keys[i], VALUE, sync=True, timeout=10)  # VALUE_BYTES from the environment

        return sync_latency(len(keys), put, float(max_seconds))

    def count() -> dict[str, Any]:
        return {"count": len(d)}

    def quit_() -> None:
        obj.destroy()

    handlers = {"status": status, "load": load, "latency": latency, "count": count,
                "quit": quit_}
    return serve(handlers, {"node": argv[1], "system": "pysyncobj", "conf": argv[0]})


if __name__ == "__main__":
    sys.exit(main())
