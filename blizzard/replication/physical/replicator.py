"""PhysicalReplicator: apply each Op locally; acknowledge it once its bytes are mirrored.

The Op itself never travels: it is applied to the primary's pool at once, in
submission order (as :class:`~blizzard.replication.local.LocalReplicator`
does), and the pool's media is a :class:`MirroredMedia` that ships every
fence of that apply to the backups. ``submit`` returns only if every one of
those fences met the acknowledgement rule; otherwise it raises

* :class:`MirrorUnavailableError` -- before applying, when too few backups
  are in sync within ``ready_timeout_s`` (nothing was applied); or after
  applying, when a fence went unacknowledged (the Op may or may not survive
  a failover: it was not acknowledged);
* :class:`DeposedError` -- a backup holds a newer epoch: another node was
  promoted; nothing more is applied here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from blizzard.exceptions import DeposedError, MirrorUnavailableError, ReplicatorStoppedError
from blizzard.replication.base import Replicator, StateMachine
from blizzard.replication.physical.mirror import MirroredMedia
from blizzard.replication.physical.state import epoch_text

READY_TIMEOUT_S = 10.0


class PhysicalReplicator(Replicator):
    """Local apply on a mirrored pool; see the module docstring.

    Cost per Op: one pool transaction, and per fence of it one message per
    backup and (``fence="sync"``) one round trip; with ``fence="pipelined"``
    one round trip per Op.
    """

    #: Set by whoever opened the pool (``cluster.physical.open_primary``).
    node_id: int | None = None
    mirror_state: Any = None

    def __init__(self, state_machine: StateMachine, mirror: MirroredMedia, *,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._sm = state_machine
        self.mirror = mirror
        self._apply_one = getattr(state_machine, "apply_one", None)
        self._lock = threading.Lock()
        self._stopped = False
        self.ready_timeout_s = ready_timeout_s
        self.submitted = 0
        self.unacknowledged = 0
        self._pending: deque[tuple[int, int, Any, Callable[[Any, Any], None]]] = deque()
        self._failures_seen = mirror.stats.failures
        self.pool: Any = getattr(state_machine, "pool", None)

    def submit(self, op: bytes) -> Any:
        mirror = self.mirror
        with self._lock:
            self._settle(block=True)  # earlier submit_callback Ops are acknowledged first
            failures = mirror.stats.failures
            index, result = self._apply(op)
            if mirror.fence_mode != "sync":
                mirror.sync()
            self._failures_seen = mirror.stats.failures
            if mirror.stats.failures != failures:
                self.unacknowledged += 1
                self._check_deposed()
                raise self._unacknowledged(index)
        if isinstance(result, BaseException):
            raise result
        return result

    def submit_callback(self, op: bytes, callback: Callable[[Any, Any], None]) -> None:
        """Apply ``op`` now; ``callback(result, error)`` once it is acknowledged.

        With ``fence="pipelined"`` this does not wait: the Op's fences are in
        flight while the next Ops apply, and callbacks run (on the calling
        thread, in order) as acknowledgements are read -- at later calls, or
        at :meth:`settle`. A fence that misses the rule fails every Op not yet
        acknowledged. With ``fence="sync"`` it is ``submit`` plus the callback.
        """
        if self.mirror.fence_mode == "sync":
            try:
                result = self.submit(op)
            except Exception as exc:  # delivered through the callback
                callback(None, exc)
            else:
                callback(result, None)
            return
        with self._lock:
            try:
                index, result = self._apply(op)
            except Exception as exc:
                callback(None, exc)
                return
            self._pending.append((self.mirror.seq, index, result, callback))
            self._settle(block=False)

    def settle(self) -> None:
        """Wait until every ``submit_callback`` Op is acknowledged (or failed)."""
        with self._lock:
            self._settle(block=True)

    def _apply(self, op: bytes) -> tuple[int, Any]:
        mirror = self.mirror
        if self._stopped:
            raise ReplicatorStoppedError("the replicator is stopped")
        self._check_deposed()
        if not mirror.ready() and not mirror.wait_ready(self.ready_timeout_s):
            self._check_deposed()
            raise MirrorUnavailableError(
                f"fewer than {mirror.need} backup(s) in sync after "
                f"{self.ready_timeout_s} s ({_describe(mirror)}); nothing was applied")
        sm = self._sm
        index = sm.last_applied + 1
        apply_one = self._apply_one
        result = apply_one(index, op) if apply_one is not None else sm.apply([(index, op)])[0]
        self.submitted += 1
        return index, result

    def _settle(self, *, block: bool) -> None:
        pending = self._pending
        if not pending:
            return
        mirror = self.mirror
        if mirror.stats.failures != self._failures_seen or (block and not mirror.sync()):
            self._failures_seen = mirror.stats.failures
            failed, self._pending = pending, deque()
            self.unacknowledged += len(failed)
            for _, index, _, callback in failed:
                callback(None, self._unacknowledged(index))
            return
        acked = mirror.poll()
        while pending and pending[0][0] <= acked:
            _, _, result, callback = pending.popleft()
            if isinstance(result, BaseException):
                callback(None, result)
            else:
                callback(result, None)

    def _unacknowledged(self, index: int) -> MirrorUnavailableError:
        return MirrorUnavailableError(
            f"operation {index} applied here but not acknowledged by {self.mirror.need} "
            f"backup(s) ({_describe(self.mirror)}): it may not survive a failover")

    def _check_deposed(self) -> None:
        if self.mirror.deposed is not None:
            raise DeposedError(
                f"deposed: a backup holds epoch {epoch_text(self.mirror.deposed)}, newer than "
                f"this primary's {epoch_text(self.mirror.epoch)}")

    def start(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def stats(self) -> dict[str, Any]:
        """Counters, and per-Op figures: bytes and messages on the wire, round
        trips, flushes on the primary and (from what was shipped) on each backup."""
        mirror = self.mirror
        s = mirror.stats
        ops = max(self.submitted, 1)
        backups = max(len(mirror.backups()), 1)
        return {
            "backend": "physical",
            "submitted": self.submitted,
            "unacknowledged": self.unacknowledged,
            "last_applied": self._sm.last_applied,
            "stopped": self._stopped,
            **mirror.status(),
            "per_op": {
                "bytes_on_wire": s.bytes_sent / ops,
                "messages": s.messages_sent / ops,
                "round_trips": s.round_trips / ops,
                "fences": s.fences / ops,
                "primary_flushes": s.flushes / ops,
                "backup_flushes": s.ranges_shipped / ops,
                "backup_fences": s.fences_shipped / ops,
                "bytes_on_wire_per_backup": s.bytes_sent / ops / backups,
            },
        }

    def __repr__(self) -> str:
        return (f"<PhysicalReplicator epoch {epoch_text(self.mirror.epoch)} "
                f"last_applied={self._sm.last_applied}>")


def _describe(mirror: MirroredMedia) -> str:
    return ", ".join(f"backup {n}: {b['state']}" + (f" ({b['error']})" if b["error"] else "")
                     for n, b in mirror.backups().items())
