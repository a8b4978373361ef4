"""The persistent hash table behind PHashMap: linear hashing over slotted pages.

Layout version 1. A map is a header block, a two-level directory of bucket
pointers, and bucket pages (4 KiB blocks), each bucket a chain of pages.

Header block (the structure's root; tag ``phashmap``)::

    offset | size   | field
    0      | 8      | magic b"BLZHMAP1"
    8      | 8      | count: live entries
    16     | 8      | applied: index of the last Op applied to this map
    24     | 8      | nbuckets (>= 1): level L = floor(log2 nbuckets),
           |        |   split pointer s = nbuckets - 2**L
    32     | 32     | reserved, zero
    64     | 16     | key codec name (UTF-8, NUL padded)
    80     | 16     | value codec name
    96     | 32     | reserved, zero
    128    | 8*1024 | top: offsets of directory segments (0 = none)

Directory segment: 1024 u64 page offsets; bucket ``b`` is word ``b % 1024``
of segment ``b // 1024``.

Bucket page (4096 bytes)::

    offset | size  | field
    0      | 8     | next: offset of the bucket's next (overflow) page, 0 = last
    8      | 8     | reserved, zero
    16     | 8*32  | slots: u64 = h32 | pos << 32 | n << 48; 0 = empty. h32 is
           |       |   the key's CRC-32, pos the entry's offset in the page
           |       |   (>= 272), n its exact length if inline, else 0
    272    | 3824  | entry heap

Entry (8-byte aligned in the heap)::

    0      | 4     | vlen, or 0xFFFFFFFF: the value is in its own block
    4      | 4     | klen
    8      | klen  | key
    8+klen | vlen  | value -- or u64 value length, u64 offset of its block

Invariants: bucket(h32) of every entry is the bucket whose chain holds it
(bucket(h) = h mod 2**(L+1) if h mod 2**L < s else h mod 2**L); keys are
unique; entries of one page do not overlap; count == live slots.

Why it is shaped so:

* Growth is linear hashing: when the load passes ``LOAD_SPLIT`` entries per
  bucket, one bucket (the split pointer's) is split, inside the same
  transaction as the insert -- bounded work, never a stop-the-world rehash.
  Deletes merge the last bucket back below ``LOAD_MERGE``.
* An insert writes its entry into the page's *free* heap (bytes no
  committed slot references, so no undo entry is needed; the range is
  flushed and the commit's fence makes it durable) and then undo-logs and
  sets one 8-byte slot. With the header's [count, applied, nbuckets] that
  is two undo entries per put, and no allocation.
* An update writes the new entry the same way and repoints the slot; the
  old entry becomes dead heap. Dead heap is reclaimed by compaction: the
  page's live entries are copied into a fresh page, which replaces it.
* The next free heap byte of a page (``_tops``) is volatile, recomputed from
  the slots the first time a page is touched after open or abort; it only
  grows otherwise, so a transaction never overwrites an entry that a roll
  back could make live again. It is kept in an array indexed by page
  number, ``offset >> PAGE_SHIFT`` (two 4 KiB blocks never share one): 2
  bytes per 4 KiB of pool, and a lookup is one load, where a dict of the
  pages of a large map cost a few cache misses. The array is the pool's,
  shared by all its maps (``Registry.shared``), so its size does not grow
  with the number of maps; every path that frees a page zeroes its entry.

Typed Python: C types in ``_hashcore.pxd``; the pool's words are read and
written through the core's views (``u64[off >> 3]``, see ``blizzard.pmem._mem``).
"""

from __future__ import annotations

import array
import itertools
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cython

from blizzard.exceptions import OpDecodeError, StructureCorruptError
from blizzard.structures._corebase import MapCore

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import crc32_bytes as crc32
    from cython.cimports.blizzard.pmem._mem import (
        fill_zero,
        find_low32,
        get_u64,
        move,
        piece,
        prefetch,
        read,
        set_u64,
        write,
        write_from,
    )
    from cython.cimports.blizzard.structures.ops import (
        MAP_CLEAR,
        MAP_DELETE,
        MAP_POP,
        MAP_PUT,
        key_bounds,
    )
    from cython.cimports.libc.string import memcmp
else:
    from zlib import crc32

    from blizzard.pmem._mem import (
        fill_zero,
        find_low32,
        get_u64,
        move,
        piece,
        read,
        set_u64,
        write,
        write_from,
    )
    from blizzard.structures.ops import MAP_CLEAR, MAP_DELETE, MAP_POP, MAP_PUT, key_bounds

if not cython.compiled and TYPE_CHECKING:  # compiled: cimported in the .pxd
    from blizzard.pmem import Transaction

if TYPE_CHECKING:
    from blizzard.structures.registry import Registry

