"""PBPlusTree: a persistent, replicated, ordered ``MutableMapping`` (a B+tree).

Reads go straight to the pool (compiled, each node bisected where it lies);
every mutation is an Op handed to the replicator, which the pool's registry
applies in one transaction. The persistent layout is documented in
:mod:`blizzard.structures._bptreecore`.

>>> from blizzard.pmem import DramMedia, Pool
>>> pool = Pool.create(DramMedia(8 << 20))
>>> t = PBPlusTree(pool, "t", key_codec=int, value_codec=str)
>>> for i in (5, -3, 12):
...     t[i] = f"v{i}"
>>> list(t), t.peekitem(0), list(t.irange(0, 12, inclusive=(True, False)))
([-3, 5, 12], (-3, 'v-3'), [5])
"""

from __future__ import annotations

from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._bptreecore import FANOUT_DEFAULT, KEY_BYTES_MAX, TAG, BPTreeCore
from blizzard.structures._ordered import OrderedMap
from blizzard.structures.codecs import CodecLike
from blizzard.structures.registry import register_kind

register_kind(TAG, BPTreeCore.create, BPTreeCore.open)


class PBPlusTree(OrderedMap):
    """An ordered map in a pool, bound to ``name``; opens or creates it.

    ``key_codec`` must be ordered (``bytes`` by default, ``str``, ``int``);
    ``value_codec`` any (``bytes`` by default). ``fanout`` (entries per node,
    4..256, default 64) is fixed by the first write and stored in the pool;
    asking for another one later raises ValueError. ``replicator`` and
    ``linearizable`` (and ``raw``) as for :class:`~blizzard.structures.PHashMap`.

    Costs (n keys, f fanout, h = log_f n levels): ``t[k]`` h cached bisects
    and one value read, no fences; ``t[k] = v`` and ``del t[k]`` one Op, one
    transaction with two undo entries (the leaf's slot array, the header),
    now and then a split or merge (fresh nodes, a few more entries);
    iteration and ``irange`` walk the leaf chain; ``peekitem(0)`` /
    ``peekitem(-1)`` / ``popitem()`` O(h); ``peekitem(i)``, ``bisect_left``
    and ``bisect_right`` O(h + n / f) (node sizes, no per-subtree counts);
    ``len`` O(1).
    """

    tag = TAG
    _core_type = BPTreeCore
    _kind = "B+tree"
    key_bytes_max = KEY_BYTES_MAX

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, fanout: int | None = None,
                 replicator: Replicator | None = None, linearizable: bool | None = None,
                 raw: bool = False) -> None:
        super().__init__(pool, name, key_codec=key_codec, value_codec=value_codec,
                         replicator=replicator, linearizable=linearizable, param=fanout,
                         raw=raw)

    def _param(self) -> int:
        return self._core.fanout

    @property
    def fanout(self) -> int:
        return self._core.fanout

    def stats(self) -> dict[str, int]:
        core = self._core
        nodes = sum(1 for _ in core._all_nodes())
        return {"count": core.count, "height": core.height, "nodes": nodes,
                "fanout": core.fanout, "node_bytes": core.node_bytes}


__all__ = ["FANOUT_DEFAULT", "PBPlusTree"]
