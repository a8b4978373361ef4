"""The user-facing side shared by the ordered maps (PBPlusTree, PSkipList).

A ``MutableMapping`` with the ordered API of ``sortedcontainers.SortedDict``
(``irange``, ``peekitem``, ``popitem``, ``bisect_left`` / ``bisect_right``,
``keys`` in order). Reads go straight to the core; every mutation is an Op
(group ``ORD_*``) handed to the replicator. Keys pass through an ordered
codec, so the byte order the core sorts by is the keys' natural order.
"""

from __future__ import annotations

import struct
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from blizzard.exceptions import InvalidArgumentError
from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._mapping import PersistentMap
from blizzard.structures.codecs import CODECS, CodecLike, get_codec
from blizzard.structures.ops import OpCode

_POPITEM = int(OpCode.ORD_POPITEM)
_INIT = int(OpCode.ORD_INIT)
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")


class _Positional:
    """Indexing and slicing of an ordered map's view, as sortedcontainers'
    SortedKeysView / SortedItemsView / SortedValuesView allow: ``v[i]`` (negative
    from the end, IndexError out of range) reads one item by position
    (``peekitem``); ``v[a:b:c]`` is a list read by one positional lookup and
    a scan (``islice``), not one lookup per item."""

    _mapping: Any

    def _pick(self, item: tuple[Any, Any]) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: int | slice) -> Any:
        mapping = self._mapping
        if isinstance(index, slice):
            span = range(*index.indices(len(mapping)))
            if not span:
                return []
            lo, hi = min(span[0], span[-1]), max(span[0], span[-1]) + 1
            items = [self._pick(item) for item in mapping._islice_items(lo, hi, False)]
            # positions lo..hi-1 are items[0..]; the slice's are span - lo
            return items if span.step == 1 else [items[i - lo] for i in span]
        if not hasattr(index, "__index__"):
            raise TypeError(f"view indices must be integers or slices, not "
                            f"{type(index).__name__}")
        return self._pick(mapping.peekitem(index.__index__()))


class _KeysView(_Positional, KeysView):
    """``keys()`` in order; indexable and sliceable (``m.keys()[0]``, ``[2:5]``)."""

    def _pick(self, item: tuple[Any, Any]) -> Any:
        return item[0]

    def __iter__(self) -> Iterator[Any]:
        return self._mapping.irange()

    def __reversed__(self) -> Iterator[Any]:
        return self._mapping.irange(reverse=True)

    def index(self, key: Any) -> int:
        """Position of ``key`` (ValueError if absent), as ``SortedKeysView.index``."""
        return self._mapping.index(key)


class _ItemsView(_Positional, ItemsView):
    """``items()`` in key order, read leaf by leaf (not one lookup per key);
    indexable and sliceable (``m.items()[-1]``)."""

    def _pick(self, item: tuple[Any, Any]) -> Any:
        return item

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items()

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items(reverse=True)


class _ValuesView(_Positional, ValuesView):
    """``values()`` in key order; indexable and sliceable."""

    def _pick(self, item: tuple[Any, Any]) -> Any:
        return item[1]

    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping.irange_items():
            yield value

    def __reversed__(self) -> Iterator[Any]:
        for _, value in self._mapping.irange_items(reverse=True):
            yield value


