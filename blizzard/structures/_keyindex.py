"""A volatile sorted index of ``bytes`` keys -> node offsets, searched in C arrays.

:class:`KeyIndex` maps the keys of a skiplist's tall towers to their nodes.
It is chunked: runs of at most ``2 * load`` keys, each a :class:`Run`, and
above them one more Run holding each chunk's greatest key. A lookup is two
binary searches, inserts and removals move at most ``2 * load`` entries.

Why it is shaped so: a binary search over a Python list of ``bytes``
compares through the generic rich comparison, and each comparison reads a
bytes object lying somewhere in a heap of a million (a cache miss). A Run
also keeps, for every key, its *word*: the 8 bytes following the prefix
that all its keys share (``skip`` bytes, the common prefix of its first and
last keys), zero-padded, as a big-endian unsigned 64-bit integer, in an
``array('Q')``. Words order as their keys do, except that equal words say
nothing (the keys may differ past those 8 bytes, or in trailing zeros):

* word(a) < word(b) implies a < b, and word(a) > word(b) implies a > b;
* so a search compares the key's prefix with the run's once, binary-searches
  the contiguous words, and compares whole keys only among equal words.

Keys of one workload often share long prefixes (zero-padded decimal
numbers, names under a common path); measuring the word from the run's own
common prefix rather than from byte 0 keeps the words distinct there.

Each key also has ``HINTS`` integers of its user's (``Run.hints``, kept
aligned with the keys, zero when a key comes in): a skiplist keeps there the
level-0 nodes its last walk from the key's node passed, to ask for their
lines at once next time; ``before`` leaves where it found its key in
``found_run`` and ``found_at`` for that (compiled).

Compiled (``_keyindex.pxd``), the search runs over the array's memory as C
integers; interpreted, :meth:`Run.bisect` is ``bisect_left`` over the key
list (a C loop there too, where a Python loop over words would be slower),
and :meth:`KeyIndex.before` is ``_before_interpreted`` (bisects over the
key lists with no method calls); the words, still kept, are what
:meth:`Run.bisect_words` searches (tests run it in both builds).
"""

from __future__ import annotations

import array
from bisect import bisect_left
from itertools import pairwise

import cython

if cython.compiled:
    from cython.cimports.libc.string import memcmp

#: Keys per chunk after a split (a chunk splits at ``2 * TALL_LOAD``).
TALL_LOAD = 256
if not cython.compiled:  # compiled: a C constant (_keyindex.pxd)
    #: Hints kept per key: the nodes a skiplist get last walked past it (see Run.hints).
    HINTS = 4


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    if cython.compiled:
        pa = cython.cast(cython.p_uchar, cython.cast(cython.p_char, a))
        pb = cython.cast(cython.p_uchar, cython.cast(cython.p_char, b))
        i = 0
        while i < n and pa[i] == pb[i]:
            i += 1
        return i
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def word(kb: bytes, skip: int) -> int:
    """Bytes ``skip .. skip+8`` of ``kb``, zero-padded, as a big-endian integer."""
    if cython.compiled:
        p = cython.cast(cython.p_uchar, cython.cast(cython.p_char, kb))
        n = len(kb) - skip
        w = 0
        for i in range(8):
            w = (w << 8) | (p[skip + i] if i < n else 0)
        return w
    return int.from_bytes(kb[skip:skip + 8].ljust(8, b"\0"), "big")


def _at(values: array.array, j: int) -> int:
    """``values[j]`` (compiled: a load from the array's memory)."""
    if cython.compiled:
        return values.data.as_longlongs[j]  # type: ignore[attr-defined]
    return values[j]


def _put(values: array.array, j: int, value: int) -> None:
    """``values[j] = value`` (compiled: a store to the array's memory)."""
    if cython.compiled:
        values.data.as_longlongs[j] = value  # type: ignore[attr-defined]
    else:
        values[j] = value


