"""Media: the persistence domain a pool lives in.

A Media is a writable byte buffer plus three calls that define durability:

* ``flush(off, n)`` starts writing ``[off, off+n)`` back to the persistence
  domain (like CLWB on every cache line of the range);
* ``drain()`` is the fence: it waits until every flush issued before it is
  durable (like SFENCE);
* ``persist(off, n)`` is ``flush`` then ``drain``.

Nothing written to ``buf`` is durable until it has been flushed *and* a drain
has followed. Stores that were never flushed may still reach the medium at
any moment, whole cache lines at a time (the CPU evicts lines when it likes):
that is what :mod:`blizzard.pmem.crashsim` models.

Callers (the pool) validate ranges before flushing: a Media trusts its
offsets, because a bounds check per flush would cost as much as the flush.

Wrapping a Media (``MediaWrapper``) is the hook through which every flushed
range and every fence can be observed; the physical replicator is such a
wrapper.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from blizzard._sizes import format_size
from blizzard.exceptions import (
    InvalidArgumentError,
    InvalidSizeError,
    MediaMapError,
    PoolExistsError,
    PoolLockedError,
    PoolNotFoundError,
)
from blizzard.pmem import _libpmem

LINE_SIZE = 64
WORD_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
assert LINE_SIZE % WORD_SIZE == 0
assert PAGE_SIZE % LINE_SIZE == 0

DurabilityMode = Literal["pmem", "msync", "none"]
DURABILITY_MODES: tuple[str, ...] = ("pmem", "msync", "none")


class Media:
    """Base class: a writable buffer with flush / drain / persist.

    Subclasses set ``buf`` (a writable ``memoryview`` of format ``'B'``) and
    ``size``, and may replace ``flush``/``drain``/``persist`` by faster
    per-instance callables.
    """

    buf: memoryview
    size: int
    #: What survives what, in one line (shown by ``blizzard pool info``).
    durability: str = "volatile: nothing survives the process"

    def flush(self, off: int, n: int) -> None:
        """Start writing back ``[off, off+n)``; durable after the next drain."""

    def drain(self) -> None:
        """Fence: every flush issued before this call is durable when it returns."""

    def persist(self, off: int, n: int) -> None:
        """``flush(off, n)`` then ``drain()``."""
        self.flush(off, n)
        self.drain()

    def close(self) -> None:
        """Release the buffer; the Media is unusable afterwards."""
        _release(self.buf)

    def native(self) -> tuple[int, int, int] | None:
        """Addresses of C functions ``(flush, drain, persist)`` for hot paths.

        ``flush(addr, n)`` and ``persist(addr, n)`` take absolute addresses
        in ``buf``; an address of 0 means "nothing to do". C code (the undo
        log) calls them directly instead of going through Python. None when
        flushing needs Python (msync, the crash simulator, a wrapper that
        observes calls). A wrapper that must see every call *and* keep the
        fast path returns C-callable trampolines into its own methods
        instead (``MirroredMedia`` does): hot paths must flush and fence
        only through these three pointers, never behind them.
        """
        return None

    @property
    def closed(self) -> bool:
        return self.buf is None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} size={self.size}>"


def _release(view: memoryview | None) -> None:
    # A slice handed out earlier may still be alive: the mapping is then
    # freed when the last view is garbage-collected.
    if view is not None:
        with contextlib.suppress(BufferError):
            view.release()


class DramMedia(Media):
    """Volatile memory: flushes and fences cost nothing and mean nothing.

    For benchmarks (the upper bound) and for tests that do not crash.
    """

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise InvalidSizeError(
                f"DramMedia size must be a positive multiple of {PAGE_SIZE}, got {size}"
            )
        self._map = mmap.mmap(-1, size)
        self.buf = memoryview(self._map)
        self.size = size

    def flush(self, off: int, n: int) -> None:
        pass

    def drain(self) -> None:
        pass

    def persist(self, off: int, n: int) -> None:
        pass

    def native(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def close(self) -> None:
        if self.buf is None:
            return
        _release(self.buf)
        self.buf = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError):
            self._map.close()

    @classmethod
    def from_bytes(cls, image: bytes) -> DramMedia:
        """A DramMedia holding a copy of ``image`` (a crash image, say)."""
        media = cls(len(image))
        media.buf[:] = image
        return media


class FileMedia(Media):
    """A memory-mapped file, with an explicit durability mode.

    ``pmem``
        Flushes are CPU cache-line write-backs through libpmem (CLWB/CLFLUSHOPT
        + SFENCE). On DAX persistent memory this is durable against power
        loss. On an ordinary file (tmpfs under ``/dev/shm``, or ext4) the data
        is in the page cache: it survives the process being killed at any
        instant, but not a power cut or kernel crash.
    ``msync``
        Each drain calls ``msync`` on the flushed pages: durable on any
        filesystem that honours msync (ext4, xfs), at 60-120 µs per drain on
        disk. On tmpfs msync is cheap and durability is that of RAM.
    ``none``
        No flushes at all: survives a process kill (the page cache keeps the
        stores) but orders nothing; for benchmarks only.

    The file is locked (``flock``) for as long as the Media is open, so a
    second opener, in this process or another, gets :class:`PoolLockedError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: DurabilityMode = "pmem",
        create_size: int | None = None,
    ) -> None:
        if mode not in DURABILITY_MODES:
            raise InvalidArgumentError(
                f"durability mode must be one of {DURABILITY_MODES}, got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        if mode == "pmem":
            ffi, lib = _libpmem.load()  # fail before touching the file
        self._fd = self._open_fd(create_size)
        try:
            self._lock()
            size = create_size if create_size is not None else os.fstat(self._fd).st_size
            if create_size is not None:
                self._reserve(create_size)
            self.size = size
            try:
                self._map = mmap.mmap(self._fd, size) if size else None
            except OSError as exc:
                raise MediaMapError(f"{self.path}: cannot map {format_size(size)}: "
                                    f"{exc.strerror or exc}") from None
        except BaseException:
            os.close(self._fd)
            if create_size is not None:
                self.path.unlink(missing_ok=True)
            raise
        self.buf = memoryview(self._map) if self._map is not None else memoryview(bytearray())
        if mode == "pmem":
            self._bind_pmem(ffi, lib)
            self.durability = (
                "pmem: cache-line flushes; survives a process kill; survives power loss "
                "only on DAX persistent memory"
            )
        elif mode == "msync":
            self._pending: list[tuple[int, int]] = []
            self.durability = "msync: durable on any filesystem that honours msync"
        else:
            self._native = (0, 0, 0)
            self.flush = _noop2  # type: ignore[method-assign]
            self.drain = _noop0  # type: ignore[method-assign]
            self.persist = _noop2  # type: ignore[method-assign]
            self.durability = "none: survives a process kill, orders nothing"

    # -- opening -------------------------------------------------------------

    def _open_fd(self, create_size: int | None) -> int:
        if create_size is not None:
            if create_size <= 0 or create_size % PAGE_SIZE:
                raise InvalidSizeError(
                    f"pool size must be a positive multiple of {PAGE_SIZE} bytes, got {create_size}"
                )
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise PoolExistsError(
                    f"{self.path}: file exists; open it or remove it first"
                ) from None
            except FileNotFoundError:
                raise PoolNotFoundError(
                    f"{self.path}: no such directory {str(self.path.parent)!r}; create it first"
                ) from None
        try:
            return os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise PoolNotFoundError(f"{self.path}: no such pool file") from None
        except IsADirectoryError:
            raise PoolNotFoundError(f"{self.path}: is a directory, not a pool file") from None

    def _reserve(self, size: int) -> None:
        """Size a new file: refuse a pool larger than its file system (a sparse
        file that big maps fine, then dies with SIGBUS at the first store
        past the space there really is)."""
        fs = os.fstatvfs(self._fd)
        capacity = fs.f_blocks * fs.f_frsize
        if capacity and size > capacity:
            raise InvalidSizeError(
                f"{self.path}: a {format_size(size)} pool does not fit its file system "
                f"({format_size(capacity)} in all)")
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise MediaMapError(f"{self.path}: cannot size the file to {format_size(size)}: "
                                f"{exc.strerror or exc}") from None

    def _lock(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holders = lock_holders(self._fd)
                who = ", ".join("this process" if pid == os.getpid() else f"process {pid}"
                                for pid in holders) or "this or another process"
                raise PoolLockedError(
                    f"{self.path}: pool is already open (by {who})", holders=holders
                ) from None
            raise

    def _bind_pmem(self, ffi, lib) -> None:
        # Take the address once, then let go of the cffi buffer export so the
        # mapping can be closed later. The address stays valid while mapped.
        if self._map is None:
            base = 0
        else:
            handle = ffi.from_buffer(self._map)
            base = int(ffi.cast("uintptr_t", handle))
            ffi.release(handle)
        pmem_flush, pmem_drain, pmem_persist = lib.pmem_flush, lib.pmem_drain, lib.pmem_persist

        def flush(off: int, n: int) -> None:
            pmem_flush(base + off, n)

        def persist(off: int, n: int) -> None:
            pmem_persist(base + off, n)

        self.flush = flush  # type: ignore[method-assign]
        self.drain = pmem_drain  # type: ignore[method-assign]
        self.persist = persist  # type: ignore[method-assign]
        self._native = (
            int(ffi.cast("uintptr_t", pmem_flush)),
            int(ffi.cast("uintptr_t", pmem_drain)),
            int(ffi.cast("uintptr_t", pmem_persist)),
        )
        self.is_pmem = bool(lib.pmem_is_pmem(base, self.size)) if self.size else False

    def native(self) -> tuple[int, int, int] | None:
        return getattr(self, "_native", None)

    # -- msync mode ----------------------------------------------------------

    def flush(self, off: int, n: int) -> None:
        self._pending.append((off, n))

    def drain(self) -> None:
        pending = self._pending
        if not pending:
            return
        mask = PAGE_SIZE - 1
        mapping = self._map
        assert mapping is not None  # an empty file has nothing to flush: no pending ranges
        for start, end in _merge((off & ~mask, off + n) for off, n in pending):
            mapping.flush(start, end - start)
        pending.clear()

    def persist(self, off: int, n: int) -> None:
        self._pending.append((off, n))
        self.drain()  # persist orders earlier flushes too

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        if self.buf is None:
            return
        if self.mode == "msync":
            self.drain()
        _release(self.buf)
        self.buf = None  # type: ignore[assignment]
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()  # else closed by the garbage collector with the last view
        os.close(self._fd)  # also releases the flock

    def __repr__(self) -> str:
        return f"<FileMedia {str(self.path)!r} size={self.size} mode={self.mode}>"


def lock_holders(fd: int) -> list[int]:
    """PIDs holding a ``flock`` on the file open as ``fd`` (from /proc/locks;
    empty where that is not readable)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12260 00:1a:12345 0 EOF" ("->" marks a waiter)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            with contextlib.suppress(ValueError):
                pids.append(int(fields[4]))
    return sorted(set(pids))


def _noop0() -> None:
    pass


def _noop2(off: int, n: int) -> None:
    pass


def _merge(ranges) -> list[tuple[int, int]]:
    """Merge ``(start, end)`` ranges that overlap or touch."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


class MediaWrapper(Media):
    """Delegates everything to an inner Media; override to observe.

    This is the hook for whatever must see every flushed range and every
    fence: a subclass overrides ``flush``/``drain``/``persist``, does its
    work, and calls the inner Media's.
    """

    def __init__(self, inner: Media) -> None:
        self.inner = inner
        self.buf = inner.buf
        self.size = inner.size
        self.durability = inner.durability

    def flush(self, off: int, n: int) -> None:
        self.inner.flush(off, n)

    def drain(self) -> None:
        self.inner.drain()

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.drain()

    def close(self) -> None:
        self.buf = None  # type: ignore[assignment]
        self.inner.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.inner!r}>"


class RecordingMedia(MediaWrapper):
    """Counts flushes, flushed bytes and fences, and optionally calls back.

    ``on_flush(off, n)`` and ``on_drain()`` see every event before the inner
    Media does.
    """

    def __init__(
        self,
        inner: Media,
        *,
        on_flush: Callable[[int, int], None] | None = None,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.flushes = 0
        self.flushed_bytes = 0
        self.drains = 0
        self._on_flush = on_flush
        self._on_drain = on_drain

    def flush(self, off: int, n: int) -> None:
        self.flushes += 1
        self.flushed_bytes += n
        if self._on_flush is not None:
            self._on_flush(off, n)
        self.inner.flush(off, n)

    def drain(self) -> None:
        self.drains += 1
        if self._on_drain is not None:
            self._on_drain()
        self.inner.drain()
