"""Byte-level primitives on a pool's memory, the same in both builds.

Hot code reads and writes the mapping through views: ``u8`` (bytes),
``u32`` and ``u64`` (aligned little-endian words) -- ``u64[off >> 3]`` is an
8-byte load, compiled to one instruction and interpreted as a memoryview
index. What a view cannot say in one expression (copy bytes in and out,
compare, CRC, move within the pool, call libpmem) is here, each function
with two bodies: the compiled one (C types in ``_mem.pxd``, libc and zlib
calls) and the interpreted one (slices of the memoryview). Both have the
same effect on the same bytes; nowhere else do the builds differ.

Offsets are trusted: callers validate them where they enter a pool.
"""

from __future__ import annotations

import zlib

import cython

if cython.compiled:
    from cython.cimports.blizzard.pmem._zlib import crc32 as zcrc32
    from cython.cimports.cpython.bytes import PyBytes_FromStringAndSize
    from cython.cimports.libc.string import memcmp, memcpy, memmove, memset

#: The views a hot class keeps of a pool's memory.
Views = tuple[memoryview, memoryview, memoryview]


def views(buf: memoryview, size: int) -> Views:
    """``(u8, u32, u64)`` views of the first ``size`` bytes of ``buf``."""
    u8 = buf[:size]
    return u8, u8.cast("I"), u8.cast("Q")


def read(u8: memoryview, off: int, n: int) -> bytes:
    """A copy of ``[off, off+n)``."""
    if cython.compiled:
        return PyBytes_FromStringAndSize(
            cython.cast(cython.p_char, cython.address(u8[off])), n)
    return u8[off:off + n].tobytes()


def piece(data: bytes, pos: int, n: int) -> bytes:
    """``data[pos:pos+n]`` (the caller checked the bounds), compiled without the slice
    object and generic call a slice of bytes costs there."""
    if cython.compiled:
        return PyBytes_FromStringAndSize(cython.cast(cython.p_char, data) + pos, n)
    return data[pos:pos + n]


def write(u8: memoryview, off: int, data: bytes) -> None:
    """Store ``data`` at ``off``."""
    if cython.compiled:
        memcpy(cython.address(u8[off]), cython.cast(cython.p_char, data), len(data))
    else:
        u8[off:off + len(data)] = data


def write_view(u8: memoryview, off: int, data) -> None:
    """Store any bytes-like ``data`` (a memoryview slice of a record, say) at ``off``."""
    if cython.compiled:
        if data.shape[0]:  # a typed view (const in _mem.pxd: read-only buffers are fine)
            memcpy(cython.address(u8[off]), cython.address(data[0]), data.shape[0])
    else:
        u8[off:off + len(data)] = data


def equal(u8: memoryview, off: int, data: bytes) -> bool:
    """Whether ``[off, off+len(data))`` holds ``data``."""
    if cython.compiled:
        return memcmp(cython.address(u8[off]), cython.cast(cython.p_char, data), len(data)) == 0
    return u8[off:off + len(data)].tobytes() == data  # (faster than comparing the view)


def compare(u8: memoryview, off: int, n: int, data: bytes) -> int:
    """``[off, off+n)`` against ``data`` in bytes order: < 0, 0 or > 0 (a key
    lying in a node against a probe key, with no bytes object made of it)."""
    if cython.compiled:
        m = n if n < len(data) else len(data)
        c = memcmp(cython.address(u8[off]), cython.cast(cython.p_char, data), m) if m else 0
        return c if c else n - len(data)
    key = u8[off:off + n].tobytes()
    return (key > data) - (key < data)


def move(u8: memoryview, target: int, source: int, n: int) -> None:
    """Copy ``[source, source+n)`` to ``[target, target+n)`` (ranges may overlap)."""
    if cython.compiled:
        if n > 0:
            memmove(cython.address(u8[target]), cython.address(u8[source]), n)
    else:
        u8[target:target + n] = u8[source:source + n]


def fill_zero(u8: memoryview, off: int, n: int) -> None:
    """Zero ``[off, off+n)``."""
    if cython.compiled:
        if n > 0:
            memset(cython.address(u8[off]), 0, n)
    else:
        u8[off:off + n] = bytes(n)


