"""What every structure's core shares: its header block's common fields.

Each structure has one header block (its named root) that starts alike::

    offset | size | field
    0      | 8    | magic, per kind (BLZHMAP1, ...)
    64     | 16   | key codec name (UTF-8, NUL padded)
    80     | 16   | value codec name (UTF-8, NUL padded)

The rest of the header is the kind's own (see each core's module docstring).

Typed Python (C types in ``_corebase.pxd``): the registry's apply loop calls
``apply`` through this base, a C call into a compiled core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cython

from blizzard.exceptions import StructureCorruptError
from blizzard.pmem._mem import views

if not cython.compiled and TYPE_CHECKING:  # compiled: cimported in the .pxd
    from blizzard.pmem import Transaction
    from blizzard.structures.registry import Registry

KEY_CODEC_OFF = 64
VALUE_CODEC_OFF = 80
CODEC_NAME_BYTES = 16


class CoreBase:
    """Binds a core to its registry and header; subclasses set the class
    attributes and implement ``reload`` and ``apply``.

    ``u8``, ``u32`` and ``u64`` view the pool's memory (see
    :mod:`blizzard.pmem._mem`): ``u64[off >> 3]`` is the 8-byte word at ``off``.
    """

    magic: bytes = b""
    older_magics: tuple[bytes, ...] = ()  # earlier layouts of the kind, still read
    label: str = ""  # "map", "queue"...: for error messages
    header_bytes: int = 0
    hot_bytes: int = 0  # the header's range at +8 that an Op changes (counts, positions)
    opgroup: int = 0  # the high nibble of the opcodes the kind takes (each kind sets it)

    def __init__(self, registry: Registry, name: str, header_off: int) -> None:
        self.registry = registry
        self.pool = registry.pool
        self.buf = self.pool.buf
        self.u8, self.u32, self.u64 = views(self.buf, self.pool.size)
        self.media = self.pool.media
        self.name = name
        self.header_off = header_off
        self.dead = False
        self._hot_bytes = self.hot_bytes
        self.group = self.opgroup  # a C field: the registry reads it for every Op
        self._serial = 0
        buf = self.buf
        if not self._known(bytes(buf[header_off:header_off + 8])):
            raise StructureCorruptError(f"{self.label} {name!r}: bad magic in its header block")
        self.key_codec = _codec_name(buf, header_off + KEY_CODEC_OFF)
        self.value_codec = _codec_name(buf, header_off + VALUE_CODEC_OFF)
        self.reload()

    def _known(self, magic: bytes) -> bool:
        return magic == self.magic or magic in self.older_magics

    def reload(self) -> None:
        raise NotImplementedError

    def _hot(self, tx: Transaction) -> None:
        """Undo-log the header's hot range once per outermost transaction.

        Every Op rewrites the same few header words; logging them at the first
        Op of a transaction is enough to roll all of them back, and saves a log
        entry per Op of a batch. ``reload`` sets ``_serial`` to 0, so a header
        re-read after a rollback or a restore is logged afresh.

        The words are stored last, after the Op's own changes, so the snapshot
        goes without a fence of its own: the Op's first ``add`` fences it with
        its own entry (a put or delete saves one of its four fences), and the
        Op calls ``tx.ready()`` before its stores in case none did.
        """
        if self._serial != tx.serial:
            self._serial = tx.serial
            tx.add(self.header_off + 8, self._hot_bytes, False)

    def rebind(self, header_off: int) -> bool:
        """Follow this structure to a new header block (a snapshot restore put a
        structure of the same name there), so handles on it keep working.

        Returns False, changing nothing, if the block is not of this kind with
        the same codecs: then it is another structure, which needs a new core.
        """
        buf = self.buf
        if (not self._known(bytes(buf[header_off:header_off + 8]))
                or _codec_name(buf, header_off + KEY_CODEC_OFF) != self.key_codec
                or _codec_name(buf, header_off + VALUE_CODEC_OFF) != self.value_codec):
            return False
        self.header_off = header_off
        self.reload()
        return True

    def kill(self) -> None:
        """The structure was dropped (or rolled back out of existence): from now on it
        looks empty (subclasses reset their state) and never reads the pool again."""
        self.dead = True
        self.release()

    def release(self) -> None:
        """Let go of the views of the pool's memory (the pool is closing, or the
        structure is gone): a mapping with views left cannot be unmapped, nor its
        file's lock released."""
        self.u8 = self.u32 = self.u64 = None  # type: ignore[assignment]

    def apply(self, tx: Transaction, index: int, code: int, record: bytes, start: int) -> Any:
        """Apply one Op (the registry has checked its header); returns its result."""
        raise NotImplementedError

    @classmethod
    def _new_header(cls, tx: Transaction, key_codec: str, value_codec: str) -> int:
        """A zeroed header block with the magic and codec names written."""
        buf = tx._buf
        off = tx.alloc(cls.header_bytes, zero=True)
        buf[off:off + 8] = cls.magic
        for field, codec in ((KEY_CODEC_OFF, key_codec), (VALUE_CODEC_OFF, value_codec)):
            raw = codec.encode()
            buf[off + field:off + field + len(raw)] = raw
        return off


class MapCore(CoreBase):
    """The core of a map (hash, B+tree, skiplist): a lookup by encoded key.

    A base of its own so that a map's face can hold its core typed as this
    class and call ``get`` as a C method (compiled): ``m[k]`` then makes no
    Python-level call between the face and the core's probe.
    """

    def get(self, kb: bytes) -> bytes | None:
        """The value stored under ``kb``, or None."""
        raise NotImplementedError


def _codec_name(buf: memoryview, off: int) -> str:
    return bytes(buf[off:off + CODEC_NAME_BYTES]).rstrip(b"\0").decode()
