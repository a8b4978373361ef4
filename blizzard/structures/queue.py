"""PQueue: a persistent, replicated FIFO queue.

Every ``put`` and ``get`` is an Op applied by the pool's registry in one
transaction; ``peek``, ``len`` and iteration read the pool directly. The
layout (linked chunks of entries) is documented in
:mod:`blizzard.structures._queuecore`.

>>> from blizzard.pmem import DramMedia, Pool
>>> pool = Pool.create(DramMedia(4 << 20))
>>> jobs = PQueue(pool, "jobs", value_codec=str)
>>> jobs.put("a"); jobs.put("b")
>>> jobs.get(), len(jobs), list(jobs)
('a', 1, ['b'])

The hot half (``put``, ``get_nowait``, the first try of ``get``) is
:class:`QueueFace`, typed Python (``queue.pxd``): compiled, an extension type
whose methods call the Op encoder and the replicator without interpreted code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import cython

from blizzard.exceptions import Empty, InvalidArgumentError, StructureKindError
from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._closed import CLOSED_ERRORS, close_handle, reraise_if_closed
from blizzard.structures._locking import locked_reads
from blizzard.structures._queuecore import TAG, QueueCore
from blizzard.structures.codecs import BYTES, CodecLike, get_codec
from blizzard.structures.ops import Encoder
from blizzard.structures.registry import register_kind, registry_for

if cython.compiled:
    from cython.cimports.blizzard.structures.ops import QUEUE_CLEAR, QUEUE_GET, QUEUE_PUT
else:
    from blizzard.structures.ops import QUEUE_CLEAR, QUEUE_GET, QUEUE_PUT

register_kind(TAG, QueueCore.create, QueueCore.open)

POLL_INTERVAL_MAX = 0.05  # seconds between polls of a blocking get


class QueueFace:
    """The hot methods of :class:`PQueue`, bound by ``_bind``."""

    def _bind(self, name: str, core: Any, replicator: Replicator, linearizable: bool | None,
              raw: bool) -> None:
        """Wire the face to a core (reads) and a replicator (writes); ``raw``:
        values are bytes in and out, whatever the stored codec."""
        self._replicator = replicator
        self._core = core
        self.name = name
        codec = BYTES if raw else get_codec(core.value_codec)
        self.value_codec = codec
        self._venc = codec.encode
        self._vdec = codec.decode
        self._vraw = codec is BYTES  # the identity on bytes: the hot paths skip its calls
        self._encoder = Encoder(name)
        self._get_op = self._encoder.zero(QUEUE_GET)
        self._clear_op = self._encoder.zero(QUEUE_CLEAR)
        self._submit = replicator.submit
        if linearizable is None:
            linearizable = replicator.linearizable_default
        self._barrier = replicator.read_barrier if linearizable else None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item`` at the tail.

        ``block`` and ``timeout`` are accepted for :class:`queue.Queue`'s
        signature and change nothing: the queue is unbounded, so a put never
        waits and never raises :class:`queue.Full`. (A pool with no room left
        raises :class:`~blizzard.exceptions.PoolFullError`, and nothing is
        appended.)
        """
        vb = item if self._vraw and type(item) is bytes else self._venc(item)
        self._submit(self._encoder.one(QUEUE_PUT, vb))

    def put_nowait(self, item: Any) -> None:
        """``put(item)``: a put never waits."""
        self.put(item)

    def get_nowait(self) -> Any:
        """``get(block=False)``: the head item, or :class:`blizzard.Empty` at once."""
        raw = self._submit(self._get_op)
        if raw is None:
            raise Empty(f"queue {self.name!r} is empty")
        return raw if self._vraw else self._vdec(raw)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the head item, waiting for one as
        :meth:`queue.Queue.get` does.

        With ``block`` (the default) and ``timeout`` None, wait until an item
        is there; with a ``timeout`` (seconds, >= 0), raise
        :class:`blizzard.Empty` if none arrived in that time. Without
        ``block``, raise Empty at once if the queue is empty. Items put by
        other threads, or by other nodes of a cluster, end the wait; the wait
        polls the queue's length, backing off to :data:`POLL_INTERVAL_MAX`.
        """
        if block and timeout is not None and timeout < 0:
            raise InvalidArgumentError(f"timeout must be a non-negative number, got {timeout}")
        raw = self._submit(self._get_op)
        if raw is not None:
            return raw if self._vraw else self._vdec(raw)
        if not block:
            raise Empty(f"queue {self.name!r} is empty")
        return self._wait(timeout)

    def _wait(self, timeout: float | None) -> Any:
        """The queue was empty: poll until an item comes (see :meth:`get`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty(f"queue {self.name!r} is still empty after {timeout} s")
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            pause = min(max(pause, 0.0005) * 2, POLL_INTERVAL_MAX)
            if self._core.count:
                raw = self._submit(self._get_op)
                if raw is not None:
                    return self._vdec(raw)


class PQueue(QueueFace):
    """A FIFO queue that lives in a pool, bound to ``name``; opens or creates it.

    ``value_codec`` (``bytes`` by default) is fixed at creation. Values may
    be of any size the pool can hold (large ones get a block of their own).

    ``replicator`` and ``linearizable`` as for
    :class:`~blizzard.structures.PHashMap`; ``raw=True`` takes and returns
    bytes whatever the stored codec.

    The methods are :class:`queue.SimpleQueue`'s (``put``, ``put_nowait``,
    ``get``, ``get_nowait``, ``empty``, ``qsize``) with their contract:
    ``get()`` waits for an item, ``get_nowait()`` and ``get(timeout=...)``
    raise :class:`blizzard.Empty` (a :class:`queue.Empty`). The queue is
    unbounded, so there is no ``queue.Full``; and ``task_done`` / ``join``
    are not offered (who finished an item is the application's state, not
    the queue's). Besides those: ``peek``, ``len``, iteration, ``clear``.

    Costs: ``put`` and ``get`` are one Op and one transaction with one undo
    entry each (plus an allocation or a free every ~50 small entries); both
    O(1). ``peek`` and ``len`` read without fences.
    """

    tag = TAG  # the pool root's tag of this kind

    def __init__(self, pool: Pool, name: str, *, value_codec: CodecLike = None,
                 replicator: Replicator | None = None, linearizable: bool | None = None,
                 raw: bool = False) -> None:
        registry = registry_for(pool)
        replicator = replicator if replicator is not None else registry.replicator
        core = registry.open_structure(
            name, TAG, None, None if value_codec is None else get_codec(value_codec).name,
            replicator, ("bytes", "bytes"))
        if not isinstance(core, QueueCore):
            raise StructureKindError(f"{name!r} is not a queue")
        self.pool = pool
        # with a replicator that applies on another thread, reads hold its lock
        self._bind(name, locked_reads(core, replicator.read_lock), replicator, linearizable,
                   raw)
        registry.attach(self)

    def _pool_closed(self) -> None:
        """The pool closed: every later use raises PoolClosedError (see ``_closed``)."""
        close_handle(self)

    def put_many(self, items: Iterable[Any]) -> None:
        """Append every item, in order (one Op each)."""
        put = self.put
        for item in items:
            put(item)

    def peek(self) -> Any:
        """The head item, left in place; :class:`blizzard.Empty` if empty."""
        if self._barrier is not None:
            self._barrier()
        raw = self._core.peek()
        if raw is None:
            raise Empty(f"queue {self.name!r} is empty")
        return self._vdec(raw)

    def __len__(self) -> int:
        if self._barrier is not None:
            self._barrier()
        return self._core.count

    qsize = __len__

    def empty(self) -> bool:
        return not len(self)

    def __bool__(self) -> bool:
        return bool(len(self))

    def __iter__(self) -> Iterator[Any]:
        """Items head to tail, without removing them; do not mutate while iterating."""
        if self._barrier is not None:
            self._barrier()
        vdec = self._vdec
        try:
            for raw in self._core.values():
                yield vdec(raw)
        except CLOSED_ERRORS as error:
            reraise_if_closed(self, error)
            raise

    def page(self, start: int | None = None, limit: int = 1000) -> tuple[int, list[Any]]:
        """``(seq, items)``: up to ``limit`` items from sequence number ``start``
        on (from the head when None, or when those items are gone), without
        removing them; ``seq`` is the first one's sequence number.

        Every item keeps its sequence number while it is queued (the head's
        is the number of items ever taken), so paging with
        ``start = seq + len(items)`` is exact while other callers put and
        get: an item queued throughout is returned once, in FIFO order. An
        empty page ends the scan. Cost: a header read per item skipped.
        """
        if self._barrier is not None:
            self._barrier()
        seq, raws = self._core.page(start, limit)
        vdec = self._vdec
        return seq, [vdec(raw) for raw in raws]

    def clear(self) -> None:
        """Remove every item (one Op)."""
        self._submit(self._clear_op)

    def check(self) -> None:
        """Walk the persistent layout and verify every invariant (O(n))."""
        self._core.check()

    @property
    def replicator(self) -> Replicator:
        return self._replicator

    def __repr__(self) -> str:
        size = "pool closed" if self.pool.closed else f"len={len(self)}"
        return f"<PQueue {self.name!r} {size} {self.value_codec.name}>"
