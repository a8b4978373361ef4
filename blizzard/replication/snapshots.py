"""Snapshots as pool images: taken without stopping, streamed, installed in place.

The state machine lives in a pool and survives restarts, so compacting the
Raft log needs no copy of it: the log only records the snapshot's index,
term and membership (data-less snapshots). A copy is needed only when a
follower is so far behind that the entries it lacks are compacted away --
then the leader's node sends it an image of the pool:

1. **taking** -- a :class:`~blizzard.pmem.image.PoolImage` copies the pool
   a slice per turn while it keeps changing, then finishes between two
   turns: the image is the pool as of the index applied then (``A``);
2. **sending** -- the used pieces of the image, in ``DATA`` frames over the
   node's own transport, a bounded number of bytes per turn (a full outbox
   pauses the stream: backpressure), between a ``BEGIN`` and an ``END``
   frame; the core's MsgSnap is not sent, the follower makes it;
3. **installing** -- the follower writes the frames where its
   :class:`StateImages` keeps an incoming image (a file beside the pool),
   and once complete -- every piece there, every checksum right -- makes it
   durable, then steps a MsgSnap for index ``A`` into its core: the Ready
   that follows persists the snapshot's index in the log, then has the
   image copied over the live pool (``StateImages.install``).

A stream that loses a frame (a reconnection) is never completed; the
leader's core retries the snapshot after an election timeout, with a new
stream. Frames may arrive twice or in any order: every frame carries the
stream's header, so any of them starts it on the receiver; a newer stream
(a later leader term, or a later stream id) replaces an unfinished one;
each DATA frame carries its sequence number, offset and CRC, and writing it
twice is harmless; the stream completes when the END frame and every chunk
it counts have arrived.

Frames (little endian) start with ``STREAM_MAGIC``, which no Raft message
starts with (those start with their version, 1)::

    header : magic u8 | kind u8 | stream u64 | index u64 | term u64 | leader term u64 |
             pool size u64 | bytes to come u64
    BEGIN  : header
    DATA   : header | seq u32 | offset u64 | crc32 u32 | bytes
    END    : header | count u32 | voters u16 | learners u16 | ids u64...
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Protocol
from zlib import crc32

from blizzard.exceptions import SnapshotInstallError
from blizzard.pmem import Pool
from blizzard.pmem.image import PoolImage
from blizzard.replication.raft.messages import ConfState, MsgSnap, Snapshot, SnapshotMeta

log = logging.getLogger("blizzard.snapshots")

STREAM_MAGIC = 0xB1
BEGIN, DATA, END = 0, 1, 2
_HEADER = struct.Struct("<BBQQQQQQ")
_DATA = struct.Struct("<IQI")
_END = struct.Struct("<IHH")
CHUNK_BYTES = 256 << 10
SEND_BYTES_PER_TURN = 4 << 20  # bounded, so a turn stays short whatever the image's size
COPY_BYTES_PER_TURN = 4 << 20
FINISH_PENDING_MAX = 4 << 20  # the image finishes once at most this much is left to copy


class StateImages(Protocol):
    """Where a node's state machine pool is copied from and installed into.

    Provided by whoever opened the pools (the cluster's replicator, the
    simulator): the incoming image must survive a crash once ``complete``
    returned, so that an install interrupted by a crash can be done again.
    """

    pool: Pool  #: the state machine's pool (images of it are sent to followers)

    def begin(self, index: int, size: int, total: int) -> None:
        """A stream of ``total`` bytes for a pool of ``size`` bytes starts:
        check there is room (else :class:`SnapshotInstallError`), forget any
        partial image."""

    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset`` of the incoming image."""

    def complete(self, index: int, term: int) -> None:
        """Every piece arrived: make the incoming image durable (for index ``index``)."""

    def abort(self) -> None:
        """Drop a partial incoming image (a complete one stays)."""

    def discard(self) -> None:
        """Drop the incoming image, complete or not (the node did not need it)."""

    def install(self, index: int) -> None:
        """Replace the pool's contents by the completed image of ``index`` and
        rebuild everything built on the pool. Between transactions; must be
        safe to do again after a crash in the middle."""


def is_stream_frame(frame: bytes) -> bool:
    return len(frame) > 0 and frame[0] == STREAM_MAGIC


def _chunks(image: PoolImage) -> Iterator[tuple[int, int]]:
    for off, n in image.pieces():
        for start in range(off, off + n, CHUNK_BYTES):
            yield start, min(CHUNK_BYTES, off + n - start)


class ImageJob:
    """The leader's image: copied over several turns, then sent to followers."""

    _ids = itertools.count(1)

    def __init__(self, pool: Pool) -> None:
        self.image = PoolImage(pool, slice_bytes=COPY_BYTES_PER_TURN)
        self.meta: SnapshotMeta | None = None  # set when the copy finished
        self.senders: dict[int, ImageSender] = {}
        self.waiting: set[int] = set()  # followers the image is for, once finished

    @property
    def finished(self) -> bool:
        return self.meta is not None

    def step(self) -> bool:
        """Copy one slice; True when what is left is small enough to finish now."""
        return self.image.step() <= FINISH_PENDING_MAX

    def finish(self, meta: SnapshotMeta, leader_term: int) -> None:
        self.image.finish()
        self.meta = meta
        self.leader_term = leader_term
        for target in sorted(self.waiting):
            self.senders[target] = ImageSender(next(self._ids), target, self)
        self.waiting.clear()

    def add_target(self, target: int) -> None:
        if target in self.senders:
            return
        if self.finished:
            self.senders[target] = ImageSender(next(self._ids), target, self)
        else:
            self.waiting.add(target)

    def close(self) -> None:
        self.image.close()


