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
        self._ready_timeout_s = ready_timeout_s
        self.submitted = 0
        self.unacknowledged = 0
        self.pool: Any = getattr(state_machine, "pool", None)

    def submit(self, op: bytes) -> Any:
        mirror = self.mirror
        with self._lock:
            if self._stopped:
                raise ReplicatorStoppedError("the replicator is stopped")
            self._check_deposed()
            if not mirror.ready() and not mirror.wait_ready(self._ready_timeout_s):
                self._check_deposed()
                raise MirrorUnavailableError(
                    f"fewer than {mirror.need} backup(s) in sync after "
                    f"{self._ready_timeout_s} s ({_describe(mirror)}); nothing was applied")
            failures = mirror.stats.failures
            sm = self._sm
            index = sm.last_applied + 1
            apply_one = self._apply_one
            result = apply_one(index, op) if apply_one is not None else sm.apply([(index, op)])[0]
            if mirror.fence_mode != "sync":
                mirror.sync()
            self.submitted += 1
            if mirror.stats.failures != failures:
                self.unacknowledged += 1
                self._check_deposed()
                raise MirrorUnavailableError(
                    f"operation {index} applied here but not acknowledged by {mirror.need} "
                    f"backup(s) ({_describe(mirror)}): it may not survive a failover")
        if isinstance(result, BaseException):
            raise result
        return result

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
