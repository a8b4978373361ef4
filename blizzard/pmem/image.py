"""A consistent image of a live pool, copied a slice at a time (pre-copy).

Copying a large pool at once would stop everything that writes to it for as
long as the copy takes. :class:`PoolImage` copies it in slices instead,
between transactions, while the pool keeps changing, and notes every page
written meanwhile (:meth:`Pool.track_writes`: ranges undo-logged, fresh
blocks, direct flushes -- every persistent write is one of those). A pass
copies the heap's used chunks; pages written after they were copied are
copied again in the next pass. :meth:`PoolImage.finish`, called between two
transactions, copies the metadata (header, undo log, directory, chunk
table) and the pages still dirty: the image then equals the pool as it is
at that instant, for everything the pool references. Free chunks are not
copied (the image holds zeros or stale bytes there, which nothing reads).

The image is an anonymous mapping of the pool's size: pages never written
take no memory, so it costs about the pool's used bytes.

:func:`used_pieces` lists what an image must carry: ``[0, heap_off)`` and
every used chunk extent -- what a receiver writes into its own pool.
"""

from __future__ import annotations

import mmap
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from blizzard.pmem._layout import CHUNK_SIZE, HEADER, KIND_FREE, split_chunk_word

if TYPE_CHECKING:
    from blizzard.pmem.pool import Pool

PAGE = 4096
SLICE_BYTES_DEFAULT = 1 << 20
assert CHUNK_SIZE % PAGE == 0


def used_pieces(buf, *, heap_off: int, table_off: int, nchunks: int
                ) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the metadata region and of every used chunk extent
    of the pool image in ``buf``, in order, adjacent extents merged."""
    yield 0, heap_off
    u64 = memoryview(buf)[table_off:table_off + 8 * nchunks].cast("Q")
    try:
        chunk = 0
        run_start = run_end = -1
        while chunk < nchunks:
            kind, _, count = split_chunk_word(u64[chunk])
            count = max(1, min(count, nchunks - chunk))
            if kind != KIND_FREE:
                start = heap_off + chunk * CHUNK_SIZE
                if start == run_end:
                    run_end = start + count * CHUNK_SIZE
                else:
                    if run_start >= 0:
                        yield run_start, run_end - run_start
                    run_start, run_end = start, start + count * CHUNK_SIZE
            chunk += count
        if run_start >= 0:
            yield run_start, run_end - run_start
    finally:
        u64.release()


def geometry(buf) -> dict[str, int]:
    """``size``, ``heap_off``, ``table_off``, ``nchunks`` read from a pool image's header."""
    fields = HEADER.unpack_from(buf, 0)
    # magic, version, crc, uuid, size, log_off, log_size, dir_off, dir_entries, table_off,
    # heap_off, nchunks, chunk size, layout, created
    return {"size": fields[4], "table_off": fields[9], "heap_off": fields[10],
            "nchunks": fields[11]}


class PoolImage:
    """The pre-copy of one pool; see the module docstring.

    ``step()`` and ``finish()`` must run between transactions of the pool
    (the node's loop calls them between turns); the pool's other users go
    on writing in between. ``close()`` stops tracking and frees the image.
    """

    def __init__(self, pool: Pool, *, slice_bytes: int = SLICE_BYTES_DEFAULT) -> None:
        assert slice_bytes >= PAGE
        self.pool = pool
        self.size = pool.size
        self.slice_bytes = slice_bytes
        self.image = mmap.mmap(-1, pool.size)
        self._dirty: set[int] = set()
        self._todo: deque[tuple[int, int]] = deque()
        self.passes = 0
        self.copied_bytes = 0
        self.done = False
        self._tracking = True
        pool.track_writes(self._mark)
        self._next_pass()

    def _mark(self, off: int, n: int) -> None:
        if n > 0:
            self._dirty.update(range(off // PAGE, (off + n - 1) // PAGE + 1))

    def _next_pass(self) -> None:
        """Queue the used chunks (the first pass) or the pages dirtied since."""
        self.passes += 1
        if self.passes == 1:
            pool = self.pool
            pieces = list(used_pieces(pool.buf, heap_off=pool._heap_off,
                                      table_off=pool._table_off, nchunks=pool._nchunks))
            self._todo.extend(pieces[1:])  # the metadata is copied by finish()
            return
        dirty, self._dirty = sorted(self._dirty), set()
        for page in dirty:
            self._todo.append((page * PAGE, PAGE))

    @property
    def pending_bytes(self) -> int:
        """What is left to copy before :meth:`finish` would be cheap."""
        return sum(n for _, n in self._todo) + PAGE * len(self._dirty)

    def step(self) -> int:
        """Copy up to ``slice_bytes``; start the next pass when this one is done.
        Returns :attr:`pending_bytes`."""
        assert not self.done
        budget = self.slice_bytes
        src, dst = self.pool.buf, self.image
        todo = self._todo
        while budget > 0 and todo:
            off, n = todo.popleft()
            if n > budget:
                todo.appendleft((off + budget, n - budget))
                n = budget
            dst[off:off + n] = src[off:off + n]
            self.copied_bytes += n
            budget -= n
        if not todo:
            self._next_pass()
        return self.pending_bytes

    def finish(self) -> PoolImage:
        """Copy the metadata and everything still dirty or unqueued; stop tracking.

        Between two transactions only: the image is then the pool at this instant.
        """
        assert not self.done and not self.pool.transaction().active
        src, dst = self.pool.buf, self.image
        heap_off = self.pool._heap_off
        dst[0:heap_off] = src[0:heap_off]
        for off, n in self._todo:
            dst[off:off + n] = src[off:off + n]
        for page in self._dirty:
            off = page * PAGE
            dst[off:off + PAGE] = src[off:off + PAGE]
        self.copied_bytes += heap_off + sum(n for _, n in self._todo) + PAGE * len(self._dirty)
        self._todo.clear()
        self._dirty.clear()
        self._stop()
        self.done = True
        return self

    def pieces(self) -> Iterator[tuple[int, int]]:
        """What a receiver needs of the finished image (:func:`used_pieces`)."""
        assert self.done
        return used_pieces(self.image, heap_off=self.pool._heap_off,
                           table_off=self.pool._table_off, nchunks=self.pool._nchunks)

    def _stop(self) -> None:
        if self._tracking:
            self._tracking = False
            self.pool.track_writes(None)

    def close(self) -> None:
        self._stop()
        self.image.close()
