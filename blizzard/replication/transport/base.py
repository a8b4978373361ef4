"""The Transport interface: what the node driver needs from a network.

Raft tolerates lost, duplicated and reordered messages, so a transport
promises little: ``send`` never blocks and may drop (a full outbox is
back-pressure, counted in the stats, never unbounded memory); frames that
arrive are handed to the receiver callback whole, in the order each peer's
connection delivered them. Payloads are opaque bytes: the driver encodes and
decodes Raft messages itself, so a DPDK transport drops in unchanged.

A transport may need its own event loop (the DPDK transport polls from the
loop's selector): whoever runs one builds the loop with
:func:`new_event_loop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import attrs

Receiver = Callable[[int, bytes], None]


class RegionSink(Protocol):
    """Where a transport that can receive into given memory puts a frame's rest.

    The node running a transport offers itself (``set_region_sink``, when the
    transport has one). While ``wants_regions(source)`` holds, the transport
    reads each frame from ``source`` longer than ``head_bytes`` up to that
    many bytes, calls ``reserve_region(source, head, length)`` and, given a
    writable view of exactly ``length`` bytes, receives the frame's remaining
    bytes straight into it and calls ``region_received(source, head, view)``
    instead of the receiver. Given None, it delivers the frame whole, as
    bytes, to the receiver. A region whose connection breaks half-way is
    never handed back. TCP without TLS and DPDK do this (DPDK copies each
    fragment out of its mbuf into the region); TLS decrypts into OpenSSL's
    buffers, and delivers frames whole.
    """

    head_bytes: int

    def wants_regions(self, source: int) -> bool: ...

    def reserve_region(self, source: int, head: bytes, length: int) -> memoryview | None: ...

    def region_received(self, source: int, head: bytes, region: memoryview) -> None: ...


@attrs.define
class TransportStats:
    """Counters since start; a transport exposes one of these as ``stats``."""

    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    frames_dropped: int = 0  # outbox full or peer unknown
    writes: int = 0  # socket writes: frames_sent / writes is the batching factor
    connects: int = 0
    refused: int = 0  # inbound connections refused (bad handshake, TLS, cluster id)
    bad_frames: int = 0  # oversized or malformed input
    # frames whose region (memory the receiver handed out for them) was given up
    # while they arrived: read to their end and dropped, as a lost frame
    regions_lost: int = 0
    # bytes of received frames copied in user space on their way to the receiver
    # (see blizzard.replication.copies: the stage socket_to_buffer)
    bytes_copied: int = 0
    # bytes of frames given as parts (send_parts) that the transport copied to
    # send them later, or at all (the stage entries_to_frame)
    bytes_copied_sending: int = 0


class Transport(Protocol):
    """Carries frames between the nodes of one cluster."""

    node_id: int
    stats: TransportStats

    def set_receiver(self, receiver: Receiver) -> None:
        """``receiver(source_node_id, payload)`` is called for every frame that arrives."""

    async def start(self) -> None:
        """Listen, and begin connecting to peers (in the background)."""

    async def stop(self) -> None:
        """Close every connection; pending frames are dropped."""

    def send(self, target: int, payload: bytes) -> bool:
        """Queue ``payload`` for ``target``; False if it was dropped. Never blocks."""

    # A transport may also offer ``send_parts(target, parts) -> bool``: the
    # frame is the concatenation of ``parts`` (bytes-like, such as views of
    # the Raft log's records), sent without joining them where it can. The
    # parts need stay unchanged only during the call: the transport keeps no
    # reference to them once it returns, copying (and counting in
    # ``bytes_copied_sending``) whatever it could not send at once. See
    # :class:`~blizzard.replication.transport.tcp.TcpTransport`.

    def add_peer(self, node_id: int, address: tuple[str, int]) -> None:
        """A node joined the cluster at run time: accept its frames, send it ours."""

    def remove_peer(self, node_id: int) -> None:
        """A node left the cluster: forget it (frames to it are dropped)."""

    def status(self) -> dict[str, Any]:
        """``kind``, the counters, and whatever else the transport can tell (JSON-able)."""


def new_event_loop(transport: Transport) -> asyncio.AbstractEventLoop:
    """The event loop ``transport`` must run on: its own ``new_event_loop()`` if it
    has one (a poll-mode transport polls from the loop's selector), else asyncio's."""
    factory = getattr(transport, "new_event_loop", None)
    return factory() if factory is not None else asyncio.new_event_loop()
