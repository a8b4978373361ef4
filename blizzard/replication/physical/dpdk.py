"""The mirror's channels over DPDK: ordered, reliable streams on the node's memif links.

:class:`DpdkMirrorTransport` implements the :mod:`.channel` interface on one
:class:`~blizzard.replication.transport.dpdk.DpdkTransport` per node (its
links to every other node, polled by its own loop thread). That transport
carries whole messages, in order on a link, and drops a message only when a
link goes down or its outbox is full -- it was built for Raft, which resends.
A mirror needs a stream that never loses or reorders a fence, so on top of
it each channel:

* numbers its messages (``seq``); a receiver that sees a gap breaks the
  channel (:class:`ChannelClosedError` on both sides) instead of applying a
  fence out of order -- the primary then reconnects and resynchronises, as
  after any broken connection;
* never lets the transport drop a message for want of room: a message the
  outbox cannot take stays queued (per link, in order) and is offered again
  at the next turn of the loop;
* breaks when its link goes down or the peer's process restarts.

Several channels share a link (the primary's stream to a backup, and in
tests more), told apart by a channel id the connecting side draws. Each
message on the wire is ``kind u8 | from-connector u8 | pad 2 | channel u32 |
seq u64 | payload``.

Addresses: the mirror dials nodes by their ``raft`` address, which this
transport maps to node ids (links join node ids, not hosts). Control
requests (``blizzard mirror promote|status``, the promotion's fencing) come
from processes that are no node, so backups answer them over TCP as before:
:class:`~blizzard.replication.physical.backup.BackupServer` listens on both.

Threads: ``send`` copies the message and hands it to the loop thread
(``call_soon_threadsafe``); the loop stages it with ``bz_send`` and takes
arrivals, which it files under their channel and wakes the waiting
threads. Sending and receiving threads never touch DPDK themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from blizzard.exceptions import ChannelClosedError
from blizzard.replication.physical.channel import Channel, ChannelStats
from blizzard.replication.transport.dpdk.options import DpdkOptions
from blizzard.replication.transport.dpdk.transport import DpdkTransport

log = logging.getLogger("blizzard.mirror.dpdk")

_HEAD = struct.Struct("<BBxxIQ")
#: What this layer adds to each message (the DPDK frames' own headers aside).
HEADER_BYTES = _HEAD.size
OPEN, ACCEPT, DATA, CLOSE = 1, 2, 3, 4
RETRY_S = 0.0002  # a message the outbox could not take is offered again this soon
WATCH_S = 0.02  # link states are checked this often
START_TIMEOUT_S = 30.0
CLOSE_JOIN_S = 10.0


class DpdkChannel:
    """One ordered, reliable channel to a peer over this node's DPDK link."""

    def __init__(self, transport: DpdkMirrorTransport, peer: int, channel_id: int,
                 connector: bool) -> None:
        self._transport = transport
        self.node = peer
        self.channel_id = channel_id
        self.connector = connector  # this side opened it
        self.peer = f"node {peer} (dpdk channel {channel_id:#x})"
        self.stats = ChannelStats()
        self._inbox: deque[bytes | memoryview] = deque()
        self._send_seq = 0
        self._receive_seq = 0
        self.accepted = False
        self.error: str | None = None  # set once broken or closed
        self.closed = False

    @property
    def key(self) -> tuple[int, int, bool]:
        return self.node, self.channel_id, self.connector

    # -- the Channel protocol ------------------------------------------------------------

    def send(self, *parts: bytes | memoryview) -> None:
        if self.error is not None:
            raise ChannelClosedError(f"{self.peer}: {self.error}")
        self._send_seq += 1
        payload = b"".join((_HEAD.pack(DATA, self.connector, self.channel_id, self._send_seq),
                            *parts))
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(payload)
        self._transport._post(self.node, payload)

    def receive(self, timeout_s: float | None) -> bytes | memoryview | None:
        cond = self._transport._cond
        with cond:
            if not cond.wait_for(lambda: self._inbox or self.error is not None, timeout_s):
                return None
            if self._inbox:
                message = self._inbox.popleft()
                self.stats.messages_received += 1
                self.stats.bytes_received += len(message) + _HEAD.size
                return message
            raise ChannelClosedError(f"{self.peer}: {self.error}")

    def ready(self) -> bool:
        return bool(self._inbox) or self.error is not None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._transport._cond:
            already = self.error is not None
            if not already:
                self.error = "closed"
            self._transport._cond.notify_all()
        if not already:
            self._transport._post(self.node, _HEAD.pack(CLOSE, self.connector,
                                                         self.channel_id, 0))
        self._transport._forget(self)

    def __repr__(self) -> str:
        return f"<DpdkChannel {self.peer}{' ' + self.error if self.error else ''}>"


