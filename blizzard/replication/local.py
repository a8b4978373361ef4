"""LocalReplicator: no copies; each Op is applied at once, in submission order.

The default backend. Indexes are ``last_applied + 1``, so they stay dense
across restarts. A lock serialises submitters (the pool is driven by one
thread at a time). An Op whose apply raises (say ``PoolFullError``) is
rolled back and consumes no index.
"""

from __future__ import annotations

import threading
from typing import Any

from blizzard.exceptions import ReplicatorStoppedError
from blizzard.replication.base import Replicator, StateMachine


class LocalApply:
    """The hot half of :class:`LocalReplicator`: ``submit``, typed (``local.pxd``)."""

    def __init__(self, state_machine: StateMachine) -> None:
        self._sm = state_machine
        self._apply_one = getattr(state_machine, "apply_one", None)
        self._lock = threading.Lock()
        self._stopped = False
        self.submitted = 0

    def submit(self, op: bytes) -> Any:
        with self._lock:
            if self._stopped:
                raise ReplicatorStoppedError("the replicator is stopped")
            sm = self._sm
            index = sm.last_applied + 1
            apply_one = self._apply_one
            result = apply_one(index, op) if apply_one is not None else sm.apply([(index, op)])[0]
            self.submitted += 1
        if isinstance(result, BaseException):
            raise result
        return result


class LocalReplicator(LocalApply, Replicator):
    """Apply every submitted Op immediately through ``state_machine``.

    Cost: one call into the state machine and one pool transaction per Op
    (with a state machine offering ``apply_one``, no batch list is built).
    """

    def start(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "local",
            "submitted": self.submitted,
            "last_applied": self._sm.last_applied,
            "stopped": self._stopped,
        }

    def __repr__(self) -> str:
        return f"<LocalReplicator last_applied={self._sm.last_applied}>"
