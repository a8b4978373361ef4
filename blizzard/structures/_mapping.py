"""The user-facing side every persistent map shares (PHashMap and the ordered maps).

A :class:`collections.abc.MutableMapping` whose reads go straight to the
structure's core and whose every mutation is one Op handed to the
replicator. The faces (:class:`~blizzard.structures.PHashMap`,
``_ordered.OrderedMap``) add their iteration order and their own API.

Where a persistent map differs from ``dict`` on purpose (each is in
``docs/structures.md``):

* a key the key codec cannot encode is absent: ``k in m`` is False, ``m[k]``
  raises KeyError, ``m.get(k)`` returns the default -- as a dict does for a
  key it does not hold; *writing* such a key raises EncodeError (TypeError);
* ``copy()`` returns a plain ``dict`` snapshot: a second persistent map
  needs a pool and a name of its own;
* values are stored encoded, so mutating a value after reading it (or
  after ``setdefault``) changes only your copy: write it back with
  ``m[k] = v``, as with :mod:`shelve` (``writeback=False``).

The hot half (codecs, Op submission, reads through the core) is
:class:`MapFace`, typed Python (``_mapping.pxd``): compiled, it is an
extension type whose methods are the C slots of every map class, so a put or
a get runs no interpreted code on its way to the replicator or the core.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import cython

from blizzard.exceptions import EncodeError, KeyTooLongError, StructureKindError
from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures._closed import CLOSED_ERRORS, close_handle, reraise_if_closed
from blizzard.structures._corebase import MapCore
from blizzard.structures._locking import locked_reads
from blizzard.structures.codecs import BYTES, CodecLike, get_codec
from blizzard.structures.ops import Encoder
from blizzard.structures.registry import registry_for

_MISSING = object()


class _NoType:
    """Matches no key's type: codecs other than bytes always run."""