class DpdkListener:
    """Accepted channels of one :meth:`DpdkMirrorTransport.listen`; each runs its
    handler on a thread of its own. :meth:`close` stops accepting, closes the
    channels and waits (``CLOSE_JOIN_S``) for their handlers."""

    def __init__(self, transport: DpdkMirrorTransport, address: tuple[str, int],
                 on_channel: Callable[[Channel], None]) -> None:
        self._transport = transport
        self.address = address
        self.on_channel = on_channel
        self.threads: set[threading.Thread] = set()
        self.channels: set[DpdkChannel] = set()
        self.closed = False

    def start(self, channel: DpdkChannel) -> None:
        thread = threading.Thread(target=self._run, args=(channel,), daemon=True,
                                  name=f"mirror-dpdk-{channel.node}")
        with self._transport._cond:
            self.channels.add(channel)
            self.threads.add(thread)
        thread.start()

    def _run(self, channel: DpdkChannel) -> None:
        try:
            self.on_channel(channel)
        except ChannelClosedError as exc:
            log.log(logging.DEBUG if self.closed else logging.INFO,
                    "channel from %s closed: %s", channel.peer, exc)
        except Exception:
            log.exception("mirror channel from %s failed", channel.peer)
        finally:
            channel.close()
            with self._transport._cond:
                self.channels.discard(channel)
                self.threads.discard(threading.current_thread())

    def close(self) -> None:
        self._transport._unlisten(self)
        self.closed = True
        with self._transport._cond:
            channels, threads = list(self.channels), list(self.threads)
        for channel in channels:
            channel.close()
        deadline = time.monotonic() + CLOSE_JOIN_S
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("mirror listener: a handler thread did not end within %s s",
                                CLOSE_JOIN_S)


