"""The simulated network: loss, duplication, delay (hence reordering), partitions.

Frames are the bytes the nodes' transports would carry (Raft messages
encoded by the node), so the simulator exercises the same encode/decode
path as TCP. Time is the simulator's step counter; a frame sent at step t
arrives at step t + 1 + a random delay below ``delay_max``, unless it was
lost, its link is cut, or its target is down when it arrives.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import attrs

#: Frames in flight at most; beyond it sends are dropped (a full outbox).
FRAMES_IN_FLIGHT_MAX = 100_000


@attrs.define
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    cut: int = 0  # dropped by a partition
    undeliverable: int = 0  # the target was down


class Network:
    """Carries frames between nodes; the faults are drawn from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0
        self.loss = 0.0
        self.duplicate = 0.0
        self.delay_max = 1
        self._queue: list[tuple[int, int, int, int, bytes]] = []
        self._sequence = 0
        self.blocked: set[tuple[int, int]] = set()  # (source, target) pairs cut
        self._receivers: dict[int, Callable[[int, bytes], None]] = {}
        self.stats = NetworkStats()

    def attach(self, node_id: int, receiver: Callable[[int, bytes], None]) -> None:
        """Deliver frames for ``node_id`` to ``receiver(source, frame)`` (it is up)."""
        self._receivers[node_id] = receiver

    def detach(self, node_id: int) -> None:
        """``node_id`` is down: frames arriving for it are dropped."""
        self._receivers.pop(node_id, None)

    def endpoint(self, node_id: int) -> Endpoint:
        return Endpoint(self, node_id)

    def send(self, source: int, target: int, frame: bytes) -> bool:
        rng = self.rng
        self.stats.sent += 1
        if len(self._queue) >= FRAMES_IN_FLIGHT_MAX:
            return False
        if self.loss and rng.random() < self.loss:
            self.stats.lost += 1
            return True  # lost on the wire: the sender cannot tell
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            self._sequence += 1
            due = self.now + 1 + int(rng.random() * self.delay_max)
            heapq.heappush(self._queue, (due, self._sequence, source, target, frame))
        return True

    def deliver_due(self) -> None:
        """Hand every frame due by now to its target (if reachable and up)."""
        queue = self._queue
        while queue and queue[0][0] <= self.now:
            _, _, source, target, frame = heapq.heappop(queue)
            if (source, target) in self.blocked:
                self.stats.cut += 1
                continue
            receiver = self._receivers.get(target)
            if receiver is None:
                self.stats.undeliverable += 1
                continue
            self.stats.delivered += 1
            receiver(source, frame)

    def partition(self, ids: list[int], *, one_way: bool) -> None:
        """Cut the nodes into two random sides (one direction only if ``one_way``)."""
        ids = list(ids)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
        for a in ids[:cut]:
            for b in ids[cut:]:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    @property
    def in_flight(self) -> int:
        return len(self._queue)


class Endpoint:
    """One node's side of the network: what its :class:`~blizzard.replication.node.Node`
    gets as its transport (a ``send`` that never blocks)."""

    __slots__ = ("network", "node_id")

    def __init__(self, network: Network, node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    def send(self, target: int, payload: bytes) -> bool:
        return self.network.send(self.node_id, target, payload)
