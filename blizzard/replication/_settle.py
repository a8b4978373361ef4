"""The per-entry half of a node's apply: the batch handed to the state machine,
and the waiters its results settle.

Every replica runs this for every committed entry, so it is typed Python
(C types in ``_settle.pxd``) beside :class:`~blizzard.replication.node.Node`,
which keeps the per-turn logic. An entry is known by the ``(client id,
seq)`` of its session envelope.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from blizzard.replication.sessions import ENVELOPE, ENVELOPE_VERSION

#: ``callback(key, result, error)``, the outcome of a submitted entry (node.Settled).
_Settled = Callable[[tuple[int, int], Any, BaseException | None], None]


def batch_of(committed: Sequence, normal: int) -> list[tuple[int, bytes]]:
    """``(index, data)`` of each committed entry, as the state machine takes them.

    Membership entries are the core's business: the state machine only
    records that their index was applied (their data is given as ``b""``).
    """
    return [(e.index, e.data if e.type == normal else b"") for e in committed]


def settle(batch: list[tuple[int, bytes]], results: Sequence[Any],
           waiting: dict[tuple[int, int], tuple[_Settled, bytes]],
           forwarded: dict[tuple[int, int], None], led: set[tuple[int, int]]) -> None:
    """Hand each applied entry's result to the callback waiting for it, if any;
    an entry applied is no longer forwarded (a new forward of its key is
    another request's) nor held on the leader's word (``led``).

    An entry that is not a session envelope (too short, another version: the
    state machine answered it with an EnvelopeError) has no waiter: no node
    submits one, so it settles nothing.
    """
    unpack = ENVELOPE.unpack_from
    size = ENVELOPE.size
    for (_, data), result in zip(batch, results, strict=True):
        if len(data) < size or data[0] != ENVELOPE_VERSION:
            continue
        _, client, seq = unpack(data, 0)
        key = (client, seq)
        if forwarded:
            forwarded.pop(key, None)
        if led:
            led.discard(key)
        waiter = waiting.pop(key, None)
        if waiter is not None:
            waiter[0](key, result, None)
