"""Fragments back into messages, one :class:`Reassembler` per peer.

A message travels as ``count`` frames sharing (session, message id). The
reassembler tolerates what a link may do -- lose a frame (the message is
never completed and is evicted later: Raft resends), reorder frames,
deliver one twice -- and what a peer's restart does (a new session: the
old one's state is dropped).

A message may instead be received into a region its receiver reserved
(the Raft log's free tail: see :mod:`.transport`), its fragments copied
there as they come: a :class:`RegionMessage`, which holds no bytes of its
own and follows the same rules -- delivered at most once, a fragment twice
counted as a duplicate, one never completed evicted (at most
``REGIONS_MAX`` are held).

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
REGIONS_MAX = 4  # the log reserves one region at a time: a few cover a late straggler


class RegionMessage:
    """A message whose fragments go straight into ``region`` (a writable view
    of ``(count - 1) * per + last - len(head)`` bytes): the first
    ``len(head)`` bytes of the message are kept in ``head``, the rest of
    fragment ``i`` goes to ``region[i * per - len(head):]``. ``lost``: the
    region was given up while the message arrived (its fragments are then
    dropped as they come)."""

    __slots__ = ("count", "got", "head", "last", "lost", "missing", "per", "region", "source")

    def __init__(self, source: int, count: int, per: int, last: int, head: bytes,
                 region: memoryview) -> None:
        self.source = source
        self.count = count
        self.per = per
        self.last = last
        self.head = head
        self.region = region
        self.got = [False] * count
        self.missing = count
        self.lost = False

    def fits(self, index: int, count: int, length: int) -> bool:
        """Whether fragment ``index`` of ``length`` bytes belongs to this message
        as its first fragment laid it out."""
        return count == self.count and length == (self.last if index == count - 1
                                                  else self.per)

    def offset(self, index: int) -> int:
        """Where fragment ``index`` (not the first) goes in the region."""
        return index * self.per - len(self.head)


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
        "regions",
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
        self.regions: OrderedDict[int, RegionMessage] = OrderedDict()
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
        self.evicted += len(self.regions)
        self.regions.clear()

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

    def fresh(self, session: int, message: int) -> bool:
        """A fragment of ``message`` arrived: False (a duplicate, counted) if that
        message was delivered already."""
        if session != self.session:
            self._new_session(session)
        if not self._fresh(message):
            self.duplicates += 1
            return False
        return True

    def begun(self, message: int) -> bool:
        """Whether fragments of ``message`` were held already (as bytes)."""
        return message in self.partials

    def open_region(self, message: int, entry: RegionMessage) -> None:
        """``message`` (its first fragment just in) is received into a region."""
        self.regions[message] = entry
        while len(self.regions) > REGIONS_MAX:
            self.regions.popitem(last=False)
            self.evicted += 1

    def close_region(self, message: int) -> None:
        """``message``'s last fragment arrived (or it is given up whole)."""
        del self.regions[message]
        self._mark(message)

    def drop_region(self, message: int) -> None:
        """Forget ``message``, received into a region, unfinished (its fragments
        disagree): a later copy of it may arrive whole."""
        del self.regions[message]
        self.duplicates += 1

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