@cython.cclass
class Run:
    """Sorted distinct keys, each with its word and a value (an integer)."""

    def __init__(self, keys: list[bytes], values: list[int]) -> None:
        self.keys = keys
        self.values = array.array("q", values)
        # HINTS integers per key, for its user (a skiplist: the level-0 nodes a get
        # last walked after the key's node, asked for at once by the next get
        # there). Never trusted, only kept aligned with the keys: 0 = none.
        self.hints = array.array("q", bytes(8 * HINTS * len(keys)))
        self._reword()

    def _reword(self) -> None:
        """Measure the common prefix afresh and recompute every word."""
        keys = self.keys
        self.skip = common_prefix(keys[0], keys[-1]) if keys else 0
        skip = self.skip
        self.words = array.array("Q", [word(k, skip) for k in keys])

    def _shares(self, kb: bytes, other: bytes) -> bool:
        """``kb`` starts with the run's common prefix (``other`` is one of its keys)."""
        skip = self.skip
        if len(kb) < skip:
            return False
        if cython.compiled:
            return memcmp(cython.cast(cython.p_char, kb), cython.cast(cython.p_char, other),
                          skip) == 0
        return kb[:skip] == other[:skip]

    def __len__(self) -> int:
        return len(self.keys)

    def bisect(self, kb: bytes) -> int:
        """Where ``kb`` goes: the number of keys < ``kb``."""
        if cython.compiled:
            return self.bisect_words(kb)
        return bisect_left(self.keys, kb)

    def bisect_words(self, kb: bytes) -> int:
        """:meth:`bisect` by the words: whole keys compared only among equal words."""
        keys = self.keys
        n = len(keys)
        if not n:
            return 0
        skip = self.skip
        if skip:
            first: bytes = keys[0]
            m = skip if len(kb) > skip else len(kb)
            if cython.compiled:
                c = memcmp(cython.cast(cython.p_char, kb), cython.cast(cython.p_char, first), m)
            else:
                c = (kb[:m] > first[:m]) - (kb[:m] < first[:m])
            if c < 0 or (c == 0 and m < skip):  # below the prefix, or a short prefix of it
                return 0
            if c > 0:
                return n
        w = word(kb, skip)
        if cython.compiled:
            p = self.words.data.as_ulonglongs  # type: ignore[attr-defined]
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) >> 1
                if p[mid] < w:
                    lo = mid + 1
                else:
                    hi = mid
            end = lo
            hi = n
            while end < hi:
                mid = (end + hi) >> 1
                if p[mid] <= w:
                    end = mid + 1
                else:
                    hi = mid
        else:
            words = self.words
            lo = bisect_left(words, w)
            end = lo
            while end < n and words[end] == w:
                end += 1
        if lo == end:
            return lo
        return bisect_left(keys, kb, lo, end)

    def insert(self, j: int, kb: bytes, value: int) -> None:
        """Put ``kb`` at position ``j`` (where :meth:`bisect` says it goes)."""
        keys = self.keys
        n = len(keys)
        keys.insert(j, kb)
        self.values.insert(j, value)
        self.hints[HINTS * j:HINTS * j] = array.array("q", bytes(8 * HINTS))
        if n and (0 < j < n or self._shares(kb, keys[1] if j == 0 else keys[0])):
            self.words.insert(j, word(kb, self.skip))
        else:  # a new first or last key outside the common prefix (or the first key)
            self._reword()

    def replace(self, j: int, kb: bytes, value: int) -> None:
        """Key ``j`` becomes ``kb`` (still between its neighbours), with ``value``."""
        keys = self.keys
        keys[j] = kb
        self.values[j] = value
        n = len(keys)
        if n > 1 and (0 < j < n - 1 or self._shares(kb, keys[1] if j == 0 else keys[0])):
            self.words[j] = word(kb, self.skip)
        else:
            self._reword()

    def delete(self, j: int) -> None:
        """Remove key ``j`` (the common prefix stays: the keys left still share it)."""
        del self.keys[j]
        del self.values[j]
        del self.words[j]
        del self.hints[HINTS * j:HINTS * (j + 1)]

    def split(self, at: int) -> Run:
        """Keep keys ``[:at]``; the rest, as a new Run."""
        upper = Run(self.keys[at:], list(self.values[at:]))
        upper.hints = self.hints[HINTS * at:]
        del self.keys[at:]
        del self.values[at:]
        del self.hints[HINTS * at:]
        self._reword()
        return upper

    def check(self) -> None:
        """Raise AssertionError unless the keys are sorted and every word is right."""
        keys = self.keys
        assert len(self.values) == len(keys) == len(self.words), "lengths differ"
        assert len(self.hints) == HINTS * len(keys), "hints not aligned with the keys"
        assert all(a < b for a, b in pairwise(keys)), "keys out of order"
        if keys:
            assert all(k[:self.skip] == keys[0][:self.skip] and len(k) >= self.skip
                       for k in keys), "a key outside the common prefix"
        assert list(self.words) == [word(k, self.skip) for k in keys], "a stale word"


