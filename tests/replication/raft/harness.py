"""A synchronous test network for Raft cores (after etcd's ``network`` helper).

``stabilize()`` processes every Ready (persist, send, apply, advance) and
delivers every message until nothing moves. ``cut``/``isolate``/``recover``
drop traffic; ``drop_types`` ignores whole message kinds.
"""

from __future__ import annotations

import random

from blizzard.replication.raft.core import Config, Raft, Ready
from blizzard.replication.raft.messages import ConfState, Entry, EntryType, Message
from blizzard.replication.raft.storage import MemoryStorage


def make_node(
    node_id: int, voters: tuple[int, ...], *, learners: tuple[int, ...] = (), **options
) -> tuple[Raft, MemoryStorage]:
    storage = MemoryStorage(ConfState(voters, learners))
    config = Config(id=node_id, **options)
    return Raft(config, storage, random.Random(node_id)), storage


class Network:
    def __init__(self, count: int = 3, *, learners: tuple[int, ...] = (), **options) -> None:
        self.voters = tuple(range(1, count + 1))
        self.options = options
        self.nodes: dict[int, Raft] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list] = {}
        self.restored: dict[int, list] = {}  # snapshot metas installed, per node
        self.queue: list[Message] = []
        self.cut_links: set[tuple[int, int]] = set()
        self.dropped_types: set[type] = set()
        self.delivered: list[Message] = []
        for node_id in self.voters + learners:
            self.add(node_id, learners=learners)

    def add(self, node_id: int, *, learners: tuple[int, ...] = ()) -> Raft:
        node, storage = make_node(node_id, self.voters, learners=learners, **self.options)
        self.nodes[node_id] = node
        self.storages[node_id] = storage
        self.applied[node_id] = []
        self.read_states[node_id] = []
        self.restored[node_id] = []
        return node

    def restart(self, node_id: int) -> Raft:
        """Crash ``node_id`` and bring it back from what it had persisted."""
        storage = self.storages[node_id]
        config = Config(id=node_id, **self.options)
        node = Raft(config, storage, random.Random(node_id + 1000))
        self.nodes[node_id] = node
        self.applied[node_id] = list(self.applied[node_id][: storage.first_index() - 1])
        return node

    # --- traffic ------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut(node_id, other)

    def recover(self) -> None:
        self.cut_links.clear()
        self.dropped_types.clear()

    def process(self, node_id: int) -> Ready | None:
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        ready = node.ready()
        storage = self.storages[node_id]
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        if ready.snapshot is not None:
            storage.apply_snapshot(ready.snapshot)
        storage.append(ready.entries)
        self.queue.extend(ready.messages)
        applied = self.applied[node_id]
        if ready.snapshot is not None:
            applied[:] = [Entry(0, 0)] * ready.snapshot.meta.index  # placeholders
            self.restored[node_id].append(ready.snapshot.meta)
        for entry in ready.committed_entries:
            assert entry.index == len(applied) + 1
            applied.append(entry)
        self.read_states[node_id].extend(ready.read_states)
        node.advance(ready)
        return ready

    def deliver(self, m: Message) -> None:
        if (m.source, m.target) in self.cut_links or type(m) in self.dropped_types:
            return
        if m.target in self.nodes:
            self.delivered.append(m)
            self.nodes[m.target].step(m)

    def stabilize(self, rounds_max: int = 1000) -> None:
        for _ in range(rounds_max):
            moved = False
            for node_id in list(self.nodes):
                if self.process(node_id) is not None:
                    moved = True
            queue, self.queue = self.queue, []
            for m in queue:
                moved = True
                self.deliver(m)
            if not moved:
                return
        raise AssertionError("network did not stabilize")

    def tick(self, node_id: int, count: int = 1) -> None:
        for _ in range(count):
            self.nodes[node_id].tick()

    def tick_all(self, count: int = 1) -> None:
        for _ in range(count):
            for node in self.nodes.values():
                node.tick()
            self.stabilize()

    def elect(self, node_id: int) -> Raft:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].lead == node_id
        return self.nodes[node_id]

    def leader(self) -> Raft | None:
        leaders = [n for n in self.nodes.values() if n.lead == n.id]
        return leaders[0] if len(leaders) == 1 else None

    def data_applied(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.type == EntryType.NORMAL and e.data]