if not cython.compiled:  # a C constant in the compiled build (_mem.pxd)
    #: Compiled, inputs shorter than this are hashed by :func:`_crc32_sliced`, longer by zlib.
    CRC_SLICED_MAX = 256


def crc32(u8: memoryview, off: int, n: int, crc: int = 0) -> int:
    """CRC-32 of ``[off, off+n)`` continuing from ``crc`` (as ``zlib.crc32``)."""
    if cython.compiled:
        if n < CRC_SLICED_MAX:
            return _crc32_sliced(crc, cython.address(u8[off]), n)
        return zcrc32(crc, cython.address(u8[off]), n)
    return zlib.crc32(u8[off:off + n], crc)


def crc32_bytes(data: bytes) -> int:
    """``zlib.crc32(data)``, without a call through Python when compiled (a key's hash)."""
    if cython.compiled:
        if len(data) < CRC_SLICED_MAX:
            return _crc32_sliced(0, cython.cast("const_bytes", data), len(data))
        return zcrc32(0, cython.cast("const_bytes", data), len(data))
    return zlib.crc32(data)


def _crc32_sliced(crc: int, p, n: int) -> int:
    """zlib's CRC-32 of the ``n`` bytes at address ``p``, continuing from ``crc``,
    eight bytes a step (compiled builds only).

    Slicing by 8: ``CRC_TABLES[k][b]`` is the CRC of byte ``b`` followed by
    ``k`` zero bytes, so the eight lookups of a step are independent. zlib
    takes short inputs a byte at a time, each step waiting on the one
    before: about 4x the time of this for a 48-byte undo entry here
    (docs/benchmarks.md).
    """
    c = ~crc  # (C unsigned 32-bit arithmetic throughout)
    lo = hi = 0
    while n >= 8:
        memcpy(cython.address(lo), p, 4)  # little-endian words, as the pool's
        memcpy(cython.address(hi), p + 4, 4)
        lo ^= c
        c = (CRC_TABLES[7][lo & 255] ^ CRC_TABLES[6][(lo >> 8) & 255]
             ^ CRC_TABLES[5][(lo >> 16) & 255] ^ CRC_TABLES[4][lo >> 24]
             ^ CRC_TABLES[3][hi & 255] ^ CRC_TABLES[2][(hi >> 8) & 255]
             ^ CRC_TABLES[1][(hi >> 16) & 255] ^ CRC_TABLES[0][hi >> 24])
        p += 8
        n -= 8
    while n > 0:
        c = CRC_TABLES[0][(c ^ p[0]) & 255] ^ (c >> 8)
        p += 1
        n -= 1
    return ~c


def _fill_crc_tables() -> None:
    """Fill ``CRC_TABLES`` (a C array of the compiled build) for :func:`_crc32_sliced`."""
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        CRC_TABLES[0][i] = c
    for i in range(256):
        for k in range(1, 8):
            c = CRC_TABLES[k - 1][i]
            CRC_TABLES[k][i] = (c >> 8) ^ CRC_TABLES[0][c & 255]


if not cython.compiled:  # a C array in the compiled build (_mem.pxd)
    CRC_TABLES = [[0] * 256 for _ in range(8)]
_fill_crc_tables()


def address(u8: memoryview) -> int:
    """The address of ``u8[0]`` (compiled builds; 0 interpreted, where nothing uses it)."""
    if cython.compiled:
        return cython.cast(cython.size_t, cython.address(u8[0]))
    return 0


def call_range(function: int, address: int, n: int) -> None:
    """Call the C function at ``function`` (libpmem's flush or persist) on a range.

    Compiled builds only: the interpreted undo log flushes through the
    media's Python methods instead.
    """
    if cython.compiled:
        cython.cast("range_fn", function)(address, n)
    else:
        raise AssertionError("native flushes need the compiled build")


def call_fence(function: int) -> None:
    """Call the C function at ``function`` (libpmem's drain); compiled builds only."""
    if cython.compiled:
        cython.cast("fence_fn", function)()
    else:
        raise AssertionError("native fences need the compiled build")


def write_from(u8: memoryview, off: int, data: bytes, start: int, n: int) -> None:
    """Store ``data[start:start+n]`` at ``off`` (a value that ends an Op record, say)."""
    if cython.compiled:
        if n > 0:
            memcpy(cython.address(u8[off]), cython.cast(cython.p_char, data) + start, n)
    else:
        u8[off:off + n] = data[start:start + n]