class OrderedMap(PersistentMap):
    """Base of PBPlusTree and PSkipList; see those for costs and layouts."""

    _kind = "ordered map"
    _put_code = int(OpCode.ORD_PUT)
    _delete_code = int(OpCode.ORD_DELETE)
    _pop_code = int(OpCode.ORD_POP)
    _clear_code = int(OpCode.ORD_CLEAR)

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, replicator: Replicator | None = None,
                 linearizable: bool | None = None, param: int | None = None,
                 raw: bool = False) -> None:
        if key_codec is not None and not get_codec(key_codec).ordered:
            ordered = ", ".join(name for name, c in CODECS.items() if c.ordered)
            raise InvalidArgumentError(f"a {self._kind} needs an ordered key codec ({ordered}), "
                             f"not {get_codec(key_codec).name!r}")
        super().__init__(pool, name, key_codec=key_codec, value_codec=value_codec,
                         replicator=replicator, linearizable=linearizable, raw=raw)
        if param is not None and param != self._param():
            # a parameter is set by an Op of its own, accepted only before the first write
            self._submit(self._encoder.one(_INIT, _U64.pack(param)))

    def _param(self) -> int | None:
        raise NotImplementedError

    # -- reads ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """Keys in order. Do not mutate while iterating."""
        return self.irange()

    def __reversed__(self) -> Iterator[Any]:
        return self.irange(reverse=True)

    def _bounds(self, minimum: Any, maximum: Any) -> tuple[bytes | None, bytes | None]:
        lo = None if minimum is None else self._kenc(minimum)
        hi = None if maximum is None else self._kenc(maximum)
        return lo, hi

    def irange(self, minimum: Any = None, maximum: Any = None,
               inclusive: tuple[bool, bool] = (True, True), reverse: bool = False
               ) -> Iterator[Any]:
        """Keys between ``minimum`` and ``maximum`` (None: unbounded), in order.

        Cost: one descent, then sequential node reads; no fences.
        """
        self._read()
        lo, hi = self._bounds(minimum, maximum)
        kdec = self._kdec
        for kb, _ in self._iterate(self._core.items_range(lo, hi, inclusive[0], inclusive[1],
                                                          reverse, values=False)):
            yield kdec(kb)

    def irange_items(self, minimum: Any = None, maximum: Any = None,
                     inclusive: tuple[bool, bool] = (True, True), reverse: bool = False
                     ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs of :meth:`irange`."""
        self._read()
        lo, hi = self._bounds(minimum, maximum)
        kdec, vdec = self._kdec, self._vdec
        for kb, vb in self._iterate(self._core.items_range(lo, hi, inclusive[0], inclusive[1],
                                                           reverse)):
            yield kdec(kb), vdec(vb)

    def _items(self) -> Iterator[tuple[Any, Any]]:
        return self.irange_items()

    def keys(self) -> _KeysView:
        """A view of the keys in order, indexable and sliceable like
        ``SortedKeysView`` (``m.keys()[0]``, ``m.keys()[-1]``, ``m.keys()[2:5]``)."""
        return _KeysView(self)

    def items(self) -> _ItemsView:
        """A view of ``(key, value)`` pairs in key order (a scan, not n lookups),
        indexable and sliceable (``m.items()[-1]``)."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:
        """A view of the values in key order, indexable and sliceable."""
        return _ValuesView(self)

    def islice(self, start: int | None = None, stop: int | None = None,
               reverse: bool = False) -> Iterator[Any]:
        """Keys at positions ``start`` to ``stop`` (a slice's bounds: negative
        from the end, clipped to the map), in order, or backwards with
        ``reverse`` -- ``SortedDict.islice``.

        Cost: two positional lookups (``peekitem``: the first and last keys),
        then a scan of ``stop - start`` items; no fences.
        """
        for key, _ in self._islice_items(start, stop, reverse, values=False):
            yield key

    def _islice_items(self, start: int | None, stop: int | None, reverse: bool, *,
                      values: bool = True) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` at positions ``start`` to ``stop`` (value None unless
        ``values``): both ends by position, the rest by a range scan between them."""
        self._read()
        begin, end, _ = slice(start, stop).indices(self._core.count)
        count = end - begin
        if count <= 0:
            return
        # the range's two ends by position, then a scan bounded by both (a scan
        # bounded by one end would be read to the map's end where reads drain
        # their iterators under a lock: structures under a Raft replicator)
        lo, _ = self._core.item_at(begin)
        hi = lo if count == 1 else self._core.item_at(end - 1)[0]
        kdec, vdec = self._kdec, self._vdec
        scan = self._core.items_range(lo, hi, True, True, reverse, values=values)
        for kb, vb in self._iterate(scan):
            yield kdec(kb), (vdec(vb) if values else None)
            count -= 1
            if not count:
                return

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` bytes in key order, without codecs."""
        return self._iterate(self._core.items_range(None, None, True, True, False))

    def peekitem(self, index: int = -1) -> tuple[Any, Any]:
        """The ``(key, value)`` at ``index`` in key order (IndexError when out of range)."""
        self._read()
        kb, vb = self._core.item_at(index)
        return self._kdec(kb), self._vdec(vb)

    def bisect_left(self, key: Any) -> int:
        """Index where ``key`` would be inserted, before any equal key."""
        self._read()
        return self._core.rank(self._kenc(key), False)

    def bisect_right(self, key: Any) -> int:
        """Index where ``key`` would be inserted, after any equal key."""
        self._read()
        return self._core.rank(self._kenc(key), True)

    bisect = bisect_right

    def index(self, key: Any) -> int:
        """Position of ``key`` in key order (ValueError if absent)."""
        if key not in self:
            raise ValueError(f"{key!r} is not in the map")
        return self.bisect_left(key)

    # -- writes (each one Op) --------------------------------------------------------------

    def popitem(self, index: int = -1) -> tuple[Any, Any]:
        """Remove and return the ``(key, value)`` at ``index`` (one Op; the last by default).

        KeyError if the map is empty (as ``dict.popitem``); IndexError if
        ``index`` is out of range of a map that is not.
        """
        kb, vb = self._submit(self._encoder.one(_POPITEM, _I64.pack(index)))
        return self._kdec(kb), self._vdec(vb)
