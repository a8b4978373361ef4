"""The core's view of the log: stable storage plus an unstable tail.

Entries with index ``< offset`` are read from storage (or are covered by the
pending snapshot); entries ``offset .. last_index()`` are in ``unstable``,
not yet persisted, and go out in the next ``Ready``. Storage may still hold
stale entries at or after ``offset`` (a conflicting suffix being replaced);
they are never read.

Invariants: ``applied <= committed <= last_index()``; a pending snapshot
``s`` implies ``offset == s.meta.index + 1`` at the time it was installed.

Typed Python: ``raftlog.pxd`` gives the indexes C types (every message the
core handles reads the log).
"""

from __future__ import annotations

from collections.abc import Sequence

from blizzard.exceptions import CompactedError
from blizzard.replication.raft.messages import Entry, Snapshot
from blizzard.replication.raft.storage import Storage, limit_size

__all__ = ["RaftLog"]


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1
        self.pending_snapshot: Snapshot | None = None
        self.committed = storage.first_index() - 1
        self.applied = self.committed

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied},"
            f" offset={self.offset}, unstable={len(self.unstable)})"
        )

    # --- reads -------------------------------------------------------------

    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.offset + len(self.unstable) - 1

    def stable_last_index(self) -> int:
        """The last index known to be persisted locally."""
        return self.offset - 1

    def term(self, index: int) -> int:
        """The term at ``index``; 0 if beyond the log; CompactedError if compacted."""
        offset = self.offset
        if index >= offset:
            position = index - offset
            unstable = self.unstable
            return unstable[position].term if position < len(unstable) else 0
        snapshot = self.pending_snapshot
        if snapshot is not None:
            if index == snapshot.meta.index:
                return snapshot.meta.term
            raise CompactedError(index)
        if index == 0:
            return 0
        return self.storage.term(index)

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except CompactedError:
            return False

    def is_up_to_date(self, index: int, term: int) -> bool:
        """Whether a log ending at (``index``, ``term``) is at least as new as ours."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and index >= self.last_index())

    def entries(self, lo: int, hi: int, bytes_max: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` from storage and the unstable tail."""
        if lo >= hi:
            return []
        offset = self.offset
        if lo >= offset:
            found = self.unstable[lo - offset : hi - offset]
        elif hi <= offset:
            if self.pending_snapshot is not None:
                raise CompactedError(lo)
            found = self.storage.entries(lo, hi, bytes_max)
        else:
            if self.pending_snapshot is not None:
                raise CompactedError(lo)
            found = self.storage.entries(lo, offset) + self.unstable[: hi - offset]
        if bytes_max is not None:
            found = limit_size(found, bytes_max)
        return found

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (for reject hints)."""
        while index > 0:
            try:
                if self.term(index) <= term:
                    break
            except CompactedError:
                break
            index -= 1
        return index

    # --- writes ------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Add ``entries`` to the unstable tail, replacing any suffix they overwrite."""
        first = entries[0].index
        assert first > self.committed, "overwriting committed entries"
        unstable = self.unstable
        offset = self.offset
        if first == offset + len(unstable):
            unstable.extend(entries)
        elif first <= offset:
            self.offset = first
            self.unstable = list(entries)
        else:
            del unstable[first - offset :]
            unstable.extend(entries)

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of MsgApp: the last new index, or None if (index, log_term)
        does not match our log."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        if entries:
            start = self._find_conflict(entries)
            if start:
                self.append(entries[start - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """The first index where ``entries`` disagree with the log (0 if none)."""
        last = self.last_index()
        if entries[0].index > last:
            return entries[0].index
        for entry in entries:
            if entry.index > last or not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} past {self.last_index()}"
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (``index``, ``term``) have been persisted."""
        offset = self.offset
        if index < offset:
            return
        position = index - offset
        unstable = self.unstable
        if position < len(unstable) and unstable[position].term == term:
            del unstable[: position + 1]
            self.offset = index + 1

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with ``snapshot`` (a follower far behind the leader)."""
        index = snapshot.meta.index
        self.pending_snapshot = snapshot
        self.unstable = []
        self.offset = index + 1
        self.committed = index

    def stable_snapshot_to(self, index: int) -> None:
        snapshot = self.pending_snapshot
        if snapshot is not None and snapshot.meta.index == index:
            self.pending_snapshot = None
