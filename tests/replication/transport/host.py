"""One transport in a process of its own, driven by JSON lines (the transport tests).

``python -m tests.replication.transport.host SPEC`` builds the transport
``SPEC`` (JSON) describes, starts it on its own event loop in a thread, prints
``{"ready": true}``, then answers one JSON line per command line:

``links``                    whether every peer is reachable (DPDK: link up;
                             TCP: connected), per peer;
``send TARGET COUNT SIZE [PER_TURN]``  COUNT numbered messages of SIZE bytes
                             to TARGET, PER_TURN (32; 0: all) per loop turn as
                             a Raft node would; returns how many the transport
                             accepted;
``flood TARGET SIZE``         numbered messages of SIZE bytes to TARGET, PER_TURN
                             per loop turn, until the process ends (answers at
                             once);
``raw TARGET HEX``           one frame exactly as given (DPDK only);
``add NODE HOST PORT``        ``add_peer``: NODE joined the cluster (at HOST:PORT);
``remove NODE``              ``remove_peer``: NODE left it;
``inbox``                    per source: messages, whether in order, intact,
                             duplicated, and the last number;
``stats``                    the transport's counters (and DPDK status);
``quit``                     stop the transport and exit.

With ``"follower": DIR`` in the spec the process is a Raft node instead
(RaftNode over a Raft log in ``DIR/log.pool``, a session table over a
registry in ``DIR/data.pool``, no elections of its own): its peers, played
by the test, lead it with frames sent by ``raw``. It answers ``node`` (its
status: counters, copies by stage, the transport's) and ``entries FIRST
END`` (its log's entries, ``repr``, after checking the log).

Every message carries (source, number) and a body derived from them, so the
receiver can tell a damaged, duplicated or reordered message. A message
whose body is ``b"boom"`` makes the receiver raise (a bad message must not
take the transport down).

SPEC: ``{"kind": "tcp"|"dpdk", "node": 1, "nodes": [1, 2, 3], "run_dir": ...,
"cluster_id": ..., "addresses": {"1": ["127.0.0.1", port], ...}, "options": {...}}``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import struct
import sys
import threading
from collections import defaultdict
from typing import Any

import attrs

HEAD = struct.Struct("<IQ")
PER_TURN = 32
BOOM = b"boom"


def body(source: int, number: int, size: int) -> bytes:
    """The message ``number`` from ``source``, ``size`` bytes (at least the head)."""
    head = HEAD.pack(source, number)
    fill = bytes((source * 31 + number + i) & 0xFF for i in range(min(size - len(head), 251)))
    rest = max(0, size - len(head))
    if rest and fill:
        fill = (fill * (rest // len(fill) + 1))[:rest]
    return head + fill


def build(spec: dict[str, Any]):
    if spec["kind"] == "tcp":
        from blizzard.replication.transport.tcp import TcpTransport

        peers = {int(k): tuple(v) for k, v in spec["addresses"].items()}
        return TcpTransport(spec["node"], peers, cluster_id=spec["cluster_id"],
                            **spec.get("options", {}))
    from blizzard.replication.transport.dpdk import DpdkTransport
    from blizzard.replication.transport.dpdk.options import parse

    options = parse(spec.get("options", {}), spec["node"])
    return DpdkTransport(spec["node"], spec["nodes"], run_dir=spec["run_dir"],
                         cluster_id=spec["cluster_id"], options=options)


def follower(node_id: int, nodes: list[int], transport, directory: str):
    """A Raft node that never campaigns, for tests that play its leaders."""
    from pathlib import Path

    from blizzard.pmem import Pool
    from blizzard.replication.node import RaftNode
    from blizzard.replication.raft.messages import ConfState
    from blizzard.replication.raft.pmem_storage import PmemStorage
    from blizzard.replication.sessions import SessionStateMachine
    from blizzard.structures import registry_for

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    data = Pool.create(path / "data.pool", 16 << 20, mode="pmem")
    log_pool = Pool.create(path / "log.pool", 16 << 20, mode="pmem")
    return RaftNode(node_id, storage=PmemStorage(log_pool, conf_state=ConfState(tuple(nodes))),
                    state_machine=SessionStateMachine(registry_for(data), data),
                    transport=transport, tick_s=0.01, election_tick=100_000, seed=node_id)


class Host:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.node = spec["node"]
        self.transport = build(spec)
        self.raft = (follower(self.node, spec["nodes"], self.transport, spec["follower"])
                     if spec.get("follower") else None)
        self.loop = (self.transport.new_event_loop() if hasattr(self.transport, "new_event_loop")
                     else asyncio.new_event_loop())
        self.inbox: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"count": 0, "in_order": True, "intact": True, "duplicates": 0, "last": 0,
                     "numbers": set()})
        self.numbers: dict[int, int] = defaultdict(int)
        self.floods: list[asyncio.Task] = []
        self.transport.set_receiver(self.receive)

    def receive(self, source: int, payload: bytes) -> None:
        if payload == BOOM:
            raise ValueError("a message the application cannot parse")
        box = self.inbox[source]
        claimed, number = HEAD.unpack_from(payload)
        box["count"] += 1
        if claimed != source or payload != body(source, number, len(payload)):
            box["intact"] = False
        if number in box["numbers"]:
            box["duplicates"] += 1
        box["numbers"].add(number)
        if number <= box["last"]:
            box["in_order"] = False
        box["last"] = max(box["last"], number)

    async def send(self, target: int, count: int, size: int, per_turn: int = PER_TURN) -> int:
        accepted = 0
        for i in range(count):
            self.numbers[target] += 1
            accepted += self.transport.send(target, body(self.node, self.numbers[target], size))
            if per_turn and i % per_turn == per_turn - 1:
                await asyncio.sleep(0)
        return accepted

    async def flood(self, target: int, size: int) -> None:
        while True:
            await self.send(target, PER_TURN, size)

    def links(self) -> dict[str, bool]:
        t = self.transport
        if self.spec["kind"] == "dpdk":
            return {str(p): link["up"] for p, link in t.status()["links"].items()}
        return {str(p): peer.task is not None and not peer.task.done()
                and t.stats.connects >= len(t._peers) for p, peer in t._peers.items()}

    def stats(self) -> dict[str, Any]:
        out = {"stats": attrs.asdict(self.transport.stats)}
        if hasattr(self.transport, "status"):
            out["status"] = self.transport.status()
        return out

    async def command(self, words: list[str]) -> dict[str, Any]:
        cmd, args = words[0], words[1:]
        if cmd == "links":
            return {"links": self.links()}
        if cmd == "send":
            return {"accepted": await self.send(*map(int, args))}
        if cmd == "flood":
            target, size = map(int, args)
            self.floods.append(asyncio.ensure_future(self.flood(target, size)))
            return {}
        if cmd == "boom":
            return {"accepted": self.transport.send(int(args[0]), BOOM)}
        if cmd == "raw":
            return {"accepted": self.transport.send_raw(int(args[0]), bytes.fromhex(args[1]))}
        if cmd == "add":
            self.transport.add_peer(int(args[0]), (args[1], int(args[2])))
            return {"links": self.links()}
        if cmd == "remove":
            self.transport.remove_peer(int(args[0]))
            return {"links": self.links()}
        if cmd == "inbox":
            return {"inbox": {str(s): {k: v for k, v in box.items() if k != "numbers"}
                              for s, box in self.inbox.items()}}
        if cmd == "stats":
            return self.stats()
        if cmd == "node":
            return {"node": self.raft.status()}
        if cmd == "entries":
            storage = self.raft.storage
            storage.check()
            return {"entries": [repr(e) for e in storage.entries(int(args[0]), int(args[1]))]}
        raise ValueError(f"unknown command {cmd!r}")

    def run(self) -> int:
        started = threading.Event()
        failure: list[BaseException] = []

        def loop_thread() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(
                    self.transport.start() if self.raft is None else self.raft.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(
                self.transport.stop() if self.raft is None else self.raft.stop())

        thread = threading.Thread(target=loop_thread, daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        reply({"ready": True})
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            future = asyncio.run_coroutine_threadsafe(self.command(words), self.loop)
            try:
                reply({"ok": True, **future.result(60)})
            except Exception as exc:
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(30)
        reply({"ok": True, "bye": True})
        return 0


def reply(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    faulthandler.enable()  # a crash leaves its stack in the log
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Host(json.loads(sys.argv[1])).run()


if __name__ == "__main__":
    sys.exit(main())
