"""The replication seam: the Replicator interface and the StateMachine protocol.

A structure turns each mutating call into an Op (bytes) and hands it to its
Replicator; the replicator orders Ops (assigns increasing indexes), makes
them as durable and as replicated as its backend promises, and has the
StateMachine apply them. This layer sees the structures only through
:class:`StateMachine`; it imports nothing from ``blizzard.structures``.

Contract of :meth:`StateMachine.apply`:

* entries come in strictly increasing index order; an entry whose index is
  at or below ``last_applied`` was applied before (a replay after a crash)
  and is skipped, its result ``None``;
* a whole batch is applied in **one** pool transaction that also records
  the new ``last_applied``, so after any crash every Op has been applied
  exactly once;
* results are plain values (``None``, ``bool``, ``bytes``...); an Op that is
  deterministically invalid (say, undecodable) yields an exception
  *instance* as its result and still counts as applied. Replicators raise
  such results from ``submit``.
"""

from __future__ import annotations

import abc
import concurrent.futures
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class StateMachine(Protocol):
    """What a replicator drives: the structures of one pool (their registry)."""

    @property
    def last_applied(self) -> int:
        """Index of the last Op applied (0 before any)."""
        ...

    def apply(self, batch: list[tuple[int, bytes]]) -> list[Any]:
        """Apply committed ``(index, op)`` entries in one transaction; one result each."""
        ...

    def snapshot(self) -> bytes:
        """The whole state (every structure, and ``last_applied``) as bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a :meth:`snapshot`, atomically."""
        ...


class Replicator(abc.ABC):
    """Orders, replicates and applies Ops; the structures' only way to mutate.

    Use as a context manager (``start`` on enter, ``stop`` on exit) or call
    ``start``/``stop`` yourself. ``submit`` is synchronous; ``submit_async``
    returns a :class:`concurrent.futures.Future` (await it in asyncio with
    ``asyncio.wrap_future``).
    """

    #: Held while Ops are applied, when that happens on another thread than
    #: the caller's (a Raft node's loop): structures hold it around local
    #: reads so a read never sees half an apply. None: no other thread applies.
    read_lock: Any = None
    #: Whether structures bound to this replicator pass ``read_barrier`` before
    #: every read unless told otherwise.
    linearizable_default: bool = False

    @abc.abstractmethod
    def submit(self, op: bytes) -> Any:
        """Apply ``op`` once it is committed; return its result.

        Raises the result if it is an exception instance.
        """

    def submit_async(self, op: bytes) -> concurrent.futures.Future:
        """``submit`` as a Future; this default runs ``submit`` inline."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(self.submit(op))
        except BaseException as exc:  # delivered through the future
            future.set_exception(exc)
        return future

    def read_barrier(self) -> None:  # noqa: B027 - a no-op is the right default
        """Return once local reads reflect every Op committed before the call.

        Linearizable reads call this first. Local replication has nothing to
        wait for.
        """

    def start(self) -> None:  # noqa: B027 - a no-op is the right default
        """Begin serving (connect, elect...)."""

    def stop(self) -> None:  # noqa: B027 - a no-op is the right default
        """Stop serving; later submits raise."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: at least ``submitted`` and ``last_applied``."""

    def __enter__(self) -> Replicator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
