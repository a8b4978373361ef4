"""PHashMap: a persistent, replicated ``MutableMapping``.

Reads go straight to the pool; every mutation is an Op handed to the
replicator (local by default), which the pool's registry applies in one
transaction. The persistent layout (linear hashing over slotted pages) is
documented in :mod:`blizzard.structures._hashcore`; what it shares with the
ordered maps, and where it differs from ``dict``, in ``_mapping``.

>>> from blizzard.pmem import DramMedia, Pool
>>> pool = Pool.create(DramMedia(4 << 20))
>>> users = PHashMap(pool, "users", key_codec=str, value_codec=int)
>>> users["ada"] = 1815
>>> users["ada"], len(users), "bob" in users
(1815, 1, False)
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, ValuesView
from typing import Any

from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures import _hashcore
from blizzard.structures._hashcore import KEY_BYTES_MAX, TAG, HashCore
from blizzard.structures._mapping import _MISSING, PersistentMap
from blizzard.structures.codecs import CodecLike
from blizzard.structures.ops import OpCode
from blizzard.structures.registry import register_kind

register_kind(TAG, HashCore.create, HashCore.open)


class _ItemsView(ItemsView):
    """``items()`` read page by page (not one lookup per key)."""

    _mapping: Any  # the map (collections.abc's views keep it there)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._items()


class _ValuesView(ValuesView):
    _mapping: Any

    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping._items():
            yield value


class PHashMap(PersistentMap):
    """A hash map that lives in a pool, bound to ``name``; opens or creates it.

    ``key_codec`` / ``value_codec`` (``bytes`` by default; ``str``, ``int``,
    ``"msgpack"``, ``"hashable"`` for keys of mixed types, ``"pickle"``: see
    :mod:`blizzard.structures.codecs`) are fixed at creation and stored in the
    pool; reopening needs neither. ``replicator`` picks the backend (the
    pool's :class:`~blizzard.replication.local.LocalReplicator` by default);
    ``linearizable=True`` makes every read pass the replicator's read barrier;
    the default (None) lets the replicator decide (Raft: yes, local: no need).
    ``raw=True`` takes and returns bytes whatever the stored codecs.

    Costs: ``m[k]`` reads one page (more on an overflow chain) and no
    fences; ``m[k] = v`` is one Op and one transaction with two undo entries
    (the slot and the header), occasionally a bounded split or compaction;
    ``len`` is O(1).
    """

    tag = TAG
    _core_type = HashCore
    _kind = "hash map"
    key_bytes_max = KEY_BYTES_MAX
    _put_code = int(OpCode.MAP_PUT)
    _delete_code = int(OpCode.MAP_DELETE)
    _pop_code = int(OpCode.MAP_POP)
    _clear_code = int(OpCode.MAP_CLEAR)

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, replicator: Replicator | None = None,
                 linearizable: bool | None = None, raw: bool = False) -> None:
        super().__init__(pool, name, key_codec=key_codec, value_codec=value_codec,
                         replicator=replicator, linearizable=linearizable, raw=raw)

    def __iter__(self) -> Iterator[Any]:
        """Keys, bucket by bucket (no particular order). Snapshot the keys of one
        bucket at a time; do not mutate while iterating."""
        self._read()
        kdec = self._kdec
        for kb in self._iterate(self._core.keys_raw()):
            yield kdec(kb)

    def _items(self) -> Iterator[tuple[Any, Any]]:
        self._read()
        kdec, vdec = self._kdec, self._vdec
        for kb, vb in self._iterate(self._core.items_raw()):
            yield kdec(kb), vdec(vb)

    def items(self) -> _ItemsView:
        """A view of ``(key, value)`` pairs, in :meth:`__iter__`'s order."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:
        return _ValuesView(self)

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` bytes, without codecs."""
        self._read()
        return self._iterate(self._core.items_raw())

    def page(self, after: Any = _MISSING, limit: int = 1000, *, values: bool = True
             ) -> list[tuple[Any, Any]] | list[Any]:
        """Up to ``limit`` entries following key ``after`` (from the start when
        omitted), in the map's scan order: ``(key, value)`` pairs, or keys
        without ``values``. Pass the last key returned to get the next page;
        an empty page ends the scan.

        Resumable iteration: the order depends on the keys alone, so a scan
        in pages stays exact while the map changes between them -- a key
        present throughout is returned exactly once, a key added or removed
        meanwhile at most once. Cost: the buckets covering the page, sorted.
        """
        self._read()
        kb = None if after is _MISSING else self._kenc(after)
        rows = self._core.scan_after(kb, limit, values)
        kdec, vdec = self._kdec, self._vdec
        if not values:
            return [kdec(k) for k, _ in rows]
        return [(kdec(k), vdec(v)) for k, v in rows]

    def popitem(self) -> tuple[Any, Any]:
        """Remove and return some ``(key, value)`` pair; KeyError if the map is empty.

        The removal is one Op (a ``pop`` of the first key found); a key
        removed meanwhile by another writer is skipped.
        """
        for key in self:
            value = self.pop(key, _MISSING)
            if value is not _MISSING:
                return key, value
        raise KeyError("popitem(): the map is empty")

    def stats(self) -> dict[str, int]:
        core = self._core
        pages = sum(len(core.chain(b)) for b in range(core.nbuckets))
        return {"count": core.count, "buckets": core.nbuckets, "pages": pages,
                "page_bytes": _hashcore.PAGE_BYTES}