TAG = b"phashmap"
MAGIC = b"BLZHMAP1"
if not cython.compiled:  # the compiled build has these as C constants (_hashcore.pxd)
    TOP_OFF = 128
    TOP_MAX = 1024
    PAGE_BYTES = 4096
    PAGE_SHIFT = 12  # page >> PAGE_SHIFT: the page's number (index of its top in _tops)
    SLOTS = 32
    SLOTS_OFF = 16
    HEAP_START = 272  # SLOTS_OFF + SLOTS * 8
    INLINE_MAX = 1024  # entries above this keep their value in a block of its own
    LOAD_SPLIT = 24  # entries per bucket before a split
    LOAD_MERGE = 8  # entries per bucket below which the last bucket merges back
EXT = 0xFFFFFFFF  # an entry's vlen when its value lives in a block of its own
SEG_SLOTS = 1024
SEG_BYTES = SEG_SLOTS * 8
HEADER_BYTES = TOP_OFF + TOP_MAX * 8
BUCKETS_MAX = TOP_MAX * SEG_SLOTS
KEY_BYTES_MAX = INLINE_MAX - 24 - 8
assert HEAP_START == SLOTS_OFF + SLOTS * 8
assert PAGE_BYTES == 1 << PAGE_SHIFT
assert PAGE_BYTES < 1 << 16  # a page's top fits a u16 of _tops
assert HEAP_START + INLINE_MAX <= PAGE_BYTES
assert LOAD_MERGE * 2 < LOAD_SPLIT < SLOTS
assert SEG_SLOTS & (SEG_SLOTS - 1) == 0

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HDR = struct.Struct("<II")
_EXT = struct.Struct("<QQ")
_HOT = struct.Struct("<QQQ")  # count, applied, nbuckets at +8
_SLOTS = struct.Struct(f"<{SLOTS}Q")
POS_MASK = 0xFFFF << 32  # a slot's entry position
_NOT_FOUND = None


def entry_size(klen: int, vlen: int) -> int:
    """Heap bytes for an entry (inline, or a stub pointing at a value block)."""
    if 8 + klen + vlen <= INLINE_MAX:
        return (8 + klen + vlen + 7) & ~7
    return (24 + klen + 7) & ~7


def _directory(capacity: int) -> memoryview:
    """A zeroed volatile bucket directory: ``capacity`` page offsets, one C array.

    Not a list of ints: a lookup is then one load from a contiguous array
    rather than a pointer to follow to a boxed int elsewhere in memory (a
    cache miss per get on a large map)."""
    return memoryview(bytearray(8 * capacity)).cast("Q")


