"""The registry: a pool's StateMachine, dispatching each Op to its structure.

One registry per open pool (:func:`registry_for`). It finds the structures
through the pool's named roots (the root's tag says the kind) and applies
Ops: each batch in one pool transaction.

``last_applied`` without an extra undo entry per Op: every structure's
header carries ``applied``, the index of the last Op applied to it, updated
in the same undo-logged range as its count. Ops that touch no structure
(CREATE, DROP, invalid Ops) stamp the registry's own record. Since Ops are
applied in index order and each transaction is atomic, after any crash
``last_applied == max(registry.applied, every structure's applied)`` and
every Op up to it was applied exactly once.

Registry record (root ``blizzard.registry``, tag ``registry``), version 1::

    offset | size | field
    0      | 8    | magic b"BLZREG01"
    8      | 8    | applied: index of the last Op that touched no structure
    16     | 48   | reserved, zero
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import cython

from blizzard.exceptions import (
    CodecMismatchError,
    OpDecodeError,
    PoolClosedError,
    StructureCorruptError,
    StructureKindError,
)
from blizzard.pmem import Pool, Transaction
from blizzard.replication.base import Replicator
from blizzard.replication.local import LocalReplicator
from blizzard.structures import ops
from blizzard.structures.ops import OP_VERSION, OpCode

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import piece, u32_of
else:
    from blizzard.pmem._mem import piece, u32_of

REGISTRY_ROOT = "blizzard.registry"
REGISTRY_TAG = b"registry"
REGISTRY_MAGIC = b"BLZREG01"
REGISTRY_SIZE = 64
SNAPSHOT_MAGIC = b"BLZSNAP1"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class Core(Protocol):
    """The apply side of one structure (shared by every handle on it)."""

    name: str
    tag: bytes
    header_off: int
    key_codec: str
    value_codec: str
    count: int  # entries (maps) or items (queues)
    opgroup: int  # the high nibble of the opcodes it takes
    group: int  # the same, as the instance's own (C) field

    @property
    def applied(self) -> int: ...
    def apply(self, tx: Transaction, index: int, code: int, record: bytes, start: int) -> Any: ...
    def reload(self) -> None: ...
    def rebind(self, header_off: int) -> bool: ...
    def kill(self) -> None: ...
    def release(self) -> None: ...
    def destroy(self, tx: Transaction) -> None: ...
    def check(self) -> None: ...
    def dump(self) -> Iterator[tuple[bytes, ...]]: ...
    def load(self, tx: Transaction, items: list[tuple[bytes, ...]]) -> None: ...


#: tag -> (create(registry, tx, name, key codec, value codec), open(registry, name, off))
KINDS: dict[bytes, tuple[Callable[..., Core], Callable[..., Core]]] = {}


def register_kind(tag: bytes, create: Callable[..., Core], open_: Callable[..., Core]) -> None:
    """Make structures tagged ``tag`` known to every registry (done at import)."""
    KINDS[tag] = (create, open_)


class Registry:
    """The StateMachine of one pool: its structures, by name.

    Not thread-safe on its own; replicators serialise ``apply``.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.buf = pool.buf
        self._transaction = pool.transaction
        # rebuild caches once the outermost transaction has really rolled back
        pool.abort_hooks.append(self._after_abort)
        # the handles (faces) opened on this pool: closing it closes them
        # (by id: maps are unhashable, as dicts are)
        self._faces: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        pool.close_hooks.append(self._after_close)
        self.txgen = 0  # bumped per transaction: cores undo-log their header once per batch
        root = pool.root(REGISTRY_ROOT)
        if root is None:
            with pool.transaction() as tx:
                off = tx.alloc(REGISTRY_SIZE, zero=True)
                self.buf[off:off + 8] = REGISTRY_MAGIC
                tx.set_root(REGISTRY_ROOT, off, REGISTRY_TAG)
            root = pool.root(REGISTRY_ROOT)
            assert root is not None
        if root.tag != REGISTRY_TAG or bytes(self.buf[root.off:root.off + 8]) != REGISTRY_MAGIC:
            raise StructureCorruptError(f"root {REGISTRY_ROOT!r} is not a Blizzard registry record")
        self._off = root.off
        self._cores: dict[bytes, Core] = {}
        self._applied = 0
        self._local: LocalReplicator | None = None
        self._copies: dict[str, int] | None = None  # see count_copies
        self._arg_bytes = 0  # apply_to_structure bytes not yet added to _copies
        # Cores that DROP or restore removed in the running transaction: killed once it
        # commits, brought back by the rebuild if it rolls back (handles hold them).
        self._dropped: list[Core] = []
        self._load_cores()

    # -- volatile state -------------------------------------------------------------

    def reload(self) -> None:
        """The pool was replaced wholesale (:meth:`Pool.reload`, a snapshot image):
        find the registry record again and rebuild every core; handles on a
        structure that is still there, of the same kind and codecs, go on working."""
        root = self.pool.root(REGISTRY_ROOT)
        if (root is None or root.tag != REGISTRY_TAG
                or bytes(self.buf[root.off:root.off + 8]) != REGISTRY_MAGIC):
            raise StructureCorruptError(f"root {REGISTRY_ROOT!r} is not a Blizzard registry record")
        self._off = root.off
        self.txgen += 1  # no core may trust what it undo-logged before
        self._load_cores()

    def _load_cores(self) -> None:
        """(Re)build every core from the pool's roots, keeping the core objects
        handles hold wherever the pool still has their structure."""
        self._shared: dict[str, Any] = {}  # see shared(): rebuilt with the cores
        candidates: dict[bytes, list[Core]] = {}
        for core in [*self._cores.values(), *self._dropped]:
            candidates.setdefault(core.name.encode(), []).append(core)
        self._dropped = []
        cores: dict[bytes, Core] = {}
        applied = _U64.unpack_from(self.buf, self._off + 8)[0]
        for name, root in self.pool.roots().items():
            kind = KINDS.get(root.tag)
            if kind is None or name == REGISTRY_ROOT:
                continue
            raw = name.encode()
            same = candidates.pop(raw, [])
            kept = next((c for c in same if c.header_off == root.off and c.tag == root.tag),
                        None)
            if kept is not None:
                kept.reload()
            else:
                kept = next((c for c in same if c.tag == root.tag and c.rebind(root.off)), None)
                if kept is None:
                    kept = kind[1](self, name, root.off)
            core = kept
            for other in same:
                if other is not core:
                    other.kill()
            cores[raw] = core
            applied = max(applied, core.applied)
        for same in candidates.values():
            for core in same:
                core.kill()
        self._cores = cores
        self._applied = applied

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """Volatile state that the cores of this pool share, one object per ``key``:
        made by ``make`` on first use, dropped whenever the cores are rebuilt (open,
        rollback, snapshot image). For caches sized by the pool rather than by one
        structure, which every structure keeping its own would multiply."""
        return _shared(self._shared, key, make)

    def _retire(self, tx: Transaction, core: Core) -> None:
        """``core`` left the pool in ``tx``: kill it (its handles then look empty)
        once ``tx`` commits; a rollback brings it back instead."""
        if not self._dropped:
            tx.on_commit(self._kill_dropped)
        self._dropped.append(core)

    def _kill_dropped(self) -> None:
        dropped, self._dropped = self._dropped, []
        for core in dropped:
            if self._cores.get(core.name.encode()) is not core:
                core.kill()

    @property
    def last_applied(self) -> int:
        return self._applied

    def core(self, name: str) -> Core | None:
        """The structure named ``name``, or None."""
        return self._cores.get(name.encode())

    def names(self) -> list[str]:
        return sorted(raw.decode() for raw in self._cores)

    def kind(self, name: str) -> bytes | None:
        """The tag of structure ``name`` (``b"phashmap"``...), or None if there is none."""
        core = self._cores.get(name.encode())
        return None if core is None else core.tag

    @property
    def replicator(self) -> LocalReplicator:
        """The pool's default replicator (local, created on first use)."""
        if self._local is None:
            self._local = LocalReplicator(self)
        return self._local

    # -- applying -------------------------------------------------------------------

    def apply_one(self, index: int, record: bytes) -> Any:
        """Apply one Op in its own transaction (the LocalReplicator's fast path)."""
        if index <= self._applied:
            return None
        data = record if type(record) is bytes else bytes(record)  # the cores read bytes
        self.txgen += 1
        # A rollback rebuilds the volatile state through the pool's abort hook.
        with self._transaction() as tx:
            # the common case inline (a valid Op for an existing structure): one call less
            core = None
            if len(data) >= 8:
                version, code, n, a = data[0], data[1], data[2], u32_of(data, 4)
                if version == OP_VERSION and 8 + n + a == len(data):
                    core = self._cores.get(data[8:8 + n])
                    if core is not None and code >> 4 != core.group:
                        core = None
            if core is not None:
                try:
                    result = core.apply(tx, index, code, data, 8 + n)
                except OpDecodeError as exc:
                    result = exc
                    self._stamp(tx, index)
            else:
                result = self._apply(tx, index, data)
                self._count_arg_bytes()
        self._applied = index
        return result

    def count_copies(self, copies) -> None:
        """Count, in ``copies`` (:class:`~blizzard.replication.copies.Copies`), the Op
        argument bytes (keys, values, items) handed to the structures, which copy
        them once into their own blocks: the stage ``apply_to_structure``."""
        self._copies = copies.counts

    def apply(self, batch: list[tuple[int, bytes]]) -> list[Any]:
        """Apply committed entries in one transaction; see the StateMachine contract."""
        return self.apply_at(batch, 0)

    def apply_at(self, batch: list[tuple[int, bytes]], start: int) -> list[Any]:
        """:meth:`apply` of entries whose Op record begins ``start`` bytes in (after
        a session envelope, say): the cores read each record where it lies, so
        no copy of it is cut out of its entry."""
        results: list[Any] = []
        applied = self._applied
        self.txgen += 1
        # A rollback (here or in an enclosing transaction) rebuilds the volatile
        # state through the pool's abort hook, once the pool is rolled back.
        try:
            with self._transaction() as tx:
                for index, record in batch:
                    if index <= applied:
                        results.append(None)
                        continue
                    results.append(self._apply(tx, index, record, start))
                    applied = index
        finally:
            self._count_arg_bytes()
        self._applied = applied
        return results

    def _count_arg_bytes(self) -> None:
        """Add the Op argument bytes ``_apply`` handed to the cores to the copy counts:
        once per batch, not per Op (a dict update per Op costs as much as the rest of
        the dispatch)."""
        if self._arg_bytes:
            if self._copies is not None:
                self._copies["apply_to_structure"] += self._arg_bytes
            self._arg_bytes = 0

    def _apply(self, tx: Transaction, index: int, record: bytes, start: int = 0) -> Any:
        """Apply the Op record at ``record[start:]`` (it runs to the end)."""
        # the cores read records as bytes (``data`` is typed: its bytes are C loads)
        data = record if type(record) is bytes else bytes(record)
        try:
            size = len(data) - start
            if size < 8:
                ops.decode_head(data[start:])  # raises the precise error
            version, code = data[start], data[start + 1]
            n, a = data[start + 2], u32_of(data, start + 4)
            if version != OP_VERSION or 8 + n + a != size:
                ops.decode_head(data[start:])
            name_end = start + 8 + n
            core = self._cores.get(piece(data, start + 8, n))
            if core is not None and code >> 4 == core.group:
                if self._copies is not None:
                    self._arg_bytes += size - 8 - n  # added to the counts once per batch
                return core.apply(tx, index, code, data, name_end)
            record = data[start:] if start else data  # the rare Ops below read it from 0
            if code == OpCode.CREATE:
                result = self._create(tx, record, 8 + n, 8 + n)
            elif code == OpCode.DROP:
                result = self._drop(tx, record, 8 + n)
            elif core is None:
                raise OpDecodeError(
                    f"Op {code:#x} for structure {bytes(record[8:8 + n])!r}, which does not exist")
            else:
                raise OpDecodeError(f"opcode {code:#x} does not apply to a {core.tag.decode()}")
        except OpDecodeError as exc:
            result = exc
        self._stamp(tx, index)
        return result

    def _stamp(self, tx: Transaction, index: int) -> None:
        tx.add(self._off + 8, 8)
        _U64.pack_into(self.buf, self._off + 8, index)

    def _create(self, tx: Transaction, record: bytes, name_end: int, start: int) -> Any:
        if len(record[8:name_end]) == 0:
            raise OpDecodeError("CREATE without a structure name")
        tag, key_codec, value_codec = ops.split_args(record, start, 3)
        try:
            name = bytes(record[8:name_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise OpDecodeError("structure name is not UTF-8") from None
        existing = self._cores.get(name.encode())
        if existing is not None:
            return _compatible(existing, tag, key_codec.decode(), value_codec.decode())
        if tag not in KINDS:
            raise OpDecodeError(f"CREATE of unknown structure kind {tag!r}")
        if self.pool.root(name) is not None:
            return StructureKindError(f"{name!r} is already a root of the pool, not a structure")
        core = KINDS[tag][0](self, tx, name, key_codec.decode(), value_codec.decode())
        self._cores[name.encode()] = core
        return None

    def _drop(self, tx: Transaction, record: bytes, name_end: int) -> Any:
        raw = bytes(record[8:name_end])
        core = self._cores.get(raw)
        if core is None:
            return KeyError(raw.decode("utf-8", "replace"))
        core.destroy(tx)
        tx.delete_root(core.name)
        del self._cores[raw]
        self._retire(tx, core)
        return None

    def _after_abort(self) -> None:
        """The outermost transaction rolled back: rebuild every volatile index from
        the pool (a pool hook, so it runs after the rollback, and once)."""
        if not self.pool.closed:
            self._load_cores()

    def attach(self, face: Any) -> None:
        """Remember a handle opened on this pool; when the pool closes, its
        ``_pool_closed()`` is called (weakly held: handles may be dropped)."""
        self._faces[id(face)] = face

    def _after_close(self) -> None:
        for face in list(self._faces.values()):
            face._pool_closed()
        self._faces.clear()
        # a view left on the pool's memory would keep its mapping from being released
        for core in [*self._cores.values(), *self._dropped]:
            core.release()

    # -- structure management -------------------------------------------------------

    def open_structure(self, name: str, tag: bytes, key_codec: str | None, value_codec: str | None,
                       replicator: Replicator, default_codecs: tuple[str, str]) -> Core:
        """Open ``name``, creating it (through ``replicator``) if it does not exist."""
        core = self.core(name)
        if core is None:
            kc = key_codec or default_codecs[0]
            vc = value_codec or default_codecs[1]
            op = ops.encode(ops.Op(name, OpCode.CREATE, (tag, kc.encode(), vc.encode())))
            replicator.submit(op)
            core = self.core(name)
            if core is None:
                raise StructureKindError(f"creating {name!r} did not take effect")
        error = _compatible(core, tag, key_codec, value_codec)
        if error is not None:
            raise error
        return core

    def drop(self, name: str, replicator: Replicator | None = None) -> None:
        """Remove structure ``name`` and free its memory (an Op, so it replicates)."""
        (replicator or self.replicator).submit(ops.encode(ops.Op(name, OpCode.DROP)))

    # -- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Every structure and ``last_applied``, as bytes (a full copy, O(n)).

        Format: magic, u64 last_applied, u32 count, then per structure its
        name, tag and codecs (u32-length-prefixed), u64 item count and the
        items, each a u32 field count and u32-length-prefixed fields.
        """
        parts = [SNAPSHOT_MAGIC, _U64.pack(self._applied), _U32.pack(len(self._cores))]
        for raw, core in sorted(self._cores.items()):
            items = list(core.dump())
            for field in (raw, core.tag, core.key_codec.encode(), core.value_codec.encode()):
                parts += (_U32.pack(len(field)), field)
            parts.append(_U64.pack(len(items)))
            for item in items:
                parts.append(_U32.pack(len(item)))
                for field in item:
                    parts += (_U32.pack(len(field)), field)
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        """Replace every structure by the snapshot's, in one transaction."""
        applied, structures = _parse_snapshot(data)
        self.txgen += 1
        with self._transaction() as tx:
            old = self._cores
            for core in old.values():
                core.destroy(tx)
                tx.delete_root(core.name)
            self._cores = {}
            for name, tag, key_codec, value_codec, items in structures:
                if tag not in KINDS:
                    raise OpDecodeError(f"snapshot holds a structure of unknown kind {tag!r}")
                core = KINDS[tag][0](self, tx, name, key_codec, value_codec)
                core.load(tx, items)
                # handles on the old structure of that name follow it, if it is alike
                previous = old.pop(name.encode(), None)
                if previous is not None and previous.tag == tag and previous.rebind(
                        core.header_off):
                    core = previous
                self._cores[name.encode()] = core
            for core in old.values():
                self._retire(tx, core)
            self._stamp(tx, applied)
        self._applied = applied

    # -- checking ---------------------------------------------------------------------

    def check(self) -> None:
        """Check the pool and every structure; and that ``last_applied`` is consistent."""
        self.pool.check()
        applied = _U64.unpack_from(self.buf, self._off + 8)[0]
        for core in self._cores.values():
            core.check()
            applied = max(applied, core.applied)
        if applied != self._applied:
            raise StructureCorruptError(
                f"last_applied is {self._applied} in memory, {applied} in the pool")


@attrs.frozen
class StructureCheck:
    """What :func:`check_structures` found about one named root."""

    name: str
    kind: str  # the root's tag: "phashmap", "pqueue"... or "registry"
    items: int | None  # entries or items; None when unknown (not checked, or broken)
    problem: str | None  # None: its check() passed; else why not
    checked: bool = True  # False for a root that is not a Blizzard structure


class _ReadingRegistry:
    """What a core reads from its registry, for opening cores one by one
    without a Registry (which would write its record into the pool)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.buf = pool.buf
        self.frees: list[int] = []
        self.txgen = 0
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """As :meth:`Registry.shared`: each checked core may read what others cached."""
        return _shared(self._shared, key, make)


def _shared(table: dict[str, Any], key: str, make: Callable[[], Any]) -> Any:
    """``table[key]``, made by ``make`` on first use (see :meth:`Registry.shared`)."""
    value = table.get(key)
    if value is None:
        value = table[key] = make()
    return value


def check_structures(pool: Pool) -> list[StructureCheck]:
    """Open every named structure of ``pool`` on its own and run its ``check()``.

    Unlike :meth:`Registry.check` this writes nothing (a pool without a
    registry record gets none) and does not stop at the first broken
    structure: each root gets its own verdict, in name order. Roots of
    other tags are listed as not checked. The caller checks the pool itself
    (``pool.check()``) first.
    """
    reader = _ReadingRegistry(pool)
    found = []
    for name, root in sorted(pool.roots().items()):
        kind = root.tag.decode("utf-8", "replace")
        if name == REGISTRY_ROOT:
            record = bytes(pool.buf[root.off:root.off + 8])
            problem = None if root.tag == REGISTRY_TAG and record == REGISTRY_MAGIC else \
                f"root {REGISTRY_ROOT!r} is not a Blizzard registry record"
            found.append(StructureCheck(name, "registry", None, problem))
            continue
        opener = KINDS.get(root.tag)
        if opener is None:
            found.append(StructureCheck(name, kind, None, None, checked=False))
            continue
        try:
            core = opener[1](reader, name, root.off)
            core.check()
        except Exception as exc:  # a checker reports whatever a broken layout raises
            problem = str(exc) if isinstance(exc, StructureCorruptError) \
                else f"{type(exc).__name__}: {exc}"
            found.append(StructureCheck(name, kind, None, problem))
        else:
            found.append(StructureCheck(name, kind, core.count, None))
    return found


def _compatible(core: Core, tag: bytes, key_codec: str | None, value_codec: str | None):
    """None if ``core`` matches what the caller asked for, else the error to raise."""
    if core.tag != tag:
        return StructureKindError(
            f"{core.name!r} is a {core.tag.decode()}, not a {tag.decode()}")
    for what, asked, have in (("key", key_codec, core.key_codec),
                              ("value", value_codec, core.value_codec)):
        if asked is not None and asked != have:
            return CodecMismatchError(
                f"{core.name!r} was created with {what} codec {have!r}, not {asked!r}")
    return None


def _parse_snapshot(data: bytes):
    view = memoryview(data)
    if bytes(view[:8]) != SNAPSHOT_MAGIC:
        raise OpDecodeError("not a Blizzard snapshot (bad magic)")
    pos = 8

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(view):
            raise OpDecodeError("snapshot truncated")
        piece = view[pos:pos + n]
        pos += n
        return piece

    def field() -> bytes:
        return bytes(take(_U32.unpack(take(4))[0]))

    applied = _U64.unpack(take(8))[0]
    structures = []
    for _ in range(_U32.unpack(take(4))[0]):
        name, tag, key_codec, value_codec = (field() for _ in range(4))
        items = []
        for _ in range(_U64.unpack(take(8))[0]):
            items.append(tuple(field() for _ in range(_U32.unpack(take(4))[0])))
        structures.append((name.decode(), tag, key_codec.decode(), value_codec.decode(), items))
    if pos != len(view):
        raise OpDecodeError("snapshot has trailing bytes")
    return applied, structures


#: The attribute of a Pool that holds its registry. Kept on the pool itself (a cycle the
#: garbage collector breaks), not in a WeakKeyDictionary: a registry refers to its pool, so
#: as a dictionary value it would keep its key, the pool and its media, alive forever.
_ATTRIBUTE = "_blizzard_registry"


def registry_for(pool: Pool) -> Registry:
    """The registry (StateMachine) of ``pool``: one per open pool, made on first use."""
    if pool.closed:
        raise PoolClosedError("the pool is closed")
    registry = getattr(pool, _ATTRIBUTE, None)
    if registry is None:
        registry = Registry(pool)
        setattr(pool, _ATTRIBUTE, registry)
    return registry
