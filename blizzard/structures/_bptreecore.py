"""The persistent B+tree behind PBPlusTree: wide slotted nodes, values in linked leaves.

Layout version 2. Header block (the structure's root; tag ``pbptree``)::

    offset | size | field
    0      | 8    | magic b"BLZBPT02" (b"BLZBPT01": layout version 1)
    8      | 8    | count: live entries
    16     | 8    | applied: index of the last Op applied to this tree
    24     | 8    | root: offset of the root node
    32     | 8    | height: levels, 1 = the root is a leaf
    40     | 4    | fanout: most entries per node (FANOUT_MIN..FANOUT_MAX)
    44     | 4    | node_bytes: size of every node block
    48     | 16   | reserved, zero
    64     | 16   | key codec name (UTF-8, NUL padded)
    80     | 16   | value codec name
    96     | 32   | reserved, zero

Node (``node_bytes`` block, the same for leaves and internal nodes)::

    offset | size        | field
    0      | 1           | kind: 1 leaf, 2 internal
    1      | 1           | p: a prefix every key of the node shares (version 1: 0)
    2      | 2           | n: live entries
    4      | 4           | reserved, zero
    8      | 8           | next: the next leaf in key order (0 = last; internal: 0)
    16     | 8*fanout    | slots, in key order: u64 = key word << 16 | the entry's
           |             |   offset in the node (version 1: 2*fanout, u16 offsets)
    heap   | ...         | entry heap, from heap = align8(16 + 8*fanout)

A key's word is its bytes p..p+5 as a big-endian number, zeros past its end
(``key_word``); an internal node's entry 0 has no key in use and word 0.

Entry (unaligned, in a node's heap)::

    0      | 4     | vlen, or 0xFFFFFFFF: the value is in a block of its own
    4      | 4     | klen (<= KEY_BYTES_MAX)
    8      | klen  | key
    8+klen | vlen  | value -- or u64 value length, u64 offset of its block;
           |       |   in an internal node: u64 child offset (vlen = 8)

Invariants (``check``): keys strictly increase within a node and across the
leaf chain; entry i > 0 of an internal node holds the separator s_i: every
key below child i is >= s_i and every key below child i-1 is < s_i (the key
of entry 0 is not used); every leaf is at depth height-1; the leaf chain
from the leftmost leaf visits every leaf in key order; every non-root node
is at least a third full (3n >= fanout or 3 * live bytes >= heap bytes); an
internal root has >= 2 children; count == entries in the leaves; every key
in use of a node has the node's first p bytes, and each slot its key's word.

Why it is shaped so:

* An insert or update writes the entry into the free heap past ``top``
  (nothing references it: no undo entry, a flush) and undo-logs the node's
  header and slot array -- at most 16 + 8*fanout bytes -- and the header's
  hot fields: two undo entries, no allocation.
* ``top`` is volatile, recomputed from the live entries on first touch and
  only grown afterwards, so a transaction never overwrites an entry that a
  roll back could make live again. It is kept in an array indexed by
  ``node >> NODE_SHIFT`` (no two nodes of any size share a number; 0:
  not known), one per pool shared by its trees (``Registry.shared``): a
  lookup is one load, where a dict of ~30,000 nodes cost cache misses and
  a boxed int. Every path that frees a node zeroes its entry; a rollback
  rebuilds the registry's cores, and with them a zeroed array.
* When the heap is exhausted the node is copied (compacted) into a fresh
  block; splits, merges and borrows also build fresh blocks and patch the
  parent in place (one 8-byte child pointer, new entries past its top, its
  slot array), and the previous leaf's ``next`` pointer: each operation is
  one bounded transaction.
* Keys that share a node's prefix compare as their words do unless the
  words are equal, so a lookup bisects a node by its slots alone -- one
  array, asked for in full as soon as the node's offset is known, where
  each step of a bisect by keys waited for an entry's line -- and reads one
  entry: the key it stops at, which also tells whether the probe shares the
  prefix (if not, every key of the node lies on one side of it). A build
  takes the longest prefix; an insert of a key outside it shortens p and
  rewrites the words (within the slots it undo-logs anyway); a delete keeps
  p. Version 1 trees (no words) keep their layout; new trees get version 2.
* Compiled, a lookup bisects each node where it lies (``locate``: a slot,
  then the key beside its entry, compared in place): a node's keys share
  one block, where Python key lists scatter them through the heap. Decoded
  key lists are cached per node (``_nodes``, dropped on reload): the
  internal nodes' for the structural paths, and interpreted the leaves'
  too, for lookups (fewer interpreted steps). Compiled, nothing reads a
  leaf's cached keys often enough to pay for keeping them: an insert would
  update a list somewhere in a heap of a million objects, and the
  collector would walk them all. The pool stays authoritative -- values
  are always read from it, and ``check`` compares every cached list
  against the pool.

Typed Python: C types in ``_bptreecore.pxd``. Hot paths read the pool
through the core's views and ``blizzard.pmem._mem`` (entries are unaligned:
``get_u32``; an entry's offset is its slot's low u16: ``get_u16``); splits,
merges and checks keep
whole-node ``struct`` reads.
"""

from __future__ import annotations

import array
import itertools
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import cython

from blizzard.exceptions import InvalidArgumentError, OpDecodeError, StructureCorruptError
from blizzard.structures._corebase import MapCore

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import (
        compare,
        get_u16,
        get_u32,
        get_u64,
        move,
        piece,
        prefetch,
        read,
        set_u16,
        set_u64,
        u32_of,
        write,
    )
    from cython.cimports.blizzard.structures.ops import (
        ORD_CLEAR,
        ORD_DELETE,
        ORD_INIT,
        ORD_POP,
        ORD_POPITEM,
        ORD_PUT,
        key_bounds,
    )
    from cython.cimports.libc.string import memcmp, memcpy
else:
    from blizzard.pmem._mem import (
        compare,
        get_u16,
        get_u32,
        get_u64,
        move,
        piece,
        read,
        set_u16,
        set_u64,
        u32_of,
        write,
    )
    from blizzard.structures.ops import (
        ORD_CLEAR,
        ORD_DELETE,
        ORD_INIT,
        ORD_POP,
        ORD_POPITEM,
        ORD_PUT,
        key_bounds,
    )

if not cython.compiled and TYPE_CHECKING:  # compiled: cimported in the .pxd
    from blizzard.pmem import Transaction

if TYPE_CHECKING:
    from blizzard.structures.registry import Registry

TAG = b"pbptree"
MAGIC = b"BLZBPT02"
MAGIC_V1 = b"BLZBPT01"  # 2-byte slots, no key words: still read and written
LAYOUT_VERSION = 2
#: the layout ``create`` gives a new tree (a test makes version 1 trees with it)
NEW_LAYOUT = LAYOUT_VERSION
HEADER_BYTES = 128
FANOUT_DEFAULT = 64
FANOUT_MIN = 4
FANOUT_MAX = 256
if not cython.compiled:  # the compiled build has these as C constants (_bptreecore.pxd)
    KEY_BYTES_MAX = 256
    VALUE_INLINE_MAX = 128  # larger values live in a block of their own
    NODE_HEAD = 16
    LEAF = 1
    INTERNAL = 2
    NODE_SHIFT = 10  # node >> NODE_SHIFT: the node's number (index of its top in _tops)
    WORD_BYTES = 6  # key bytes in a version 2 slot, past the node's prefix
    PREFIX_MAX = 255  # a node's prefix length is one byte
EXT = 0xFFFFFFFF
ENTRY_MAX = 8 + KEY_BYTES_MAX + VALUE_INLINE_MAX
ENTRY_BYTES_TYPICAL = 112  # heap bytes per slot: room for 16-byte keys, 64-byte values, updates
HEIGHT_MAX = 32

_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_HDR = struct.Struct("<II")
_EXT = struct.Struct("<QQ")
_HOT = struct.Struct("<QQQQ")  # count, applied, root, height at +8
_NODE = struct.Struct("<BBHIQ")  # kind, 0, n, 0, next
_PARAMS = struct.Struct("<II")  # fanout, node_bytes at +40
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")


