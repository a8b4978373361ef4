"""Wrappers that see every flush of the fast paths too: trampolines, CountingMedia.

Hot paths (the undo log's C code) flush and fence through C function
pointers (``Media.native()``), not through Python. A wrapper that returns
None there pushes the pool onto the slower pure-Python undo log (which is
what ``RecordingMedia`` does: its counts are right, its speed is not the
pool's); one that returned the inner media's pointers would miss those
calls. :func:`native_trampolines` gives a wrapper C-callable pointers into
its own ``flush``/``drain``/``persist`` instead: the fast path runs
unchanged and every call reaches the wrapper, at the price of a Python call
per flush or fence. ``MirroredMedia`` (physical replication) and
:class:`CountingMedia` use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blizzard.pmem.media import Media, MediaWrapper


def native_trampolines(media: Media, on_error: Callable[[BaseException], None] | None = None
                       ) -> tuple[tuple[int, int, int], tuple[Any, ...]]:
    """C function pointers ``(flush, drain, persist)`` calling ``media``'s own methods.

    ``flush(addr, n)`` and ``persist(addr, n)`` take absolute addresses in
    ``media.buf`` (the ``Media.native()`` contract) and pass offsets on. Returns
    the addresses and the objects that keep them valid: hold those as long as
    the addresses may be called. An exception in a callback cannot cross into C:
    ``on_error(exc)`` gets it (without one, cffi prints it).
    """
    import cffi

    ffi = cffi.FFI()
    handle = ffi.from_buffer(media.buf)
    base = int(ffi.cast("uintptr_t", handle))
    ffi.release(handle)
    flush, drain, persist = media.flush, media.drain, media.persist

    def c_flush(addr: int, n: int) -> None:
        flush(addr - base, n)

    def c_persist(addr: int, n: int) -> None:
        persist(addr - base, n)

    handler = None
    if on_error is not None:
        report = on_error

        def handler(exc_type: Any, exc: Any, tb: Any) -> None:  # cffi's onerror signature
            report(exc)

    # (cffi's stubs type a callback as a Python callable; it is a C function pointer)
    callbacks: tuple[Any, ...] = (
        ffi.callback("void(uintptr_t, size_t)", c_flush, onerror=handler),
        ffi.callback("void(void)", drain, onerror=handler),
        ffi.callback("void(uintptr_t, size_t)", c_persist, onerror=handler),
    )
    flush_at, drain_at, persist_at = (int(ffi.cast("uintptr_t", c)) for c in callbacks)
    return (flush_at, drain_at, persist_at), (ffi, *callbacks)


class CountingMedia(MediaWrapper):
    """Counts ``flushes``, ``flushed_bytes`` and ``fences`` of ``inner``, the fast
    undo log's included (it keeps running: ``native()`` gives trampolines)."""

    def __init__(self, inner: Media) -> None:
        super().__init__(inner)
        self.flushes = 0
        self.flushed_bytes = 0
        self.fences = 0
        self._inner_flush = inner.flush
        self._inner_drain = inner.drain
        self._native: tuple[int, int, int] | None = None
        self._keep: tuple = ()

    def flush(self, off: int, n: int) -> None:
        self.flushes += 1
        self.flushed_bytes += n
        self._inner_flush(off, n)

    def drain(self) -> None:
        self.fences += 1
        self._inner_drain()

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.drain()

    def native(self) -> tuple[int, int, int]:
        if self._native is None:
            self._native, self._keep = native_trampolines(self)
        return self._native
