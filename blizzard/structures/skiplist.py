"""PSkipList: a persistent, replicated, ordered ``MutableMapping`` (a skiplist).

Reads go straight to the pool (node keys cached); every mutation is an Op
handed to the replicator, which the pool's registry applies in one
transaction. Tower heights come from a generator seeded and stored in the
pool, so replicas and restarts build the same towers. The persistent layout
is documented in :mod:`blizzard.structures._skiplistcore`.

>>> from blizzard.pmem import DramMedia, Pool
>>> pool = Pool.create(DramMedia(8 << 20))
>>> s = PSkipList(pool, "s", key_codec=str, value_codec=int)
>>> s.update({"b": 2, "a": 1, "c": 3})
>>> list(s), s.peekitem(-1), list(s.irange("b"))
(['a', 'b', 'c'], ('c', 3), ['b', 'c'])
"""

from __future__ import annotations

from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._ordered import OrderedMap
from blizzard.structures._skiplistcore import KEY_BYTES_MAX, SEED_DEFAULT, TAG, SkipListCore
from blizzard.structures.codecs import CodecLike
from blizzard.structures.registry import register_kind

register_kind(TAG, SkipListCore.create, SkipListCore.open)


class PSkipList(OrderedMap):
    """An ordered map in a pool, bound to ``name``; opens or creates it.

    ``key_codec`` must be ordered (``bytes`` by default, ``str``, ``int``);
    ``value_codec`` any. ``seed`` (default ``SEED_DEFAULT``) seeds the tower
    heights; it is fixed by the first write. ``replicator`` and
    ``linearizable`` (and ``raw``) as for :class:`~blizzard.structures.PHashMap`.

    Costs (n keys; expected): ``s[k]`` a bisect over a DRAM index of the
    tall towers (a quarter of the keys) then about 3 level-0 link reads, no
    fences; ``s[k] = v`` / ``del s[k]`` one Op, one transaction: a block
    allocated or freed and 1.33 link undo entries on average, plus the
    header; forward iteration and ``irange`` follow level-0 links;
    ``peekitem(0)`` O(1), ``peekitem(-1)`` and ``popitem()`` O(log n);
    ``peekitem(i)``, ``bisect_left`` / ``bisect_right`` O(n) (no widths are
    stored); reverse iteration O(log n) per item (no back links); ``len``
    O(1).
    """

    tag = TAG
    _core_type = SkipListCore
    _kind = "skiplist"
    key_bytes_max = KEY_BYTES_MAX

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, seed: int | None = None,
                 replicator: Replicator | None = None, linearizable: bool | None = None,
                 raw: bool = False) -> None:
        self._seed = seed
        super().__init__(pool, name, key_codec=key_codec, value_codec=value_codec,
                         replicator=replicator, linearizable=linearizable, param=seed,
                         raw=raw)

    def _param(self) -> int | None:
        core = self._core
        # the seed is consumed as towers are drawn: only a fresh skiplist can take one
        if core.applied == 0 and core.count == 0 and self._seed != core.rng:
            return None
        return self._seed

    def stats(self) -> dict[str, int]:
        core = self._core
        return {"count": core.count, "level": core.level}


__all__ = ["SEED_DEFAULT", "PSkipList"]
