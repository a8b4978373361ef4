"""The persistent skiplist behind PSkipList: one block per entry, towers of links.

Layout version 1. Header block (the structure's root; tag ``pskiplst``)::

    offset | size      | field
    0      | 8         | magic b"BLZSKL01"
    8      | 8         | count: live entries
    16     | 8         | applied: index of the last Op applied to this skiplist
    24     | 8         | level: towers in use (1..LEVEL_MAX); head links above are 0
    32     | 8         | rng: state of the splitmix64 generator drawing tower heights
    40     | 24        | reserved, zero
    64     | 16        | key codec name (UTF-8, NUL padded)
    80     | 16        | value codec name
    96     | 32        | reserved, zero
    128    | 8*32      | head: the first node of each level (0 = none)

Node (a block of its own)::

    offset | size  | field
    0      | 1     | height h (1..LEVEL_MAX)
    1      | 3     | reserved, zero
    4      | 4     | klen (<= KEY_BYTES_MAX)
    8      | 4     | vlen, or 0xFFFFFFFF: the value is in a block of its own
    12     | 4     | reserved, zero
    16     | 8*h   | next: the following node at each level 0..h-1 (0 = none)
    16+8h  | klen  | key
    ...    | vlen  | value -- or u64 value length, u64 offset of its block

Invariants (``check``): every level is sorted by key, strictly; each node
of level l+1 is on level l (towers are contiguous); level 0 holds ``count``
nodes; ``level`` is 1 or the highest level with a node.

Why it is shaped so:

* Tower heights come from a generator whose state is in the header (and in
  the same undo-logged range as ``count``): replicas applying the same Ops
  build the same towers, and so does a restart. P(height > h) = 4**-h.
* An insert writes its node into a fresh block (no undo entry) and then
  patches one 8-byte link per level of its tower (1.33 on average) -- each
  an undo entry -- plus the header. A delete patches the same links and
  frees the block. An update of the same length rewrites the value in place;
  otherwise a new node of the same height replaces the old one.
* Searching starts from a DRAM index of the tall towers (height >= 2: a
  quarter of the nodes, the contents of level 1): a
  :class:`~blizzard.structures._keyindex.KeyIndex`, chunks of sorted keys
  binary-searched by an 8-byte word of each key in a C array (compiled),
  O(log n) with whole keys compared only among equal words; from the last
  tall node below the key, level 0 is
  followed for about 3 links. Inserts and deletes of towers no higher than
  2 get both their predecessors from it; taller towers (1 in 16) search
  from the head. Keys are read from the nodes themselves (they share cache
  lines with the links being followed). The index is volatile, dropped on
  reload or abort and rebuilt from the pool on first use; links, keys and
  values are always read from the pool, and ``check`` compares the index
  with level 1.
* Compiled, the index also keeps, beside each tall node, the level-0 nodes
  the last lookup from it walked (``_hinted``; four, ``Run.hints``): the
  next lookup from there asks for their lines at once, so the misses of a
  walk overlap where each waited for the last link. Hints are never
  trusted -- the walk follows the pool's links and rewrites them -- so a
  stale one costs a line read for nothing, and nothing else maintains them.
* A forward scan reads level 0 in runs of RUN_MAX nodes. At 10^6 keys
  inserted in random order each node is a cache miss, and followed one by
  one each waits for the last; compiled, a run first follows level 0 from
  the next SEGMENTS tall nodes the index holds, all the segments side by
  side (``_warm``), so the misses overlap.

Typed Python: C types in ``_skiplistcore.pxd``. A node's fields are read
through the core's views: ``u8[x]`` the height, ``u32[(x >> 2) + 1]`` and
``+ 2`` klen and vlen, ``u64[(x >> 3) + 2 + l]`` link l (the head alike).
"""

from __future__ import annotations

import array
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import cython

