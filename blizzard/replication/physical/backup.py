"""A backup: passive, it writes a primary's fences into its own pool file.

It decodes nothing but the range framing (``frames``): each BATCH's ranges
are written at the same offsets of the backup's pool file, flushed, and at
the fence's final part fenced once (one backup fence per primary fence, so
the image stays a crash image of the primary); its position is recorded
(``state``), then the fence is acknowledged. No data-structure code runs,
as with RDMA's one-sided writes.

What it refuses:

* a HELLO from an older epoch than it has accepted or promised (a deposed
  primary), answered STATE(OLDER_EPOCH) with the newer epoch;
* a BATCH out of sequence, of another epoch, or with a range outside the
  pool: the channel is closed (the primary reconnects and resynchronises);
* any primary at all once it was promoted itself.

One primary channel is in charge at a time: a newer HELLO supersedes the
channel before it, which stops applying at its next message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from blizzard.exceptions import ChannelClosedError, MirrorProtocolError
from blizzard.pmem.media import FileMedia, Media
from blizzard.replication.physical import frames
from blizzard.replication.physical.channel import Channel, MirrorTransport
from blizzard.replication.physical.mirror import digest
from blizzard.replication.physical.state import MirrorState, epoch_text
from blizzard.replication.physical.tcp import TcpMirrorTransport

log = logging.getLogger("blizzard.mirror.backup")

POOL_FILE = "data.pool"
HANDSHAKE_TIMEOUT_S = 10.0


@attrs.define
class BackupStats:
    """What this backup did since it started."""

    batches: int = 0  # fences applied (one backup fence each)
    ranges: int = 0  # ranges written (one flush each)
    range_bytes: int = 0
    flushes: int = 0
    fences: int = 0
    resyncs: int = 0
    resync_bytes: int = 0
    refused: int = 0


def write_ranges(media: Media, message: memoryview) -> tuple[int, int]:
    """Write a BATCH's ranges at their offsets of ``media`` and flush each (no fence:
    the caller fences once, at the fence's final part). Returns (ranges, bytes).

    Every range is checked against the pool's size before anything is written.
    """
    size = media.size
    ranges = list(frames.iter_ranges(message))
    for off, data in ranges:
        if off + len(data) > size:
            raise MirrorProtocolError(f"range [{off}, {off + len(data)}) outside the pool "
                                      f"({size} bytes)")
    buf, flush = media.buf, media.flush
    nbytes = 0
    for off, data in ranges:
        n = len(data)
        buf[off:off + n] = data
        flush(off, n)
        nbytes += n
    return len(ranges), nbytes


class BackupServer:
    """Serves as a backup at ``address``, keeping its pool in ``directory``.

    ``on_promote()``, when given, is called (on the requesting channel's
    thread) for a PROMOTE request; it returns the STATE to answer, or raises.

    ``transport`` carries the primary's stream (TCP by default). A transport
    that is not TCP (DPDK) reaches nodes only: then the backup also listens
    on TCP at ``address`` (``control``), where status, fencing and promotion
    requests arrive from any process -- and a primary over TCP is served too.
    """

    def __init__(self, directory: str | os.PathLike[str], address: tuple[str, int], *,
                 node: int, cluster_id: str = "blizzard", mode: str = "pmem",
                 transport: MirrorTransport | None = None,
                 control: MirrorTransport | None = None,
                 on_promote: Callable[[], frames.State] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.cluster_id = cluster_id
        self.mode = mode
        self.stats = BackupStats()
        self.state = MirrorState(self.directory, mode=mode)
        self.pool_path = self.directory / POOL_FILE
        self.media: FileMedia | None = None
        if self.pool_path.exists():
            self.media = FileMedia(self.pool_path, mode=mode)
        self.on_promote = on_promote
        #: Set once a promotion succeeded and its answer was sent.
        self.promoted = threading.Event()
        self._lock = threading.Lock()
        self._current: Channel | None = None
        self._consistent_at: int | None = None
        self._transport = transport or TcpMirrorTransport()
        self.listeners = []
        if control is not None:
            self.listeners.append(control.listen(address, self._on_channel))
        try:
            self.listeners.append(self._transport.listen(address, self._on_channel))
        except BaseException:
            for listener in self.listeners:
                listener.close()
            if self.media is not None:
                self.media.close()
            self.state.close()
            raise
        self.listener = self.listeners[0]
        self.address = self.listener.address

    # -- requests ----------------------------------------------------------------------------

    def _on_channel(self, channel: Channel) -> None:
        first = channel.receive(HANDSHAKE_TIMEOUT_S)
        if first is None:
            return
        kind = frames.kind_of(first)
        try:
            if kind == frames.Kind.HELLO:
                self._serve_primary(channel, frames.parse_hello(first))
            elif kind == frames.Kind.STATUS:
                channel.send(frames.state(self.describe()))
            elif kind == frames.Kind.FENCE_EPOCH:
                channel.send(frames.state(self.fence_epoch(frames.parse_fence_epoch(first))))
            elif kind == frames.Kind.PROMOTE:
                if self.on_promote is None:
                    channel.send(frames.error(f"node {self.node} cannot be promoted here"))
                else:
                    channel.send(frames.state(self.on_promote()))
                    self.promoted.set()
            else:
                raise MirrorProtocolError(f"unexpected first message (kind {kind})")
        except MirrorProtocolError as exc:
            self.stats.refused += 1
            log.warning("backup %d: %s: %s", self.node, channel.peer, exc)
            with contextlib.suppress(ChannelClosedError):
                channel.send(frames.error(str(exc)))
        except ChannelClosedError:
            raise
        except Exception as exc:  # a failed promotion, say: tell the requester, keep serving
            log.exception("backup %d: request from %s failed", self.node, channel.peer)
            with contextlib.suppress(ChannelClosedError):
                channel.send(frames.error(f"{type(exc).__name__}: {exc}"))

    def describe(self, status: int = frames.Status.OK, text: str = "") -> frames.State:
        """This node's STATE (its counters as JSON in the text, unless ``text``)."""
        state = self.state
        size = self.media.size if self.media is not None else 0
        return frames.State(status, self.node, state.epoch, state.position, state.flags, size,
                            text or json.dumps(attrs.asdict(self.stats)))

    def fence_epoch(self, epoch: int) -> frames.State:
        """Promise ``epoch``: refuse every older primary from now on."""
        with self._lock:
            if not self.state.raise_epoch(epoch):
                return self.describe(frames.Status.OLDER_EPOCH, "older epoch")
            if self._current is not None:
                self._current.close()  # an older primary's channel: it learns at reconnect
                self._current = None
            log.info("backup %d: promised epoch %s", self.node, epoch_text(epoch))
            return self.describe()

    # -- serving a primary -------------------------------------------------------------------

    def _serve_primary(self, channel: Channel, hello: frames.Hello) -> None:
        if hello.cluster_id != self.cluster_id:
            self.stats.refused += 1
            channel.send(frames.state(self.describe(
                frames.Status.BAD_HELLO, f"cluster {hello.cluster_id!r}, expected "
                f"{self.cluster_id!r}")))
            return
        with self._lock:
            if self.state.primary:
                self.stats.refused += 1
                channel.send(frames.state(self.describe(
                    frames.Status.OLDER_EPOCH if hello.epoch < self.state.epoch
                    else frames.Status.REFUSED, f"node {self.node} is primary")))
                return
            if not self.state.raise_epoch(hello.epoch):
                self.stats.refused += 1
                log.warning("backup %d: refused node %d: epoch %s is older than %s", self.node,
                            hello.node, epoch_text(hello.epoch), epoch_text(self.state.epoch))
                channel.send(frames.state(self.describe(frames.Status.OLDER_EPOCH,
                                                        "older epoch")))
                return
            if self._current is not None:
                self._current.close()
            self._current = channel
            self._consistent_at = None
            channel.send(frames.state(self.describe()))
        log.info("backup %d: primary %d (epoch %s) connected from %s", self.node, hello.node,
                 epoch_text(hello.epoch), channel.peer)
        epoch = hello.epoch
        while True:
            message = channel.receive(None)
            with self._lock:
                if self._current is not channel or self.state.epoch != epoch:
                    raise ChannelClosedError("superseded by a newer primary")
                self._apply(channel, epoch, message)

    def _apply(self, channel: Channel, epoch: int, message: bytes | memoryview) -> None:
        kind = frames.kind_of(message)
        if kind == frames.Kind.BATCH:
            self._apply_batch(channel, epoch, memoryview(message))
        elif kind == frames.Kind.BLOCK:
            off, data = frames.parse_block(memoryview(message))
            self._write(off, data)
            self.stats.resync_bytes += len(data)
        elif kind == frames.Kind.RESYNC_BEGIN:
            self._resync_begin(channel, epoch, *frames.parse_resync_begin(message))
        elif kind == frames.Kind.RESYNC_END:
            e, base, consistent = frames.parse_resync_end(message)
            self._check_epoch(epoch, e)
            self._require_media().drain()
            self.stats.fences += 1
            self.state.set_position(epoch, base)
            if consistent <= base:
                self.state.set_in_sync(True)
                self._consistent_at = None
            else:
                self._consistent_at = consistent
            channel.send(frames.ack(base))
        else:
            raise MirrorProtocolError(f"unexpected message kind {kind} from the primary")

    def _apply_batch(self, channel: Channel, epoch: int, message: memoryview) -> None:
        e, seq, final = frames.parse_batch(message)
        self._check_epoch(epoch, e)
        position_epoch, position_seq = self.state.position
        if position_epoch != epoch or seq != position_seq + 1:
            raise MirrorProtocolError(f"fence {seq} out of sequence (position "
                                      f"{epoch_text(position_epoch)}/{position_seq})")
        ranges, nbytes = write_ranges(self._require_media(), message)
        self.stats.ranges += ranges
        self.stats.flushes += ranges
        self.stats.range_bytes += nbytes
        if not final:
            return
        self.media.drain()
        self.stats.fences += 1
        self.stats.batches += 1
        self.state.set_position(epoch, seq)
        if self._consistent_at is not None and seq >= self._consistent_at:
            self.state.set_in_sync(True)
            self._consistent_at = None
        channel.send(frames.ack(seq))

    def _write(self, off: int, data: memoryview) -> None:
        media = self._require_media()
        n = len(data)
        if off < 0 or off + n > media.size:
            raise MirrorProtocolError(f"range [{off}, {off + n}) outside the pool "
                                      f"({media.size} bytes)")
        media.buf[off:off + n] = data
        media.flush(off, n)
        self.stats.flushes += 1

    def _check_epoch(self, expected: int, got: int) -> None:
        if got != expected:
            raise MirrorProtocolError(f"a message of epoch {epoch_text(got)} on a channel of "
                                      f"epoch {epoch_text(expected)}")

    def _require_media(self) -> FileMedia:
        if self.media is None:
            raise MirrorProtocolError("no pool yet: a resync must come first")
        return self.media

    def _resync_begin(self, channel: Channel, epoch: int, e: int, size: int, block_size: int,
                      whole: bool) -> None:
        self._check_epoch(epoch, e)
        self.stats.resyncs += 1
        self.state.set_in_sync(False)
        self._consistent_at = None
        if self.media is None or self.media.size != size:
            if not whole:
                raise MirrorProtocolError("a ranges-only resync needs a pool of the same size")
            self._recreate(size)
        if whole:
            buf = self.media.buf
            values = b"".join(digest(buf[at:at + block_size]) for at in range(0, size, block_size))
            channel.send(frames.digests(block_size, values))

    def _recreate(self, size: int) -> None:
        if self.media is not None:
            self.media.close()
            self.media = None
        self.pool_path.unlink(missing_ok=True)
        self.media = FileMedia(self.pool_path, mode=self.mode, create_size=size)
        log.info("backup %d: new pool file of %d bytes", self.node, size)

    # -- lifecycle ---------------------------------------------------------------------------

    def release_pool(self) -> FileMedia:
        """Stop serving primaries and hand over the pool's media (promotion)."""
        with self._lock:
            if self._current is not None:
                self._current.close()
                self._current = None
            media = self._require_media()
            self.media = None
            return media

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        with self._lock:
            if self._current is not None:
                self._current.close()
                self._current = None
            if self.media is not None:
                self.media.close()
                self.media = None
            self.state.close()

    def info(self) -> dict[str, Any]:
        state = self.state
        return {"node": self.node, "epoch": epoch_text(state.epoch),
                "position": f"{epoch_text(state.position[0])}/{state.position[1]}",
                "in_sync": state.in_sync, "primary": state.primary, **attrs.asdict(self.stats)}
