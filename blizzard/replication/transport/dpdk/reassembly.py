"""Fragments back into messages, one :class:`Reassembler` per peer.

A message travels as ``count`` frames sharing (session, message id). The
reassembler tolerates what a link may do -- lose a frame (the message is
never completed and is evicted later: Raft resends), reorder frames,
deliver one twice -- and what a peer's restart does (a new session: the
old one's state is dropped).

Invariants: a message is delivered at most once per session (message ids
within ``window`` of the newest delivered are remembered; older ones are
refused as stale); at most ``partial_max`` incomplete messages and
``partial_bytes_max`` bytes of their fragments are held, the oldest evicted
first.
"""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 4096
PARTIAL_MAX = 64


class Reassembler:
    """Turns one peer's fragments into whole messages (see the module docstring)."""

    __slots__ = (
        "delivered",
        "duplicates",
        "evicted",
        "newest",
        "partial_bytes",
        "partial_bytes_max",
        "partial_max",
        "partials",
        "recent",
        "session",
        "window",
    )

    def __init__(self, *, partial_bytes_max: int, partial_max: int = PARTIAL_MAX,
                 window: int = WINDOW) -> None:
        self.partial_max = partial_max
        self.partial_bytes_max = partial_bytes_max
        self.window = window
        self.session: int | None = None
        self.newest = 0
        self.recent: set[int] = set()
        self.partials: OrderedDict[int, list] = OrderedDict()  # id -> [missing, parts]
        self.partial_bytes = 0
        self.delivered = 0
        self.duplicates = 0
        self.evicted = 0

    def _new_session(self, session: int) -> None:
        self.session = session
        self.newest = 0
        self.recent.clear()
        self.evicted += len(self.partials)
        self.partials.clear()
        self.partial_bytes = 0

    def _fresh(self, message: int) -> bool:
        """Not delivered yet, and not too old to tell."""
        return message > self.newest - self.window and message not in self.recent

    def _mark(self, message: int) -> None:
        recent = self.recent
        recent.add(message)
        if message > self.newest:
            self.newest = message
        if len(recent) > 2 * self.window:
            floor = self.newest - self.window
            self.recent = {m for m in recent if m > floor}
        self.delivered += 1

    def single(self, session: int, message: int) -> bool:
        """A one-frame message arrived: True if it is to be delivered."""
        if session != self.session:
            self._new_session(session)
        if not self._fresh(message):
            self.duplicates += 1
            return False
        self._mark(message)
        return True

    def fragment(self, session: int, message: int, index: int, count: int,
                 payload: bytes) -> bytes | None:
        """One fragment of a ``count``-frame message: the whole message once
        its last missing fragment arrives, else None."""
        if session != self.session:
            self._new_session(session)
        if not self._fresh(message):
            self.duplicates += 1
            return None
        entry = self.partials.get(message)
        if entry is None:
            entry = self.partials[message] = [count, [None] * count]
        elif len(entry[1]) != count:  # fragments that disagree: the message is garbage
            self._drop(message)
            self.duplicates += 1
            return None
        parts = entry[1]
        if parts[index] is not None:
            self.duplicates += 1
            return None
        parts[index] = payload
        self.partial_bytes += len(payload)
        entry[0] -= 1
        if entry[0]:
            self._bound()
            return None
        self._drop(message)
        self._mark(message)
        return b"".join(parts)

    def _drop(self, message: int) -> None:
        _, parts = self.partials.pop(message)
        self.partial_bytes -= sum(len(p) for p in parts if p is not None)

    def _bound(self) -> None:
        while self.partials and (len(self.partials) > self.partial_max
                                 or self.partial_bytes > self.partial_bytes_max):
            self._drop(next(iter(self.partials)))
            self.evicted += 1