class HashCore(MapCore):
    """Apply side and read side of one persistent hash map."""

    opgroup = 1
    tag = TAG
    magic = MAGIC
    label = "map"
    header_bytes = HEADER_BYTES
    hot_bytes = 24  # count, applied, nbuckets

    # -- creating and loading ----------------------------------------------------------

    @classmethod
    def create(cls, registry: Registry, tx: Transaction, name: str, key_codec: str,
               value_codec: str) -> HashCore:
        buf = registry.pool.buf
        off = cls._new_header(tx, key_codec, value_codec)
        seg = tx.alloc(SEG_BYTES, zero=True)
        page = new_page(tx, buf)
        _U64.pack_into(buf, seg, page)
        _U64.pack_into(buf, off + TOP_OFF, seg)
        _U64.pack_into(buf, off + 24, 1)
        tx.set_root(name, off, TAG)
        return cls(registry, name, off)

    @classmethod
    def open(cls, registry: Registry, name: str, off: int) -> HashCore:
        return cls(registry, name, off)

    def reload(self) -> None:
        """Rebuild the volatile index (bucket pages, masks, count) from the pool."""
        buf = self.buf
        off = self.header_off
        self.count, self._applied, nbuckets = _HOT.unpack_from(buf, off + 8)
        self.segs = [s for s in struct.unpack_from(f"<{TOP_MAX}Q", buf, off + TOP_OFF) if s]
        raw = bytearray(8 * max(nbuckets, 1))
        done = 0
        for seg in self.segs:
            want = min(SEG_SLOTS, nbuckets - done)
            if want <= 0:
                break
            raw[8 * done:8 * (done + want)] = buf[seg:seg + 8 * want]
            done += want
        self.pages = memoryview(raw).cast("Q")
        self._set_buckets(nbuckets)
        # the next free heap byte of each page touched since, by page number; 0: not
        # known. One array per pool, shared by its maps (pages are never shared) and
        # made afresh, zeroed, when the registry rebuilds its cores: never mid-transaction
        self._tops = self.registry.shared("hash page tops", self._new_tops)
        self._serial = 0  # the transaction that last undo-logged the hot header fields

    def _new_tops(self) -> array.array:
        return array.array("H", bytes(2 * ((self.pool.size >> PAGE_SHIFT) + 1)))

    def _set_buckets(self, nbuckets: int) -> None:
        self.nbuckets = nbuckets
        level = nbuckets.bit_length() - 1
        self.lo_mask = (1 << level) - 1
        self.hi_mask = (2 << level) - 1
        self.split = nbuckets - (1 << level)

    def kill(self) -> None:
        """The map was dropped (or rolled back out of existence): look empty."""
        super().kill()
        self.count = 0
        self.pages = _directory(1)
        self._set_buckets(1)

    @property
    def applied(self) -> int:
        return self._applied

    # -- reading -----------------------------------------------------------------------

    def bucket(self, h: int) -> int:
        b = h & self.lo_mask
        return h & self.hi_mask if b < self.split else b

    def find(self, kb: bytes, h: int) -> tuple[int, int, int]:
        """``(page, slot byte index in the page, slot)`` of key ``kb``; page 0 if absent.

        Cost: per page of the bucket's chain, a scan of its slots for the
        hash; a key comparison per slot whose hash matches. (Compiled, the
        triple is a C struct, and the views are read through ``self``: a view
        bound to a local costs two atomic reference-count updates per call.)

        The scan reads a page's slots through one pointer, whose range the
        page's bounds check covers (``_slot_words``), not a bounds check and a
        call per word. At 10^6 keys a lookup is three cache misses in a row
        (the page's slots, the entry, the rest of the entry). The slots span
        five cache lines, all requested as the scan starts, so a slot late in
        the page costs no second miss (+12% gets/s at 10^6 keys); the entry's
        second line is prefetched as soon as its slot is found, so the last
        two misses overlap. The next page of the chain (a quarter of the
        buckets have one at 10^6 keys, and about a tenth of the lookups end
        there) is asked for as soon as the first line arrives, so reaching it
        costs no miss of its own either.
        """
        klen = len(kb)
        b = h & self.lo_mask
        if b < self.split:
            b = h & self.hi_mask
        page = self.pages[b]
        while page:
            slots = self._slot_words(page)
            prefetch(slots + 8)
            prefetch(slots + 16)
            prefetch(slots + 24)
            prefetch(slots + 31)
            nxt = slots[-2]  # the page's next word, in the line just read
            if nxt:  # its five lines are asked for now, not after this scan
                more = self._slot_words(nxt)
                prefetch(more - 2)
                prefetch(more + 6)
                prefetch(more + 14)
                prefetch(more + 22)
                prefetch(more + 30)
            for i in range(SLOTS):
                s = slots[i]
                if cython.cast(cython.uint, s) != h:
                    continue
                e = page + ((s >> 32) & 0xFFFF)
                if e == page:  # (an empty slot, and h is 0)
                    continue
                entry = cython.address(self.u8[e])
                prefetch(entry + 64)
                # a live slot whose entry has this key's length and bytes
                if (self.u32[(e >> 2) + 1] == klen
                        and memcmp(entry + 8, cython.cast(cython.p_char, kb), klen) == 0):
                    return page, SLOTS_OFF + 8 * i, s
            page = nxt
        return 0, 0, 0

    def _slot_words(self, page: int) -> Any:
        """(Compiled) a pointer to the slot words of ``page``, bounds-checked as a
        whole (an offset outside the pool raises IndexError, as an index does)."""
        first = (page + SLOTS_OFF) >> 3
        if first < 0 or first + SLOTS > len(self.u64):
            raise IndexError(f"map {self.name!r}: page {page} lies outside the pool")
        return cython.address(self.u64[first])

    def _find_interpreted(self, kb: bytes, h: int) -> tuple[int, int, int]:
        """``find`` as the interpreted build runs it fastest (it is ``find`` there).

        The same search, shaped for the interpreter: each index into a view
        costs about 0.1 µs there, so a page's header and slots are copied out
        once and searched with ``bytes.find`` (one C call for all 32 slots),
        and a candidate's key length and key are compared in one slice.
        """
        b = h & self.lo_mask
        if b < self.split:
            b = h & self.hi_mask
        page = self.pages[b]
        buf = self.buf  # the pool's memoryview, in either build
        hb = _U32.pack(h)
        prefix = _U32.pack(len(kb)) + kb
        end = 8 + len(kb)
        while page:
            raw = buf[page:page + HEAP_START].tobytes()
            i = raw.find(hb, SLOTS_OFF)
            while i >= 0:
                if not i & 7:  # a slot's low word, not bytes straddling two slots
                    s = _U64.unpack_from(raw, i)[0]
                    e = page + ((s >> 32) & 0xFFFF)
                    if e != page and buf[e + 4:e + end].tobytes() == prefix:
                        return page, i, s
                i = raw.find(hb, i + 1)
            page = _U64.unpack_from(raw, 0)[0]
        return 0, 0, 0

    def get(self, kb: bytes) -> bytes | None:
        """The value stored under ``kb``, or None. Cost: one page read per chain page.

        The slot gives the entry's position and exact length (``n``, for an
        inline value), so a hit copies the value out with no further reads.
        """
        page, _i, s = self.find(kb, crc32(kb))
        if not page:
            return None
        n = s >> 48
        e = page + ((s >> 32) & 0xFFFF)
        if n:
            start = 8 + len(kb)
            return read(self.u8, e + start, n - start)
        return self._value(e)

    def _value(self, e: int) -> bytes:
        u32 = self.u32
        v = u32[e >> 2]
        ke = e + 8 + u32[(e >> 2) + 1]
        if v != EXT:
            return read(self.u8, ke, v)
        # an out-of-line value: u64 length, u64 block (at any alignment, after the key)
        return read(self.u8, get_u64(self.u8, ke + 8), get_u64(self.u8, ke))

    def chain(self, b: int) -> list[int]:
        pages = []
        page = self.pages[b]
        while page:
            pages.append(page)
            page = self.u64[page >> 3]
        return pages

    def live(self, page: int) -> list[tuple[int, int, int]]:
        """``(slot index, slot, entry offset)`` of every live slot of ``page``."""
        slots = _SLOTS.unpack_from(self.buf, page + SLOTS_OFF)
        return [(i, s, page + ((s >> 32) & 0xFFFF)) for i, s in enumerate(slots) if s]

    def items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` as bytes, bucket by bucket."""
        buf = self.buf
        for b in range(self.nbuckets):
            for page in self.chain(b):
                for _, _, e in self.live(page):
                    k = _HDR.unpack_from(buf, e)[1]
                    yield buf[e + 8:e + 8 + k].tobytes(), self._value(e)

    def keys_raw(self) -> Iterator[bytes]:
        buf = self.buf
        for b in range(self.nbuckets):
            for page in self.chain(b):
                for _, _, e in self.live(page):
                    k = _HDR.unpack_from(buf, e)[1]
                    yield buf[e + 8:e + 8 + k].tobytes()

    def dump(self) -> Iterator[tuple[bytes, ...]]:
        return self.items_raw()

    def scan_after(self, after: bytes | None, limit: int, values: bool = True
                   ) -> list[tuple[bytes, bytes | None]]:
        """Up to ``limit`` entries following key ``after`` (from the start if None)
        in *scan order*: ascending ``(rev32(h), key)``, h the key's CRC-32 and
        rev32 its bit reversal. The value is None unless ``values``.

        The order is a property of the keys alone, so a scan resumed after the
        last key it returned is exact whatever splits, merges and writes
        happened between calls: a key present throughout is returned once.
        Bit reversal makes every bucket a contiguous range of the order (a
        bucket holds the hashes with the same low ``depth`` bits, i.e. the
        same high bits of rev32(h)), so a page reads whole buckets from the
        one holding ``after`` on, and sorts each (at most a chain's entries).
        """
        buf = self.buf
        cursor = None if after is None else (_rev32(crc32(bytes(after))), bytes(after))
        r = 0 if cursor is None else cursor[0]
        out: list[tuple[bytes, bytes | None]] = []
        level = self.nbuckets.bit_length() - 1
        while r < _R_END and len(out) < limit:
            b = self.bucket(_rev32(r))
            depth = level + 1 if (b < self.split or b >> level) else level
            start = _rev_bits(b, depth) << (32 - depth)
            entries = []
            for page in self.chain(b):
                for _, slot, e in self.live(page):
                    klen = _HDR.unpack_from(buf, e)[1]
                    entries.append((_rev32(slot & 0xFFFFFFFF), buf[e + 8:e + 8 + klen].tobytes(),
                                    e))
            entries.sort()
            for rank, key, e in entries:
                if cursor is not None and (rank, key) <= cursor:
                    continue
                out.append((key, self._value(e) if values else None))
                if len(out) >= limit:
                    break
            r = start + (1 << (32 - depth))
        return out

    # -- applying ----------------------------------------------------------------------

    def apply(self, tx: Transaction, index: int, code: int, record: bytes, start: int) -> Any:
        """Apply one Op; validates the record before touching anything."""
        if code == MAP_PUT:
            ks, ke = key_bounds(record, start, "MAP_PUT", KEY_BYTES_MAX)
            self._hot(tx)
            self.put(tx, piece(record, ks, ke - ks), record, ke)
            result = None
        elif code in (MAP_DELETE, MAP_POP):
            kb = record[start:]
            self._hot(tx)
            old = self.delete(tx, kb, code == MAP_POP)
            result = old if code == MAP_POP else old is not None
        elif code == MAP_CLEAR:
            if start != len(record):
                raise OpDecodeError("MAP_CLEAR takes no arguments")
            self._hot(tx)
            self.clear(tx)
            result = None
        else:
            raise OpDecodeError(f"opcode {code:#x} does not apply to a map")
        tx.ready()  # the header's snapshot is durable (see _hot)
        hot = (self.header_off >> 3) + 1  # [count, applied, nbuckets]
        self.u64[hot] = self.count
        self.u64[hot + 1] = index
        self.u64[hot + 2] = self.nbuckets
        self._applied = index
        return result

    def _top(self, page: int) -> int:
        """Next free heap offset of ``page`` (computed on first touch, then cached)."""
        cached = self._tops[page >> PAGE_SHIFT]
        if cached:
            return cached
        u64 = self.u64
        slots = (page + SLOTS_OFF) >> 3
        top = HEAP_START
        for i in range(SLOTS):
            s = u64[slots + i]
            if s:
                end = ((s >> 32) & 0xFFFF) + self._size_at(page + ((s >> 32) & 0xFFFF))
                if end > top:
                    top = end
        self._tops[page >> PAGE_SHIFT] = top
        return top

    def _write_entry(self, tx: Transaction, at: int, kb: bytes, value: bytes, vstart: int,
                     block: int) -> None:
        """Store an entry at ``at`` (free heap): flushed now, durable at the commit's fence,
        never undo-logged (no committed slot references free heap). Its value is
        ``value[vstart:]``, or lives in ``block``."""
        klen = len(kb)
        vlen = len(value) - vstart
        ke = at + 8 + klen
        self.u32[(at >> 2) + 1] = klen
        write(self.u8, at + 8, kb)
        if block:
            self.u32[at >> 2] = EXT
            set_u64(self.u8, ke, vlen)
            set_u64(self.u8, ke + 8, block)
            tx.flush(at, ke + 16 - at)
        else:
            self.u32[at >> 2] = vlen
            write_from(self.u8, ke, value, vstart, vlen)
            tx.flush(at, ke + vlen - at)

    def _set_slot(self, tx: Transaction, page: int, i: int, value: int) -> None:
        """Undo-log and store slot byte index ``i`` of ``page``."""
        if not self._tops[page >> PAGE_SHIFT]:
            self._top(page)  # before the first change: see the module docstring
        tx.add(page + i, 8)
        self.u64[(page + i) >> 3] = value

    def put(self, tx: Transaction, kb: bytes, value: bytes, vstart: int = 0) -> None:
        """Insert or replace ``kb`` -> ``value[vstart:]``. Cost: 2 undo entries; a split
        now and then (an Op's value is the rest of its record: no copy is made)."""
        h = crc32(kb)
        klen = len(kb)
        vlen = len(value) - vstart
        n = 8 + klen + vlen
        block = 0
        if n > INLINE_MAX:
            block = tx.alloc(vlen)
            write_from(self.u8, block, value, vstart, vlen)
            n = 0
            need = (24 + klen + 7) & ~7
        else:
            need = (n + 7) & ~7
        tag = h | (n << 48)
        page, i, old = self.find(kb, h)
        if not page:
            b = h & self.lo_mask
            if b < self.split:
                b = h & self.hi_mask
            self._insert(tx, b, tag, kb, value, vstart, block, need)
            self.count += 1
            if self.count > LOAD_SPLIT * self.nbuckets and self.nbuckets < BUCKETS_MAX:
                self._split(tx)
            return
        old_block = 0 if old >> 48 else self._block_of(page + ((old >> 32) & 0xFFFF))
        top = self._top(page)
        if top + need <= PAGE_BYTES:
            self._write_entry(tx, page + top, kb, value, vstart, block)
            self._tops[page >> PAGE_SHIFT] = top + need
            tx.add(page + i, 8)
            self.u64[(page + i) >> 3] = tag | (top << 32)
        else:
            self._set_slot(tx, page, i, 0)
            b = h & self.lo_mask
            if b < self.split:
                b = h & self.hi_mask
            self._insert(tx, b, tag, kb, value, vstart, block, need)
        if old_block:
            tx.free(old_block)

    def _block_of(self, e: int) -> int:
        """The block of an out-of-line value (0 for an inline one)."""
        if self.u32[e >> 2] != EXT:
            return 0
        return get_u64(self.u8, e + 16 + self.u32[(e >> 2) + 1])

    def _insert(self, tx: Transaction, b: int, tag: int, kb: bytes, value: bytes, vstart: int,
                block: int, need: int) -> None:
        """Place a new entry in bucket ``b``'s chain: free space, compaction or a new page."""
        u64 = self.u64
        prev = 0
        page = self.pages[b]
        while page:
            slots = (page + SLOTS_OFF) >> 3
            free = find_low32(u64, slots, SLOTS, 0, 0)
            while free >= 0 and u64[slots + free]:  # a live slot whose hash is 0
                free = find_low32(u64, slots, SLOTS, 0, free + 1)
            if free >= 0:
                top = self._top(page)
                if top + need > PAGE_BYTES:
                    if HEAP_START + self._live_bytes(page) + need > PAGE_BYTES:
                        prev = page
                        page = u64[page >> 3]
                        continue
                    page = self._compact(tx, b, prev, page)
                    top = self._top(page)
                self._write_entry(tx, page + top, kb, value, vstart, block)
                self._tops[page >> PAGE_SHIFT] = top + need
                self._set_slot(tx, page, SLOTS_OFF + 8 * free, tag | (top << 32))
                return
            prev = page
            page = u64[page >> 3]
        page = new_page(tx, self.u8)
        top = HEAP_START
        self._write_entry(tx, page + top, kb, value, vstart, block)
        u64[(page + SLOTS_OFF) >> 3] = tag | (top << 32)
        self._tops[page >> PAGE_SHIFT] = top + need
        self._link(tx, b, prev, page)

    def _live_bytes(self, page: int) -> int:
        """Heap bytes the live entries of ``page`` take."""
        u64 = self.u64
        slots = (page + SLOTS_OFF) >> 3
        total = 0
        for i in range(SLOTS):
            s = u64[slots + i]
            if s:
                total += self._size_at(page + ((s >> 32) & 0xFFFF))
        return total

    def _size_at(self, e: int) -> int:
        v = self.u32[e >> 2]
        k = self.u32[(e >> 2) + 1]
        return (24 + k + 7) & ~7 if v == EXT else (8 + k + v + 7) & ~7

    def _link(self, tx: Transaction, b: int, prev: int, page: int) -> None:
        """Make ``page`` follow ``prev`` in bucket ``b``'s chain (or head it)."""
        if prev:
            tx.add(prev, 8)
            self.u64[prev >> 3] = page
        else:
            self._set_dir(tx, b, page)

    def _set_dir(self, tx: Transaction, b: int, page: int) -> None:
        word = self.segs[b // SEG_SLOTS] + 8 * (b % SEG_SLOTS)
        tx.add(word, 8)
        self.u64[word >> 3] = page
        if b >= len(self.pages):  # a split past the capacity: double it
            grown = _directory(2 * b)
            grown[:b] = self.pages[:b]
            self.pages = grown
        self.pages[b] = page

    def _compact(self, tx: Transaction, b: int, prev: int, page: int) -> int:
        """Replace ``page`` by a fresh copy holding only its live entries."""
        u64 = self.u64
        fresh = new_page(tx, self.u8)
        u64[fresh >> 3] = u64[page >> 3]  # the next page
        old_slots = (page + SLOTS_OFF) >> 3
        new_slots = (fresh + SLOTS_OFF) >> 3
        top = HEAP_START
        for i in range(SLOTS):
            s = u64[old_slots + i]
            if s:
                e = page + ((s >> 32) & 0xFFFF)
                n = self._size_at(e)
                move(self.u8, fresh + top, e, n)
                u64[new_slots + i] = (s & ~POS_MASK) | (top << 32)
                top += n
        self._tops[fresh >> PAGE_SHIFT] = top
        self._link(tx, b, prev, fresh)
        self._tops[page >> PAGE_SHIFT] = 0
        tx.free(page)
        return fresh

    def delete(self, tx: Transaction, kb: bytes, want_value: bool) -> bytes | None:
        """Remove ``kb``; returns its value (or ``b""`` when not wanted), None if absent."""
        h = crc32(kb)
        page, i, slot = self.find(kb, h)
        if not page:
            return None
        e = page + ((slot >> 32) & 0xFFFF)
        old = self._value(e) if want_value else b""
        block = self._block_of(e)
        self._set_slot(tx, page, i, 0)
        if block:
            tx.free(block)
        self.count -= 1
        b = h & self.lo_mask
        if b < self.split:
            b = h & self.hi_mask
        if page != self.pages[b] and not any(_SLOTS.unpack_from(self.buf, page + SLOTS_OFF)):
            self._unlink(tx, b, page)
        if self.count < LOAD_MERGE * (self.nbuckets - 1) and self.nbuckets > 1:
            self._merge(tx)
        return old

    def _unlink(self, tx: Transaction, b: int, page: int) -> None:
        """Drop an empty overflow page from bucket ``b``'s chain."""
        chain = self.chain(b)
        at = chain.index(page)
        nxt = _U64.unpack_from(self.buf, page)[0]
        assert at > 0, "the first page of a chain is never unlinked"
        self._link(tx, b, chain[at - 1], nxt)
        self._tops[page >> PAGE_SHIFT] = 0
        tx.free(page)

    # -- growing and shrinking ------------------------------------------------------------

    def _build(self, tx: Transaction, first: int, second: int, mask: int, want: int) -> int:
        """Copy into a fresh chain of pages the entries of the chain from page ``first``,
        then of the chain from page ``second`` (0: none), whose slot has ``slot & mask
        == want`` (the hash's low bits), in chain and slot order; returns its first page.
        """
        fresh = page = new_page(tx, self.u8)
        top = HEAP_START
        slot = 0
        source = first
        while source:
            slots = (source + SLOTS_OFF) >> 3
            for i in range(SLOTS):
                s = self.u64[slots + i]
                if s and (s & mask) == want:
                    e = source + ((s >> 32) & 0xFFFF)
                    n = self._size_at(e)
                    if slot == SLOTS or top + n > PAGE_BYTES:
                        self._tops[page >> PAGE_SHIFT] = top
                        nxt = new_page(tx, self.u8)
                        self.u64[page >> 3] = nxt
                        page, top, slot = nxt, HEAP_START, 0
                    move(self.u8, page + top, e, n)
                    self.u64[((page + SLOTS_OFF) >> 3) + slot] = (s & ~POS_MASK) | (top << 32)
                    top += n
                    slot += 1
            source = self.u64[source >> 3]
            if not source:  # the first chain is done: the second one's turn
                source, second = second, 0
        self._tops[page >> PAGE_SHIFT] = top
        return fresh

    def _free_chain(self, tx: Transaction, b: int) -> None:
        for page in self.chain(b):
            self._tops[page >> PAGE_SHIFT] = 0
            tx.free(page)

    def _split(self, tx: Transaction) -> None:
        """Split the split pointer's bucket s into s and s + 2**L."""
        s = self.split
        new = self.nbuckets
        mask = self.hi_mask  # bucket s's hashes have h & mask == s or == new
        if new % SEG_SLOTS == 0:
            seg = tx.alloc(SEG_BYTES, zero=True)
            top_word = self.header_off + TOP_OFF + 8 * (new // SEG_SLOTS)
            tx.add(top_word, 8)
            _U64.pack_into(self.buf, top_word, seg)
            self.segs.append(seg)
        first_stay = self._build(tx, self.pages[s], 0, mask, s)
        first_move = self._build(tx, self.pages[s], 0, mask, new)
        self._free_chain(tx, s)
        self._set_dir(tx, s, first_stay)
        self._set_dir(tx, new, first_move)
        self._set_buckets(new + 1)

    def _merge(self, tx: Transaction) -> None:
        """Undo the last split: bucket nbuckets-1 rejoins its buddy."""
        last = self.nbuckets - 1
        self._set_buckets(last)
        buddy = last & self.lo_mask  # last == 2**L + s after the decrement
        first = self._build(tx, self.pages[buddy], self.pages[last], 0, 0)
        self._free_chain(tx, buddy)
        self._free_chain(tx, last)
        self._set_dir(tx, buddy, first)
        self._set_dir(tx, last, 0)
        if last % SEG_SLOTS == 0:
            top_word = self.header_off + TOP_OFF + 8 * (last // SEG_SLOTS)
            tx.add(top_word, 8)
            _U64.pack_into(self.buf, top_word, 0)
            tx.free(self.segs.pop())

    def clear(self, tx: Transaction) -> None:
        """Free every page, value block and segment but the first; one empty bucket."""
        for b in range(self.nbuckets):
            for page in self.chain(b):
                for _, _, e in self.live(page):
                    block = self._block_of(e)
                    if block:
                        tx.free(block)
            self._free_chain(tx, b)
        for t in range(len(self.segs) - 1, 0, -1):
            top_word = self.header_off + TOP_OFF + 8 * t
            tx.add(top_word, 8)
            _U64.pack_into(self.buf, top_word, 0)
            tx.free(self.segs.pop())
        seg = self.segs[0]
        n = 8 * min(self.nbuckets, SEG_SLOTS)
        tx.add(seg, n)
        self.buf[seg:seg + n] = bytes(n)
        self.pages = _directory(1)
        self._set_dir(tx, 0, new_page(tx, self.u8))
        self._tops[self.pages[0] >> PAGE_SHIFT] = HEAP_START
        self.count = 0
        self._set_buckets(1)

    def destroy(self, tx: Transaction) -> None:
        """Free every block of the map, header included (DROP)."""
        self.clear(tx)
        self._tops[self.pages[0] >> PAGE_SHIFT] = 0
        tx.free(self.pages[0])
        tx.free(self.segs[0])
        tx.free(self.header_off)

    def load(self, tx: Transaction, items: list[tuple[bytes, ...]]) -> None:
        """Bulk insert (snapshot restore) inside ``tx``."""
        for key, value in items:
            self.put(tx, key, value)
        _HOT.pack_into(self.buf, self.header_off + 8, self.count, 0, self.nbuckets)

    # -- checking ------------------------------------------------------------------------

    def check(self) -> None:
        """Walk the whole layout; raise StructureCorruptError on any broken invariant."""
        pool = self.pool
        buf = self.buf
        off = self.header_off
        name = self.name

        def fail(msg: str) -> None:
            raise StructureCorruptError(f"map {name!r}: {msg}")

        if bytes(buf[off:off + 8]) != MAGIC:
            fail("bad magic")
        count, applied, nbuckets = _HOT.unpack_from(buf, off + 8)
        if (count, applied, nbuckets) != (self.count, self._applied, self.nbuckets):
            fail(f"header (count, applied, nbuckets) = {(count, applied, nbuckets)}, memory has "
                 f"{(self.count, self._applied, self.nbuckets)}")
        if not 1 <= nbuckets <= BUCKETS_MAX:
            fail(f"nbuckets {nbuckets} out of range")
        tops = struct.unpack_from(f"<{TOP_MAX}Q", buf, off + TOP_OFF)
        nsegs = -(-nbuckets // SEG_SLOTS)
        if any(tops[nsegs:]) or not all(tops[:nsegs]) or list(tops[:nsegs]) != self.segs:
            fail(f"directory top table disagrees with {nbuckets} buckets")
        for seg in self.segs:
            if not pool.is_allocated(seg):
                fail(f"segment {seg} is not allocated")
        seen_pages: set[int] = set()
        live = 0
        keys: set[bytes] = set()
        for b in range(nbuckets):
            word = self.segs[b // SEG_SLOTS] + 8 * (b % SEG_SLOTS)
            page = _U64.unpack_from(buf, word)[0]
            if page != self.pages[b]:
                fail(f"bucket {b}: directory says page {page}, memory {self.pages[b]}")
            first = True
            while page:
                if page in seen_pages:
                    fail(f"page {page} is in two chains (or a chain loops)")
                seen_pages.add(page)
                if not pool.is_allocated(page) or pool.usable_size(page) < PAGE_BYTES:
                    fail(f"bucket {b}: page {page} is not an allocated {PAGE_BYTES}-byte block")
                used = self._check_page(b, page, keys, fail)
                if not used and not first:
                    fail(f"bucket {b}: empty overflow page {page}")
                live += used
                first = False
                page = _U64.unpack_from(buf, page)[0]
        # every bucket pointer beyond nbuckets in the last segment must be clear
        last_seg = self.segs[-1]
        rest = struct.unpack_from(f"<{SEG_SLOTS}Q", buf, last_seg)[(nbuckets - 1) % SEG_SLOTS + 1:]
        if any(rest):
            fail("directory holds pages past the last bucket")
        if any(self.pages[b] for b in range(nbuckets, len(self.pages))):
            fail("the volatile directory holds pages past the last bucket")
        if live != count:
            fail(f"count is {count} but {live} entries are live")

    def _check_page(self, b: int, page: int, keys: set[bytes], fail) -> int:
        buf = self.buf
        spans = []
        used = 0
        top = HEAP_START
        for _, h, e in self.live(page):
            pos = e - page
            if not HEAP_START <= pos <= PAGE_BYTES - 8 or pos & 7:
                fail(f"page {page}: entry position {pos} outside the heap")
            v, k = _HDR.unpack_from(buf, e)
            n = self._size_at(e)
            if pos + n > PAGE_BYTES:
                fail(f"page {page}: entry at {pos} runs past the page")
            key = buf[e + 8:e + 8 + k].tobytes()
            n_slot = h >> 48
            h &= 0xFFFFFFFF
            if n_slot != (8 + k + v if v != EXT else 0):
                fail(f"page {page}: slot length {n_slot} disagrees with the entry")
            if crc32(key) != h:
                fail(f"page {page}: slot hash {h:#x} is not the key's CRC-32")
            if self.bucket(h) != b:
                fail(f"key {key!r:.40} is in bucket {b}, belongs in {self.bucket(h)}")
            if key in keys:
                fail(f"key {key!r:.40} appears twice")
            keys.add(key)
            if v == EXT:
                vlen, block = _EXT.unpack_from(buf, e + 8 + k)
                if vlen + 8 + k <= INLINE_MAX:
                    fail(f"key {key!r:.40}: a small value stored out of line")
                if not self.pool.is_allocated(block) or self.pool.usable_size(block) < vlen:
                    fail(f"key {key!r:.40}: value block {block} is not allocated")
            spans.append((pos, pos + n))
            top = max(top, pos + n)
            used += 1
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                fail(f"page {page}: entries overlap")
        cached = self._tops[page >> PAGE_SHIFT]
        if cached and cached < top:
            fail(f"page {page}: free heap starts at {cached}, below a live entry ending at {top}")
        return used


if not cython.compiled:  # one call less per lookup (find is a C method when compiled)
    HashCore.find = HashCore._find_interpreted  # type: ignore[method-assign]

_R_END = 1 << 32
_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rev32(x: int) -> int:
    """The 32 bits of ``x`` in reverse order."""
    return (_REV8[x & 255] << 24 | _REV8[(x >> 8) & 255] << 16 | _REV8[(x >> 16) & 255] << 8
            | _REV8[x >> 24])


def _rev_bits(x: int, n: int) -> int:
    """The low ``n`` bits of ``x`` in reverse order."""
    return _rev32(x) >> (32 - n) if n else 0


def new_page(tx: Transaction, u8: memoryview) -> int:
    """A fresh bucket page: no next page, every slot empty (its heap is left as it is);
    ``u8`` views the pool."""
    page = tx.alloc(PAGE_BYTES)
    fill_zero(u8, page, HEAP_START)
    return page
