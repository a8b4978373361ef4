"""A mirror node's own small persistent record: epoch, position, flags.

Kept beside the pool (``mirror.state`` in the node's directory), never in
it: a backup's pool must stay byte-for-byte the primary's. Each field is an
8-byte word, written then persisted on its own (a word never tears), in an
order that keeps the record truthful across a crash:

* ``in_sync`` is cleared (and persisted) before a resynchronisation writes
  anything into the pool, and set only once the pool is a crash image of
  the primary at ``position``;
* ``position`` (the last fence made durable) is advanced after that fence's
  ranges were flushed and fenced in the pool, before it is acknowledged;
* ``epoch`` only grows.

Layout, version 1 (a 4096-byte file)::

    offset | size | field
    0      | 8    | magic b"BLZMST01"
    8      | 8    | epoch: the highest epoch accepted or promised
    16     | 8    | position epoch: the primary whose stream the pool reflects
    24     | 8    | position seq: the last fence of that stream made durable
    32     | 8    | flags: 1 in sync (the pool is a crash image at position),
           |      |        2 primary (this node was serving as primary)

Epochs carry the node that chose them in their low 16 bits
(:func:`next_epoch`), so two nodes promoted at once never share one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from blizzard.exceptions import PoolCorruptError
from blizzard.pmem.media import FileMedia
from blizzard.replication.physical.frames import FLAG_IN_SYNC, FLAG_PRIMARY

MAGIC = b"BLZMST01"
STATE_FILE = "mirror.state"
STATE_BYTES = 4096
_WORD = struct.Struct("<Q")
_EPOCH, _POS_EPOCH, _POS_SEQ, _FLAGS = 8, 16, 24, 32
NODE_BITS = 16
NODE_MAX = (1 << NODE_BITS) - 1


def first_epoch(node: int) -> int:
    """The epoch of a cluster's first primary, ``node``."""
    return (1 << NODE_BITS) | _node(node)


def next_epoch(known: int, node: int) -> int:
    """An epoch above ``known``, chosen by ``node`` (unique to it)."""
    return (((known >> NODE_BITS) + 1) << NODE_BITS) | _node(node)


def epoch_text(epoch: int) -> str:
    """``"3.2"``: the third term, chosen by node 2."""
    return f"{epoch >> NODE_BITS}.{epoch & NODE_MAX}"


def _node(node: int) -> int:
    if not 0 < node <= NODE_MAX:
        raise ValueError(f"node id {node} out of range 1..{NODE_MAX} for mirror epochs")
    return node


class MirrorState:
    """The record of one node, mapped; every setter persists before returning."""

    def __init__(self, directory: str | os.PathLike[str], *, mode: str = "pmem") -> None:
        path = Path(directory) / STATE_FILE
        self.path = path
        fresh = not path.exists()
        self._media = FileMedia(path, mode=mode, create_size=STATE_BYTES if fresh else None)
        buf = self._media.buf
        if fresh:
            buf[:8] = MAGIC
            self._media.persist(0, 8)
        elif self._media.size < STATE_BYTES or bytes(buf[:8]) != MAGIC:
            self._media.close()
            raise PoolCorruptError(f"{path}: not a mirror state file")

    def _get(self, off: int) -> int:
        return _WORD.unpack_from(self._media.buf, off)[0]

    def _set(self, off: int, value: int) -> None:
        _WORD.pack_into(self._media.buf, off, value)
        self._media.persist(off, 8)

    @property
    def epoch(self) -> int:
        return self._get(_EPOCH)

    def raise_epoch(self, epoch: int) -> bool:
        """Accept ``epoch`` if it is newer; True if it is now the epoch."""
        if epoch < self.epoch:
            return False
        if epoch > self.epoch:
            self._set(_EPOCH, epoch)
        return True

    @property
    def position(self) -> tuple[int, int]:
        return self._get(_POS_EPOCH), self._get(_POS_SEQ)

    def set_position(self, epoch: int, seq: int) -> None:
        if self._get(_POS_EPOCH) != epoch:
            assert not self.in_sync, "the position's epoch changes only out of sync"
            self._set(_POS_EPOCH, epoch)
        self._set(_POS_SEQ, seq)

    @property
    def flags(self) -> int:
        return self._get(_FLAGS)

    @property
    def in_sync(self) -> bool:
        return bool(self.flags & FLAG_IN_SYNC)

    @property
    def primary(self) -> bool:
        return bool(self.flags & FLAG_PRIMARY)

    def set_in_sync(self, value: bool) -> None:
        self._set(_FLAGS, (self.flags & ~FLAG_IN_SYNC) | (FLAG_IN_SYNC if value else 0))

    def set_primary(self, value: bool) -> None:
        self._set(_FLAGS, (self.flags & ~FLAG_PRIMARY) | (FLAG_PRIMARY if value else 0))

    def close(self) -> None:
        self._media.close()

    def __repr__(self) -> str:
        return (f"<MirrorState epoch {epoch_text(self.epoch)} position "
                f"{epoch_text(self.position[0])}/{self.position[1]} flags {self.flags}>")