def slot_bytes(layout: int) -> int:
    """Bytes per slot: a u16 offset (version 1), or the offset and a key word (2)."""
    return 2 if layout == 1 else 8


def heap_start(fanout: int, stride: int = 8) -> int:
    return (NODE_HEAD + stride * fanout + 7) & ~7


def node_bytes_for(fanout: int, stride: int = 8) -> int:
    """Block size of a node: slots plus a heap holding at least four largest entries."""
    heap = max(fanout * ENTRY_BYTES_TYPICAL, 4 * ENTRY_MAX)
    return (heap_start(fanout, stride) + heap + 63) & ~63


assert node_bytes_for(FANOUT_MAX) <= 32 * 1024 < 1 << 16  # one small block; u16 slots reach it
assert node_bytes_for(FANOUT_MIN, 2) - heap_start(FANOUT_MIN, 2) >= 4 * ENTRY_MAX
assert node_bytes_for(FANOUT_MIN, 2) >= 1 << NODE_SHIFT  # two nodes never share a number


def key_word(kb: bytes, p: int) -> int:
    """Bytes ``p`` .. ``p + WORD_BYTES - 1`` of ``kb`` as a big-endian number, zeros
    past its end: keys sharing their first ``p`` bytes compare as their words do,
    unless the words are equal."""
    if not cython.compiled:  # one C call where the loop below takes six steps
        return int.from_bytes(kb[p:p + WORD_BYTES].ljust(WORD_BYTES, b"\0"), "big")
    w = 0
    n = len(kb)
    for i in range(p, p + WORD_BYTES):
        w = w << 8
        if i < n:
            w |= kb[i]
    return w


def shared_prefix(a: bytes, b: bytes, most: int) -> int:
    """How many leading bytes ``a`` and ``b`` share, at most ``most``."""
    i = 0
    n = min(len(a), len(b), most)
    if not cython.compiled:  # the first byte that differs, from their bits' XOR
        x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
        return n - (x.bit_length() + 7) // 8
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_of(keys: list[bytes], first: int = 0) -> int:
    """The prefix length of a version 2 node holding ``keys`` (in order; those in
    use from ``first`` on): all they share, which is what the first and the last
    share."""
    if len(keys) <= first:
        return 0
    return shared_prefix(keys[first], keys[-1], PREFIX_MAX)


def _ask(base, slots, lo: int, hi: int, depth: int) -> None:
    """Request the entries a bisect of slots [lo, hi) may compare in its next ``depth``
    steps: the middle one, then those of both halves (compiled ``_bisect``). An entry
    may cross a line: the line of its byte 31 is asked for too (with 16-byte keys, the
    end of an internal entry's child offset; a leaf's first value bytes)."""
    if lo >= hi or not depth:
        return
    mid = (lo + hi) >> 1
    e = base + (slots[2 * mid] | (slots[2 * mid + 1] << 8))
    prefetch(e + 8)
    prefetch(e + 31)
    _ask(base, slots, lo, mid, depth - 1)
    _ask(base, slots, mid + 1, hi, depth - 1)


def leaf_blob(kb: bytes, vb, block: int) -> bytes:
    """The bytes of a leaf entry (``block``: the value's own block, 0 = inline)."""
    if block:
        return _HDR.pack(EXT, len(kb)) + kb + _EXT.pack(len(vb), block)
    return _HDR.pack(len(vb), len(kb)) + kb + vb


def inner_blob(kb: bytes, child: int) -> bytes:
    return _HDR.pack(8, len(kb)) + kb + _U64.pack(child)


#: A node's cached child offsets: a list[int] for internal nodes, None for leaves.
#: Typed Any because the walk's depth (not a check per step) tells which it is.
Children = Any