from blizzard.exceptions import InvalidArgumentError, OpDecodeError, StructureCorruptError
from blizzard.pmem._mem import views
from blizzard.structures._corebase import MapCore
from blizzard.structures._keyindex import KeyIndex

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import get_u64, prefetch, read, write
    from cython.cimports.blizzard.structures._keyindex import HINTS
    from cython.cimports.blizzard.structures.ops import (
        ORD_CLEAR,
        ORD_DELETE,
        ORD_INIT,
        ORD_POP,
        ORD_POPITEM,
        ORD_PUT,
        key_bounds,
    )
else:
    from blizzard.pmem._mem import get_u64, read, write
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

TAG = b"pskiplst"
MAGIC = b"BLZSKL01"
LAYOUT_VERSION = 1
if not cython.compiled:  # the compiled build has these as C constants (_skiplistcore.pxd)
    LEVEL_MAX = 32
    HEAD_OFF = 128
    KEY_BYTES_MAX = 1024
    VALUE_INLINE_MAX = 4096
    NODE_HEAD = 16
    TALL = 2  # towers at least this high are indexed in DRAM (a quarter of the nodes)
    RUN_MAX = 64  # nodes a forward scan reads between yields
    SEGMENTS = 16  # tall nodes a compiled scan's run follows from side by side (_warm)
HEADER_BYTES = HEAD_OFF + 8 * LEVEL_MAX
SEED_DEFAULT = 0x5EED_B122_A4D5_0001
EXT = 0xFFFFFFFF
_MASK = (1 << 64) - 1

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_NODE = struct.Struct("<BxxxII")  # height, klen, vlen
_EXT = struct.Struct("<QQ")
_HOT = struct.Struct("<QQQQ")  # count, applied, level, rng at +8


