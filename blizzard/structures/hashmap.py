"""PHashMap: a persistent, replicated ``MutableMapping``.

Reads go straight to the pool; every mutation is an Op handed to the
replicator (local by default), which the pool's registry applies in one
transaction. The persistent layout (linear hashing over slotted pages) is
documented in :mod:`blizzard.structures._hashcore`.

>>> from blizzard.pmem import DramMedia, Pool
>>> pool = Pool.create(DramMedia(4 << 20))
>>> users = PHashMap(pool, "users", key_codec=str, value_codec=int)
>>> users["ada"] = 1815
>>> users["ada"], len(users), "bob" in users
(1815, 1, False)
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures import _hashcore
from blizzard.structures._hashcore import KEY_BYTES_MAX, TAG, HashCore
from blizzard.structures._locking import locked_reads
from blizzard.structures.codecs import BYTES, CodecLike, get_codec
from blizzard.structures.ops import Encoder, OpCode
from blizzard.structures.registry import register_kind, registry_for

register_kind(TAG, HashCore.create, HashCore.open)

_PUT = int(OpCode.MAP_PUT)
_DELETE = int(OpCode.MAP_DELETE)
_POP = int(OpCode.MAP_POP)
_CLEAR = int(OpCode.MAP_CLEAR)
_MISSING = object()


class _NoType:
    """Matches no key's type: codecs other than bytes always run."""


class PHashMap(MutableMapping):
    """A hash map that lives in a pool, bound to ``name``; opens or creates it.

    ``key_codec`` / ``value_codec`` (``bytes`` by default; ``str``, ``int``,
    ``"msgpack"``) are fixed at creation and stored in the pool; reopening
    needs neither. ``replicator`` picks the backend (the pool's
    :class:`~blizzard.replication.local.LocalReplicator` by default);
    ``linearizable=True`` makes every read pass the replicator's read barrier;
    the default (None) lets the replicator decide (Raft: yes, local: no need).

    Costs: ``m[k]`` reads one page (more on an overflow chain) and no
    fences; ``m[k] = v`` is one Op and one transaction with two undo entries
    (the slot and the header), occasionally a bounded split or compaction;
    ``len`` is O(1).
    """

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, replicator: Replicator | None = None,
                 linearizable: bool | None = None) -> None:
        registry = registry_for(pool)
        self._replicator = replicator if replicator is not None else registry.replicator
        core = registry.open_structure(
            name, TAG,
            None if key_codec is None else get_codec(key_codec).name,
            None if value_codec is None else get_codec(value_codec).name,
            self._replicator, ("bytes", "bytes"))
        if not isinstance(core, HashCore):
            raise TypeError(f"{name!r} is not a hash map")
        # with a replicator that applies on another thread, reads hold its lock
        self._core = core = locked_reads(core, self._replicator.read_lock)
        self.name = name
        self.pool = pool
        kc = get_codec(core.key_codec)
        vc = get_codec(core.value_codec)
        self.key_codec, self.value_codec = kc, vc
        self._kenc = kc.encode
        self._kdec = kc.decode
        self._venc = vc.encode
        self._vdec = vc.decode
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

    # -- reads ---------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        # bytes keys skip the codec call: this is the hot read path
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
        if self._barrier is not None:
            self._barrier()
        try:
            kb = self._kenc(key)
        except TypeError:
            return False
        return self._get(kb) is not None

    def __len__(self) -> int:
        if self._barrier is not None:
            self._barrier()
        return self._core.count

    def __iter__(self) -> Iterator[Any]:
        """Keys, bucket by bucket (no particular order). Snapshot the keys of one
        bucket at a time; do not mutate while iterating."""
        kdec = self._kdec
        for kb in self._core.keys_raw():
            yield kdec(kb)

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` bytes, without codecs."""
        return self._core.items_raw()

    # -- writes (each one Op) --------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        kb = key if type(key) is self._kraw else self._kenc(key)
        if len(kb) > KEY_BYTES_MAX:
            raise ValueError(f"keys are at most {KEY_BYTES_MAX} bytes encoded, got {len(kb)}")
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

    def clear(self) -> None:
        """Remove everything (one Op; frees every page)."""
        self._submit(self._encoder.zero(_CLEAR))

    # -- inspection ----------------------------------------------------------------------

    def check(self) -> None:
        """Walk the persistent layout and verify every invariant (O(n))."""
        self._core.check()

    @property
    def replicator(self) -> Replicator:
        return self._replicator

    def stats(self) -> dict[str, int]:
        core = self._core
        pages = sum(len(core.chain(b)) for b in range(core.nbuckets))
        return {"count": core.count, "buckets": core.nbuckets, "pages": pages,
                "page_bytes": _hashcore.PAGE_BYTES}

    def __repr__(self) -> str:
        codecs = f"{self.key_codec.name}->{self.value_codec.name}"
        return f"<PHashMap {self.name!r} len={len(self)} {codecs}>"
