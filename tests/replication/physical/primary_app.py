"""An application embedding a physical primary, for the process tests.

    python -m tests.replication.physical.primary_app CONFIG NODE PREFIX COUNT ACKS [ACKED_FILE]

Opens node NODE as primary (``open_primary``; ACKS backups acknowledge each
fence, ``all`` or a number), first checks (when given)
that every write listed in ACKED_FILE is present and every structure passes
``check()``, printing ``verified N``; then writes COUNT rounds, each putting
``PREFIX-i`` into the hashmap ``h``, the B+tree ``b``, the skiplist ``s`` and
the queue ``q`` (one Op each), printing ``ack KIND KEY`` after each Op is
acknowledged. An unacknowledged Op prints ``unack KIND KEY``; a deposed
primary prints ``deposed`` and exits 3. At the end it waits for every backup
to acknowledge everything (retrying for ``BLIZZARD_APP_SYNC_S`` seconds) and
prints ``done, synced True`` (or False).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from blizzard.cluster.physical import close_primary, open_primary
from blizzard.exceptions import DeposedError, MirrorUnavailableError
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

KINDS = {"h": PHashMap, "b": PBPlusTree, "s": PSkipList, "q": PQueue}


def value(key: bytes) -> bytes:
    return key * 4


def verify(handles: dict, acked_path: str) -> int:
    acked = [line.split() for line in Path(acked_path).read_text().splitlines() if line]
    queue = set(handles["q"])
    for kind, key in acked:
        k = key.encode()
        if kind == "q":
            assert value(k) in queue, f"acknowledged {kind} {key} is missing"
        else:
            assert handles[kind].get(k) == value(k), f"acknowledged {kind} {key} is missing"
    for handle in handles.values():
        handle.check()
    return len(acked)


def main(argv: list[str]) -> int:
    config, node, prefix, count = argv[0], int(argv[1]), argv[2], int(argv[3])
    acks = None if argv[4] == "all" else int(argv[4])
    out = sys.stdout
    try:
        rep = open_primary(config, node, acks=acks, ready_timeout_s=60)
    except DeposedError as exc:
        out.write(f"deposed {exc}\n")
        return 3
    pool = rep.pool
    handles = {name: cls(pool, name, replicator=rep) for name, cls in KINDS.items()}
    rep.pool.check()
    if len(argv) > 5:
        out.write(f"verified {verify(handles, argv[5])}\n")
        out.flush()
    for i in range(count):
        key = f"{prefix}-{i}".encode()
        for name, handle in handles.items():
            try:
                if name == "q":
                    handle.put(value(key))
                else:
                    handle[key] = value(key)
            except MirrorUnavailableError:
                out.write(f"unack {name} {key.decode()}\n")
            except DeposedError:
                out.write("deposed\n")
                out.flush()
                return 3
            else:
                out.write(f"ack {name} {key.decode()}\n")
            out.flush()
    # before leaving, wait for every backup to have it all (for BLIZZARD_APP_SYNC_S seconds)
    deadline = time.monotonic() + float(os.environ.get("BLIZZARD_APP_SYNC_S", "0"))
    synced = rep.mirror.sync(every=True)
    while not synced and time.monotonic() < deadline:
        time.sleep(0.05)
        synced = rep.mirror.sync(every=True)
    out.write(f"done, synced {synced}\n")
    out.flush()
    close_primary(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
