"""One process of ``blizzard bench report``: a Store (or a physical backup) on a JSON loop.

    python -m blizzard.bench._store_node store CONFIG [NODE]
    python -m blizzard.bench._store_node backup CONFIG NODE

``store`` opens ``blizzard.open(CONFIG, node=NODE)``: whatever backend and
transport the config names (local, raft, physical; tcp, dpdk). ``backup``
runs node NODE as a physical replication backup. Each then prints
``{"ready": ...}`` and answers one JSON line per command line (the loop of
:mod:`._cluster_node`):

``open KIND NAME``          the structure (hashmap, queue, bptree, skiplist)
``load NAME N WINDOW KEYS OFFSET VBYTES SECONDS``
                            up to N puts (a queue: puts and gets in turn)
                            with WINDOW in flight, for at most SECONDS; keys
                            cycle through KEYS keys from OFFSET, so after a
                            warm-up every put overwrites (a steady state).
                            Returns ops, seconds, and the latency of every
                            request (p50/p99 from all of them)
``counters``                the backend's counters (``store.status()``; a
                            backup: its own), numbers only
``status``                  role and leader
``quit``

Every put goes through the replicator as an Op, as the structures' faces
send it, with the replicator's ``submit_callback`` where it has one (Raft,
physical) and ``submit`` otherwise (local). A backend that cannot be
opened here (not built, not installed, not configured for this transport)
answers ``{"ready": false, "skipped": "<why>"}`` and exits.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from blizzard.bench._cluster_node import make_key, serve, summarize, windowed

KINDS = ("hashmap", "queue", "bptree", "skiplist")
STALL_S = 15.0


def _numbers(counters: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in counters.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


class Workload:
    """The structures of one Store and the Ops that put into them."""

    def __init__(self, store) -> None:
        self.store = store
        self.replicator = store.replicator
        self.handles: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}

    def open(self, kind: str, name: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.handles[name] = getattr(self.store, kind)(name)
        self.kinds[name] = kind
        return {}

    def ops(self, name: str, n: int, keys: int, offset: int, vbytes: int) -> list[bytes]:
        """``n`` Ops for ``name``: puts of cycling keys (a queue: put, get, put...)."""
        from blizzard.structures.ops import Encoder, OpCode

        kind = self.kinds[name]
        enc = Encoder(name)
        value = bytes(i & 0xFF for i in range(vbytes))
        if kind == "queue":
            put, get = enc.one(int(OpCode.QUEUE_PUT), value), enc.zero(int(OpCode.QUEUE_GET))
            return [get if i % 2 else put for i in range(n)]
        code = int(OpCode.MAP_PUT if kind == "hashmap" else OpCode.ORD_PUT)
        return [enc.two(code, make_key("k", (offset + i) % keys), value) for i in range(n)]

    def load(self, name: str, n: str, window: str, keys: str, offset: str, vbytes: str,
             seconds: str) -> dict[str, Any]:
        ops = self.ops(name, int(n), int(keys), int(offset), int(vbytes))
        rep = self.replicator
        submit_callback = getattr(rep, "submit_callback", None)
        settle = getattr(rep, "settle", None)  # pipelined physical: acks on this thread

        if submit_callback is None:  # local: applied and acknowledged in the call
            submit = rep.submit

            def start(i: int, done: Callable[[Any], None]) -> None:
                try:
                    submit(ops[i])
                except Exception as exc:
                    done(exc)
                else:
                    done(None)
        else:
            def start(i: int, done: Callable[[Any], None]) -> None:
                def finished(result: Any, error: Any) -> None:
                    done(error if error is not None or not isinstance(result, BaseException)
                         else result)

                submit_callback(ops[i], finished)

        samples: list[int] = []
        cpu = time.process_time()
        result = windowed(len(ops), int(window), start, STALL_S, max_seconds=float(seconds),
                          latencies=samples, drain=settle)
        result["cpu_seconds"] = time.process_time() - cpu
        result["latency"] = summarize(samples)
        return result

    def count(self, name: str) -> dict[str, Any]:
        return {"count": len(self.handles[name])}


def _store(config: str, node: int | None) -> int:
    import blizzard
    from blizzard.exceptions import ConfigError

    try:
        store = blizzard.open(config, node=node)
    except ConfigError as exc:
        print(json.dumps({"ready": False, "skipped": str(exc)}), flush=True)
        return 0
    work = Workload(store)

    def counters() -> dict[str, Any]:
        return {"counters": _numbers(store.status()["counters"])}

    def status() -> dict[str, Any]:
        s = store.status()
        return {"status": {k: s.get(k) for k in ("backend", "transport", "role", "term",
                                                 "leader", "applied")}}

    handlers = {"open": work.open, "load": work.load, "count": work.count,
                "counters": counters, "status": status, "quit": store.close}
    return serve(handlers, {"node": node, "backend": store.backend,
                            "transport": store.transport})


def _backup(config: str, node: int) -> int:
    import attrs

    from blizzard.cluster import config as configmod
    from blizzard.cluster.physical import backup_transports, close_transport, mirror_transport
    from blizzard.replication.physical import frames
    from blizzard.replication.physical.backup import BackupServer

    cfg = configmod.load(config)
    transport = mirror_transport(cfg, node)
    server = BackupServer(cfg.node_dir(node), cfg.node(node).raft, node=node,
                          cluster_id=cfg.cluster_id, mode=cfg.durability,
                          **backup_transports(transport))
    stop = threading.Event()
    # one acknowledgement per fence, with its channel's framing (TCP: a length prefix)
    ack_bytes = len(frames.ack(0)) + _channel_header_bytes(cfg.transport.kind)

    def counters() -> dict[str, Any]:
        stats = attrs.asdict(server.stats)
        stats["bytes_sent"] = stats.get("batches", 0) * ack_bytes
        stats["messages_sent"] = stats.get("batches", 0)
        return {"counters": _numbers(stats)}

    def quit_() -> None:
        stop.set()
        server.close()
        close_transport(transport)

    handlers = {"counters": counters, "status": lambda: {"status": {"role": "backup"}},
                "quit": quit_}
    return serve(handlers, {"node": node, "backend": "physical-backup"})


def _channel_header_bytes(kind: str) -> int:
    """What a mirror channel adds to each message: TCP's 4-byte length, DPDK's
    channel header (its frames' own headers are not counted, as TCP's are not)."""
    if kind == "dpdk":
        from blizzard.replication.physical.dpdk import HEADER_BYTES

        return HEADER_BYTES
    return 4


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if len(argv) in (2, 3) and argv[0] == "store":
        return _store(argv[1], int(argv[2]) if len(argv) == 3 else None)
    if len(argv) == 3 and argv[0] == "backup":
        return _backup(argv[1], int(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
