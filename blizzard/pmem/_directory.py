"""The directory of named roots: how several structures share one pool.

A fixed table of ``DIR_ENTRIES`` 64-byte entries (offset u64, tag 8 bytes,
name 48 bytes UTF-8, NUL padded). An entry with offset 0 is empty. Entries
change only inside a transaction; a dict index is rebuilt on open and after
an abort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from blizzard.exceptions import PoolCorruptError, PoolFullError, TransactionError
from blizzard.pmem._layout import DIR_ENTRY, DIR_ENTRY_SIZE, NAME_BYTES_MAX, TAG_BYTES_MAX

if TYPE_CHECKING:
    from blizzard.pmem._tx import Transaction


class Root(NamedTuple):
    """A named root: the offset of its block and a short tag saying what it is."""

    off: int
    tag: bytes


def encode_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"root names are str, got {type(name).__name__}")
    raw = name.encode("utf-8")
    if not raw or len(raw) > NAME_BYTES_MAX or b"\0" in raw:
        raise ValueError(
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
        self._index: dict[str, tuple[int, Root]] = {}
        self._empty: list[int] = []
        for slot in range(self._entries - 1, -1, -1):
            off, tag, raw = DIR_ENTRY.unpack_from(self._buf, self._off + slot * DIR_ENTRY_SIZE)
            if not off:
                self._empty.append(slot)
                continue
            try:
                name = raw.rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError:
                raise PoolCorruptError(f"directory entry {slot}: name is not UTF-8") from None
            if name in self._index:
                raise PoolCorruptError(f"directory: name {name!r} appears twice")
            self._index[name] = (slot, Root(off, tag.rstrip(b"\0")))

    def get(self, name: str) -> Root | None:
        found = self._index.get(name)
        return found[1] if found is not None else None

    def items(self) -> dict[str, Root]:
        return {name: root for name, (_, root) in sorted(self._index.items())}

    def set(self, tx: Transaction, name: str, off: int, tag: bytes) -> None:
        raw = encode_name(name)
        if not isinstance(tag, bytes) or len(tag) > TAG_BYTES_MAX or b"\0" in tag:
            raise ValueError(
                f"root tag must be at most {TAG_BYTES_MAX} bytes without NUL, got {tag!r}"
            )
        if not tx._alloc.is_allocated(off):
            raise TransactionError(f"root {name!r}: offset {off} is not an allocated block")
        found = self._index.get(name)
        if found is not None:
            slot = found[0]
        elif self._empty:
            slot = self._empty[-1]
        else:
            raise PoolFullError(f"the directory is full ({self._entries} roots)")
        pos = self._off + slot * DIR_ENTRY_SIZE
        tx.add(pos, DIR_ENTRY_SIZE)
        DIR_ENTRY.pack_into(self._buf, pos, off, tag, raw)
        if found is None:
            self._empty.pop()
        self._index[name] = (slot, Root(off, tag))

    def delete(self, tx: Transaction, name: str) -> None:
        found = self._index.get(name)
        if found is None:
            raise KeyError(name)
        slot = found[0]
        pos = self._off + slot * DIR_ENTRY_SIZE
        tx.add(pos, DIR_ENTRY_SIZE)
        self._buf[pos : pos + DIR_ENTRY_SIZE] = bytes(DIR_ENTRY_SIZE)
        del self._index[name]
        self._empty.append(slot)

    def check(self, is_allocated) -> None:
        for name, (_, root) in self._index.items():
            if not is_allocated(root.off):
                raise PoolCorruptError(
                    f"root {name!r} points at {root.off}, not an allocated block"
                )