@cython.boundscheck(False)  # checked once, before the loop
@cython.wraparound(False)
def find_low32(u64: memoryview, first: int, count: int, value: int, start: int) -> int:
    """Index ``i >= start`` of the first of the ``count`` words from word ``first`` whose
    low 32 bits are ``value``; -1 if none (a hash table's slot array, say)."""
    if cython.compiled:
        if first < 0 or start < 0 or first + count > len(u64):
            return -1  # (no caller asks beyond the view: its slot arrays lie inside)
        for i in range(start, count):
            if cython.cast(cython.uint, u64[first + i]) == value:
                return i
        return -1
    # interpreted: one bytes.find over the words beats a loop of index operations
    raw = u64[first:first + count].tobytes()
    needle = value.to_bytes(4, "little")
    at = raw.find(needle, start * 8)
    while at >= 0 and at & 7:
        at = raw.find(needle, at + 1)
    return at >> 3 if at >= 0 else -1


def u32_of(data: bytes, pos: int) -> int:
    """The little-endian u32 at ``data[pos:pos+4]`` (the caller checked the length)."""
    if cython.compiled:
        p = cython.cast("const_bytes", data) + pos
        return p[0] | (p[1] << 8) | (p[2] << 16) | (cython.cast(cython.uint, p[3]) << 24)
    return int.from_bytes(data[pos:pos + 4], "little")


def u64_of(data: bytes, pos: int) -> int:
    """The little-endian u64 at ``data[pos:pos+8]`` (the caller checked the length)."""
    if cython.compiled:
        value = 0
        memcpy(cython.address(value), cython.cast("const_bytes", data) + pos, 8)
        return value
    return int.from_bytes(data[pos:pos + 8], "little")


def get_u64(u8: memoryview, off: int) -> int:
    """The little-endian u64 at ``off``, which need not be 8-aligned."""
    if cython.compiled:
        value = 0
        memcpy(cython.address(value), cython.address(u8[off]), 8)
        return value
    return int.from_bytes(u8[off:off + 8], "little")


def set_u64(u8: memoryview, off: int, value: int) -> None:
    """Store ``value`` as a little-endian u64 at ``off``, which need not be 8-aligned."""
    if cython.compiled:
        memcpy(cython.address(u8[off]), cython.address(value), 8)
    else:
        u8[off:off + 8] = value.to_bytes(8, "little")


def store_u32(p, value: int) -> None:
    """Store ``value`` as a little-endian u32 at address ``p`` (compiled builds only: a
    record under construction)."""
    if cython.compiled:
        p[0], p[1] = value & 0xFF, (value >> 8) & 0xFF
        p[2], p[3] = (value >> 16) & 0xFF, value >> 24
    else:
        raise AssertionError("addresses exist in the compiled build only")


def set_u32(u8: memoryview, off: int, value: int) -> None:
    """Store ``value`` as a little-endian u32 at ``off``, which need not be 4-aligned."""
    if cython.compiled:
        store_u32(cython.address(u8[off]), value)
    else:
        u8[off:off + 4] = value.to_bytes(4, "little")


def set_u32s(u8: memoryview, offsets: list, values: list, count: int) -> None:
    """Store ``values[i]`` as a little-endian u32 at ``offsets[i]``, for each ``i <
    count`` (the CRCs of a run of log records)."""
    if cython.compiled:
        for i in range(count):
            store_u32(cython.address(u8[offsets[i]]), values[i])
    else:
        for i in range(count):
            u8[offsets[i]:offsets[i] + 4] = values[i].to_bytes(4, "little")


def get_u32(u8: memoryview, off: int) -> int:
    """The little-endian u32 at ``off``, which need not be 4-aligned."""
    if cython.compiled:
        value32 = 0
        memcpy(cython.address(value32), cython.address(u8[off]), 4)
        return value32
    return int.from_bytes(u8[off:off + 4], "little")


def get_u16(u8: memoryview, off: int) -> int:
    """The little-endian u16 at ``off``."""
    return u8[off] | (u8[off + 1] << 8)


def set_u16(u8: memoryview, off: int, value: int) -> int:
    """Store ``value`` as a little-endian u16 at ``off``; returns 0."""
    u8[off] = value & 0xFF
    u8[off + 1] = value >> 8
    return 0
