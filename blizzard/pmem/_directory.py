"""The directory of named roots: how several structures share one pool.

A table of 64-byte entries (offset u64, tag 8 bytes, name 48 bytes UTF-8,
NUL padded): the pool's fixed table of ``dir_entries`` entries at
``dir_off``, then as many extension tables as the roots need, each a
heap block of ``EXT_ENTRIES`` entries::

    entry kind   offset        tag            name
    empty        0             -              -
    root         block offset  up to 8 bytes  1..48 bytes, no NUL
    link         next table    LINK_TAG       all NUL (no root has that name)

When a new root finds every slot taken, the directory grows inside the same
transaction: a zeroed extension block is allocated, the last entry of the
last table moves into its first slot, and that entry's old slot becomes the
link. A pool therefore holds as many roots as its heap has room for (up to
``TABLES_MAX`` tables); tables never shrink. Entries change only inside a
transaction; the volatile index is rebuilt on open and after an abort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from blizzard.exceptions import InvalidNameError, PoolCorruptError, PoolFullError, TransactionError
from blizzard.pmem._layout import DIR_ENTRY, DIR_ENTRY_SIZE, NAME_BYTES_MAX, TAG_BYTES_MAX

if TYPE_CHECKING:
    from blizzard.pmem._tx import Transaction

EXT_ENTRIES = 64
EXT_BYTES = EXT_ENTRIES * DIR_ENTRY_SIZE
LINK_TAG = b"\xffDIRLNK"
TABLES_MAX = 1 << 16
_NO_NAME = bytes(NAME_BYTES_MAX)
assert len(LINK_TAG) <= TAG_BYTES_MAX and b"\0" not in LINK_TAG


class Root(NamedTuple):
    """A named root: the offset of its block and a short tag saying what it is."""

    off: int
    tag: bytes


def encode_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"root names are str, got {type(name).__name__}")
    raw = name.encode("utf-8")
    if not raw or len(raw) > NAME_BYTES_MAX or b"\0" in raw:
        raise InvalidNameError(
            f"root name {name!r} must be 1 to {NAME_BYTES_MAX} UTF-8 bytes without NUL"
        )
    return raw


class Directory:
    def __init__(self, buf: memoryview, dir_off: int, entries: int) -> None:
        self._buf = buf
        self._off = dir_off
        self._entries = entries
        self.reload()

    def reload(self) -> None:
        """Rebuild the index from the tables (on open, and after an abort)."""
        self._index: dict[str, tuple[int, Root]] = {}  # name -> (entry position, root)
        self._tables: list[tuple[int, int]] = []  # (offset, entries), in link order
        self._links: list[int] = []  # positions of link entries
        empty: list[int] = []
        table, count = self._off, self._entries
        while True:
            if len(self._tables) >= TABLES_MAX or table + count * DIR_ENTRY_SIZE > len(self._buf):
                raise PoolCorruptError(f"directory: table at {table} is out of bounds")
            self._tables.append((table, count))
            link = 0
            for pos in range(table, table + count * DIR_ENTRY_SIZE, DIR_ENTRY_SIZE):
                off, tag, raw = DIR_ENTRY.unpack_from(self._buf, pos)
                if not off:
                    empty.append(pos)
                elif raw == _NO_NAME:
                    if tag.rstrip(b"\0") != LINK_TAG or link:
                        raise PoolCorruptError(f"directory entry at {pos}: no name")
                    link = off
                    self._links.append(pos)
                else:
                    self._add(pos, off, tag, raw)
            if not link:
                break
            table, count = link, EXT_ENTRIES
        empty.reverse()  # pop() fills the earliest free slot first
        self._empty = empty

    def _add(self, pos: int, off: int, tag: bytes, raw: bytes) -> None:
        try:
            name = raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise PoolCorruptError(f"directory entry at {pos}: name is not UTF-8") from None
        if name in self._index:
            raise PoolCorruptError(f"directory: name {name!r} appears twice")
        self._index[name] = (pos, Root(off, tag.rstrip(b"\0")))

    def get(self, name: str) -> Root | None:
        found = self._index.get(name)
        return found[1] if found is not None else None

    def items(self) -> dict[str, Root]:
        return {name: root for name, (_, root) in sorted(self._index.items())}

    def __len__(self) -> int:
        return len(self._index)

    def set(self, tx: Transaction, name: str, off: int, tag: bytes) -> None:
        raw = encode_name(name)
        if not isinstance(tag, bytes) or len(tag) > TAG_BYTES_MAX or b"\0" in tag:
            raise InvalidNameError(
                f"root tag must be at most {TAG_BYTES_MAX} bytes without NUL, got {tag!r}"
            )
        if not tx._alloc.is_allocated(off):
            raise TransactionError(f"root {name!r}: offset {off} is not an allocated block")
        found = self._index.get(name)
        if found is not None:
            pos = found[0]
        else:
            if not self._empty:
                self._grow(tx)
            pos = self._empty[-1]
        tx.add(pos, DIR_ENTRY_SIZE)
        DIR_ENTRY.pack_into(self._buf, pos, off, tag, raw)
        if found is None:
            self._empty.pop()
        self._index[name] = (pos, Root(off, tag))

    def _grow(self, tx: Transaction) -> None:
        """Link one more table: the last entry moves into it, its slot becomes the link."""
        if len(self._tables) >= TABLES_MAX:
            raise PoolFullError(f"the directory is full ({len(self._index)} roots in "
                                f"{TABLES_MAX} tables)")
        block = tx.alloc(EXT_BYTES, zero=True)  # fresh: flushed at commit, no undo entry
        table, count = self._tables[-1]
        last = table + (count - 1) * DIR_ENTRY_SIZE
        off, _, raw = DIR_ENTRY.unpack_from(self._buf, last)
        assert off and raw != _NO_NAME, "a full table ends with a root"
        self._buf[block:block + DIR_ENTRY_SIZE] = self._buf[last:last + DIR_ENTRY_SIZE]
        tx.add(last, DIR_ENTRY_SIZE)
        DIR_ENTRY.pack_into(self._buf, last, block, LINK_TAG, _NO_NAME)
        name = raw.rstrip(b"\0").decode("utf-8")
        self._index[name] = (block, self._index[name][1])
        self._tables.append((block, EXT_ENTRIES))
        self._links.append(last)
        self._empty = [block + i * DIR_ENTRY_SIZE for i in range(EXT_ENTRIES - 1, 0, -1)]

    def delete(self, tx: Transaction, name: str) -> None:
        found = self._index.get(name)
        if found is None:
            raise KeyError(name)
        pos = found[0]
        tx.add(pos, DIR_ENTRY_SIZE)
        self._buf[pos : pos + DIR_ENTRY_SIZE] = bytes(DIR_ENTRY_SIZE)
        del self._index[name]
        self._empty.append(pos)
        self._empty.sort(reverse=True)

    def check(self, is_allocated) -> None:
        for name, (_, root) in self._index.items():
            if not is_allocated(root.off):
                raise PoolCorruptError(
                    f"root {name!r} points at {root.off}, not an allocated block"
                )
        for table, _ in self._tables[1:]:
            if not is_allocated(table):
                raise PoolCorruptError(f"directory table at {table} is not an allocated block")
