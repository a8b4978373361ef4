"""What a structure's handle turns into when its pool closes.

Reads go to the pool's mapping, which ``Pool.close()`` releases; without
this a read after close would fail deep inside with ``ValueError:
operation forbidden on released memoryview object``, while ``len()``
(a count kept in DRAM) would still answer. So the pool's registry tells
every handle opened on it (``Registry.attach``) when the pool closes, and
:func:`close_handle` swaps the handle's links to the pool -- its core, its
submit and read-barrier functions -- for ones that raise
:class:`~blizzard.exceptions.PoolClosedError`. The hot paths keep no extra
check: they call what they always called.
"""

from __future__ import annotations

from typing import Any, NoReturn

from blizzard.exceptions import PoolClosedError


class ClosedCore:
    """Stands in for a core: any attribute raises PoolClosedError."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        self._message = message

    def __getattr__(self, name: str) -> NoReturn:
        raise PoolClosedError(self._message)


def closed_message(handle: Any) -> str:
    return f"{type(handle).__name__} {handle.name!r}: its pool is closed"


def close_handle(handle: Any) -> None:
    """Make every later use of ``handle`` raise PoolClosedError."""
    message = closed_message(handle)

    def closed(*args: Any, **kwargs: Any) -> NoReturn:
        raise PoolClosedError(message)

    handle._core = ClosedCore(message)
    handle._get = handle._submit = handle._barrier = closed


#: What an iterator started before the pool closed meets: the released mapping
#: (ValueError), or a core's views of it, let go of (None: a TypeError when
#: interpreted, an IndexError compiled). Caught only to call :func:`reraise_if_closed`.
CLOSED_ERRORS = (ValueError, TypeError, IndexError)


def reraise_if_closed(handle: Any, error: Exception) -> None:
    """An iterator started before the pool closed meets one of :data:`CLOSED_ERRORS`:
    say so as PoolClosedError; other errors (or with the pool open) pass unchanged."""
    pool = handle.pool  # None for the remote client's faces
    if pool is not None and pool.closed:
        raise PoolClosedError(closed_message(handle)) from error
