"""One node for ``blizzard bench replication``: a JSON command loop on stdin/stdout.

    python -m blizzard.bench._replication_node raft CONFIG NODE [count]
    python -m blizzard.bench._replication_node primary CONFIG NODE FENCE ACKS
    python -m blizzard.bench._replication_node backup CONFIG NODE

``raft``: a :class:`RaftReplicator` node (with ``count``, its two pools sit on
:class:`~blizzard.pmem.counting.CountingMedia`, to count flushes and fences). ``primary``: the
physical primary (``open_primary``; FENCE ``sync`` or ``pipelined``, ACKS
``all`` or a number). ``backup``: ``serve_backup``.

Commands (one JSON reply line each, ``{"ok": true, ...}``):

``open KIND NAME``                    create/open a structure (raft: on any node;
                                      physical: on the primary)
``load NAME N WINDOW PREFIX VBYTES [STALL]``  N puts, WINDOW in flight
``latency NAME N PREFIX VBYTES [MAXS]``        N synchronous puts: p50/p99
``counters``                          bytes and messages sent, flushes, fences...
``status``                            raft: role and leader
``count NAME``                        the structure's length
``quit``

Puts: ``PREFIX`` + a counter as the 16-byte key, VBYTES of value; a queue puts
the value alone. Nothing but protocol lines goes to stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from blizzard.bench._cluster_node import make_key, serve, sync_latency, windowed

KINDS = ("hashmap", "queue", "bptree", "skiplist")


def _structure(kind: str):
    from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList
    from blizzard.structures.ops import OpCode

    return {"hashmap": (PHashMap, OpCode.MAP_PUT), "queue": (PQueue, OpCode.QUEUE_PUT),
            "bptree": (PBPlusTree, OpCode.ORD_PUT),
            "skiplist": (PSkipList, OpCode.ORD_PUT)}[kind]


class Workload:
    """The structures of one node and how to put into them."""

    def __init__(self, pool, replicator, submit_callback: Callable, settle: Callable) -> None:
        self.pool = pool
        self.replicator = replicator
        self.submit_callback = submit_callback
        self.settle = settle
        self.handles: dict[str, Any] = {}
        self.codes: dict[str, tuple[str, int]] = {}

    def open(self, kind: str, name: str) -> dict[str, Any]:
        cls, code = _structure(kind)
        self.handles[name] = cls(self.pool, name, replicator=self.replicator)
        self.codes[name] = (kind, int(code))
        return {}

    def _ops(self, name: str, n: int, prefix: str, vbytes: int) -> list[bytes]:
        from blizzard.structures.ops import Encoder

        kind, code = self.codes[name]
        enc = Encoder(name)
        value = bytes(i & 0xFF for i in range(vbytes))
        if kind == "queue":
            return [enc.one(code, value) for _ in range(n)]
        return [enc.two(code, make_key(prefix, i), value) for i in range(n)]

    def load(self, name: str, n: str, window: str, prefix: str, vbytes: str,
             stall_s: str = "20") -> dict[str, Any]:
        ops = self._ops(name, int(n), prefix, int(vbytes))
        submit = self.submit_callback

        def start(i: int, done: Callable[[Any], None]) -> None:
            def finished(result: Any, error: Any) -> None:
                done(error if error is not None or not isinstance(result, BaseException)
                     else result)

            submit(ops[i], finished)

        t = time.process_time()
        if self.settle is None:
            result = windowed(len(ops), int(window), start, float(stall_s))
        else:  # pipelined physical: acknowledgements arrive as later Ops apply
            result = _pipelined(ops, start, self.settle)
        result["cpu_seconds"] = time.process_time() - t
        return result

    def latency(self, name: str, n: str, prefix: str, vbytes: str,
                max_seconds: str = "60") -> dict[str, Any]:
        ops = self._ops(name, int(n), prefix, int(vbytes))
        submit = self.replicator.submit
        return sync_latency(len(ops), lambda i: submit(ops[i]), float(max_seconds))

    def count(self, name: str) -> dict[str, Any]:
        return {"count": len(self.handles[name])}


def _pipelined(ops: list[bytes], start: Callable, settle: Callable) -> dict[str, Any]:
    errors: list[str] = []
    counts = [0, 0]

    def done(error: Any) -> None:
        counts[0] += 1
        if error is not None:
            counts[1] += 1
            if len(errors) < 5:
                errors.append(repr(error))

    t0 = time.perf_counter()
    for i in range(len(ops)):
        start(i, done)
    settle()
    seconds = time.perf_counter() - t0
    return {"ops": counts[0] - counts[1], "failed": counts[1], "unanswered": 0,
            "not_issued": 0, "seconds": seconds, "errors": errors}


def _raft(config: str, node_id: int, count: bool) -> int:
    from blizzard.cluster.replicator import RaftReplicator
    from blizzard.pmem.counting import CountingMedia

    media: list = []

    def counting(inner):
        media.append(CountingMedia(inner))
        return media[-1]

    rep = RaftReplicator(config, node_id, media_wrapper=counting if count else None)
    work = Workload(rep.pool, rep, rep.submit_callback, None)

    def open_(kind: str, name: str) -> dict[str, Any]:
        rep.wait_for_leader(30)
        return work.open(kind, name)

    def counters() -> dict[str, Any]:
        stats = rep.transport.stats
        out = {"bytes_sent": stats.bytes_sent, "messages_sent": stats.frames_sent,
               "writes": stats.writes, "applied": rep.state_machine.last_applied}
        if media:
            out.update(flushes=sum(m.flushes for m in media),
                       flushed_bytes=sum(m.flushed_bytes for m in media),
                       fences=sum(m.fences for m in media))
        return out

    def status() -> dict[str, Any]:
        return {"status": rep.status()}

    handlers = {"open": open_, "load": work.load, "latency": work.latency, "count": work.count,
                "counters": counters, "status": status, "quit": rep.stop}
    return serve(handlers, {"node": node_id, "system": "raft"})


def _primary(config: str, node_id: int, fence: str, acks: str) -> int:
    from blizzard.cluster import config as configmod
    from blizzard.cluster.physical import (
        close_primary,
        close_transport,
        mirror_transport,
        open_primary,
    )

    transport = mirror_transport(configmod.load(config), node_id)
    rep = open_primary(config, node_id, acks=None if acks == "all" else int(acks), fence=fence,
                       ready_timeout_s=120, transport=transport)
    rep.mirror._inflight_max = 4096 if fence == "pipelined" else rep.mirror._inflight_max
    work = Workload(rep.pool, rep, rep.submit_callback,
                    rep.settle if fence == "pipelined" else None)

    def counters() -> dict[str, Any]:
        s = rep.mirror.stats
        return {"bytes_sent": s.bytes_sent, "messages_sent": s.messages_sent,
                "round_trips": s.round_trips, "flushes": s.flushes,
                "flushed_bytes": s.flushed_bytes, "fences": s.fences,
                "fences_shipped": s.fences_shipped, "ranges_shipped": s.ranges_shipped,
                "range_bytes_shipped": s.range_bytes_shipped, "failures": s.failures,
                "applied": rep.submitted}

    handlers = {"open": work.open, "load": work.load, "latency": work.latency,
                "count": work.count, "counters": counters,
                "status": lambda: {"status": rep.mirror.status()},
                "quit": lambda: (close_primary(rep), close_transport(transport))}
    return serve(handlers, {"node": node_id, "system": f"physical-{fence}"})


def _backup(config: str, node_id: int) -> int:
    import attrs

    from blizzard.cluster import config as configmod
    from blizzard.cluster.physical import backup_transports, close_transport, mirror_transport
    from blizzard.replication.physical.backup import BackupServer

    cfg = configmod.load(config)
    transport = mirror_transport(cfg, node_id)
    server = BackupServer(cfg.node_dir(node_id), cfg.node(node_id).raft, node=node_id,
                          cluster_id=cfg.cluster_id, mode=cfg.durability,
                          **backup_transports(transport))
    stop = threading.Event()

    def counters() -> dict[str, Any]:
        return attrs.asdict(server.stats)

    def quit_() -> None:
        stop.set()
        server.close()
        close_transport(transport)

    handlers = {"counters": counters, "status": lambda: {"status": server.info()},
                "quit": quit_}
    return serve(handlers, {"node": node_id, "system": "backup"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    role, config, node_id = argv[0], argv[1], int(argv[2])
    if role == "raft":
        return _raft(config, node_id, len(argv) > 3 and argv[3] == "count")
    if role == "primary":
        return _primary(config, node_id, argv[3], argv[4])
    if role == "backup":
        return _backup(config, node_id)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
