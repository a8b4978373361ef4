"""The user-facing side shared by the ordered maps (PBPlusTree, PSkipList).

A ``MutableMapping`` with the ordered API of ``sortedcontainers.SortedDict``
(``irange``, ``peekitem``, ``popitem``, ``bisect_left`` / ``bisect_right``,
``keys`` in order). Reads go straight to the core; every mutation is an Op
(group ``ORD_*``) handed to the replicator. Keys pass through an ordered
codec, so the byte order the core sorts by is the keys' natural order.
"""

from __future__ import annotations

import struct
from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any

from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._locking import locked_reads
from blizzard.structures.codecs import BYTES, CodecLike, get_codec
from blizzard.structures.ops import Encoder, OpCode
from blizzard.structures.registry import registry_for

_PUT = int(OpCode.ORD_PUT)
_DELETE = int(OpCode.ORD_DELETE)
_POP = int(OpCode.ORD_POP)
_CLEAR = int(OpCode.ORD_CLEAR)
_POPITEM = int(OpCode.ORD_POPITEM)
_INIT = int(OpCode.ORD_INIT)
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_MISSING = object()


class _NoType:
    """Matches no key's type: codecs other than bytes always run."""


class _ItemsView(ItemsView):
    """``items()`` in key order, read leaf by leaf (not one lookup per key)."""

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items()

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping.irange_items(reverse=True)


class _ValuesView(ValuesView):
    """``values()`` in key order."""

    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping.irange_items():
            yield value


class OrderedMap(MutableMapping):
    """Base of PBPlusTree and PSkipList; see those for costs and layouts."""

    _tag: bytes = b""
    _core_type: type = object
    _kind = "ordered map"
    key_bytes_max = 0

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, replicator: Replicator | None = None,
                 linearizable: bool | None = None, param: int | None = None) -> None:
        registry = registry_for(pool)
        self._replicator = replicator if replicator is not None else registry.replicator
        if key_codec is not None and not get_codec(key_codec).ordered:
            raise ValueError(f"a {self._kind} needs an ordered key codec (bytes, str, int), "
                             f"not {get_codec(key_codec).name!r}")
        core = registry.open_structure(
            name, self._tag,
            None if key_codec is None else get_codec(key_codec).name,
            None if value_codec is None else get_codec(value_codec).name,
            self._replicator, ("bytes", "bytes"))
        if not isinstance(core, self._core_type):
            raise TypeError(f"{name!r} is not a {self._kind}")
        # with a replicator that applies on another thread, reads hold its lock
        self._core = core = locked_reads(core, self._replicator.read_lock)
        self.name = name
        self.pool = pool
        kc = get_codec(core.key_codec)
        vc = get_codec(core.value_codec)
        self.key_codec, self.value_codec = kc, vc
        self._kenc, self._kdec = kc.encode, kc.decode
        self._venc, self._vdec = vc.encode, vc.decode
        self._encoder = Encoder(name)
        self._put_op = self._encoder.two
        # bytes codecs are the identity on bytes: the hot paths skip their calls
        self._kraw = bytes if kc is BYTES else _NoType
        self._vraw = vc is BYTES
        self._vraw_type = bytes if vc is BYTES else _NoType
        self._submit = self._replicator.submit
        self._get = core.get
        if linearizable is None:
            linearizable = self._replicator.linearizable_default
        self._barrier = self._replicator.read_barrier if linearizable else None
        if param is not None and param != self._param():
            # a parameter is set by an Op of its own, accepted only before the first write
            self._submit(self._encoder.one(_INIT, _U64.pack(param)))

    def _param(self) -> int:
        raise NotImplementedError

    # -- reads ---------------------------------------------------------------------------

    def _read(self) -> None:
        if self._barrier is not None:
            self._barrier()

    def __getitem__(self, key: Any) -> Any:
        kb = key if type(key) is self._kraw else self._kenc(key)
        if self._barrier is not None:
            self._barrier()
        raw = self._get(kb)
        if raw is None:
            raise KeyError(key)
        return raw if self._vraw else self._vdec(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        kb = key if type(key) is self._kraw else self._kenc(key)
        if self._barrier is not None:
            self._barrier()
        raw = self._get(kb)
        if raw is None:
            return default
        return raw if self._vraw else self._vdec(raw)

    def __contains__(self, key: object) -> bool:
        self._read()
        try:
            kb = self._kenc(key)
        except TypeError:
            return False
        return self._get(kb) is not None

    def __len__(self) -> int:
        self._read()
        return self._core.count

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
        for kb, _ in self._core.items_range(lo, hi, inclusive[0], inclusive[1], reverse,
                                            values=False):
            yield kdec(kb)

    def irange_items(self, minimum: Any = None, maximum: Any = None,
                     inclusive: tuple[bool, bool] = (True, True), reverse: bool = False
                     ) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs of :meth:`irange`."""
        self._read()
        lo, hi = self._bounds(minimum, maximum)
        kdec, vdec = self._kdec, self._vdec
        for kb, vb in self._core.items_range(lo, hi, inclusive[0], inclusive[1], reverse):
            yield kdec(kb), vdec(vb)

    def items(self) -> _ItemsView:
        """A view of ``(key, value)`` pairs in key order (a scan, not n lookups)."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:
        return _ValuesView(self)

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` bytes in key order, without codecs."""
        return self._core.items_range(None, None, True, True, False)

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

    def __setitem__(self, key: Any, value: Any) -> None:
        kb = key if type(key) is self._kraw else self._kenc(key)
        if len(kb) > self.key_bytes_max:
            raise ValueError(f"keys are at most {self.key_bytes_max} bytes encoded, "
                             f"got {len(kb)}")
        self._submit(self._put_op(_PUT, kb, value if type(value) is self._vraw_type
                                  else self._venc(value)))

    def __delitem__(self, key: Any) -> None:
        if not self._submit(self._encoder.one(_DELETE, self._kenc(key))):
            raise KeyError(key)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, atomically (one Op)."""
        raw = self._submit(self._encoder.one(_POP, self._kenc(key)))
        if raw is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self._vdec(raw)

    def popitem(self, index: int = -1) -> tuple[Any, Any]:
        """Remove and return the ``(key, value)`` at ``index`` (one Op; the last by default).

        IndexError if the map is empty or ``index`` is out of range.
        """
        kb, vb = self._submit(self._encoder.one(_POPITEM, _I64.pack(index)))
        return self._kdec(kb), self._vdec(vb)

    def clear(self) -> None:
        """Remove everything (one Op; frees every node)."""
        self._submit(self._encoder.zero(_CLEAR))

    # -- inspection ----------------------------------------------------------------------

    def check(self) -> None:
        """Walk the persistent layout and verify every invariant (O(n))."""
        self._core.check()

    @property
    def replicator(self) -> Replicator:
        return self._replicator

    def __repr__(self) -> str:
        codecs = f"{self.key_codec.name}->{self.value_codec.name}"
        return f"<{type(self).__name__} {self.name!r} len={len(self)} {codecs}>"
