"""Reads that hold the replicator's apply lock.

With a Raft replicator, Ops are applied on the node's own thread while the
application reads on its thread. A structure bound to such a replicator
(``replicator.read_lock`` is not None) reads its core through
:func:`locked_reads`: every call holds the lock, and an iterator is drained
into a list under it, so a read never sees half an applied batch.
Structures bound to the local replicator read the core directly.
"""

from __future__ import annotations

import types
from typing import Any


class _LockedReads:
    __slots__ = ("_core", "_lock")

    def __init__(self, core: Any, lock: Any) -> None:
        self._core = core
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._core, name)
        if not callable(value):
            return value
        lock = self._lock

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                result = value(*args, **kwargs)
                if isinstance(result, types.GeneratorType):
                    result = iter(list(result))
            return result

        return call


def locked_reads(core: Any, lock: Any) -> Any:
    """``core``, or a view of it whose calls hold ``lock`` (see the module docstring)."""
    return core if lock is None else _LockedReads(core, lock)