def splitmix64(state: int) -> tuple[int, int]:
    """``(new state, output)`` of splitmix64: deterministic, seeded by the pool."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


def height_of(z: int) -> int:
    """Tower height from a random word: P(height > h) = 4**-h."""
    h = 1
    while z & 3 == 0 and h < LEVEL_MAX:
        h += 1
        z >>= 2
    return h


class SkipListCore(MapCore):
    """Apply side and read side of one persistent skiplist."""

    opgroup = 3
    tag = TAG

    magic = MAGIC
    label = "skiplist"
    header_bytes = HEADER_BYTES
    hot_bytes = 32  # count, applied, level, rng

    # -- creating and loading ----------------------------------------------------------

    @classmethod
    def create(cls, registry: Registry, tx: Transaction, name: str, key_codec: str,
               value_codec: str) -> SkipListCore:
        buf = registry.pool.buf
        off = cls._new_header(tx, key_codec, value_codec)
        _HOT.pack_into(buf, off + 8, 0, 0, 1, SEED_DEFAULT)
        tx.set_root(name, off, TAG)
        return cls(registry, name, off)

    @classmethod
    def open(cls, registry: Registry, name: str, off: int) -> SkipListCore:
        return cls(registry, name, off)

    def reload(self) -> None:
        """Rebuild the volatile state (header fields, key cache) from the pool."""
        # the head behaves as a node whose links start at HEAD_OFF: link l of x is at
        # x + NODE_HEAD + 8 * l for the head and every node alike
        self.head = self.header_off + HEAD_OFF - NODE_HEAD
        self.count, self._applied, self.level, self.rng = _HOT.unpack_from(
            self.buf, self.header_off + 8)
        if not 1 <= self.level <= LEVEL_MAX:
            raise StructureCorruptError(f"skiplist {self.name!r}: level {self.level}")
        self._tall: KeyIndex | None = None  # built on first use
        self._ends = array.array("q", bytes(8 * SEGMENTS))  # scratch of _warm
        self._cursors = array.array("q", bytes(8 * (SEGMENTS + 1)))
        self._serial = 0  # the transaction that last undo-logged the hot header fields

    def kill(self) -> None:
        """The skiplist was dropped (or rolled back out of existence): look empty."""
        super().kill()
        self.count = 0
        self.level = 1
        self.buf = memoryview(bytearray(HEADER_BYTES + 64))
        self.u8, self.u32, self.u64 = views(self.buf, len(self.buf))  # an empty head
        self.head = HEAD_OFF - NODE_HEAD
        self._tall = KeyIndex([])

    @property
    def applied(self) -> int:
        return self._applied

    @property
    def seed_state(self) -> int:
        return self.rng

    # -- reading -----------------------------------------------------------------------

    def _key(self, node: int) -> bytes:
        # read from the node, not a DRAM cache: the key shares cache lines with the links
        # the search reads anyway, where a dict of a million keys misses twice
        return read(self.u8, node + NODE_HEAD + 8 * self.u8[node], self.u32[(node >> 2) + 1])

    def _value(self, node: int) -> bytes:
        u32 = self.u32
        vlen = u32[(node >> 2) + 2]
        vs = node + NODE_HEAD + 8 * self.u8[node] + u32[(node >> 2) + 1]
        if vlen != EXT:
            return read(self.u8, vs, vlen)
        return read(self.u8, get_u64(self.u8, vs + 8), get_u64(self.u8, vs))  # length, block

    def _block(self, node: int) -> int:
        if self.u32[(node >> 2) + 2] != EXT:
            return 0
        return get_u64(self.u8, node + NODE_HEAD + 8 * self.u8[node]
                       + self.u32[(node >> 2) + 1] + 8)

    def _next(self, node: int, level: int = 0) -> int:
        return self.u64[(node >> 3) + 2 + level]

    def _preds(self, kb: bytes) -> list[int]:
        """For each level, the last node (or the head) with a key < ``kb``."""
        u64 = self.u64
        x = self.head
        preds = [x] * self.level
        for lvl in range(self.level - 1, -1, -1):
            nxt = u64[(x >> 3) + 2 + lvl]
            while nxt:
                if self._key(nxt) >= kb:
                    break
                x = nxt
                nxt = u64[(x >> 3) + 2 + lvl]
            preds[lvl] = x
        return preds

    def _index(self) -> KeyIndex:
        """The volatile index of tall towers (key -> node): level 1 of the pool, in DRAM."""
        tall = self._tall
        if tall is None:
            pairs = []
            x = self._next(self.head, TALL - 1)
            while x:
                pairs.append((self._key(x), x))
                x = self._next(x, TALL - 1)
            tall = self._tall = KeyIndex(pairs)
        return tall

    def _start(self, kb: bytes) -> int:
        """The last tall node with a key < ``kb`` (or the head): where level 0 is searched
        from, and the level-1 predecessor of ``kb``. Cost: one bisect."""
        tall = self._tall
        if tall is None:
            tall = self._index()
        return tall.before(kb) or self.head

    def _lower(self, kb: bytes, strict: bool) -> int:
        """The first node with key >= ``kb`` (> with ``strict``), or 0."""
        u64 = self.u64
        nxt = u64[(self._start(kb) >> 3) + 2]
        while nxt:
            k = self._key(nxt)
            if k > kb or (k == kb and not strict):
                return nxt
            nxt = u64[(nxt >> 3) + 2]
        return 0

    def _before(self, kb: bytes | None, inclusive: bool) -> int:
        """The last node with key < ``kb`` (<= with ``inclusive``; None: the last node), or 0."""
        u64 = self.u64
        if kb is None:
            x = self.head
            for lvl in range(self.level - 1, -1, -1):
                nxt = u64[(x >> 3) + 2 + lvl]
                while nxt:
                    x = nxt
                    nxt = u64[(x >> 3) + 2 + lvl]
        else:
            x = self._start(kb)
            nxt = u64[(x >> 3) + 2]
            while nxt:
                k = self._key(nxt)
                if k > kb or (k == kb and not inclusive):
                    break
                x = nxt
                nxt = u64[(x >> 3) + 2]
        return 0 if x == self.head else x

    def _hinted(self, tall: KeyIndex, x: int):
        """Ask for the lines of the level-0 nodes last walked from ``x``, the node
        ``tall.before`` just found (compiled); their hints, to be rewritten by
        the walk (NULL if ``x`` is the head).

        The index keeps, beside each tall node, the level-0 nodes the last walk
        from it passed (``Run.hints``). Asked for at once, their misses overlap
        where each waited for the last link; the walk itself follows the pool's
        links, so a stale hint costs a line read for nothing, never a wrong
        answer."""
        hints = cython.cast(cython.p_longlong, cython.NULL)
        run = tall.found_run
        if x != self.head and run is not None:
            hints = run.hints.data.as_longlongs + HINTS * tall.found_at  # type: ignore[attr-defined]
            base = cython.address(self.u8[0])
            for q in range(HINTS):
                if hints[q]:
                    prefetch(base + hints[q])
        return hints

    def _find(self, kb: bytes) -> tuple[int, int]:
        """``(level-0 predecessor of kb, the node holding kb or 0)``."""
        u64 = self.u64
        x = self._start(kb)
        if cython.compiled:
            hints = self._hinted(self._index(), x)
            seen = 0
        nxt = u64[(x >> 3) + 2]
        while nxt:
            if cython.compiled and hints and seen < HINTS:
                hints[seen] = nxt
                seen += 1
            k = self._key(nxt)
            if k >= kb:
                return x, nxt if k == kb else 0
            x = nxt
            nxt = u64[(x >> 3) + 2]
        return x, 0

    def get(self, kb: bytes) -> bytes | None:
        """The value under ``kb``, or None. Cost: a bisect over the tall towers, then
        about 3 level-0 nodes read (expected)."""
        u8 = self.u8  # (one view a line: a tuple of views would box them)
        u32 = self.u32
        u64 = self.u64
        tall = self._tall
        if tall is None:
            tall = self._index()
        x = tall.before(kb) or self.head
        if cython.compiled:
            hints = self._hinted(tall, x)
            seen = 0
        nxt = u64[(x >> 3) + 2]
        while nxt:
            if cython.compiled and hints and seen < HINTS:
                hints[seen] = nxt
                seen += 1
            ks = nxt + NODE_HEAD + 8 * u8[nxt]
            klen = u32[(nxt >> 2) + 1]
            k = read(u8, ks, klen)
            if k >= kb:
                if k != kb:
                    return None
                vlen = u32[(nxt >> 2) + 2]
                if vlen != EXT:
                    return read(u8, ks + klen, vlen)
                return self._value(nxt)
            nxt = u64[(nxt >> 3) + 2]
        return None

    def items_range(self, lo: bytes | None, hi: bytes | None, lo_incl: bool, hi_incl: bool,
                    reverse: bool, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """``(key, value)`` with lo <(=) key <(=) hi. Forwards: one search, then level-0
        links, read in runs of :data:`RUN_MAX` nodes (no view of the pool is held
        while the caller runs: a pool closed meanwhile is noticed); backwards: one
        O(log n) search per item (there are no back links)."""
        if not reverse:
            x = self._next(self.head) if lo is None else self._lower(lo, not lo_incl)
            while x:
                items, x = self._run(x, hi, hi_incl, values)
                yield from items
            return
        x = self._before(hi, hi_incl)
        while x:
            kb = self._key(x)
            if lo is not None and (kb < lo or (kb == lo and not lo_incl)):
                return
            yield kb, self._value(x) if values else None
            x = self._before(kb, False)

    def _run(self, x: int, hi: bytes | None, hi_incl: bool, values: bool
             ) -> tuple[list[tuple[bytes, bytes | None]], int]:
        """``(items, next node)``: up to RUN_MAX items from node ``x`` on, up to ``hi``
        (next node 0 when the range or the list ends): a scan's hot loop."""
        u8 = self.u8  # (one view a line: a tuple of views would box them)
        u32 = self.u32
        u64 = self.u64
        items: list[tuple[bytes, bytes | None]] = []
        if cython.compiled:
            self._warm(x)
        for _ in range(RUN_MAX):
            ks = x + NODE_HEAD + 8 * u8[x]
            klen, vlen = u32[(x >> 2) + 1], u32[(x >> 2) + 2]
            # (interpreted, a call to read costs more than the slice itself)
            kb = read(u8, ks, klen) if cython.compiled else u8[ks:ks + klen].tobytes()
            if hi is not None and (kb > hi or (kb == hi and not hi_incl)):
                return items, 0
            if not values:
                items.append((kb, None))
            elif vlen != EXT:
                vs = ks + klen
                items.append((kb, read(u8, vs, vlen) if cython.compiled
                               else u8[vs:vs + vlen].tobytes()))
            else:
                items.append((kb, self._value(x)))
            x = u64[(x >> 3) + 2]
            if not x:
                break
        return items, x

    def _warm(self, x: int) -> None:
        """Request the lines of about RUN_MAX level-0 nodes from ``x`` on, many at a
        time (compiled scans; reads only).

        Level 0 is a chain of dependent loads: at 10^6 keys inserted in random
        order, a miss per node, one after the other. The tall index knows the
        nodes of every tower of height >= TALL (one node in four), so the chain
        splits at the next SEGMENTS of them into segments that are followed
        side by side: each round requests the next node of every segment at
        once, and a segment ends where the next one starts."""
        tall = self._tall
        if tall is None:
            tall = self._index()
        m = tall.nodes_after(self._key(x), self._ends)
        ends = self._ends.data.as_longlongs  # type: ignore[attr-defined]
        cur = self._cursors.data.as_longlongs  # type: ignore[attr-defined]
        cur[0] = x
        for s in range(m):
            cur[s + 1] = ends[s]
            p = cython.address(self.u8[ends[s]])
            prefetch(p)
            prefetch(p + 64)
            prefetch(p + 127)
        steps = 0  # (a bound, should the index and level 0 ever disagree)
        active = m  # the last segment has no end: it goes on while the others do
        while active and steps < 2 * RUN_MAX:
            active = 0
            for s in range(m + 1):
                c = cur[s]
                if not c:
                    continue
                nxt = self.u64[(c >> 3) + 2]
                steps += 1
                if not nxt or (s < m and nxt == ends[s]):
                    cur[s] = 0
                    continue
                cur[s] = nxt
                p = cython.address(self.u8[nxt])  # the link read is 16 bytes in: the
                prefetch(p)  # node's first line may be the one before, and key and
                prefetch(p + 64)  # value run on (a small node spans up to three lines)
                prefetch(p + 127)
                if s < m:
                    active += 1

    def item_at(self, index: int) -> tuple[bytes, bytes]:
        """The ``index``-th item. Cost: O(log n) for -1, else O(index) level-0 links."""
        n = self.count
        if not -n <= index < n:
            raise IndexError("index out of range")
        if index == -1:
            x = self._before(None, True)
        else:
            if index < 0:
                index += n
            x = self._next(self.head)
            for _ in range(index):
                x = self._next(x)
        return self._key(x), self._value(x)

    def rank(self, kb: bytes, right: bool) -> int:
        """Number of keys < ``kb`` (<= with ``right``). Cost: O(n) level-0 links."""
        total = 0
        x = self._next(self.head)
        while x:
            k = self._key(x)
            if k > kb or (k == kb and not right):
                break
            total += 1
            x = self._next(x)
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
            old = self.delete(tx, kb)
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
            seed = _U64.unpack_from(record, start)[0]
            self._hot(tx)
            if self._applied != 0 or self.count != 0:
                result = InvalidArgumentError(f"skiplist {self.name!r}: the seed is fixed "
                                              "once the skiplist has been written")
            else:
                self.rng = seed
                result = None
        else:
            raise OpDecodeError(f"opcode {code:#x} does not apply to a skiplist")
        tx.ready()  # the header's snapshot is durable (see _hot)
        self._store_hot(index)
        self._applied = index
        return result

    def _store_hot(self, applied: int) -> None:
        """Write [count, applied, level, rng] from memory (undo-logged by ``_hot``)."""
        u64 = self.u64
        w = (self.header_off >> 3) + 1
        u64[w] = self.count
        u64[w + 1] = applied
        u64[w + 2] = self.level
        u64[w + 3] = self.rng

    def _new_node(self, tx: Transaction, h: int, kb: bytes, vb: bytes) -> int:
        """A fresh node (links zero) holding ``kb`` and ``vb``."""
        u8 = self.u8
        klen, vlen = len(kb), len(vb)
        inline = vlen <= VALUE_INLINE_MAX
        ks = NODE_HEAD + 8 * h
        node = tx.alloc(ks + klen + (vlen if inline else 16))
        write(u8, node, _NODE.pack(h, klen, vlen if inline else EXT) + bytes(4 + 8 * h) + kb)
        if inline:
            write(u8, node + ks + klen, vb)
        else:
            block = tx.alloc(vlen)
            write(u8, block, vb)
            write(u8, node + ks + klen, _EXT.pack(vlen, block))
        return node

    def _link(self, tx: Transaction, x: int, lvl: int, target: int) -> None:
        """Undo-log and set link ``lvl`` of node ``x``."""
        w = (x >> 3) + 2 + lvl
        tx.add(w << 3, 8)
        self.u64[w] = target

    def _preds_for(self, kb: bytes, height: int, pred0: int) -> list[int]:
        """Predecessors of ``kb`` on levels 0..height-1; the tall index answers levels 0
        and 1, taller towers (1 in 16) search from the head."""
        if height <= TALL:
            return [pred0, self._start(kb)][:height]
        return self._preds(kb)

    def put(self, tx: Transaction, kb: bytes, vb) -> None:
        """Insert or replace. Cost: one block, 1.33 link undo entries on average, the header."""
        buf = self.buf
        pred0, x = self._find(kb)
        if x:
            h, klen, vlen = self.u8[x], self.u32[(x >> 2) + 1], self.u32[(x >> 2) + 2]
            if vlen == len(vb) and vlen != EXT:
                if vlen:
                    vs = x + NODE_HEAD + 8 * h + klen
                    tx.add(vs, vlen)
                    write(self.u8, vs, vb)
                return
            preds = self._preds_for(kb, h, pred0)
            block = self._block(x)
            if block:
                tx.free(block)
            node = self._new_node(tx, h, kb, vb)
            buf[node + NODE_HEAD:node + NODE_HEAD + 8 * h] = buf[
                x + NODE_HEAD:x + NODE_HEAD + 8 * h].tobytes()
            for lvl in range(h):
                self._link(tx, preds[lvl], lvl, node)
            tx.free(x)
            if h >= TALL:
                self._index().set(kb, node)
            return
        self.rng, z = splitmix64(self.rng)
        h = height_of(z)
        preds = self._preds_for(kb, h, pred0)
        node = self._new_node(tx, h, kb, vb)
        if h > self.level:
            preds += [self.head] * (h - len(preds))
            self.level = h
        for lvl in range(h):
            self.u64[(node >> 3) + 2 + lvl] = self._next(preds[lvl], lvl)
            self._link(tx, preds[lvl], lvl, node)
        if h >= TALL:
            self._index().set(kb, node)
        self.count += 1

    def delete(self, tx: Transaction, kb: bytes) -> bytes | None:
        """Remove ``kb``; its value, or None. Cost: 1.33 link undo entries on average."""
        pred0, x = self._find(kb)
        if not x:
            return None
        old = self._value(x)
        h = _NODE.unpack_from(self.buf, x)[0]
        preds = self._preds_for(kb, h, pred0)
        for lvl in range(h):
            self._link(tx, preds[lvl], lvl, self._next(x, lvl))
        if h >= TALL:
            self._index().remove(kb)
        block = self._block(x)
        if block:
            tx.free(block)
        tx.free(x)
        self.count -= 1
        while self.level > 1 and not self._next(self.head, self.level - 1):
            self.level -= 1
        return old

    def clear(self, tx: Transaction) -> None:
        """Free every node and value block; empty head."""
        x = self._next(self.head)
        while x:
            block = self._block(x)
            if block:
                tx.free(block)
            tx.free(x)
            x = self._next(x)
        at = self.head + NODE_HEAD
        tx.add(at, 8 * LEVEL_MAX)
        self.buf[at:at + 8 * LEVEL_MAX] = bytes(8 * LEVEL_MAX)
        self._tall = KeyIndex([])
        self.count = 0
        self.level = 1

    def destroy(self, tx: Transaction) -> None:
        """Free every block of the skiplist, header included (DROP)."""
        self.clear(tx)
        tx.free(self.header_off)

    def load(self, tx: Transaction, items: list[tuple[bytes, ...]]) -> None:
        """Bulk insert (snapshot restore) inside ``tx``."""
        self._serial = tx.serial  # a fresh header: nothing to undo-log
        for key, value in items:
            self.put(tx, bytes(key), bytes(value))
        self._store_hot(0)

    # -- checking ------------------------------------------------------------------------

    def check(self) -> None:
        """Walk every level; raise StructureCorruptError on any broken invariant. O(n)."""
        pool, buf, name = self.pool, self.buf, self.name

        def fail(msg: str) -> None:
            raise StructureCorruptError(f"skiplist {name!r}: {msg}")

        off = self.header_off
        if bytes(buf[off:off + 8]) != MAGIC:
            fail("bad magic")
        hot = _HOT.unpack_from(buf, off + 8)
        if hot != (self.count, self._applied, self.level, self.rng):
            fail(f"header (count, applied, level, rng) = {hot}, memory has "
                 f"{(self.count, self._applied, self.level, self.rng)}")
        below: set[int] | None = None
        for lvl in range(LEVEL_MAX):
            nodes: list[int] = []
            x = self._next(self.head, lvl)
            prev_key = None
            while x:
                if len(nodes) > self.count:
                    fail(f"level {lvl} is longer than count (a cycle?)")
                if not pool.is_allocated(x):
                    fail(f"level {lvl}: node {x} is not an allocated block")
                h, klen, vlen = _NODE.unpack_from(buf, x)
                if not lvl < h <= LEVEL_MAX:
                    fail(f"level {lvl}: node {x} has height {h}")
                if klen > KEY_BYTES_MAX:
                    fail(f"node {x}: key of {klen} bytes")
                ks = x + NODE_HEAD + 8 * h
                size = ks - x + klen + (16 if vlen == EXT else vlen)
                if pool.usable_size(x) < size:
                    fail(f"node {x} overruns its block")
                key = buf[ks:ks + klen].tobytes()
                if prev_key is not None and key <= prev_key:
                    fail(f"level {lvl}: keys out of order")
                if below is not None and x not in below:
                    fail(f"level {lvl}: node {x} is not on level {lvl - 1}")
                if lvl == 0 and vlen == EXT:
                    n, block = _EXT.unpack_from(buf, ks + klen)
                    if n <= VALUE_INLINE_MAX:
                        fail(f"node {x}: a small value stored out of line")
                    if not pool.is_allocated(block) or pool.usable_size(block) < n:
                        fail(f"node {x}: value block {block} is not allocated")
                prev_key = key
                nodes.append(x)
                x = self._next(x, lvl)
            if lvl == 0 and len(nodes) != self.count:
                fail(f"count is {self.count} but level 0 holds {len(nodes)} nodes")
            if lvl >= self.level and nodes:
                fail(f"level {lvl} holds nodes above the level in use ({self.level})")
            if lvl == self.level - 1 and lvl > 0 and not nodes:
                fail(f"level in use is {self.level} but its top level is empty")
            if lvl == TALL - 1 and self._tall is not None and list(self._tall.items()) != [
                    (buf[x + NODE_HEAD + 8 * _NODE.unpack_from(buf, x)[0]:][
                        :_NODE.unpack_from(buf, x)[1]].tobytes(), x) for x in nodes]:
                fail(f"the DRAM index of tall towers differs from level {lvl}")
            below = set(nodes)
