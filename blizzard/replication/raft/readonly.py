"""Pending ReadIndex requests at the leader, confirmed by heartbeat rounds.

A read at the leader is linearizable once (1) the leader has committed an
entry of its own term, so its commit index is at least every acknowledged
write's, and (2) a quorum has acknowledged a heartbeat sent *after* the
read arrived, so no newer leader existed at that moment. Each request
records the commit index at arrival; when a quorum echoes its context the
request and every older one are released, oldest first.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

__all__ = ["ReadOnly", "ReadRequest", "ReadState"]


@attrs.frozen
class ReadState:
    """A read is safe at this node once it has applied up to ``index``."""

    index: int
    context: bytes


@attrs.define
class ReadRequest:
    index: int
    source: int
    context: bytes
    acks: set[int] = attrs.field(factory=set)


class ReadOnly:
    """FIFO of pending requests keyed by their (unique) context, bounded."""

    def __init__(self, pending_max: int) -> None:
        self.pending_max = pending_max
        self._pending: OrderedDict[bytes, ReadRequest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, index: int, source: int, context: bytes) -> bool:
        """Queue a request; False if its context is already pending or the queue is full."""
        if context in self._pending or len(self._pending) >= self.pending_max:
            return False
        self._pending[context] = ReadRequest(index, source, context)
        return True

    def ack(self, source: int, context: bytes) -> set[int] | None:
        """Record a heartbeat echo; return the acks so far for ``context``."""
        request = self._pending.get(context)
        if request is None:
            return None
        request.acks.add(source)
        return request.acks

    def release_through(self, context: bytes) -> list[ReadRequest]:
        """Dequeue and return every request up to and including ``context``."""
        released = []
        pending = self._pending
        while pending:
            key, request = pending.popitem(last=False)
            released.append(request)
            if key == context:
                break
        return released

    def last_context(self) -> bytes:
        return next(reversed(self._pending)) if self._pending else b""

    def clear(self) -> None:
        self._pending.clear()
