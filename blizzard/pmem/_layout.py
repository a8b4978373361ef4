"""The persistent layout of a pool, format version 1.

A pool is one contiguous range of a Media::

    offset          size                 region
    0               4096                 header (written once, at create)
    log_off         log_size             undo log: 64-byte log header + entries
    dir_off         dir_entries * 64     directory of named roots
    table_off       nchunks * 8 (padded) chunk table: one header word per chunk
    heap_off        nchunks * CHUNK      heap (chunks of 64 KiB)

Header (immutable; the checksum covers bytes [0, HEADER_USED) with the
checksum field zeroed):

    offset | size | field
    0      | 8    | magic b"BLIZPOOL"
    8      | 4    | format version (1)
    12     | 4    | CRC-32 of the header
    16     | 16   | uuid
    32     | 8    | pool size in bytes
    40     | 8    | log_off
    48     | 8    | log_size
    56     | 8    | dir_off
    64     | 8    | dir_entries
    72     | 8    | table_off
    80     | 8    | heap_off
    88     | 8    | nchunks
    96     | 8    | chunk size
    104    | 32   | layout name (UTF-8, NUL padded)
    136    | 8    | creation time (ns since the epoch)

Chunk header word (little-endian u64): bits 0-7 kind, 8-15 size class (runs),
16-63 number of chunks the block spans. Only the first chunk of a block has a
meaningful header; a walk from chunk 0 skips by the count.
"""

from __future__ import annotations

import struct

MAGIC = b"BLIZPOOL"
FORMAT_VERSION = 1
HEADER_SIZE = 4096
HEADER = struct.Struct("<8sII16sQQQQQQQQQ32sQ")
HEADER_USED = HEADER.size
CRC_OFFSET = 12
assert HEADER_USED == 144 and HEADER_USED <= HEADER_SIZE

CHUNK_SIZE = 64 * 1024
LOG_SIZE_DEFAULT = 64 * 1024
LOG_HEADER_SIZE = 64
DIR_ENTRIES = 128
DIR_ENTRY = struct.Struct("<Q8s48s")  # offset, tag, name
DIR_ENTRY_SIZE = 64
NAME_BYTES_MAX = 48
TAG_BYTES_MAX = 8
assert DIR_ENTRY.size == DIR_ENTRY_SIZE
POOL_SIZE_MIN = 1024 * 1024
LAYOUT_BYTES_MAX = 32

# chunk kinds
KIND_FREE = 1
KIND_RUN = 2
KIND_EXTENT = 3
KIND_LOG = 4
KINDS = (KIND_FREE, KIND_RUN, KIND_EXTENT, KIND_LOG)


def chunk_word(kind: int, count: int, size_class: int = 0) -> int:
    return kind | (size_class << 8) | (count << 16)


def split_chunk_word(word: int) -> tuple[int, int, int]:
    """(kind, size class, chunk count) of a chunk header word."""
    return word & 0xFF, (word >> 8) & 0xFF, word >> 16


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def plan(size: int, log_size: int) -> dict[str, int]:
    """Region offsets for a pool of ``size`` bytes."""
    log_off = HEADER_SIZE
    dir_off = log_off + log_size
    table_off = dir_off + DIR_ENTRIES * DIR_ENTRY_SIZE
    fixed = align(table_off, 4096)
    nchunks = max(0, (size - fixed) // (CHUNK_SIZE + 8))
    while nchunks and align(table_off + nchunks * 8, 4096) + nchunks * CHUNK_SIZE > size:
        nchunks -= 1
    heap_off = align(table_off + nchunks * 8, 4096)
    return {
        "log_off": log_off,
        "log_size": log_size,
        "dir_off": dir_off,
        "dir_entries": DIR_ENTRIES,
        "table_off": table_off,
        "heap_off": heap_off,
        "nchunks": nchunks,
    }


# --- size classes -------------------------------------------------------------

SMALL_MAX = 32 * 1024
_BLOCKS_MIN = 7  # a run holds at least this many blocks


def _class_sizes() -> list[int]:
    sizes = list(range(16, 129, 16))
    step = 32
    while sizes[-1] < SMALL_MAX:
        for _ in range(4):
            sizes.append(sizes[-1] + step)
        step *= 2
    assert sizes[-1] == SMALL_MAX
    return sizes


class SizeClass:
    """A block size and the shape of the runs that hold such blocks."""

    __slots__ = ("bitmap_words", "chunks", "data_start", "index", "nblocks", "size")

    def __init__(self, index: int, size: int) -> None:
        self.index = index
        self.size = size
        self.chunks = max(1, -(-size * (_BLOCKS_MIN + 1) // CHUNK_SIZE))
        span = self.chunks * CHUNK_SIZE
        n = span // size
        while align(-(-n // 64) * 8, 64) + n * size > span:
            n -= 1
        self.nblocks = n
        self.bitmap_words = -(-n // 64)
        self.data_start = align(self.bitmap_words * 8, 64)
        assert self.nblocks >= _BLOCKS_MIN


SIZE_CLASSES: list[SizeClass] = [SizeClass(i, s) for i, s in enumerate(_class_sizes())]
assert len(SIZE_CLASSES) < 256
# CLASS_FOR[(n + 15) >> 4] is the class of an n-byte request, 0 < n <= SMALL_MAX.
CLASS_FOR: list[int] = [0] * (SMALL_MAX // 16 + 1)
_c = 0
for _units in range(1, SMALL_MAX // 16 + 1):
    while SIZE_CLASSES[_c].size < _units * 16:
        _c += 1
    CLASS_FOR[_units] = _c
del _c, _units
