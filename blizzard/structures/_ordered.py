"""The user-facing side shared by the ordered maps (PBPlusTree, PSkipList).

A ``MutableMapping`` with the ordered API of ``sortedcontainers.SortedDict``
(``irange``, ``peekitem``, ``popitem``, ``bisect_left`` / ``bisect_right``,
``keys`` in order). Reads go straight to the core; every mutation is an Op
(group ``ORD_*``) handed to the replicator. Keys pass through an ordered
codec, so the byte order the core sorts by is the keys' natural order.
"""

from __future__ import annotations

import struct
from collections.abc import ItemsView, Iterator, ValuesView
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


class _ItemsView(ItemsView):
    """``items()`` in key order, read leaf by leaf (not one lookup per key)."""

    _mapping: Any  # the map (collections.abc's views keep it there)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items()

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items(reverse=True)


class _ValuesView(ValuesView):
    """``values()`` in key order."""

    _mapping: Any

    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping.irange_items():
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

    def items(self) -> _ItemsView:
        """A view of ``(key, value)`` pairs in key order (a scan, not n lookups)."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:
        return _ValuesView(self)

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