class DpdkMirrorTransport:
    """A :class:`~blizzard.replication.physical.channel.MirrorTransport` over
    node ``node_id``'s DPDK links to ``peers`` (node id -> mirror address);
    see the module docstring. Starts at once (its loop thread, the EAL the
    first time in the process, the links); :meth:`close` stops it."""

    def __init__(self, node_id: int, peers: Mapping[int, tuple[str, int]], *,
                 run_dir: str | os.PathLike[str], cluster_id: str = "blizzard",
                 options: DpdkOptions | None = None) -> None:
        self.node_id = node_id
        self._by_address = {tuple(address): peer for peer, address in peers.items()
                            if peer != node_id}
        self._dpdk = DpdkTransport(node_id, [node_id, *self._by_address.values()],
                                   run_dir=Path(run_dir), cluster_id=cluster_id,
                                   options=options)
        self._cond = threading.Condition()
        self._channels: dict[tuple[int, int, bool], DpdkChannel] = {}
        self._listener: DpdkListener | None = None
        self._queues: dict[int, deque[bytes]] = {}
        self._retrying: set[int] = set()
        self._up: dict[int, bool] = {}
        self._closed = False
        self._loop = self._dpdk.new_event_loop()
        self._dpdk.set_receiver(self._on_message)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"mirror-dpdk-loop-{node_id}")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_S)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise

    async def _start(self) -> None:
        await self._dpdk.start()
        self._loop.call_later(WATCH_S, self._watch)

    # -- the MirrorTransport protocol ----------------------------------------------------

    def connect(self, address: tuple[str, int], timeout_s: float) -> DpdkChannel:
        peer = self._by_address.get(tuple(address))
        if peer is None:
            raise ConnectionRefusedError(f"no node of this cluster at {address[0]}:{address[1]}"
                                         f" among node {self.node_id}'s dpdk links")
        deadline = time.monotonic() + timeout_s
        while not self._dpdk.link_up(peer):
            if self._closed or time.monotonic() >= deadline:
                raise ConnectionRefusedError(f"the dpdk link to node {peer} is down")
            time.sleep(0.002)
        channel = DpdkChannel(self, peer, secrets.randbits(32) or 1, True)
        with self._cond:
            self._channels[channel.key] = channel
        self._post(peer, _HEAD.pack(OPEN, True, channel.channel_id, 0))
        with self._cond:
            done = self._cond.wait_for(lambda: channel.accepted or channel.error is not None,
                                       max(0.0, deadline - time.monotonic()))
        if not channel.accepted:
            reason = channel.error or "no answer"
            channel.close()
            raise ConnectionRefusedError(f"node {peer} did not accept a mirror channel over "
                                         f"dpdk: {reason if done else 'no answer'}")
        return channel

    def listen(self, address: tuple[str, int],
               on_channel: Callable[[Channel], None]) -> DpdkListener:
        with self._cond:
            if self._listener is not None:
                raise OSError(f"node {self.node_id} already listens for mirror channels")
            self._listener = DpdkListener(self, tuple(address), on_channel)  # type: ignore[arg-type]
            return self._listener

    def wait(self, channels: Sequence[Channel], timeout_s: float) -> list[Channel]:
        with self._cond:
            self._cond.wait_for(lambda: any(c.ready() for c in channels), timeout_s)
            return [c for c in channels if c.ready()]

    def close(self) -> None:
        """Break every channel, stop the links and the loop thread."""
        if self._closed:
            return
        self._closed = True
        with self._cond:
            channels = list(self._channels.values())
        for channel in channels:
            self._break(channel, "the transport closed")
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._dpdk.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def status(self) -> dict:
        """The DPDK transport's status (links, counters), from its loop thread."""
        async def get() -> dict:
            return self._dpdk.status()
        return asyncio.run_coroutine_threadsafe(get(), self._loop).result(10)

    # -- bookkeeping (any thread) ----------------------------------------------------------

    def _post(self, peer: int, payload: bytes) -> None:
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._enqueue, peer, payload)

    def _forget(self, channel: DpdkChannel) -> None:
        with self._cond:
            if self._channels.get(channel.key) is channel:
                del self._channels[channel.key]

    def _unlisten(self, listener: DpdkListener) -> None:
        with self._cond:
            if self._listener is listener:
                self._listener = None

    def _break(self, channel: DpdkChannel, why: str) -> None:
        with self._cond:
            if channel.error is None:
                channel.error = why
            self._cond.notify_all()
        self._forget(channel)

    # -- the loop thread ---------------------------------------------------------------------

    def _enqueue(self, peer: int, payload: bytes) -> None:
        queue = self._queues.setdefault(peer, deque())
        queue.append(payload)
        if len(queue) == 1:
            self._drain(peer)

    def _drain(self, peer: int) -> None:
        """Offer the link's queued messages in order; what the outbox cannot take
        waits for the next turn, and so does everything while this side has not
        yet seen the link up (the peer may see it first). A link that goes down
        drops them (:meth:`_watch`: its channels break)."""
        self._retrying.discard(peer)
        queue = self._queues.get(peer)
        dpdk = self._dpdk
        while queue:
            if not dpdk.link_up(peer) or not dpdk.send(peer, queue[0]):
                if peer not in self._retrying:
                    self._retrying.add(peer)
                    self._loop.call_later(RETRY_S, self._drain, peer)
                return
            queue.popleft()

    def _watch(self) -> None:
        if self._closed:
            return
        for peer in self._by_address.values():
            up = self._dpdk.link_up(peer)
            if self._up.get(peer, False) and not up:
                self._link_down(peer)
            self._up[peer] = up
        self._loop.call_later(WATCH_S, self._watch)

    def _link_down(self, peer: int) -> None:
        self._queues.pop(peer, None)
        with self._cond:
            broken = [c for c in self._channels.values() if c.node == peer]
        for channel in broken:
            self._break(channel, f"the dpdk link to node {peer} went down")

    def _on_message(self, source: int, payload: bytes) -> None:
        if len(payload) < _HEAD.size:
            log.warning("node %d: a mirror message of %d bytes from node %d: too short",
                        self.node_id, len(payload), source)
            return
        kind, from_connector, channel_id, seq = _HEAD.unpack_from(payload, 0)
        key = (source, channel_id, not from_connector)
        with self._cond:
            channel = self._channels.get(key)
            if kind == DATA and channel is not None:
                if seq != channel._receive_seq + 1:
                    why = f"message {seq} after {channel._receive_seq}: a message was lost"
                    channel.error = why
                    del self._channels[key]
                    self._cond.notify_all()
                    log.warning("node %d: mirror channel with node %d broken: %s",
                                self.node_id, source, why)
                    self._enqueue(source, _HEAD.pack(CLOSE, not from_connector, channel_id, 0))
                    return
                channel._receive_seq = seq
                channel._inbox.append(memoryview(payload)[_HEAD.size:])
                self._cond.notify_all()
                return
            if kind == ACCEPT and channel is not None:
                channel.accepted = True
                self._cond.notify_all()
                return
            if kind == CLOSE:
                if channel is not None:
                    channel.error = "closed by the peer"
                    del self._channels[key]
                    self._cond.notify_all()
                return
            if kind == OPEN and from_connector and channel is None:
                listener = self._listener
                if listener is None or listener.closed:
                    self._enqueue(source, _HEAD.pack(CLOSE, False, channel_id, 0))
                    return
                channel = DpdkChannel(self, source, channel_id, False)
                channel.accepted = True
                self._channels[key] = channel
            else:  # a message for a channel gone: tell the peer, once per message
                if kind != CLOSE:
                    self._enqueue(source, _HEAD.pack(CLOSE, not from_connector, channel_id, 0))
                return
        self._enqueue(source, _HEAD.pack(ACCEPT, False, channel_id, 0))
        listener.start(channel)