class MapFace:
    """The hot methods of :class:`PersistentMap`, bound by ``_bind``."""

    def _bind(self, name: str, core: Any, replicator: Replicator, linearizable: bool | None,
              raw: bool) -> None:
        """Wire the face to a core (its reads) and a replicator (its writes); the
        remote client binds the same faces to network ones.

        ``raw``: keys and values are bytes in and out, whatever codecs the map
        was created with (for servers and tools passing encoded bytes along).
        """
        self._replicator = replicator
        self._core = core
        self.name = name
        kc = BYTES if raw else get_codec(core.key_codec)
        vc = BYTES if raw else get_codec(core.value_codec)
        self.key_codec, self.value_codec = kc, vc
        self._kenc, self._kdec = kc.encode, kc.decode
        self._venc, self._vdec = vc.encode, vc.decode
        self._encoder = Encoder(name)
        self._put_op = self._encoder.two
        cls: Any = type(self)  # a PersistentMap subclass: it sets the codes
        self._put, self._delete = cls._put_code, cls._delete_code
        self._pop, self._clear = cls._pop_code, cls._clear_code
        self._key_bytes_max = cls.key_bytes_max
        # bytes codecs are the identity on bytes: the hot paths skip their calls
        self._kraw: Any = bytes if kc is BYTES else _NoType
        self._vraw = vc is BYTES
        self._vraw_type: Any = bytes if vc is BYTES else _NoType
        self._submit = replicator.submit
        self._get = core.get
        # a local core read without a lock (not a remote one, nor one behind the
        # replicator's lock): the compiled reads call its get as a C method
        self._reader = core if isinstance(core, MapCore) else None
        if linearizable is None:
            linearizable = replicator.linearizable_default
        self._barrier = replicator.read_barrier if linearizable else None

    # -- reads ---------------------------------------------------------------------------

    def _read(self) -> None:
        if self._barrier is not None:
            self._barrier()

    def __getitem__(self, key: Any) -> Any:
        # bytes keys skip the codec call: this is the hot read path
        try:
            kb = key if type(key) is self._kraw else self._kenc(key)
        except EncodeError:
            raise KeyError(key) from None
        if self._barrier is not None:
            self._barrier()
        # compiled, a local core's get is a C call: no bound method, argument
        # tuple or type check between m[k] and the probe (see _bind)
        if cython.compiled and self._reader is not None:
            raw = self._reader.get(kb)
        else:
            raw = self._get(kb)
        if raw is None:
            raise KeyError(key)
        return raw if self._vraw else self._vdec(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            kb = key if type(key) is self._kraw else self._kenc(key)
        except EncodeError:
            return default
        if self._barrier is not None:
            self._barrier()
        if cython.compiled and self._reader is not None:
            raw = self._reader.get(kb)
        else:
            raw = self._get(kb)
        if raw is None:
            return default
        return raw if self._vraw else self._vdec(raw)

    def __contains__(self, key: object) -> bool:
        try:
            kb = self._kenc(key)
        except EncodeError:
            return False
        self._read()
        if cython.compiled and self._reader is not None:
            return self._reader.get(kb) is not None
        return self._get(kb) is not None

    def __len__(self) -> int:
        self._read()
        return self._core.count

    # -- writes (each one Op) --------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        kb = key if type(key) is self._kraw else self._kenc(key)
        if len(kb) > self._key_bytes_max:
            raise KeyTooLongError(f"keys are at most {self._key_bytes_max} bytes encoded, "
                                  f"got {len(kb)}")
        vb = value if type(value) is self._vraw_type else self._venc(value)
        self._submit(self._encoder.two(self._put, kb, vb))

    def __delitem__(self, key: Any) -> None:
        try:
            kb = self._kenc(key)
        except EncodeError:
            raise KeyError(key) from None
        if not self._submit(self._encoder.one(self._delete, kb)):
            raise KeyError(key)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, atomically (one Op)."""
        try:
            kb = self._kenc(key)
        except EncodeError:
            raw = None
        else:
            raw = self._submit(self._encoder.one(self._pop, kb))
        if raw is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self._vdec(raw)

    def clear(self) -> None:
        """Remove everything (one Op; frees every block)."""
        self._submit(self._encoder.zero(self._clear))


class PersistentMap(MapFace, MutableMapping):
    """Base of the persistent maps; see :class:`~blizzard.structures.PHashMap`."""

    tag: bytes = b""  # the tag of this kind's root in the pool
    _core_type: type = object
    _kind = "map"
    key_bytes_max = 0
    _put_code = _delete_code = _pop_code = _clear_code = 0

    def __init__(self, pool: Pool, name: str, *, key_codec: CodecLike, value_codec: CodecLike,
                 replicator: Replicator | None, linearizable: bool | None,
                 raw: bool = False) -> None:
        registry = registry_for(pool)
        replicator = replicator if replicator is not None else registry.replicator
        core = registry.open_structure(
            name, self.tag,
            None if key_codec is None else get_codec(key_codec).name,
            None if value_codec is None else get_codec(value_codec).name,
            replicator, ("bytes", "bytes"))
        if not isinstance(core, self._core_type):
            raise StructureKindError(f"{name!r} is not a {self._kind}")
        self.pool = pool
        # with a replicator that applies on another thread, reads hold its lock
        self._bind(name, locked_reads(core, replicator.read_lock), replicator, linearizable,
                   raw)
        registry.attach(self)

    def _pool_closed(self) -> None:
        """The pool closed: every later use raises PoolClosedError (see ``_closed``)."""
        self._reader = None  # reads go through _get, which close_handle replaces
        close_handle(self)

    def _iterate(self, items: Iterator[Any]) -> Iterator[Any]:
        """``items`` (from the core), as PoolClosedError if the pool closes meanwhile."""
        try:
            yield from items
        except CLOSED_ERRORS as error:
            reraise_if_closed(self, error)
            raise

    def _items(self) -> Iterator[tuple[Any, Any]]:
        """Every ``(key, value)`` decoded, read as a scan (not one lookup per key)."""
        raise NotImplementedError

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` of the contents now (a scan: O(n))."""
        return dict(self._items())

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` bytes, without codecs."""
        raise NotImplementedError

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``m[key]`` if present, else store ``default`` and return it.

        The value returned is a decoded copy: mutating it does not change the
        map (write it back with ``m[key] = value``), as with :mod:`shelve`.
        """
        return super().setdefault(key, default)

    # -- inspection ----------------------------------------------------------------------

    def check(self) -> None:
        """Walk the persistent layout and verify every invariant (O(n))."""
        self._core.check()

    @property
    def replicator(self) -> Replicator:
        return self._replicator

    def __repr__(self) -> str:
        codecs = f"{self.key_codec.name}->{self.value_codec.name}"
        size = "pool closed" if self.pool.closed else f"len={len(self)}"
        return f"<{type(self).__name__} {self.name!r} {size} {codecs}>"


__all__ = ["PersistentMap"]
