"""One program, any backend: the configuration file alone decides where the data lives.

Run: python examples/one_app.py CONFIG [NODE]

* ``[replication] backend = "local"``: a pool in ``data_dir``, no copies.
* ``backend = "raft"``: this process is cluster node NODE (start one process
  per ``[[nodes]]`` entry, each with its own NODE); a node stays up for the
  others until it is interrupted (Ctrl-C, SIGTERM).
* ``backend = "remote"``: a client of the ``blizzard serve`` nodes listed in
  ``[[nodes]]`` (their ``client`` addresses).

The program uses every kind of structure, then prints what it sees.
"""

from __future__ import annotations

import signal
import sys

import blizzard


def run(store, who: str) -> None:
    users = store.hashmap("users", key_codec=str, value_codec="msgpack")
    users[who] = {"langs": ["python"], "visits": users.get(who, {}).get("visits", 0) + 1}

    jobs = store.queue("jobs", value_codec=str)
    jobs.put(f"build for {who}")

    releases = store.bptree("releases", key_codec=int, value_codec=str)
    releases.update({20261123: "0.1", 20261201: "0.2", 20270101: "1.0"})

    names = store.skiplist("names", key_codec=str, value_codec=int)
    names[who] = len(who)

    status = store.status()
    print(f"{who}: backend {status['backend']}, role {status['role']}")
    print(f"{who}: {who} visited {users[who]['visits']} time(s)")
    print(f"{who}: next job {jobs.peek()!r}, {len(jobs)} queued")
    print(f"{who}: releases of 2026: {list(releases.irange(20260101, 20261231))}")
    print(f"{who}: first name {names.peekitem(0)[0]!r}, {who!r} at {names.index(who)}")
    print(f"{who}: structures {sorted(store.names())}", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit("usage: one_app.py CONFIG [NODE]")
    node = int(argv[2]) if len(argv) == 3 else None
    # SIGTERM stops the node as Ctrl-C does: KeyboardInterrupt unwinds the `with`,
    # which closes the store (a handler that set a threading.Event could deadlock
    # with the main thread waiting on that very event).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    who = "app" if node is None else f"node{node}"
    try:
        with blizzard.open(argv[1], node=node) as store:
            run(store, who)
            if node is not None:
                print(f"{who}: serving the other nodes until interrupted", flush=True)
                while True:
                    signal.pause()
    except KeyboardInterrupt:
        pass
    print(f"{who}: closed", flush=True)


if __name__ == "__main__":
    main(sys.argv)