class BPTreeCore(MapCore):
    """Apply side and read side of one persistent B+tree."""

    opgroup = 3
    tag = TAG

    magic = MAGIC
    older_magics = (MAGIC_V1,)
    label = "B+tree"
    header_bytes = HEADER_BYTES
    hot_bytes = 32  # count, applied, root, height


    # -- creating and loading ----------------------------------------------------------

    @classmethod
    def create(cls, registry: Registry, tx: Transaction, name: str, key_codec: str,
               value_codec: str) -> BPTreeCore:
        buf = registry.pool.buf
        off = cls._new_header(tx, key_codec, value_codec)
        if NEW_LAYOUT == 1:
            buf[off:off + 8] = MAGIC_V1
        nbytes = node_bytes_for(FANOUT_DEFAULT, slot_bytes(NEW_LAYOUT))
        _PARAMS.pack_into(buf, off + 40, FANOUT_DEFAULT, nbytes)
        root = tx.alloc(nbytes)
        _NODE.pack_into(buf, root, LEAF, 0, 0, 0, 0)
        _HOT.pack_into(buf, off + 8, 0, 0, root, 1)
        tx.set_root(name, off, TAG)
        return cls(registry, name, off)

    @classmethod
    def open(cls, registry: Registry, name: str, off: int) -> BPTreeCore:
        return cls(registry, name, off)

    def reload(self) -> None:
        """Rebuild the volatile state (header fields, caches) from the pool."""
        buf = self.buf
        self.layout = 1 if bytes(buf[self.header_off:self.header_off + 8]) == MAGIC_V1 else 2
        self.stride = slot_bytes(self.layout)
        self._slot_format = "H" if self.layout == 1 else "Q"
        self.count, self._applied, self.root, self.height = _HOT.unpack_from(
            buf, self.header_off + 8)
        self.fanout, self.node_bytes = _PARAMS.unpack_from(buf, self.header_off + 40)
        if not FANOUT_MIN <= self.fanout <= FANOUT_MAX or self.node_bytes != node_bytes_for(
                self.fanout, self.stride) or not 1 <= self.height <= HEIGHT_MAX:
            raise StructureCorruptError(
                f"B+tree {self.name!r}: bad parameters fanout={self.fanout} "
                f"node_bytes={self.node_bytes} height={self.height}")
        self._sizes(self.fanout, self.node_bytes)
        # node offset -> (keys, ptrs): internal nodes keys (entry 0's read as b"") and
        # children; interpreted, leaves too, keys only (ptrs None)
        self._nodes: dict[int, tuple[list[bytes], Children]] = {}
        # the next free heap byte of each node touched since, by node number; 0: not
        # known. One array per pool, shared by its trees, made afresh (zeroed) when the
        # registry rebuilds its cores: never mid-transaction
        self._tops = self.registry.shared("B+tree node tops", self._new_tops)
        self._serial = 0  # the transaction that last undo-logged the hot header fields

    def _sizes(self, fanout: int, node_bytes: int) -> None:
        """Set the fanout and the sizes that follow from it."""
        self.fanout, self.node_bytes = fanout, node_bytes
        self.heap = heap_start(fanout, self.stride)
        self.heap_bytes = node_bytes - self.heap
        # the lines a descent asks for at once when it learns a child's offset:
        # version 1, the first three (a bisect's first steps); version 2 the
        # slots up to the fanout, at most 16 lines (the key words the bisect reads)
        self.slots_end = 192 if self.layout == 1 else min(NODE_HEAD + 8 * fanout, 1024)

    def kill(self) -> None:
        """The tree was dropped (or rolled back out of existence): look empty."""
        super().kill()
        self.count = 0
        self.height = 1
        self.root = 0
        self._nodes = {0: ([], None)}

    def _new_tops(self) -> array.array:
        return array.array("H", bytes(2 * ((self.pool.size >> NODE_SHIFT) + 1)))

    @property
    def applied(self) -> int:
        return self._applied

    # -- reading nodes -------------------------------------------------------------------

    def _load(self, node: int) -> tuple[list[bytes], Children]:
        """Decode and cache the keys, and for internal nodes the children, of ``node``."""
        entry = self._decode(node)
        self._nodes[node] = entry
        return entry

    def _decode(self, node: int) -> tuple[list[bytes], Children]:
        """The keys, and for internal nodes the children, of ``node`` (not cached)."""
        u8 = self.u8
        n = get_u16(u8, node + 2)
        keys = []
        ptrs: list[int] | None = None if u8[node] == LEAF else []
        for i in range(n):
            e = node + get_u16(u8, node + NODE_HEAD + self.stride * i)
            k = get_u32(u8, e + 4)
            keys.append(read(u8, e + 8, k))
            if ptrs is not None:
                ptrs.append(get_u64(u8, e + 8 + k))
        if ptrs is not None and keys:
            keys[0] = b""
        return keys, ptrs

    def _u16(self, off: int) -> int:
        """The u16 at ``off``. A lookup's reads go through the core's own view:
        a view handed to a ``_mem`` function is a 208-byte struct copied per
        call, and a lookup at 10^6 keys made about fifteen such calls."""
        return self.u8[off] | (self.u8[off + 1] << 8)

    def _u32(self, off: int) -> int:
        return self._u16(off) | (self._u16(off + 2) << 16)

    def _u64(self, off: int) -> int:
        if cython.compiled:
            value = 0
            memcpy(cython.address(value), cython.address(self.u8[off]), 8)
            return value
        return get_u64(self.u8, off)

    def _word_at(self, node: int, i: int) -> int:
        """The key word in slot ``i`` of version 2 ``node``: its high 48 bits."""
        if cython.compiled:
            slot: cython.ulonglong = 0
            memcpy(cython.address(slot), cython.address(self.u8[node + NODE_HEAD + 8 * i]), 8)
            return slot >> 16
        return get_u64(self.u8, node + NODE_HEAD + 8 * i) >> 16

    def _entry(self, node: int, i: int) -> int:
        """Absolute offset of entry ``i`` of ``node``."""
        return node + self._u16(node + NODE_HEAD + self.stride * i)

    def _value_at(self, e: int) -> bytes:
        u8 = self.u8
        v = get_u32(u8, e)
        ke = e + 8 + get_u32(u8, e + 4)
        if v != EXT:
            return read(u8, ke, v)
        return read(u8, get_u64(u8, ke + 8), get_u64(u8, ke))  # length, block

    def _block_at(self, e: int) -> int:
        if get_u32(self.u8, e) != EXT:
            return 0
        return get_u64(self.u8, e + 16 + get_u32(self.u8, e + 4))

    def _size_at(self, e: int) -> int:
        v = get_u32(self.u8, e)
        return 8 + get_u32(self.u8, e + 4) + (16 if v == EXT else v)

    def _next(self, leaf: int) -> int:
        return self.u64[(leaf + 8) >> 3]

    def _blobs(self, node: int) -> list[tuple[bytes, bytes]]:
        """Every entry of ``node`` as ``(key, entry bytes)``, in order (keys as stored)."""
        n = get_u16(self.u8, node + 2)
        out = []
        for i in range(n):
            e = node + get_u16(self.u8, node + NODE_HEAD + self.stride * i)
            k = get_u32(self.u8, e + 4)
            out.append((read(self.u8, e + 8, k), read(self.u8, e, self._size_at(e))))
        return out

    def _slots(self, buf: Any, base: int, i: int, j: int) -> tuple[int, ...]:
        """Slots ``i`` .. ``j - 1`` of the node at ``base`` of ``buf`` (the pool, or a
        copy of the node: base 0); each entry's offset is its slot's low 16 bits."""
        return struct.unpack_from(f"<{j - i}{self._slot_format}", buf,
                                  base + NODE_HEAD + self.stride * i)

    def _blobs_interpreted(self, node: int) -> list[tuple[bytes, bytes]]:
        """``_blobs`` as the interpreted build runs it fastest (it is ``_blobs`` there):
        one unpack per entry header, slices of the pool's memoryview."""
        buf = self.buf
        n = _NODE.unpack_from(buf, node)[2]
        out = []
        for s in self._slots(buf, node, 0, n):
            e = node + (s & 0xFFFF)
            v, k = _HDR.unpack_from(buf, e)
            size = 8 + k + (16 if v == EXT else v)
            out.append((buf[e + 8:e + 8 + k].tobytes(), buf[e:e + size].tobytes()))
        return out

    def _live_bytes(self, node: int) -> int:
        buf = self.buf
        n = _NODE.unpack_from(buf, node)[2]
        return sum(self._size_at(node + (s & 0xFFFF)) for s in self._slots(buf, node, 0, n))

    def _top(self, node: int) -> int:
        """Next free heap offset of ``node`` (computed on first touch, then only grown)."""
        top = self._tops[node >> NODE_SHIFT]
        if not top:
            buf = self.buf
            n = _NODE.unpack_from(buf, node)[2]
            top = self.heap
            for s in self._slots(buf, node, 0, n):
                end = (s & 0xFFFF) + self._size_at(node + (s & 0xFFFF))
                if end > top:
                    top = end
            self._tops[node >> NODE_SHIFT] = top
        return top

    def _underfull(self, node: int, n: int) -> bool:
        return 3 * n < self.fanout and 3 * self._live_bytes(node) < self.heap_bytes

    # -- searching -----------------------------------------------------------------------

    def find_leaf(self, kb: bytes) -> int:
        """The leaf whose key range holds ``kb``. Cost: height cached bisects."""
        nodes = self._nodes
        node = self.root
        for _ in range(self.height - 1):
            c = nodes.get(node) or self._load(node)
            node = c[1][bisect_right(c[0], kb) - 1]
        return node

    def _path(self, kb: bytes) -> list[list[int]]:
        """``[node, child index]`` from the root down to the leaf (leaf index: -1)."""
        nodes = self._nodes
        node = self.root
        path = []
        for _ in range(self.height - 1):
            c = nodes.get(node) or self._load(node)
            i = bisect_right(c[0], kb) - 1
            path.append([node, i])
            node = c[1][i]
        path.append([node, -1])
        return path

    def _key_cmp(self, node: int, i: int, kb: bytes) -> int:
        """Entry ``i``'s key of ``node`` against ``kb`` (< 0, 0, > 0), compared in the pool.

        Compiled, the slot and the key's length are read through the core's own
        view (``_u16``, ``_u32``) and the key compared by one ``memcmp``: a view
        handed to a ``_mem`` function is a 208-byte struct copied per call.
        """
        if cython.compiled:
            e = node + self._u16(node + NODE_HEAD + self.stride * i)
            k = self._u32(e + 4)
            n = len(kb)
            m = k if k < n else n
            c = 0
            if m:
                c = memcmp(cython.address(self.u8[e + 8]), cython.cast(cython.p_char, kb), m)
            return c if c else k - n
        e = node + get_u16(self.u8, node + NODE_HEAD + self.stride * i)
        return compare(self.u8, e + 8, get_u32(self.u8, e + 4), kb)

    def _bisect(self, node: int, lo: int, n: int, kb: bytes, right: bool) -> int:
        """``bisect_left`` (``bisect_right`` if ``right``) of ``kb`` among the keys of
        entries ``lo``..``n-1`` of ``node``, searched where they lie in the pool."""
        if self.layout == 2:
            return self._bisect_words(node, lo, n, kb, right)
        hi = n
        if cython.compiled:
            slots = cython.address(self.u8[node + NODE_HEAD])
            base = cython.address(self.u8[node])
        step = 0
        while lo < hi:
            mid = (lo + hi) >> 1
            if cython.compiled:
                # At 10^6 keys every step's key is a cache miss, and each depends on
                # the last. So every third step requests the entries of all the keys
                # it and the next two steps may compare (up to seven lines) at once:
                # three steps wait for one miss, at the price of four lines not used.
                if step % 3 == 0:
                    _ask(base, slots, lo, hi, 3)
                step += 1
            c = self._key_cmp(node, mid, kb)
            if c < 0 or (right and c == 0):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _bisect_words(self, node: int, lo: int, n: int, kb: bytes, right: bool) -> int:
        """``_bisect`` in a version 2 node: by the key words in its slots, which
        arrive with the slots, reading an entry only where words are equal --
        then one entry, to learn whether ``kb`` shares the node's prefix at all.
        (If not, every key of the node lies on one side of it.) ``lo`` is where
        the keys in use start: 0 in a leaf, 1 in an internal node."""
        first = lo
        hi = n
        p = self.u8[node + 1]
        kw = key_word(kb, p)
        while lo < hi:
            mid = (lo + hi) >> 1
            w = self._word_at(node, mid)
            if w == kw:
                c = self._key_cmp(node, mid, kb)
                if c < 0 or (right and c == 0):
                    lo = mid + 1
                else:
                    hi = mid
            elif w < kw:
                lo = mid + 1
            else:
                hi = mid
        if p and first < n:
            # the entry the caller reads next: the child followed, or the key found
            j = lo - 1 if (right and lo > first) or lo == n else lo
            c = self._prefix_cmp(node, j, kb, p)
            if c:
                return first if c > 0 else n
        return lo

    def _prefix_cmp(self, node: int, i: int, kb: bytes, p: int) -> int:
        """The first ``p`` bytes of entry ``i``'s key (the node's prefix) against
        those of ``kb`` (< 0, 0, > 0; a shorter ``kb`` is below)."""
        e = node + self._u16(node + NODE_HEAD + self.stride * i)
        n = len(kb)
        m = p if p < n else n
        if cython.compiled:
            c = memcmp(cython.address(self.u8[e + 8]), cython.cast(cython.p_char, kb), m)
        else:
            c = compare(self.u8, e + 8, m, kb[:m])
        if c:
            return c
        return 1 if m < p else 0

    def locate(self, kb: bytes) -> tuple[int, int, bool]:
        """``(leaf, i, found)``: the leaf whose range holds ``kb``, the index where
        ``kb`` is or would go, and whether it is there.

        Compiled, each node is bisected in the pool: its keys lie side by side
        in one block, where the cached key lists are bytes objects scattered
        through the heap (a cache miss per comparison at 10^6 keys) compared
        through Python's generic comparison. An internal node's entry 0 has no
        separator: its child takes every key below entry 1's.
        """
        node = self.root
        if not node:  # dropped: looks empty
            return 0, 0, False
        for _depth in range(self.height - 1):
            i = self._bisect(node, 1, self._u16(node + 2), kb, True) - 1
            e = node + self._u16(node + NODE_HEAD + self.stride * i)
            node = self._u64(e + 8 + self._u32(e + 4))
            if cython.compiled:  # the rest of the child's slots, all its bisect reads
                p = cython.address(self.u8[node])
                for line in range(64, self.slots_end, 64):
                    prefetch(p + line)
        n = self._u16(node + 2)
        i = self._bisect(node, 0, n, kb, False)
        return node, i, i < n and self._key_cmp(node, i, kb) == 0

    def _locate_interpreted(self, kb: bytes) -> tuple[int, int, bool]:
        """``locate`` as the interpreted build runs it fastest (it is ``locate`` there):
        bisects over the cached key lists, one C call per node."""
        nodes = self._nodes
        leaf = self.root
        try:
            for _ in range(self.height - 1):
                keys, ptrs = nodes[leaf]
                leaf = ptrs[bisect_right(keys, kb) - 1]
            keys = nodes[leaf][0]
        except KeyError:  # a node not cached yet: load the path
            leaf = self.find_leaf(kb)
            keys = self._leaf_keys(leaf)
        i = bisect_left(keys, kb)
        return leaf, i, i < len(keys) and keys[i] == kb

    def get(self, kb: bytes) -> bytes | None:
        """The value under ``kb``, or None. Cost: height node searches, one read."""
        leaf, i, found = self.locate(kb)
        if not found:
            return None
        e = leaf + self._u16(leaf + NODE_HEAD + self.stride * i)
        v = self._u32(e)
        if v != EXT:
            return read(self.u8, e + 8 + len(kb), v)  # the entry's key is kb
        return self._value_at(e)

    def _get_interpreted(self, kb: bytes) -> bytes | None:
        """``get`` as the interpreted build runs it fastest (it is ``get`` there): the
        descent of ``_locate_interpreted`` inline, one call less."""
        nodes = self._nodes
        node = self.root
        try:
            for _depth in range(self.height - 1):
                keys, ptrs = nodes[node]
                node = ptrs[bisect_right(keys, kb) - 1]
            keys = nodes[node][0]
        except KeyError:  # a node not cached yet: load the path, then the fast way
            self._leaf_keys(self.find_leaf(kb))
            return self._get_interpreted(kb)
        i = bisect_left(keys, kb)
        if i < len(keys) and keys[i] == kb:
            u8 = self.u8
            e = node + get_u16(u8, node + NODE_HEAD + self.stride * i)
            v = get_u32(u8, e)
            if v != EXT:
                return read(u8, e + 8 + len(kb), v)  # the entry's key is kb
            return self._value_at(e)
        return None

    def _leftmost(self) -> int:
        node = self.root
        for _ in range(self.height - 1):
            node = (self._nodes.get(node) or self._load(node))[1][0]
        return node

    def _leaf_keys(self, leaf: int) -> list[bytes]:
        """The keys of ``leaf``: cached interpreted, decoded afresh compiled (see ``_nodes``)."""
        if cython.compiled:
            return self._decode(leaf)[0]
        return (self._nodes.get(leaf) or self._load(leaf))[0]

    def leaves(self, reverse: bool = False, start: bytes | None = None) -> Iterator[int]:
        """Leaves in key order (or reversed) from the one holding ``start`` (or the end)."""
        if not reverse:
            leaf = self.find_leaf(start) if start is not None else self._leftmost()
            while leaf:
                yield leaf
                leaf = self._next(leaf)
            return
        # backwards: a stack of [node, index] (the chain only links forwards)
        nodes = self._nodes
        stack = []
        node = self.root
        for _ in range(self.height - 1):
            keys, ptrs = nodes.get(node) or self._load(node)
            i = len(ptrs) - 1 if start is None else bisect_right(keys, start) - 1
            stack.append([node, i])
            node = ptrs[i]
        yield node
        while stack:
            top = stack[-1]
            if top[1] == 0:
                stack.pop()
                continue
            top[1] -= 1
            node = (nodes.get(top[0]) or self._load(top[0]))[1][top[1]]
            for _ in range(self.height - 1 - len(stack)):
                ptrs = (nodes.get(node) or self._load(node))[1]
                stack.append([node, len(ptrs) - 1])
                node = ptrs[-1]
            yield node

    def items_range(self, lo: bytes | None, hi: bytes | None, lo_incl: bool, hi_incl: bool,
                    reverse: bool, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """``(key, value)`` with lo <(=) key <(=) hi, in order. Cost: one leaf walk.

        Keys and values of one leaf are copied before it is yielded from (no
        view of the pool is held while the caller runs: a pool closed meanwhile
        is noticed); mutating the tree while iterating gives unspecified results.
        Keys increase along the leaf chain, so only the first leaf is bisected
        for the near bound; a later leaf is bisected for the far bound only if
        its last (first, reversed) key lies beyond it.
        """
        first = True
        for leaf in self.leaves(reverse, hi if reverse else lo):
            n = get_u16(self.u8, leaf + 2)
            i, j = 0, n
            if reverse:
                if first and hi is not None:
                    j = self._bisect(leaf, 0, n, hi, hi_incl)
                if lo is not None and n and self._key_cmp(leaf, 0, lo) < (0 if lo_incl else 1):
                    i = self._bisect(leaf, 0, n, lo, not lo_incl)
            else:
                if first and lo is not None:
                    i = self._bisect(leaf, 0, n, lo, not lo_incl)
                if hi is not None and n and self._key_cmp(leaf, n - 1, hi) > (0 if hi_incl else -1):
                    j = self._bisect(leaf, 0, n, hi, hi_incl)
            first = False
            if i < j:
                yield from self._leaf_items(leaf, i, j, values, reverse)
            if (j < n) if not reverse else (i > 0):
                return

    def _leaf_items(self, leaf: int, i: int, j: int, values: bool, reverse: bool
                    ) -> list[tuple[bytes, bytes | None]]:
        """``(key, value)`` of entries ``i`` to ``j - 1`` of ``leaf`` (value None unless
        ``values``), reversed if ``reverse``: a scan's hot loop, slicing one copy of the
        leaf (keys and values lie together there, where the cached keys are scattered
        through the heap)."""
        raw = read(self.u8, leaf, self.node_bytes)
        size = len(raw)
        last = size - 8  # where the last entry header could start
        out: list[tuple[bytes, bytes | None]] = []
        s = i
        for slot in self._slots(raw, 0, i, j):
            p = slot & 0xFFFF
            if p > last:
                raise StructureCorruptError(f"B+tree {self.name!r}: leaf {leaf}, slot {s}")
            v = u32_of(raw, p)
            k = u32_of(raw, p + 4)
            ks = p + 8
            ke = ks + k
            if ke > size or (v != EXT and ke + v > size):
                raise StructureCorruptError(f"B+tree {self.name!r}: leaf {leaf}, entry {s}")
            s += 1
            if not values:
                out.append((piece(raw, ks, k), None))
            elif v != EXT:
                out.append((piece(raw, ks, k), piece(raw, ke, v)))
            else:
                out.append((piece(raw, ks, k), self._value_at(leaf + p)))
        if reverse:
            out.reverse()
        return out

    def _leaf_items_interpreted(self, leaf: int, i: int, j: int, values: bool, reverse: bool
                                ) -> list[tuple[bytes, bytes | None]]:
        """``_leaf_items`` as the interpreted build runs it fastest (it is ``_leaf_items``
        there): the keys from the cached list, each value sliced from one copy of the
        leaf -- one step per key where reading keys from the copy takes three."""
        keys = self._leaf_keys(leaf)[i:j]
        if not values:
            vals: list[bytes | None] = [None] * (j - i)
        else:
            raw = read(self.u8, leaf, self.node_bytes)
            last = len(raw) - 8  # where the last entry header could start
            vals = []
            s = i
            unpack = _U32.unpack_from  # one C call per value length, not a Python one
            for slot in self._slots(raw, 0, i, j):
                p = slot & 0xFFFF
                if p > last:
                    raise StructureCorruptError(f"B+tree {self.name!r}: leaf {leaf}, slot {s}")
                v = unpack(raw, p)[0]
                if v != EXT:
                    ks = p + 8 + len(keys[s - i])  # the entry's key is the cached one
                    vals.append(raw[ks:ks + v])
                else:
                    vals.append(self._value_at(leaf + p))
                s += 1
        out = list(zip(keys, vals, strict=True))
        if reverse:
            out.reverse()
        return out

    def item_at(self, index: int) -> tuple[bytes, bytes]:
        """The ``index``-th item (negative from the end). Cost: O(height + |index| / fanout)."""
        if index >= 0:
            if index >= self.count:
                raise IndexError("index out of range")
            for leaf in self.leaves():
                n = get_u16(self.u8, leaf + 2)
                if index < n:
                    return self._leaf_keys(leaf)[index], self._value_at(self._entry(leaf, index))
                index -= n
        else:
            if -index > self.count:
                raise IndexError("index out of range")
            index = -index - 1
            for leaf in self.leaves(reverse=True):
                n = get_u16(self.u8, leaf + 2)
                if index < n:
                    i = n - 1 - index
                    return self._leaf_keys(leaf)[i], self._value_at(self._entry(leaf, i))
                index -= n
        raise StructureCorruptError(f"B+tree {self.name!r}: count disagrees with the leaves")

    def rank(self, kb: bytes, right: bool) -> int:
        """Number of keys < ``kb`` (<= with ``right``). Cost: O(n / fanout) leaf visits."""
        total = 0
        target = self.find_leaf(kb)
        for leaf in self.leaves():
            if leaf == target:
                keys = self._leaf_keys(leaf)
                return total + (bisect_right(keys, kb) if right else bisect_left(keys, kb))
            total += get_u16(self.u8, leaf + 2)
        return total

    def dump(self) -> Iterator[tuple[bytes, ...]]:
        # with values (the default) every pair has its value
        return cast(Iterator[tuple[bytes, bytes]], self.items_range(None, None, True, True,
                                                                    False))

    # -- applying ----------------------------------------------------------------------

    def apply(self, tx: Transaction, index: int, code: int, record: bytes, start: int) -> Any:
        """Apply one Op; validates the record before touching anything."""
        result: Any  # None, bool, bytes, a pair, or an exception instance to raise
        if code == ORD_PUT:
            ks, ke = key_bounds(record, start, "ORD_PUT", KEY_BYTES_MAX)
            self._hot(tx)
            self.put(tx, record[ks:ke], record[ke:])
            result = None
        elif code in (ORD_DELETE, ORD_POP):
            kb = bytes(record[start:])
            self._hot(tx)
            old = self.delete(tx, kb) if len(kb) <= KEY_BYTES_MAX else None
            result = old if code == ORD_POP else old is not None
        elif code == ORD_POPITEM:
            if len(record) - start != 8:
                raise OpDecodeError("ORD_POPITEM takes an 8-byte index")
            i = _I64.unpack_from(record, start)[0]
            self._hot(tx)
            if not -self.count <= i < self.count:
                result = (IndexError("popitem(): index out of range") if self.count
                          else KeyError("popitem(): the map is empty"))
            else:
                kb = self.item_at(i)[0]
                result = (kb, self.delete(tx, kb))
        elif code == ORD_CLEAR:
            if start != len(record):
                raise OpDecodeError("ORD_CLEAR takes no arguments")
            self._hot(tx)
            self.clear(tx)
            result = None
        elif code == ORD_INIT:
            if len(record) - start != 8:
                raise OpDecodeError("ORD_INIT takes an 8-byte parameter")
            fanout = _U64.unpack_from(record, start)[0]
            if not FANOUT_MIN <= fanout <= FANOUT_MAX:
                raise OpDecodeError(f"fanout {fanout} outside {FANOUT_MIN}..{FANOUT_MAX}")
            self._hot(tx)
            result = self._init(tx, fanout)
        else:
            raise OpDecodeError(f"opcode {code:#x} does not apply to a B+tree")
        tx.ready()  # the header's snapshot is durable (see _hot)
        self._store_hot(index)
        self._applied = index
        return result

    def _store_hot(self, applied: int) -> None:
        """Write [count, applied, root, height] from memory (undo-logged by ``_hot``)."""
        u64 = self.u64
        w = (self.header_off >> 3) + 1
        u64[w] = self.count
        u64[w + 1] = applied
        u64[w + 2] = self.root
        u64[w + 3] = self.height

    def _init(self, tx: Transaction, fanout: int) -> Any:
        """Set the fanout of a tree no Op has touched yet; else an error result."""
        if fanout == self.fanout:
            return None
        if self._applied != 0 or self.count != 0:
            return InvalidArgumentError(f"B+tree {self.name!r} has fanout {self.fanout}; "
                                        "the fanout is fixed once the tree has been written")
        nbytes = node_bytes_for(fanout, self.stride)
        tx.add(self.header_off + 40, 8)
        _PARAMS.pack_into(self.buf, self.header_off + 40, fanout, nbytes)
        self._free_node(tx, self.root)
        self._sizes(fanout, nbytes)
        self.root = self._build(tx, LEAF, [], 0)
        return None

    # -- building and patching nodes -----------------------------------------------------

    def _build(self, tx: Transaction, kind: int, entries: list[tuple[bytes, bytes]],
               nxt: int) -> int:
        """A fresh node holding ``entries`` (``(key, entry bytes)``); cached."""
        node = tx.alloc(self.node_bytes)
        n = len(entries)
        assert n <= self.fanout
        keys = [pair[0] for pair in entries]
        wide = self.layout == 2
        first = 0 if kind == LEAF else 1  # an internal node's entry 0 has no key in use
        p = prefix_of(keys, first) if wide else 0
        _NODE.pack_into(self.buf, node, kind, p, n, 0, nxt)
        pos = self.heap
        slots = []
        for i in range(n):
            blob = entries[i][1]
            if wide and i >= first:
                slots.append(key_word(keys[i], p) << 16 | pos)
            else:
                slots.append(pos)
            write(self.u8, node + pos, blob)
            pos += len(blob)
        struct.pack_into(f"<{n}{self._slot_format}", self.buf, node + NODE_HEAD, *slots)
        assert pos <= self.node_bytes
        self._tops[node >> NODE_SHIFT] = pos
        if kind == LEAF:
            if not cython.compiled:  # compiled, leaves are not cached (see _nodes)
                self._nodes[node] = (keys, None)
        else:
            ptrs = [_U64.unpack_from(blob, len(blob) - 8)[0] for _, blob in entries]
            if keys:
                keys[0] = b""
            self._nodes[node] = (keys, ptrs)
        return node

    def _reword(self, node: int, p: int, keys: list[bytes] | None = None) -> None:
        """Give version 2 ``node`` prefix length ``p`` and rewrite the key word of
        every slot (the caller has undo-logged the header and slots): a key that
        does not share the prefix came in, or an internal node's keys changed.
        ``keys``: the node's keys if known (an internal node's cached list), else
        they are read from its entries."""
        u8 = self.u8
        u8[node + 1] = p
        n = self._u16(node + 2)
        first = 0 if u8[node] == LEAF else 1
        for i in range(first, n):
            at = node + NODE_HEAD + 8 * i
            off = get_u16(u8, at)
            if keys is not None:
                kb = keys[i]
            else:
                kb = read(u8, node + off + 8, get_u32(u8, node + off + 4))
            set_u64(u8, at, key_word(kb, p) << 16 | off)

    def _fits(self, entries: list[tuple[bytes, bytes]]) -> bool:
        if len(entries) > self.fanout:
            return False
        total = 0
        for pair in entries:
            total += len(pair[1])
        return total <= self.heap_bytes

    def _halves(self, entries: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
        """Split into two nodes' worth, minimising the fuller one's load."""
        fanout, heap = self.fanout, self.heap_bytes
        sizes = [len(pair[1]) for pair in entries]
        total = 0
        for s in sizes:
            total += s
        n = len(entries)
        best, at, left, at_left = -1, 1, 0, 0
        for s in range(1, n):
            left += sizes[s - 1]
            load = max(s * heap, left * fanout, (n - s) * heap, (total - left) * fanout)
            if best < 0 or load < best:
                best, at, at_left = load, s, left
        assert (at <= fanout and n - at <= fanout and at_left <= heap
                and total - at_left <= heap), "a split half does not fit"
        return [entries[:at], entries[at:]]

    def _free_node(self, tx: Transaction, node: int) -> None:
        self._nodes.pop(node, None)
        self._tops[node >> NODE_SHIFT] = 0
        tx.free(node)

    def _pred_leaf(self, path: list[list[int]], d: int, i: int) -> int:
        """The leaf before the subtree of child ``i`` of the node at depth ``d`` (0: none)."""
        nodes = self._nodes
        for dd in range(d, -1, -1):
            node = path[dd][0]
            idx = i if dd == d else path[dd][1]
            if idx > 0:
                c = (nodes.get(node) or self._load(node))[1][idx - 1]
                for _ in range(dd + 1, self.height - 1):
                    c = (nodes.get(c) or self._load(c))[1][-1]
                return c
        return 0

    def _relink(self, tx: Transaction, pred: int, leaf: int) -> None:
        """Point ``pred.next`` at ``leaf`` (the leftmost leaf has no pred: nothing to do)."""
        if pred:
            tx.add(pred + 8, 8)
            _U64.pack_into(self.buf, pred + 8, leaf)

    def _replace(self, tx: Transaction, path: list[list[int]], d: int,
                 entries: list[tuple[bytes, bytes]]) -> None:
        """Replace the node at depth ``d`` by fresh node(s) holding ``entries``."""
        old = path[d][0]
        leaf = d == self.height - 1
        kind = LEAF if leaf else INTERNAL
        groups = [entries] if self._fits(entries) else self._halves(entries)
        pred = self._pred_leaf(path, d - 1, path[d - 1][1]) if leaf and d > 0 else 0
        nxt = self._next(old) if leaf else 0
        made = []
        for group in reversed(groups):
            nxt = self._build(tx, kind, group, nxt if leaf else 0)
            made.append(nxt)
        made.reverse()
        if leaf:
            self._relink(tx, pred, made[0])
        self._free_node(tx, old)
        if d == 0:
            if len(made) == 1:
                self.root = made[0]
                if not leaf and len(entries) == 1:
                    self._collapse(tx)
            else:
                self.root = self._build(tx, INTERNAL, [
                    (b"", inner_blob(b"", made[0])),
                    (groups[1][0][0], inner_blob(groups[1][0][0], made[1]))], 0)
                self.height += 1
                assert self.height <= HEIGHT_MAX
            return
        children: list[tuple[Any, int]] = [(None, made[0])] + [
            (g[0][0], c) for g, c in zip(groups[1:], made[1:], strict=True)]
        self._parent_replace(tx, path, d - 1, path[d - 1][1], path[d - 1][1] + 1, children)
        if len(made) == 1 and self._underfull(made[0], len(entries)):
            path[d][0] = made[0]
            self._rebalance(tx, path, d)

    def _collapse(self, tx: Transaction) -> None:
        """The internal root has one child: that child becomes the root."""
        old = self.root
        self.root = (self._nodes.get(old) or self._load(old))[1][0]
        self.height -= 1
        self._free_node(tx, old)

    def _parent_replace(self, tx: Transaction, path: list[list[int]], d: int, i: int, j: int,
                        children: list[tuple[Any, int]]) -> None:
        """In the node at depth ``d``, replace children ``i..j-1`` by ``children``:
        ``(separator, child)`` pairs, the first one's separator unused (None).

        The first new child keeps entry ``i``'s separator (its pointer is
        patched in place); the others are ``(separator, child)`` entries
        written past the heap top. Falls back to rewriting the node.
        """
        node = path[d][0]
        keys, ptrs = self._nodes.get(node) or self._load(node)
        n = len(ptrs)
        extra = [inner_blob(k, c) for k, c in children[1:]]
        new_n = n - (j - i) + len(children)
        need = 0
        for blob in extra:
            need += len(blob)
        top = self._top(node)
        if new_n <= self.fanout and top + need <= self.node_bytes:
            e = self._entry(node, i)
            at = e + 8 + get_u32(self.u8, e + 4)  # entry i's child pointer
            tx.add(at, 8)
            set_u64(self.u8, at, children[0][1])
            fresh = top
            for blob in extra:
                write(self.u8, node + top, blob)
                tx.flush(node + top, len(blob))
                top += len(blob)
            self._tops[node >> NODE_SHIFT] = top
            stride = self.stride
            tx.add(node, NODE_HEAD + stride * max(n, new_n))
            # slots i+1..j-1 give way to one per new entry: the slots from j on move
            slots = node + NODE_HEAD
            move(self.u8, slots + stride * (i + len(children)), slots + stride * j,
                 stride * (n - j))
            for m in range(len(extra)):
                set_u16(self.u8, slots + stride * (i + 1 + m), fresh)
                fresh += len(extra[m])
            set_u16(self.u8, node + 2, new_n)
            keys[i + 1:j] = [k for k, _ in children[1:]]
            ptrs[i:j] = [c for _, c in children]
            if self.layout == 2:  # the separators changed: so may their prefix
                self._reword(node, prefix_of(keys, 1), keys)
            if d == 0:
                if new_n == 1:
                    self._collapse(tx)
            elif self._underfull(node, new_n):
                self._rebalance(tx, path, d)
            return
        entries = self._blobs(node)
        first_key = entries[i][0]
        entries[i:j] = [(first_key, inner_blob(first_key, children[0][1]))] + [
            (k, b) for (k, _), b in zip(children[1:], extra, strict=True)]
        self._replace(tx, path, d, entries)

    def _rebalance(self, tx: Transaction, path: list[list[int]], d: int) -> None:
        """The node at depth ``d`` is under a third full: merge with or borrow from a sibling."""
        parent, pi = path[d - 1]
        pkeys, pptrs = self._nodes.get(parent) or self._load(parent)
        li = pi - 1 if pi > 0 else pi
        assert li + 1 < len(pptrs), "a non-root node has a sibling"
        left, right = pptrs[li], pptrs[li + 1]
        leaf = d == self.height - 1
        el, er = self._blobs(left), self._blobs(right)
        if not leaf:
            # right's first entry carries no separator of its own: it takes the parent's
            sep = pkeys[li + 1]
            er[0] = (sep, inner_blob(sep, _U64.unpack_from(er[0][1], len(er[0][1]) - 8)[0]))
        both = el + er
        kind = LEAF if leaf else INTERNAL
        pred = self._pred_leaf(path, d - 1, li) if leaf else 0
        nxt = self._next(right) if leaf else 0
        self._free_node(tx, left)
        self._free_node(tx, right)
        if self._fits(both):
            merged = self._build(tx, kind, both, nxt)
            if leaf:
                self._relink(tx, pred, merged)
            self._parent_replace(tx, path, d - 1, li, li + 2, [(None, merged)])
            return
        a, b = self._halves(both)
        nb = self._build(tx, kind, b, nxt)
        na = self._build(tx, kind, a, nb if leaf else 0)
        if leaf:
            self._relink(tx, pred, na)
        self._parent_replace(tx, path, d - 1, li, li + 2, [(None, na), (b[0][0], nb)])

    # -- the operations ----------------------------------------------------------------

    def _write_entry(self, at: int, kb: bytes, vb: bytes, block: int) -> None:
        """Store the leaf entry for ``kb`` -> ``vb`` at ``at`` (``block``: the value's own
        block, 0 = inline), the bytes of ``leaf_blob`` with no bytes object made."""
        klen = len(kb)
        set_u64(self.u8, at, (EXT if block else len(vb)) | klen << 32)  # vlen, klen
        write(self.u8, at + 8, kb)
        if block:
            set_u64(self.u8, at + 8 + klen, len(vb))
            set_u64(self.u8, at + 16 + klen, block)
        else:
            write(self.u8, at + 8 + klen, vb)

    def _write_entry_interpreted(self, at: int, kb: bytes, vb: bytes, block: int) -> None:
        """``_write_entry`` as the interpreted build runs it fastest: one write of the
        entry's bytes."""
        write(self.u8, at, leaf_blob(kb, vb, block))

    def put(self, tx: Transaction, kb: bytes, vb: bytes) -> None:
        """Insert or replace. Cost: 2 undo entries; now and then a bounded split."""
        leaf, i, found = self.locate(kb)
        n = get_u16(self.u8, leaf + 2)
        block = 0
        if len(vb) > VALUE_INLINE_MAX:
            block = tx.alloc(len(vb))
            write(self.u8, block, vb)
        size = 8 + len(kb) + (16 if block else len(vb))
        top = self._tops[leaf >> NODE_SHIFT]
        if not top:
            top = self._top(leaf)
        stride = self.stride
        slot_at = leaf + NODE_HEAD + stride * i
        if found:
            old = self._block_at(self._entry(leaf, i))
            if old:
                tx.free(old)
            if top + size <= self.node_bytes:
                self._write_entry(leaf + top, kb, vb, block)
                tx.flush(leaf + top, size)
                self._tops[leaf >> NODE_SHIFT] = top + size
                tx.add(slot_at, 2)
                set_u16(self.u8, slot_at, top)
                if self.height > 1 and 3 * n < self.fanout and self._underfull(leaf, n):
                    self._rebalance(tx, self._path(kb), self.height - 1)
                return
            entries = self._blobs(leaf)
            entries[i] = (kb, leaf_blob(kb, vb, block))
            self._replace(tx, self._path(kb), self.height - 1, entries)
            return
        self.count += 1
        if n < self.fanout and top + size <= self.node_bytes:
            # the entry into free heap (flushed, not logged), then the logged slot array
            self._write_entry(leaf + top, kb, vb, block)
            tx.flush(leaf + top, size)
            self._tops[leaf >> NODE_SHIFT] = top + size
            end = leaf + NODE_HEAD + stride * n
            tx.add(leaf, end + stride - leaf)
            move(self.u8, slot_at + stride, slot_at, end - slot_at)
            set_u16(self.u8, leaf + 2, n + 1)
            if stride == 2:
                set_u16(self.u8, slot_at, top)
            else:
                self._word_in(leaf, i, n, kb, top)
            if not cython.compiled:  # interpreted lookups bisect the leaf's cached keys
                cached = self._nodes.get(leaf)
                if cached is not None:
                    cached[0].insert(i, kb)
            return
        entries = self._blobs(leaf)
        entries.insert(i, (kb, leaf_blob(kb, vb, block)))
        self._replace(tx, self._path(kb), self.height - 1, entries)

    def _word_in(self, leaf: int, i: int, n: int, kb: bytes, off: int) -> None:
        """Fill slot ``i`` of version 2 ``leaf`` for ``kb`` at ``off``, just inserted
        among ``n`` entries (the header and slots are undo-logged). A key that does
        not share the leaf's prefix shortens it, and every key word is rewritten."""
        u8 = self.u8
        p = u8[leaf + 1]
        if n == 0:
            q = min(len(kb), PREFIX_MAX)
        else:  # a neighbour's key (its lines are likely cached by the search)
            q = p
            cached = None if cython.compiled else self._nodes.get(leaf)
            if cached is not None:  # interpreted: the leaf's keys, before kb goes in
                other = cached[0][i if i < n else i - 1]
                if p and kb[:p] != other[:p]:
                    q = shared_prefix(kb, other, p)
            elif p:
                j = i + 1 if i < n else i - 1
                if self._prefix_cmp(leaf, j, kb, p):  # (compared in place: no bytes made)
                    e = self._entry(leaf, j)
                    q = shared_prefix(kb, read(u8, e + 8, min(p, get_u32(u8, e + 4))), p)
        set_u64(u8, leaf + NODE_HEAD + 8 * i, key_word(kb, q) << 16 | off)
        if q != p:
            self._reword(leaf, q)

    def delete(self, tx: Transaction, kb: bytes) -> bytes | None:
        """Remove ``kb``; its value, or None if absent. Cost: 2 undo entries; now and then
        a merge or borrow with a sibling."""
        buf = self.buf
        leaf, i, found = self.locate(kb)
        if not found:
            return None
        n = get_u16(self.u8, leaf + 2)
        self._top(leaf)  # before the first change: see the module docstring
        e = self._entry(leaf, i)
        old = self._value_at(e)
        block = self._block_at(e)
        if block:
            tx.free(block)
        stride = self.stride
        slot_at = leaf + NODE_HEAD + stride * i
        end = leaf + NODE_HEAD + stride * n
        tx.add(leaf, NODE_HEAD + stride * n)
        buf[slot_at:end - stride] = buf[slot_at + stride:end].tobytes()
        _U16.pack_into(buf, leaf + 2, n - 1)
        cached = self._nodes.get(leaf)  # (interpreted: the leaf's keys)
        if cached is not None:
            del cached[0][i]
        self.count -= 1
        if self.height > 1 and 3 * (n - 1) < self.fanout and self._underfull(leaf, n - 1):
            self._rebalance(tx, self._path(kb), self.height - 1)
        return old

    def _all_nodes(self) -> Iterator[tuple[int, int]]:
        """``(node, depth)`` of every node, parents before children."""
        stack = [(self.root, 0)]
        while stack:
            node, d = stack.pop()
            yield node, d
            if d < self.height - 1:
                ptrs = (self._nodes.get(node) or self._load(node))[1]
                stack.extend((c, d + 1) for c in ptrs)

    def clear(self, tx: Transaction) -> None:
        """Free every node and value block; one empty leaf root."""
        for node, d in list(self._all_nodes()):
            if d == self.height - 1:
                n = _NODE.unpack_from(self.buf, node)[2]
                for s in self._slots(self.buf, node, 0, n):
                    block = self._block_at(node + (s & 0xFFFF))
                    if block:
                        tx.free(block)
            self._free_node(tx, node)
        self.root = self._build(tx, LEAF, [], 0)
        self.height = 1
        self.count = 0

    def destroy(self, tx: Transaction) -> None:
        """Free every block of the tree, header included (DROP)."""
        self.clear(tx)
        self._free_node(tx, self.root)
        tx.free(self.header_off)

    def load(self, tx: Transaction, items: list[tuple[bytes, ...]]) -> None:
        """Bulk insert (snapshot restore) inside ``tx``."""
        self._serial = tx.serial  # a fresh header: nothing to undo-log
        for key, value in items:
            self.put(tx, bytes(key), bytes(value))
        self._store_hot(0)

    # -- checking ------------------------------------------------------------------------

    def check(self) -> None:
        """Walk the whole tree; raise StructureCorruptError on any broken invariant. O(n)."""
        pool, buf, name = self.pool, self.buf, self.name

        def fail(msg: str) -> None:
            raise StructureCorruptError(f"B+tree {name!r}: {msg}")

        off = self.header_off
        if bytes(buf[off:off + 8]) != (MAGIC_V1 if self.layout == 1 else MAGIC):
            fail("bad magic")
        hot = _HOT.unpack_from(buf, off + 8)
        if hot != (self.count, self._applied, self.root, self.height):
            fail(f"header (count, applied, root, height) = {hot}, memory has "
                 f"{(self.count, self._applied, self.root, self.height)}")
        if _PARAMS.unpack_from(buf, off + 40) != (self.fanout, self.node_bytes):
            fail("fanout / node_bytes disagree with memory")
        leaves: list[int] = []
        seen: set[int] = set()
        total = 0
        # (node, depth, lo, hi): keys below must be in [lo, hi)
        stack: list[tuple[int, int, bytes | None, bytes | None]] = [
            (self.root, 0, None, None)]
        while stack:
            node, d, lo, hi = stack.pop()
            if node in seen:
                fail(f"node {node} reached twice")
            seen.add(node)
            if not pool.is_allocated(node) or pool.usable_size(node) < self.node_bytes:
                fail(f"node {node} is not an allocated {self.node_bytes}-byte block")
            kind, p, n, _, nxt = _NODE.unpack_from(buf, node)
            leaf = d == self.height - 1
            if kind != (LEAF if leaf else INTERNAL):
                fail(f"node {node} at depth {d} has kind {kind}")
            if n > self.fanout:
                fail(f"node {node} holds {n} > fanout {self.fanout} entries")
            if node != self.root and not (3 * n >= self.fanout
                                          or 3 * self._live_bytes(node) >= self.heap_bytes):
                fail(f"node {node} is under a third full ({n} entries)")
            if node == self.root and not leaf and n < 2:
                fail(f"internal root has {n} children")
            entries = self._blobs(node)
            raw_slots = self._slots(buf, node, 0, n)
            slots = [s & 0xFFFF for s in raw_slots]
            spans = sorted((s, s + len(b)) for s, (_, b) in zip(slots, entries, strict=True))
            for a, b in itertools.pairwise(spans):
                if b[0] < a[1]:
                    fail(f"node {node}: entries overlap")
            if spans and (spans[0][0] < self.heap or spans[-1][1] > self.node_bytes):
                fail(f"node {node}: an entry lies outside the heap")
            top = self._tops[node >> NODE_SHIFT]
            if top and spans and top < spans[-1][1]:
                fail(f"node {node}: cached heap top {top} below a live entry")
            keys = [k for k, _ in entries]
            for k in keys:
                if len(k) > KEY_BYTES_MAX:
                    fail(f"node {node}: key of {len(k)} bytes")
            check_keys = keys if leaf else keys[1:]
            if any(a >= b for a, b in itertools.pairwise(check_keys)):
                fail(f"node {node}: keys out of order")
            if self.layout == 1 and p:
                fail(f"node {node}: a prefix length ({p}) in a version 1 node")
            if self.layout == 2:
                if check_keys and any(k[:p] != check_keys[0][:p] or len(k) < p
                                      for k in check_keys):
                    fail(f"node {node}: a key does not share the node's {p}-byte prefix")
                words = [s >> 16 for s in raw_slots]
                if words != [0 if not leaf and i == 0 else key_word(k, p)
                             for i, k in enumerate(keys)]:
                    fail(f"node {node}: a slot's key word disagrees with its key")
            for k in check_keys:
                if (lo is not None and k < lo) or (hi is not None and k >= hi):
                    fail(f"node {node}: key {k!r:.40} outside its parent's range")
            cached = self._nodes.get(node)
            if leaf:
                if cached is not None and (cached[0] != keys or cached[1] is not None):
                    fail(f"leaf {node}: cached keys differ from the pool")
                for _, blob in entries:
                    v, k = _HDR.unpack_from(blob, 0)
                    if v == EXT:
                        vlen, block = _EXT.unpack_from(blob, 8 + k)
                        if vlen <= VALUE_INLINE_MAX:
                            fail(f"leaf {node}: a small value stored out of line")
                        if not pool.is_allocated(block) or pool.usable_size(block) < vlen:
                            fail(f"leaf {node}: value block {block} is not allocated")
                    elif v > VALUE_INLINE_MAX:
                        fail(f"leaf {node}: an inline value of {v} bytes")
                total += n
                leaves.append(node)
                continue
            if nxt:
                fail(f"internal node {node} has a next pointer")
            children = [_U64.unpack_from(blob, len(blob) - 8)[0] for _, blob in entries]
            for _, blob in entries:
                if _HDR.unpack_from(blob, 0)[0] != 8:
                    fail(f"internal node {node}: an entry is not a child pointer")
            if cached is not None and (cached[0] != [b"", *keys[1:]] or cached[1] != children):
                fail(f"internal node {node}: cached entries differ from the pool")
            bounds = [lo, *keys[1:], hi]
            # push right to left so leaves come off the stack in key order
            for c in range(n - 1, -1, -1):
                stack.append((children[c], d + 1, bounds[c], bounds[c + 1]))
        if total != self.count:
            fail(f"count is {self.count} but the leaves hold {total} entries")
        chain: list[int] = []
        at = leaves[0] if leaves else 0
        while at and len(chain) <= len(leaves):
            chain.append(at)
            at = self._next(at)
        if chain != leaves:
            fail("the leaf chain does not visit the leaves in key order")
        last_keys = [self._blobs(x) for x in leaves]
        flat = [k for entries in last_keys for k, _ in entries]
        if any(a >= b for a, b in itertools.pairwise(flat)):
            fail("keys out of order across leaves")
        for node in self._nodes:
            if node not in seen:
                fail(f"node {node} is cached but not in the tree")


if not cython.compiled:  # the forms shaped for the interpreter (cached key lists, fewer calls)
    BPTreeCore.locate = BPTreeCore._locate_interpreted  # type: ignore[method-assign]
    BPTreeCore.get = BPTreeCore._get_interpreted  # type: ignore[method-assign]
    BPTreeCore._leaf_items = BPTreeCore._leaf_items_interpreted  # type: ignore[method-assign]
    BPTreeCore._blobs = BPTreeCore._blobs_interpreted  # type: ignore[method-assign]
    BPTreeCore._write_entry = BPTreeCore._write_entry_interpreted  # type: ignore[method-assign]
