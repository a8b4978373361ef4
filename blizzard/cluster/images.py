"""Snapshot images in a node's directory: received into a file, then copied in.

The node's side of :mod:`blizzard.replication.snapshots` for a cluster
node: an incoming image is written into ``data.pool.incoming`` (a sparse
file the size of the pool: only the pieces sent take room) and, once
complete, made durable and marked ready (``data.pool.incoming.ok``, its
index). Installing copies its pieces over the live pool, then rebuilds the
pool's volatile state, the registry (handles follow their structures) and
the session table, then deletes both files.

Why a second copy of the state on disk, for a while: copying the image
straight into the pool as frames arrive would leave, after a crash in the
middle, a node holding neither the old state nor the new one, while its
log vouches for entries that only a whole state holds. Kept in its own file
until complete, the image can be copied in again from the start after any
crash (:func:`finish_interrupted_install`, run before the pool is opened).
The pool itself never needs room for two copies: the image replaces it in
place. A node refuses an image (that install fails, the node keeps running
on its state) if its pool has another size, or its directory's filesystem
has not the room for the incoming file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import shutil
from pathlib import Path

from blizzard.exceptions import SnapshotInstallError
from blizzard.pmem import Pool
from blizzard.pmem.image import geometry, used_pieces

log = logging.getLogger("blizzard.images")

INCOMING = "data.pool.incoming"
READY = "data.pool.incoming.ok"
ROOM_MARGIN_BYTES = 16 << 20  # left free on the filesystem beside the incoming image
COPY_BYTES = 8 << 20


def _copy_pieces(source: mmap.mmap, target, persist) -> None:
    g = geometry(source)
    for off, n in used_pieces(source, heap_off=g["heap_off"], table_off=g["table_off"],
                              nchunks=g["nchunks"]):
        for start in range(off, off + n, COPY_BYTES):
            end = min(off + n, start + COPY_BYTES)
            target[start:end] = source[start:end]
            persist(start, end - start)


def finish_interrupted_install(directory: Path, pool_path: Path) -> bool:
    """Before opening the pool: copy a ready incoming image in (again), if a
    crash interrupted its install. Returns whether there was one."""
    ready = directory / READY
    incoming = directory / INCOMING
    if not ready.exists():
        incoming.unlink(missing_ok=True)  # an image never completed: useless
        return False
    with open(incoming, "rb") as src_file, open(pool_path, "r+b") as dst_file:
        source = mmap.mmap(src_file.fileno(), 0, prot=mmap.PROT_READ)
        target = mmap.mmap(dst_file.fileno(), 0)
        try:
            _copy_pieces(source, target, lambda off, n: None)
            target.flush()
        finally:
            source.close()
            target.close()
    log.info("finished installing the snapshot image in %s", directory)
    ready.unlink()
    incoming.unlink(missing_ok=True)
    return True


class FileImages:
    """:class:`~blizzard.replication.snapshots.StateImages` in a node directory."""

    def __init__(self, directory: Path, pool: Pool, reload) -> None:
        self.directory = directory
        self.pool = pool
        self._reload = reload  # rebuilds what is built on the pool (registry, sessions)
        self._file = None

    @property
    def _incoming(self) -> Path:
        return self.directory / INCOMING

    @property
    def _ready(self) -> Path:
        return self.directory / READY

    def begin(self, index: int, size: int, total: int) -> None:
        if self._ready.exists():
            raise SnapshotInstallError("an image received earlier waits to be installed")
        if size != self.pool.size:
            raise SnapshotInstallError(
                f"the image is of a {size}-byte pool, this node's pool has {self.pool.size} "
                "bytes (pool_size must be the same on every node)")
        self.abort()
        free = shutil.disk_usage(self.directory).free
        if free < total + ROOM_MARGIN_BYTES:
            raise SnapshotInstallError(
                f"no room for the image of index {index}: {total} bytes to receive, "
                f"{free} bytes free in {self.directory}")
        self._file = open(self._incoming, "w+b")  # noqa: SIM115 - closed in complete/abort
        self._file.truncate(size)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self._file.fileno(), data, offset)

    def complete(self, index: int, term: int) -> None:
        handle, self._file = self._file, None
        try:
            image = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
            try:
                theirs = geometry(image)
            finally:
                image.close()
            ours = {"size": self.pool.size, "heap_off": self.pool._heap_off,
                    "table_off": self.pool._table_off, "nchunks": self.pool._nchunks}
            if theirs != ours:
                raise SnapshotInstallError(
                    f"the image's pool layout {theirs} is not this node's {ours}")
            os.fsync(handle.fileno())
        except SnapshotInstallError:
            handle.close()
            self._incoming.unlink(missing_ok=True)
            raise
        handle.close()
        temporary = self.directory / (READY + ".tmp")
        temporary.write_text(json.dumps({"index": index, "term": term}))
        os.replace(temporary, self._ready)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._ready.exists():
            self._incoming.unlink(missing_ok=True)

    def discard(self) -> None:
        self.abort()
        self._ready.unlink(missing_ok=True)
        self._incoming.unlink(missing_ok=True)

    def install(self, index: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            ready = json.loads(self._ready.read_text())
            if ready["index"] != index:
                raise SnapshotInstallError(
                    f"the image waiting is of index {ready['index']}, not {index}")
            with open(self._incoming, "rb") as handle:
                source = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
                try:
                    _copy_pieces(source, self.pool.buf, self.pool.media.flush)
                finally:
                    source.close()
            self.pool.media.drain()
            self._ready.unlink()
            self._incoming.unlink(missing_ok=True)
        self.pool.reload()
        self._reload()
