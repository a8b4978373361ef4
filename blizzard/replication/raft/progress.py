"""What the leader knows about each follower's log, and how it sends to it.

Invariant: ``match < next``. ``match`` is the highest index known to be
replicated on the follower; ``next`` is the next index the leader will send.

States:

- PROBE: the leader does not know where the logs diverge; it sends one
  MsgApp per heartbeat interval (``probe_sent``) and walks ``next`` back on
  each rejection (with the follower's hint, many entries at a time).
- REPLICATE: the logs match up to ``match``; the leader streams MsgApps
  optimistically (advancing ``next`` when it sends), at most ``inflight_max``
  unacknowledged messages at a time (pipelining with a bounded window).
- SNAPSHOT: the follower needs entries the leader compacted away; a MsgSnap
  is in flight and nothing else is sent until it is acknowledged.

Typed Python: ``progress.pxd`` gives the classes their C fields (the leader
touches a progress on every acknowledgement). A state is always one of the
``ProgressState`` members, so hot code compares it by identity.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Inflights", "Progress", "ProgressState"]


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


class Inflights:
    """The last index of every unacknowledged MsgApp, oldest first, bounded."""

    def __init__(self, inflight_max: int) -> None:
        assert inflight_max >= 1
        self.inflight_max = inflight_max
        self._queue: deque[int] = deque()

    def add(self, last_index: int) -> None:
        queue = self._queue
        assert len(queue) < self.inflight_max, "inflight window is full"
        assert not queue or queue[-1] <= last_index
        queue.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every message whose entries are acknowledged up to ``index``."""
        queue = self._queue
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first_one(self) -> None:
        """Make room for one more message (a heartbeat proved the follower alive)."""
        if self._queue:
            self._queue.popleft()

    def full(self) -> bool:
        return len(self._queue) >= self.inflight_max

    def reset(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class Progress:
    """One follower's replication state, as tracked by the leader."""

    def __init__(self, *, next_index: int, inflight_max: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(inflight_max)

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name},"
            f" inflight={len(self.inflights)}, learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Fall back to probing (after a rejection, a snapshot, or a new term)."""
        if self.state is SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """Record an acknowledgement of ``index``; return whether it was news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def sent_entries(self, last_index: int) -> None:
        """A MsgApp ending at ``last_index`` went out (pipelining in REPLICATE)."""
        if self.state is REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejection of the MsgApp that followed ``rejected``.

        Return False if the rejection is stale (already superseded). In
        REPLICATE a rejection means the window was wrong: restart at match+1.
        In PROBE jump to just after the follower's hint.
        """
        if self.state is REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Whether the leader must hold back MsgApps to this follower for now."""
        state = self.state
        if state is PROBE:
            return self.probe_sent
        if state is REPLICATE:
            return self.inflights.full()
        return True