class ImageSender:
    """One stream of a finished image to one follower."""

    def __init__(self, stream: int, target: int, job: ImageJob) -> None:
        self.stream = stream
        self.target = target
        self.job = job
        self._frames = self._frames_of(job)
        self._pending: bytes | None = None
        self.done = False
        self.sent_bytes = 0

    def _frames_of(self, job: ImageJob) -> Iterator[bytes]:
        meta = job.meta
        image = job.image
        chunks = list(_chunks(image))
        total = sum(n for _, n in chunks)

        def header(kind: int) -> bytes:
            return _HEADER.pack(STREAM_MAGIC, kind, self.stream, meta.index, meta.term,
                                job.leader_term, image.size, total)

        yield header(BEGIN)
        buf = image.image
        for seq, (off, n) in enumerate(chunks):
            data = bytes(buf[off:off + n])
            yield header(DATA) + _DATA.pack(seq, off, crc32(data)) + data
        conf = meta.conf_state
        ids = conf.voters + conf.learners
        yield (header(END) + _END.pack(len(chunks), len(conf.voters), len(conf.learners))
               + struct.pack(f"<{len(ids)}Q", *ids))

    def pump(self, send: Callable[[int, bytes], bool], budget: int) -> int:
        """Send frames until ``budget`` bytes went out or the transport refuses
        one (tried again next time); returns the bytes sent."""
        sent = 0
        while sent < budget and not self.done:
            frame = self._pending
            if frame is None:
                frame = next(self._frames, None)
                if frame is None:
                    self.done = True
                    break
            if not send(self.target, frame):
                self._pending = frame
                break
            self._pending = None
            sent += len(frame)
        self.sent_bytes += sent
        return sent


class ImageReceiver:
    """A follower's side of the streams: one incoming image at a time."""

    def __init__(self, node_id: int, images: StateImages) -> None:
        self.node_id = node_id
        self.images = images
        self._key: tuple[int, int, int] | None = None  # (leader term, source, stream)
        self._header: tuple | None = None
        self._seen: set[int] = set()
        self._count: int | None = None  # chunks, once the END frame arrived
        self._conf: ConfState | None = None
        self._done: set[tuple[int, int, int]] = set()
        self.installs_refused = 0
        self.last_error: str | None = None

    def receive(self, source: int, frame: bytes) -> MsgSnap | None:
        """Take one frame; the MsgSnap to step once an image is complete."""
        if len(frame) < _HEADER.size:
            return None
        _, kind, stream, index, term, leader_term, size, total = _HEADER.unpack_from(frame, 0)
        key = (leader_term, source, stream)
        if key != self._key:
            if key in self._done or (self._key is not None and key < self._key):
                return None  # a late frame of a stream finished or replaced
            if not self._start(key, source, index, term, leader_term, size, total):
                return None
        body = memoryview(frame)[_HEADER.size:]
        if kind == DATA and len(body) >= _DATA.size:
            seq, off, crc = _DATA.unpack_from(body, 0)
            data = body[_DATA.size:]
            if crc32(data) != crc:
                log.warning("node %d: snapshot stream %d from node %d: chunk %d is corrupt; "
                            "dropping the stream", self.node_id, stream, source, seq)
                self._drop()
                return None
            if seq not in self._seen:
                self.images.write(off, bytes(data))
                self._seen.add(seq)
        elif kind == END and len(body) >= _END.size:
            count, nvoters, nlearners = _END.unpack_from(body, 0)
            ids_bytes = bytes(body[_END.size:])
            if len(ids_bytes) != 8 * (nvoters + nlearners):
                self._drop()
                return None
            ids = struct.unpack(f"<{nvoters + nlearners}Q", ids_bytes)
            self._count = count
            self._conf = ConfState(tuple(ids[:nvoters]), tuple(ids[nvoters:]))
        return self._maybe_complete(source)

    def _start(self, key, source, index, term, leader_term, size, total) -> bool:
        self._drop()
        try:
            self.images.begin(index, size, total)
        except SnapshotInstallError as exc:
            self.installs_refused += 1
            self.last_error = str(exc)
            self._done.add(key)  # refused once: its other frames are ignored
            log.error("node %d: refusing the snapshot at index %d from node %d: %s",
                      self.node_id, index, source, exc)
            return False
        self._key = key
        self._header = (index, term, leader_term)
        return True

    def _maybe_complete(self, source: int) -> MsgSnap | None:
        count = self._count
        if count is None or len(self._seen) < count:
            return None
        if any(seq >= count for seq in self._seen):
            self._drop()
            return None
        index, term, leader_term = self._header
        self.images.complete(index, term)
        self._done.add(self._key)
        conf = self._conf
        self._key = self._header = self._count = self._conf = None
        self._seen = set()
        self.last_error = None
        return MsgSnap(source, self.node_id, leader_term,
                       Snapshot(SnapshotMeta(index, term, conf), b""))

    def _drop(self) -> None:
        if self._key is not None:
            self.images.abort()
        self._key = self._header = self._count = self._conf = None
        self._seen = set()
