"""MirroredMedia: every persisted byte of a pool, mirrored to backups at each fence.

Physical replication, RDMA style. The pool above knows nothing of it: it
flushes and fences its Media as always, and this wrapper

1. records every range flushed since the last fence (``flush`` and the
   flush half of ``persist``), then passes the flush on to the inner Media;
2. at each fence (``drain``, and the fence half of ``persist``), fences the
   inner Media, then ships the recorded ranges -- merged where they overlap
   or touch, with their bytes as they are now -- to every backup as **one**
   message (split only beyond ``batch_bytes_max``), numbered by a sequence
   number ``seq``;
3. waits until the acknowledgement rule holds for that fence: ``acks``
   backups (all of them by default) have written the ranges at the same
   offsets of their own pool, flushed, fenced, and acknowledged.

Invariants:

* Fences are shipped in issue order over ordered channels and applied in
  order, one backup fence each, so a backup's pool is always the primary's
  pool as of some fence, with any subset of the lines flushed since: a
  crash image of the primary, which recovers the same way.
* Ranges of two fences are never merged or sent in one message.
* A fence never raises (it may run inside C code, the undo log's, that
  cannot take an exception): an unmet rule is counted in ``failures`` and
  the caller that acknowledges operations (:class:`PhysicalReplicator`)
  checks the counter. Local durability never depends on the backups.

The undo log's fast path calls flush and fence through C function pointers
(``Media.native()``) rather than Python. This wrapper's ``native()`` returns
pointers to trampolines (cffi callbacks) into its own ``flush``/``drain``/
``persist``, so the fast log runs unchanged and every range it flushes and
every fence it issues passes through here (tests compare a backup's image
with the primary's byte for byte, and check which undo log ran).

Backups that were down, or are new, are **resynchronised** before they count
toward acknowledgements: one supervisor thread per backup connects, learns
the backup's epoch and position, and sends either the ranges flushed since
that position (kept as metadata for the last ``history_fences_max`` fences)
or, when those are gone or the epoch differs, every block whose digest
differs from the backup's. Fences issued meanwhile are queued for that
backup and follow the resync on the same channel.

Epochs: a backup refuses a primary whose epoch is older than one it has
accepted or promised; the primary then knows it was deposed (``deposed``)
and every later fence fails the rule.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from blizzard.exceptions import ChannelClosedError, MirrorProtocolError
from blizzard.pmem.counting import native_trampolines
from blizzard.pmem.media import Media, MediaWrapper
from blizzard.replication.physical import frames
from blizzard.replication.physical.channel import Channel, MirrorTransport
from blizzard.replication.physical.state import epoch_text
from blizzard.replication.physical.tcp import TcpMirrorTransport

log = logging.getLogger("blizzard.mirror")

ACK_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0
HISTORY_FENCES_MAX = 100_000
QUEUE_BYTES_MAX = 64 << 20  # fences queued for a resyncing backup; beyond, it starts over
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 1.0
FENCE_MODES = ("sync", "pipelined")
INFLIGHT_MAX = 64  # pipelined: fences shipped but not yet acknowledged, at most

DOWN, RESYNC, IN_SYNC = "down", "resync", "in-sync"


@attrs.define
class MirrorStats:
    """Counters since the mirror started (per primary; bytes include framing)."""

    fences: int = 0  # every drain, shipped or not
    fences_shipped: int = 0  # drains with ranges to ship: one seq each
    flushes: int = 0  # flush calls seen (the primary's own flushes)
    flushed_bytes: int = 0
    ranges_shipped: int = 0  # after merging, per fence, counted once (not per backup)
    range_bytes_shipped: int = 0
    messages_sent: int = 0  # fence messages, summed over backups
    bytes_sent: int = 0  # fence bytes on the wire, summed over backups
    acks_received: int = 0
    round_trips: int = 0  # waits for acknowledgements
    failures: int = 0  # fences whose acknowledgement rule did not hold
    resyncs: int = 0
    resyncs_whole: int = 0  # by digest over the whole image (else: missed ranges)
    resync_bytes: int = 0


class _Link:
    """One backup: its channel, its state, what it acknowledged."""

    __slots__ = ("acked", "address", "channel", "consistent_seq", "down", "last_error",
                 "node", "queue", "queue_bytes", "state", "thread")

    def __init__(self, node: int, address: tuple[str, int]) -> None:
        self.node = node
        self.address = address
        self.channel: Channel | None = None
        self.state = DOWN
        self.acked = 0  # last seq acknowledged on this channel
        self.consistent_seq = 0  # acks count once acked >= this (end of its resync)
        self.queue: deque[tuple[int, bytes]] = deque()  # (seq, message) while resyncing
        self.queue_bytes = 0
        self.down = threading.Event()
        self.down.set()
        self.last_error = ""
        self.thread: threading.Thread | None = None

    def counts_for(self, seq: int) -> bool:
        return self.acked >= seq and self.acked >= self.consistent_seq and self.state != DOWN


class MirroredMedia(MediaWrapper):
    """Wraps ``inner`` (the primary's own Media) and mirrors it to ``backups``.

    ``backups`` maps node id to mirror address. ``acks`` is how many backups
    must acknowledge each fence (None: all). ``fence`` is ``"sync"`` (each
    fence returns once acknowledged: RDMA WRITE + remote flush, waited for)
    or ``"pipelined"`` (fences are shipped in order without waiting, up to
    ``inflight_max`` unacknowledged; :meth:`sync` waits for all of them --
    the replicator calls it before acknowledging an operation).

    ``epoch`` identifies this primary's term; ``seq`` is the last fence
    number already used (fences continue from ``seq + 1``). ``on_fence(seq,
    messages)``, when given, sees every shipped fence's messages, in order.

    Cost per shipped fence: one message per backup (its ranges' bytes plus
    12 bytes each and a 22-byte header), and in ``sync`` mode one round
    trip; empty fences ship nothing.
    """

    def __init__(self, inner: Media, backups: Mapping[int, tuple[str, int]], *, node: int,
                 epoch: int, seq: int = 0, cluster_id: str = "blizzard",
                 acks: int | None = None, fence: str = "sync",
                 transport: MirrorTransport | None = None,
                 ack_timeout_s: float = ACK_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 history_fences_max: int = HISTORY_FENCES_MAX,
                 batch_bytes_max: int = frames.BATCH_BYTES_MAX,
                 inflight_max: int = INFLIGHT_MAX,
                 on_fence: Callable[[int, list[bytes]], None] | None = None) -> None:
        super().__init__(inner)
        if node in backups:
            raise ValueError(f"node {node} cannot be its own backup")
        need = len(backups) if acks is None else acks
        if not 0 <= need <= len(backups):
            raise ValueError(f"acks must be 0..{len(backups)} (the number of backups), got {acks}")
        if fence not in FENCE_MODES:
            raise ValueError(f"fence must be one of {FENCE_MODES}, got {fence!r}")
        self.node = node
        self.epoch = epoch
        self.seq = seq
        self.cluster_id = cluster_id
        self.need = need
        self.fence_mode = fence
        self.stats = MirrorStats()
        self.deposed: int | None = None  # the newer epoch a backup reported
        self.durability = f"{inner.durability}; mirrored to {len(backups)} backup(s)"
        self._transport = transport or TcpMirrorTransport()
        self._ack_timeout_s = ack_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._batch_bytes_max = batch_bytes_max
        self._inflight_max = inflight_max
        self._on_fence = on_fence
        self._ranges: list[tuple[int, int]] = []
        self._history: deque[tuple[int, list[tuple[int, int]]]] = deque(maxlen=history_fences_max)
        self._lock = threading.Lock()
        self._closed = False
        self._native: tuple[int, int, int] | None = None
        self._callbacks: tuple[Any, ...] = ()
        self._links = {n: _Link(n, a) for n, a in sorted(backups.items())}
        self._inner_flush = inner.flush
        self._inner_drain = inner.drain
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> MirroredMedia:
        """Start connecting to the backups (in the background); returns self."""
        if not self._started:
            self._started = True
            for link in self._links.values():
                link.thread = threading.Thread(target=self._supervise, args=(link,), daemon=True,
                                               name=f"mirror-{self.node}->{link.node}")
                link.thread.start()
        return self

    def wait_ready(self, timeout_s: float, *, nodes: Sequence[int] = ()) -> bool:
        """Wait until enough backups are in sync for the rule to hold (and every
        backup in ``nodes``, if given); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.ready() and all(self._links[n].state == IN_SYNC for n in nodes):
                return True
            if self.deposed is not None or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def ready(self) -> bool:
        """Whether ``acks`` backups are in sync now (and this primary is not deposed)."""
        in_sync = sum(1 for link in self._links.values() if link.state == IN_SYNC)
        return self.deposed is None and in_sync >= self.need

    def close(self) -> None:
        self._closed = True
        for link in self._links.values():
            self._drop(link, "mirror closed", log_it=False)
        for link in self._links.values():
            if link.thread is not None and link.thread is not threading.current_thread():
                link.thread.join(timeout=5)
        super().close()

    # -- the Media protocol ------------------------------------------------------------------

    def flush(self, off: int, n: int) -> None:
        self._ranges.append((off, n))
        self._inner_flush(off, n)

    def persist(self, off: int, n: int) -> None:
        self._ranges.append((off, n))
        self._inner_flush(off, n)
        self.drain()

    def drain(self) -> None:
        self._inner_drain()
        stats = self.stats
        stats.fences += 1
        ranges = self._ranges
        if not ranges:
            return
        self._ranges = []
        stats.flushes += len(ranges)
        stats.flushed_bytes += sum(n for _, n in ranges)
        seq = self._ship(ranges)
        if self.fence_mode == "sync":
            self._wait(seq)
        elif seq - self._inflight_max > 0:
            self._wait(seq - self._inflight_max)

    def sync(self, *, every: bool = False) -> bool:
        """Wait until every fence shipped so far meets the rule (with ``every``:
        is acknowledged by every backup); False if one did not."""
        failures = self.stats.failures
        self._wait(self.seq, len(self._links) if every else self.need)
        return self.stats.failures == failures

    def poll(self) -> int:
        """Read the acknowledgements that arrived (never blocks); the highest seq
        meeting the rule."""
        for link in self._links.values():
            if link.state == IN_SYNC and link.acked < self.seq:
                self._read_acks(link)
        return self.acknowledged()

    def acknowledged(self) -> int:
        """The highest seq acknowledged by ``need`` backups (by what was read so far)."""
        if self.need == 0:
            return self.seq
        acked = sorted((link.acked for link in self._links.values()
                        if link.state != DOWN and link.acked >= link.consistent_seq),
                       reverse=True)
        return acked[self.need - 1] if len(acked) >= self.need else 0

    def native(self) -> tuple[int, int, int]:
        """C-callable trampolines into ``flush``/``drain``/``persist`` (see the module doc)."""
        if self._native is None:
            self._native, self._callbacks = native_trampolines(self, self._on_native_error)
        return self._native

    def _on_native_error(self, exc: BaseException) -> None:  # a fence must not raise into C
        self.stats.failures += 1
        log.error("mirror: error inside a fence called from C: %r", exc)

    # -- shipping ----------------------------------------------------------------------------

    def _encode(self, seq: int, merged: list[tuple[int, int]]) -> list[bytes]:
        """The BATCH message(s) of one fence: several only past ``batch_bytes_max``."""
        buf = self.buf
        pack = frames.pack_range_header
        limit = self._batch_bytes_max
        messages: list[bytes] = []
        parts: list[bytes | memoryview] = []
        size = 0
        for off, n in merged:
            while n:
                take = min(n, limit - size) if size < limit else 0
                if take == 0:
                    messages.append(b"".join([frames.batch_header(self.epoch, seq, False),
                                              *parts]))
                    parts, size = [], 0
                    continue
                parts.append(pack(off, take))
                parts.append(buf[off:off + take])
                size += take
                off += take
                n -= take
        messages.append(b"".join([frames.batch_header(self.epoch, seq, True), *parts]))
        return messages

    def _ship(self, ranges: list[tuple[int, int]]) -> int:
        merged = _merge(ranges)
        stats = self.stats
        stats.fences_shipped += 1
        stats.ranges_shipped += len(merged)
        stats.range_bytes_shipped += sum(n for _, n in merged)
        with self._lock:
            self.seq += 1
            seq = self.seq
            self._history.append((seq, merged))
            messages = None
            if self._on_fence is not None:
                messages = self._encode(seq, merged)
                self._on_fence(seq, messages)
            for link in self._links.values():
                if link.state == DOWN:
                    continue
                if messages is None:
                    messages = self._encode(seq, merged)
                if link.state == IN_SYNC:
                    try:
                        for message in messages:
                            link.channel.send(message)
                    except ChannelClosedError as exc:
                        self._drop(link, str(exc))
                        continue
                    stats.messages_sent += len(messages)
                    stats.bytes_sent += sum(len(m) + 4 for m in messages)
                else:  # resyncing: its supervisor sends the queue after the resync
                    for message in messages:
                        link.queue.append((seq, message))
                        link.queue_bytes += len(message)
                    if link.queue_bytes > QUEUE_BYTES_MAX:
                        self._drop(link, "too many fences queued during its resync")
        return seq

    def _wait(self, seq: int, need: int | None = None) -> None:
        """Until ``need`` backups acknowledged fence ``seq``; else count a failure."""
        need = self.need if need is None else need
        if need == 0:
            return
        links = self._links.values()
        if sum(1 for link in links if link.counts_for(seq)) >= need:
            return
        self.stats.round_trips += 1
        deadline = time.monotonic() + self._ack_timeout_s
        while True:
            if self.deposed is not None:
                break
            counted = 0
            waiting = []
            live = 0
            for link in links:
                if link.counts_for(seq):
                    counted += 1
                elif link.state == IN_SYNC:
                    waiting.append(link)
                if link.state != DOWN:
                    live += 1
            if counted >= need:
                return
            if live < need:
                break  # cannot be met: fail now rather than at the deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for link in waiting:
                    self._drop(link, f"no acknowledgement within {self._ack_timeout_s} s")
                break
            # Resyncing links are advanced by their supervisors: look again soon.
            slice_s = remaining if len(waiting) + counted == live else min(remaining, 0.005)
            channels = [link.channel for link in waiting]
            if not channels:
                time.sleep(slice_s)
                continue
            for channel in self._transport.wait(channels, slice_s):
                link = next(lk for lk in waiting if lk.channel is channel)
                self._read_acks(link)
        self.stats.failures += 1

    def _read_acks(self, link: _Link) -> None:
        channel = link.channel
        try:
            message = channel.receive(0)
            while message is not None:
                link.acked = frames.parse_ack(message)
                self.stats.acks_received += 1
                message = channel.receive(0) if channel.ready() else None
        except (ChannelClosedError, MirrorProtocolError) as exc:
            self._drop(link, str(exc))

    def _drop(self, link: _Link, why: str, *, log_it: bool = True) -> None:
        if log_it and link.state != DOWN:
            log.warning("mirror %d -> backup %d: dropped (%s)", self.node, link.node, why)
        link.state = DOWN
        link.last_error = why
        link.queue.clear()
        link.queue_bytes = 0
        if link.channel is not None:
            link.channel.close()
        link.down.set()

    # -- supervising a backup: connect, resynchronise, hand over ------------------------------

    def _supervise(self, link: _Link) -> None:
        backoff = BACKOFF_MIN_S
        while not self._closed:
            link.down.wait()
            if self._closed:
                return
            try:
                self._resync(link)
                backoff = BACKOFF_MIN_S
            except (OSError, ChannelClosedError, MirrorProtocolError) as exc:
                with self._lock:
                    self._drop(link, str(exc), log_it=link.state != DOWN)
                if self.deposed is not None:
                    backoff = BACKOFF_MAX_S
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _handshake(self, link: _Link) -> tuple[Channel, frames.State]:
        channel = self._transport.connect(link.address, self._connect_timeout_s)
        try:
            channel.send(frames.hello(self.node, self.epoch, self.size, self.cluster_id))
            reply = channel.receive(self._ack_timeout_s)
            if reply is None:
                raise MirrorProtocolError("no answer to HELLO")
            state = frames.parse_state(reply)
        except BaseException:
            channel.close()
            raise
        if state.status == frames.Status.OLDER_EPOCH:
            channel.close()
            if self.deposed is None:
                self.deposed = state.epoch
                log.error("mirror %d: deposed: backup %d holds epoch %s, newer than ours (%s)",
                          self.node, link.node, epoch_text(state.epoch), epoch_text(self.epoch))
            raise MirrorProtocolError(f"refused: epoch {epoch_text(state.epoch)} is newer")
        if state.status != frames.Status.OK:
            channel.close()
            raise MirrorProtocolError(f"refused: {state.text or frames.Status(state.status).name}")
        return channel, state

    def _resync(self, link: _Link) -> None:
        channel, state = self._handshake(link)
        with self._lock:
            link.down.clear()
            link.channel = channel
            link.state = RESYNC
            link.acked = 0
            link.consistent_seq = 1 << 63
            start = self.seq
            missed = self._missed_ranges(state, start)
        whole = missed is None
        self.stats.resyncs += 1
        self.stats.resyncs_whole += whole
        log.info("mirror %d -> backup %d: resync from %s/%d (%s)", self.node, link.node,
                 epoch_text(state.position[0]), state.position[1],
                 "whole image, by digest" if whole else f"{len(missed)} missed ranges")
        channel.send(frames.resync_begin(self.epoch, self.size, frames.BLOCK_SIZE, whole))
        if whole:
            self._send_different_blocks(channel)
        else:
            self._send_ranges(channel, missed)
        with self._lock:
            end = self.seq  # fences up to here are covered by what was read, or queued
        channel.send(frames.resync_end(self.epoch, start, end))
        link.consistent_seq = max(end, start)
        self._catch_up(link, channel, start)

    def _missed_ranges(self, state: frames.State, start: int) -> list[tuple[int, int]] | None:
        """Ranges flushed since the backup's position, or None if only a whole image will do."""
        position_epoch, position_seq = state.position
        if not state.in_sync or position_epoch != self.epoch or state.pool_size != self.size:
            return None
        if position_seq == start:
            return []
        if not self._history or position_seq > start or position_seq < self._history[0][0] - 1:
            return None
        ranges: list[tuple[int, int]] = []
        for seq, fence_ranges in self._history:
            if seq > position_seq:
                ranges.extend(fence_ranges)
        return _merge(ranges)

    def _send_ranges(self, channel: Channel, ranges: list[tuple[int, int]]) -> None:
        buf = self.buf
        step = frames.BLOCK_SIZE
        for off, n in ranges:
            for at in range(off, off + n, step):
                data = bytes(buf[at:min(at + step, off + n)])
                channel.send(*frames.block(at, data))
                self.stats.resync_bytes += len(data)

    def _send_different_blocks(self, channel: Channel) -> None:
        reply = channel.receive(self._ack_timeout_s * 6)  # the backup hashes its whole pool
        if reply is None:
            raise MirrorProtocolError("no DIGESTS from the backup")
        block_size, theirs = frames.parse_digests(reply)
        if block_size != frames.BLOCK_SIZE:
            raise MirrorProtocolError(f"DIGESTS for blocks of {block_size} bytes")
        buf = self.buf
        d = frames.DIGEST_SIZE
        for i, at in enumerate(range(0, self.size, block_size)):
            data = bytes(buf[at:at + block_size])
            if theirs[i * d:(i + 1) * d] != digest(data):
                channel.send(*frames.block(at, data))
                self.stats.resync_bytes += len(data)

    def _catch_up(self, link: _Link, channel: Channel, start: int) -> None:
        """Send the fences queued since the resync began; hand the link to the fence path."""
        sent = start
        while True:
            with self._lock:
                if link.state != RESYNC:
                    raise ChannelClosedError("dropped while catching up")
                if not link.queue and link.acked >= sent:
                    link.state = IN_SYNC
                    log.info("mirror %d -> backup %d: in sync at seq %d", self.node, link.node,
                             sent)
                    return
                batch = list(link.queue)
                link.queue.clear()
                link.queue_bytes = 0
            for seq, message in batch:
                channel.send(message)
                self.stats.messages_sent += 1
                self.stats.bytes_sent += len(message) + 4
                sent = seq
            while link.acked < sent:
                reply = channel.receive(self._ack_timeout_s)
                if reply is None:
                    raise ChannelClosedError(f"no acknowledgement within {self._ack_timeout_s} s")
                link.acked = frames.parse_ack(reply)
                self.stats.acks_received += 1

    # -- inspection --------------------------------------------------------------------------

    def backups(self) -> dict[int, dict[str, Any]]:
        """Each backup's state, last acknowledged seq and last error."""
        return {n: {"state": link.state, "acked": link.acked, "error": link.last_error}
                for n, link in self._links.items()}

    def status(self) -> dict[str, Any]:
        return {"epoch": epoch_text(self.epoch), "seq": self.seq, "acks_needed": self.need,
                "fence": self.fence_mode,
                "deposed_by": epoch_text(self.deposed) if self.deposed else None,
                "backups": self.backups(), **attrs.asdict(self.stats)}


def digest(data: bytes | memoryview) -> bytes:
    """The digest a resync compares blocks by (BLAKE2b, 16 bytes)."""
    return hashlib.blake2b(data, digest_size=frames.DIGEST_SIZE).digest()


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(off, n)`` ranges sorted, overlapping or touching ones merged."""
    if len(ranges) == 1:
        return list(ranges)
    out: list[tuple[int, int]] = []
    start = end = -1
    for off, n in sorted(ranges):
        if off <= end:
            if off + n > end:
                end = off + n
        else:
            if end >= 0:
                out.append((start, end - start))
            start, end = off, off + n
    out.append((start, end - start))
    return out

