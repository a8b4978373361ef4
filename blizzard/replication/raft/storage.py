"""The stable log as the Raft core reads it, and an in-memory implementation.

The core never writes entries to storage itself: the driver appends the
entries and hard state of each ``Ready`` (persist step) and the core reads
them back through this protocol. The one exception is ``compact``, which the
core calls from ``Raft.compact`` on the driver's behalf.

Layout of ``MemoryStorage``: ``_entries[0]`` is a dummy entry holding the
index and term of the latest snapshot (index 0, term 0 for an empty log), so
``first_index() == _entries[0].index + 1`` and the entry with index ``i``
lives at ``_entries[i - _entries[0].index]``.

Typed Python: ``storage.pxd`` makes the list-backed reads and
``MemoryStorage`` extension types (the core reads terms and entries back on
every message it sends); the pmem log's extension type subclasses the reads.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Protocol

import cython

from blizzard.exceptions import (
    CompactedError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from blizzard.replication.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "CompactedError",
    "EntryListReads",
    "MemoryStorage",
    "SnapshotOutOfDateError",
    "Storage",
    "UnavailableError",
]


class Storage(Protocol):
    """Read access to the stable (persisted) Raft state."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership as of the snapshot."""
        ...

    def hard_state(self) -> HardState:
        """The persisted term, vote and commit index."""
        ...

    def entries(self, lo: int, hi: int, bytes_max: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``; at least one if ``lo < hi``, then up to ``bytes_max``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (``first_index() - 1`` is the snapshot's)."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...

    def compact(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` and discard the entries it covers."""
        ...


class EntryListReads:
    """The read half of ``Storage`` over ``self._entries``: a list whose item 0
    is a dummy holding the snapshot's index and term (see the module docstring).
    Shared by ``MemoryStorage`` and the pmem log, which keeps the same list."""

    _entries: list[Entry]

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        entries = self._entries
        offset = entries[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(entries):
            raise UnavailableError(index)
        return entries[index - offset].term

    def entries(self, lo: int, hi: int, bytes_max: int | None = None) -> list[Entry]:
        entries = self._entries
        offset = entries[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > offset + len(entries):
            raise UnavailableError(hi)
        found = entries[lo - offset : hi - offset]
        if bytes_max is not None:
            found = limit_size(found, bytes_max)
        return found


class MemoryStorage(EntryListReads):
    """A ``Storage`` in a Python list; also the model for crash simulation.

    Whatever the driver has written here is, by definition, what survived:
    a simulated crash keeps this object and discards the core.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, conf_state or ConfState()), b"")
        self._entries: list[Entry] = [Entry(0, 0)]

    # --- reads -------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes (the driver's persist step) --------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, new: Sequence[Entry]) -> None:
        """Append ``new``, first discarding any stored entry at or after ``new[0]``."""
        if not new:
            return
        entries = self._entries
        offset = entries[0].index
        first = new[0].index
        if first + len(new) - 1 <= offset:
            return  # entirely covered by the snapshot
        if first <= offset:
            new = new[offset + 1 - first :]
            first = offset + 1
        position = first - offset
        assert position <= len(entries), f"gap: appending {first} after {self.last_index()}"
        if position < len(entries):
            del entries[position:]
        entries.extend(new)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace everything with ``snapshot`` (a follower catching up)."""
        meta = snapshot.meta
        if meta.index < self._snapshot.meta.index:
            raise SnapshotOutOfDateError(meta.index)
        self._snapshot = snapshot
        self._entries = [Entry(meta.term, meta.index)]

    def compact(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        offset = self._entries[0].index
        if meta.index <= offset:
            return
        assert meta.index <= self.last_index(), "compacting past the end of the log"
        assert self.term(meta.index) == meta.term
        keep = self._entries[meta.index - offset :]
        keep[0] = Entry(meta.term, meta.index)
        self._entries = keep
        self._snapshot = snapshot

    def clone(self) -> MemoryStorage:
        """An independent copy (the entries themselves are immutable)."""
        other = MemoryStorage()
        other._hard_state = self._hard_state
        other._snapshot = self._snapshot
        other._entries = list(self._entries)
        return other


ENTRY_OVERHEAD = 24  # bytes counted per entry besides its data (term, index, type)
_data_of = operator.itemgetter(3)


def data_bytes(entries: Sequence[Entry]) -> int:
    """The bytes of data the ``entries`` carry."""
    if cython.compiled:  # a C loop: one length per entry
        total = 0
        for entry in entries:
            total += len(cython.cast(tuple, entry)[3])  # entry.data, read from the tuple it is
        return total
    return sum(map(len, map(_data_of, entries)))  # without a Python-level loop


def limit_size(entries: list[Entry], bytes_max: int) -> list[Entry]:
    """The longest prefix of ``entries`` within ``bytes_max`` (at least one entry)."""
    count = len(entries)
    if count * ENTRY_OVERHEAD + data_bytes(entries) <= bytes_max:
        return entries  # the common case
    total = 0
    for count, entry in enumerate(entries):
        total += len(entry.data) + ENTRY_OVERHEAD
        if total > bytes_max and count > 0:
            return entries[:count]
    return entries
