"""Pool: a header, an allocator, undo-log transactions and named roots.

Usage::

    with Pool.create("/dev/shm/demo.pool", 64 << 20, layout="demo") as pool:
        with pool.transaction() as tx:
            off = tx.alloc(64)
            pool.buf[off:off + 5] = b"hello"
            tx.set_root("greeting", off)

Opening a pool validates the header, then rolls back a transaction that a
crash interrupted, then rebuilds the volatile indexes -- in that order, so
nothing ever reads state a crash left half-written. See ``_layout`` for the
format and ``_tx`` for the log protocol.
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from zlib import crc32

import attrs

from blizzard.exceptions import (
    InvalidArgumentError,
    InvalidNameError,
    InvalidSizeError,
    NotAPoolError,
    PoolClosedError,
    PoolCorruptError,
    PoolError,
    PoolLayoutError,
    PoolNotFoundError,
    PoolTruncatedError,
    PoolVersionError,
    TransactionError,
)
from blizzard.pmem import _layout as L
from blizzard.pmem._alloc import Allocator
from blizzard.pmem._directory import Directory, Root
from blizzard.pmem._tx import Transaction, live_entries, roll_back
from blizzard.pmem.media import DramMedia, DurabilityMode, FileMedia, Media

Target = str | os.PathLike[str] | Media

COPY_BYTES_MAX = 4 << 30  # Pool.open_copy holds the whole file in memory
COPY_ATTEMPTS_MAX = 5


@attrs.frozen
class PoolStats:
    """Space in the heap, in bytes.

    ``used`` counts allocated blocks at their rounded size; ``free`` is what
    could still be allocated (free chunks plus free blocks in runs);
    ``largest_free_extent`` bounds the largest single allocation.
    """

    capacity: int
    used: int
    free: int
    largest_free_extent: int
    roots: int


class Pool:
    """A pool in a Media; create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, media: Media, *, layout: str | None = None) -> None:
        # Use Pool.create / Pool.open.
        self.media = media
        self.buf = media.buf
        self.size = 0
        self._closed = False
        #: Called after a transaction rolled back (the outermost one: a nested
        #: block that sees an exception must not trust the pool until then),
        #: so volatile caches built on the pool can be rebuilt.
        self.abort_hooks: list = []
        self._untracked_flush: tuple | None = None  # (flush, was an instance attribute)
        #: Called by ``close()`` before the mapping is released, so handles built
        #: on the pool (the structures) can refuse further use with PoolClosedError
        #: and whatever holds views of the pool's memory (a core) lets go of them.
        self.close_hooks: list = []
        try:
            self._read_header(layout)
            self._u64 = media.buf[: self.size].cast("Q")
            self.recovered_entries = roll_back(self)
            self._allocator = Allocator(
                self._u64,
                self.buf,
                table_off=self._table_off,
                heap_off=self._heap_off,
                nchunks=self._nchunks,
            )
            self._free_stale_log_segments()
            self._directory = Directory(self.buf, self._dir_off, self._dir_entries)
            self._tx = Transaction(self)
        except BaseException:
            self._release_views()
            media.close()
            raise

    # -- creating and opening --------------------------------------------------------

    @classmethod
    def create(
        cls,
        target: Target,
        size: int | None = None,
        *,
        layout: str = "blizzard",
        mode: DurabilityMode = "pmem",
        log_size: int = L.LOG_SIZE_DEFAULT,
    ) -> Pool:
        """Format a new pool of ``size`` bytes at a path (a new file) or in a Media.

        Raises :class:`PoolExistsError` if the file exists,
        :class:`InvalidSizeError` for a size below ``POOL_SIZE_MIN``.
        """
        layout_raw = _layout_bytes(layout)
        if log_size < 4096 or log_size % 4096:
            raise InvalidSizeError(
                f"log_size must be a multiple of 4096, at least 4096; got {log_size}"
            )
        if isinstance(target, Media):
            media = target
            size = media.size if size is None else size
            if size > media.size:
                raise InvalidSizeError(f"pool size {size} exceeds the media's {media.size} bytes")
            _check_size(size)
            _check_plan(size, log_size)
        else:
            if size is None:
                raise InvalidSizeError("Pool.create on a path needs a size")
            _check_size(size)
            _check_plan(size, log_size)
            media = FileMedia(target, mode=mode, create_size=size)
        try:
            _format(media, size, layout_raw, log_size)
        except BaseException:
            media.close()
            if isinstance(media, FileMedia):
                media.path.unlink(missing_ok=True)
            raise
        return cls(media, layout=layout)

    @classmethod
    def open(
        cls, target: Target, *, layout: str | None = None, mode: DurabilityMode = "pmem"
    ) -> Pool:
        """Open an existing pool, recovering from an interrupted transaction.

        ``layout``, when given, must match the one the pool was created with.
        """
        media = target if isinstance(target, Media) else FileMedia(target, mode=mode)
        return cls(media, layout=layout)

    @classmethod
    def open_copy(cls, path: str | os.PathLike[str], *, layout: str | None = None,
                  bytes_max: int = COPY_BYTES_MAX, attempts: int = COPY_ATTEMPTS_MAX) -> Pool:
        """A pool opened on a private copy of the file at ``path``, read without its lock.

        For looking at a pool that another process has open (``blizzard pool
        info``): the file is read whole into memory (a DramMedia), recovery
        runs on the copy, never on the file, and the copy must pass
        :meth:`check`. The owner may be writing while the copy is read, so a
        copy can hold half of a transaction's stores; such a copy fails its
        check and another is read, up to ``attempts`` times. What the copy
        shows is the pool at about the moment it was read.

        Raises :class:`InvalidSizeError` for a file over ``bytes_max`` bytes
        (the copy is held in memory), :class:`PoolCorruptError` if no copy
        was consistent.
        """
        where = Path(path)
        try:
            fd = os.open(where, os.O_RDONLY)
        except FileNotFoundError:
            raise PoolNotFoundError(f"{where}: no such pool file") from None
        try:
            size = os.fstat(fd).st_size
            if size > bytes_max:
                raise InvalidSizeError(
                    f"{where}: {size} bytes is too large to copy into memory "
                    f"(at most {bytes_max}); stop the process that has it open to look at it")
            if size < L.HEADER_SIZE or size % 4096:
                raise NotAPoolError(f"{where}: not a Blizzard pool ({size} bytes)")
            failure: Exception | None = None
            for _ in range(attempts):
                media = DramMedia(size)
                if os.preadv(fd, [media.buf], 0) != size:
                    media.close()
                    raise PoolTruncatedError(f"{where}: shrank while it was read")
                try:
                    pool = cls(media, layout=layout)
                except (PoolLayoutError, PoolVersionError, NotAPoolError):
                    raise  # the file is what it is: another copy will not differ
                except (PoolError, ValueError, IndexError) as exc:  # a torn copy
                    failure = exc
                    continue
                try:
                    pool.check()
                except (PoolError, ValueError, IndexError) as exc:
                    pool.close()
                    failure = exc
                    continue
                return pool
            raise PoolCorruptError(
                f"{where}: no consistent copy in {attempts} reads while it is in use "
                f"(last: {failure})")
        finally:
            os.close(fd)

    def _read_header(self, layout: str | None) -> None:
        media = self.media
        where = getattr(media, "path", None) or repr(media)
        buf = media.buf
        if media.size < L.HEADER_SIZE:
            if media.size >= len(L.MAGIC) and bytes(buf[: len(L.MAGIC)]) == L.MAGIC:
                raise PoolTruncatedError(
                    f"{where}: truncated to {media.size} bytes, inside the header"
                )
            raise NotAPoolError(f"{where}: not a Blizzard pool ({media.size} bytes, too small)")
        fields = L.HEADER.unpack_from(buf, 0)
        (
            magic,
            version,
            checksum,
            raw_uuid,
            size,
            log_off,
            log_size,
            dir_off,
            dir_entries,
            table_off,
            heap_off,
            nchunks,
            chunk_size,
            raw_layout,
            created,
        ) = fields
        if magic != L.MAGIC:
            raise NotAPoolError(f"{where}: not a Blizzard pool (bad magic {magic!r})")
        if version != L.FORMAT_VERSION:
            raise PoolVersionError(
                f"{where}: pool format version {version}; "
                f"this release reads version {L.FORMAT_VERSION}"
            )
        header = bytearray(buf[: L.HEADER_USED])
        header[L.CRC_OFFSET : L.CRC_OFFSET + 4] = bytes(4)
        if crc32(header) != checksum:
            raise PoolCorruptError(f"{where}: header checksum mismatch: the header is corrupt")
        if media.size < size:
            raise PoolTruncatedError(
                f"{where}: truncated: {media.size} bytes, but the pool is {size} bytes"
            )
        expect = L.plan(size, log_size)
        if chunk_size != L.CHUNK_SIZE or (
            log_off,
            dir_off,
            dir_entries,
            table_off,
            heap_off,
            nchunks,
        ) != (
            expect["log_off"],
            expect["dir_off"],
            expect["dir_entries"],
            expect["table_off"],
            expect["heap_off"],
            expect["nchunks"],
        ):
            raise PoolCorruptError(f"{where}: header regions are inconsistent with the pool size")
        self.layout = raw_layout.rstrip(b"\0").decode("utf-8", "replace")
        if layout is not None and layout != self.layout:
            raise PoolLayoutError(f"{where}: pool has layout {self.layout!r}, expected {layout!r}")
        self.uuid = uuidlib.UUID(bytes=raw_uuid)
        self.created_ns = created
        self.size = size
        self._log_off, self._log_size = log_off, log_size
        self._dir_off, self._dir_entries = dir_off, dir_entries
        self._table_off, self._heap_off, self._nchunks = table_off, heap_off, nchunks

    def _free_stale_log_segments(self) -> None:
        """Overflow log segments outlive their transaction only across a crash."""
        logs = self._allocator.rebuild()
        if logs:
            persist = self.media.persist
            for chunk, count in logs:
                word = (self._table_off >> 3) + chunk
                self._u64[word] = L.chunk_word(L.KIND_FREE, count)
                persist(word << 3, 8)

    # -- transactions ------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """The pool's transaction, as a context manager.

        ``with pool.transaction() as tx:`` -- nested uses join the outermost
        transaction; an exception escaping the outermost one rolls back
        everything, else it commits: every touched range flushed (adjacent
        ranges merged), one fence, then an 8-byte store retires the log.
        """
        if self._closed:
            raise PoolClosedError("the pool is closed")
        return self._tx

    def reload(self) -> None:
        """The pool's bytes were replaced wholesale, between transactions (a
        snapshot image was copied in): read them again as :meth:`open` does --
        header, recovery, allocator, directory. The geometry must be the same
        (:class:`PoolCorruptError` otherwise); caches built on the pool are the
        caller's to rebuild."""
        if self._tx.active:
            raise TransactionError("reload() inside a transaction")
        geometry = (self.size, self._log_off, self._dir_off, self._table_off, self._heap_off,
                    self._nchunks)
        self._read_header(self.layout)
        if (self.size, self._log_off, self._dir_off, self._table_off, self._heap_off,
                self._nchunks) != geometry:
            raise PoolCorruptError("the pool's geometry changed under it")
        self.recovered_entries = roll_back(self)
        self._allocator = Allocator(self._u64, self.buf, table_off=self._table_off,
                                    heap_off=self._heap_off, nchunks=self._nchunks)
        self._free_stale_log_segments()
        self._directory = Directory(self.buf, self._dir_off, self._dir_entries)
        self._tx._release()
        self._tx = Transaction(self)

    def track_writes(self, callback: Callable[[int, int], None] | None) -> None:
        """Call ``callback(off, n)`` for every range of the pool written from now
        on (None: stop): before a range is undo-logged or handed out fresh, and
        after a direct ``media.flush`` -- every persistent write is one of those.
        For copying a live pool (:class:`~blizzard.pmem.image.PoolImage`).
        Writes to the undo log and the chunk table by the log itself are not
        reported: a copy takes those regions whole, between transactions.
        """
        self._tx.observe(callback)
        media = self.media
        if callback is None:
            original = self._untracked_flush
            if original is not None:
                if original[1]:
                    media.flush = original[0]  # type: ignore[method-assign]
                else:
                    del media.flush
                self._untracked_flush = None
            return
        if self._untracked_flush is None:
            self._untracked_flush = (media.flush, "flush" in vars(media))
        flush = self._untracked_flush[0]

        def tracked_flush(off: int, n: int) -> None:
            flush(off, n)
            callback(off, n)

        media.flush = tracked_flush  # type: ignore[method-assign]

    def _abort(self) -> None:
        """Roll back the live transaction and rebuild the volatile indexes."""
        roll_back(self)
        self._tx._segments.clear()
        self._free_stale_log_segments()
        self._directory.reload()
        self._tx._reset()
        for hook in list(self.abort_hooks):
            hook()

    # -- roots ---------------------------------------------------------------------------

    def root(self, name: str) -> Root | None:
        """The root bound to ``name``, or None."""
        self._check_open()
        return self._directory.get(name)

    def roots(self) -> dict[str, Root]:
        """Every named root, by name."""
        self._check_open()
        return self._directory.items()

    # -- reading -------------------------------------------------------------------------

    def read(self, off: int, n: int) -> bytes:
        """A copy of ``[off, off+n)``."""
        self._check_open()
        if off < 0 or n < 0 or off + n > self.size:
            raise InvalidArgumentError(f"range [{off}, {off + n}) is outside the pool")
        return bytes(self.buf[off : off + n])

    def usable_size(self, off: int) -> int:
        """Bytes usable in the allocated block at ``off``."""
        self._check_open()
        return self._allocator.usable_size(off)

    def is_allocated(self, off: int) -> bool:
        """Whether ``off`` is the start of an allocated block."""
        self._check_open()
        return self._allocator.is_allocated(off)

    # -- inspection ----------------------------------------------------------------------

    def stats(self) -> PoolStats:
        self._check_open()
        s = self._allocator.stats()
        return PoolStats(roots=len(self._directory), **s)

    def check(self) -> None:
        """Verify header, allocator and directory; raise PoolCorruptError if broken."""
        self._check_open()
        header = bytearray(self.buf[: L.HEADER_USED])
        checksum = int.from_bytes(header[L.CRC_OFFSET : L.CRC_OFFSET + 4], "little")
        header[L.CRC_OFFSET : L.CRC_OFFSET + 4] = bytes(4)
        if crc32(header) != checksum:
            raise PoolCorruptError("header checksum mismatch")
        if not self._tx.active and live_entries(self):
            raise PoolCorruptError("the undo log has live entries outside a transaction")
        self._allocator.check()
        self._directory.check(self._allocator.is_allocated)

    @property
    def path(self) -> Path | None:
        return getattr(self.media, "path", None)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the media (and its file lock). Idempotent."""
        if self._closed:
            return
        if self._tx.active:
            raise PoolClosedError("close() inside a transaction")
        self._closed = True
        try:
            for hook in list(self.close_hooks):
                hook()
        finally:
            self._release_views()
            self.media.close()

    def _release_views(self) -> None:
        tx = getattr(self, "_tx", None)
        if tx is not None:
            tx._release()
        allocator = getattr(self, "_allocator", None)
        if allocator is not None:
            allocator.release()
        u64 = getattr(self, "_u64", None)
        if u64 is not None:
            u64.release()
            self._u64 = None  # type: ignore[assignment]

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("the pool is closed")

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.size} bytes"
        return f"<Pool {self.layout!r} {state} in {self.media!r}>"


def _layout_bytes(layout: str) -> bytes:
    raw = layout.encode("utf-8")
    if not raw or len(raw) > L.LAYOUT_BYTES_MAX:
        shown = layout if len(layout) <= 40 else layout[:40] + "..."
        raise InvalidNameError(
            f"layout name must be 1 to {L.LAYOUT_BYTES_MAX} UTF-8 bytes, got {len(raw)} "
            f"({shown!r})")
    return raw


def _check_size(size: int) -> None:
    if size < L.POOL_SIZE_MIN or size % 4096:
        raise InvalidSizeError(pool_size_problem(size))


def pool_size_problem(size: int) -> str:
    """Why ``size`` is not a pool size, in words (for every layer that checks one)."""
    text = (f"a pool size must be a multiple of 4096 bytes and at least 1 MiB "
            f"({L.POOL_SIZE_MIN} bytes), got {size}")
    if size % 4096 and size % 1000 == 0:
        text += " (MB, GB... are powers of 1000; M or MiB, G or GiB are powers of 1024)"
    return text


def _check_plan(size: int, log_size: int) -> None:
    if L.plan(size, log_size)["nchunks"] < 1:
        raise InvalidSizeError(
            f"a {size}-byte pool leaves no room for a heap after a {log_size}-byte log"
        )


def _format(media: Media, size: int, layout: bytes, log_size: int) -> None:
    """Write a fresh pool; the magic is persisted last, so a crash leaves no pool."""
    p = L.plan(size, log_size)
    buf = media.buf
    buf[: p["heap_off"]] = bytes(p["heap_off"])
    # log header: txid 1, no overflow segment
    buf[p["log_off"] : p["log_off"] + 8] = (1).to_bytes(8, "little")
    table = p["table_off"]
    if p["nchunks"]:
        buf[table : table + 8] = L.chunk_word(L.KIND_FREE, p["nchunks"]).to_bytes(8, "little")
    media.persist(L.HEADER_SIZE, p["heap_off"] - L.HEADER_SIZE)
    header = bytearray(L.HEADER_USED)
    L.HEADER.pack_into(
        header,
        0,
        b"\0" * 8,
        L.FORMAT_VERSION,
        0,
        uuidlib.uuid4().bytes,
        size,
        p["log_off"],
        p["log_size"],
        p["dir_off"],
        p["dir_entries"],
        table,
        p["heap_off"],
        p["nchunks"],
        L.CHUNK_SIZE,
        layout,
        time.time_ns(),
    )
    header[:8] = L.MAGIC
    header[L.CRC_OFFSET : L.CRC_OFFSET + 4] = crc32(header).to_bytes(4, "little")
    buf[8 : L.HEADER_USED] = header[8:]
    media.persist(0, L.HEADER_SIZE)
    buf[:8] = L.MAGIC
    media.persist(0, 8)