@cython.cclass
class KeyIndex:
    """Keys -> node offsets (nonzero), sorted, chunked in Runs of at most ``2 * load``."""

    def __init__(self, pairs: list[tuple[bytes, int]], load: int = 0) -> None:
        self.load = load or TALL_LOAD
        step = self.load
        self.chunks = [Run([k for k, _ in pairs[i:i + step]], [x for _, x in pairs[i:i + step]])
                       for i in range(0, len(pairs), step)]
        # each chunk's greatest key and its node
        self.maxes = Run([c.keys[-1] for c in self.chunks],
                         [c.values[len(c.keys) - 1] for c in self.chunks])
        # where the last ``before`` found its key (compiled): its chunk (None if
        # no key) and index there, for the caller to read and write its hints
        self.found_run: Run | None = None
        self.found_at = 0

    def before(self, kb: bytes) -> int:
        """The node of the greatest key < ``kb``, or 0."""
        maxes = self.maxes
        i = maxes.bisect(kb)
        if i < len(maxes.keys):
            chunk: Run = self.chunks[i]
            j = chunk.bisect(kb)
            if j:
                self.found_run = chunk
                self.found_at = j - 1
                return _at(chunk.values, j - 1)
        if not i:
            self.found_run = None
            return 0
        chunk = self.chunks[i - 1]  # its last key
        self.found_run = chunk
        self.found_at = len(chunk.keys) - 1
        return _at(maxes.values, i - 1)

    def _before_interpreted(self, kb: bytes) -> int:
        """``before`` as the interpreted build runs it fastest (it is ``before`` there):
        ``bisect_left`` over the key lists, no method calls."""
        maxes = self.maxes
        i = bisect_left(maxes.keys, kb)
        if i < len(maxes.keys):
            chunk = self.chunks[i]
            j = bisect_left(chunk.keys, kb)
            if j:
                return chunk.values[j - 1]
        return maxes.values[i - 1] if i else 0

    def nodes_after(self, kb: bytes, out: array.array) -> int:
        """Write the nodes of the first ``len(out)`` keys > ``kb``, in key order, into
        ``out``; return how many there were. Cost: one bisect, then a copy."""
        chunks = self.chunks
        cap = len(out)
        i = self.maxes.bisect(kb)  # the first chunk holding a key >= kb
        j = 0
        if i < len(chunks):
            chunk: Run = chunks[i]
            j = chunk.bisect(kb)
            if j < len(chunk.keys) and chunk.keys[j] == kb:
                j += 1
        count = 0
        while i < len(chunks) and count < cap:
            chunk = chunks[i]
            size = len(chunk.keys)
            while j < size and count < cap:
                _put(out, count, _at(chunk.values, j))
                count += 1
                j += 1
            i += 1
            j = 0
        return count

    def set(self, kb: bytes, node: int) -> None:
        """Map ``kb`` to ``node`` (adding it, or replacing its node)."""
        maxes = self.maxes
        n = len(maxes.keys)
        if not n:
            self.chunks.append(Run([kb], [node]))
            maxes.insert(0, kb, node)
            return
        i = maxes.bisect(kb)
        if i == n:
            i = n - 1
        chunk: Run = self.chunks[i]
        j = chunk.bisect(kb)
        size = len(chunk.keys)
        if j < size and chunk.keys[j] == kb:
            chunk.values[j] = node
            if j == size - 1:
                maxes.values[i] = node
            return
        chunk.insert(j, kb, node)
        if j == size:
            maxes.replace(i, kb, node)
        if size + 1 > 2 * self.load:
            upper = chunk.split(self.load)
            self.chunks.insert(i + 1, upper)
            maxes.replace(i, chunk.keys[-1], chunk.values[len(chunk.keys) - 1])
            maxes.insert(i + 1, upper.keys[-1], upper.values[len(upper.keys) - 1])

    def remove(self, kb: bytes) -> None:
        """Drop ``kb`` (it must be held)."""
        maxes = self.maxes
        i = maxes.bisect(kb)
        chunk: Run = self.chunks[i]
        j = chunk.bisect(kb)
        assert chunk.keys[j] == kb, "removing a key the index does not hold"
        chunk.delete(j)
        size = len(chunk.keys)
        if not size:
            del self.chunks[i]
            maxes.delete(i)
        elif j == size:
            maxes.replace(i, chunk.keys[size - 1], chunk.values[size - 1])

    def items(self) -> list[tuple[bytes, int]]:
        """Every ``(key, node)``, in key order."""
        return [(k, x) for c in self.chunks
                for k, x in zip(c.keys, c.values, strict=True)]

    def check(self) -> None:
        """Raise AssertionError unless every Run is sound, no chunk is empty or over
        ``2 * load``, and the maxes are the chunks' last keys and nodes."""
        self.maxes.check()
        assert len(self.maxes.keys) == len(self.chunks), "maxes and chunks differ in number"
        for i, chunk in enumerate(self.chunks):
            chunk.check()
            size = len(chunk.keys)
            assert 0 < size <= 2 * self.load, f"chunk {i} holds {size} keys"
            assert self.maxes.keys[i] == chunk.keys[-1], f"chunk {i}: a stale max"
            assert self.maxes.values[i] == chunk.values[size - 1], f"chunk {i}: a stale node"
        keys = [k for k, _ in self.items()]
        assert all(a < b for a, b in pairwise(keys)), "chunks out of order"


if not cython.compiled:  # the form shaped for the interpreter
    KeyIndex.before = KeyIndex._before_interpreted  # type: ignore[method-assign]
