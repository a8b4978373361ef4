"""The frame format, in Python: for tests, tools and error messages.

The transport builds and checks frames in C (``_bzdpdk.c``, whose header
comment is the authoritative layout); this module builds the same bytes, so
tests can hand-craft good, damaged and hostile frames and inject them with
:meth:`DpdkTransport.send_raw`. Layout (little endian)::

    Ethernet: destination (6) | source (6) | type 0x88B5 (big endian)
    offset size field
         0    2 magic "BZ" (0x5A42)     16    4 session (random per start)
         2    1 version (1)             20    4 message id, from 1 per session
         3    1 flags (0)               24    2 fragment index
         4    4 cluster: CRC32C of id   26    2 fragment count (>= 1)
         8    4 source node id          28    2 payload bytes in this frame
        12    4 destination node id     30    2 payload bytes of the message's
                                                last frame (0: not said)
                                        32    4 CRC32C of bytes 0..31 + payload

Every frame of a message but its last carries the same number of payload
bytes, so a frame that says how long the last one is tells the receiver the
whole message's length before the rest arrives: where each fragment goes
in the region a receiver reserves for it (see :mod:`.transport`). A sender
that leaves the field 0 has its messages reassembled as bytes.
"""

from __future__ import annotations

import struct

from blizzard.replication.transport.dpdk import native

ETHERTYPE = 0x88B5
MAGIC = 0x5A42
VERSION = 1
ETH = struct.Struct("!6s6sH")
HEADER = struct.Struct("<HBBIIIIIHHHHI")
ETH_BYTES = ETH.size
HEADER_BYTES = HEADER.size
OVERHEAD_BYTES = ETH_BYTES + HEADER_BYTES
BROADCAST = b"\xff" * 6
assert (ETH_BYTES, HEADER_BYTES) == (14, 36)

#: bz_rx.status -> why a frame of ours was refused.
REASONS = {
    1: "truncated",
    2: "bad magic or version",
    3: "another cluster's frame",
    4: "addressed to another node",
    5: "source is not the peer of this link",
    6: "bad fragment index or count",
    7: "bad checksum",
    8: "larger than the frame size",
}


def crc32c(data: bytes, init: int = 0) -> int:
    _, lib = native.load()
    return lib.bz_crc(data, len(data), init)


def cluster_tag(cluster_id: str) -> int:
    """The 32-bit cluster field: CRC32C of the cluster id's UTF-8 bytes."""
    return crc32c(cluster_id.encode("utf-8"))


def frame(*, cluster: int, source: int, destination: int, session: int, message: int,
          payload: bytes, index: int = 0, count: int = 1, magic: int = MAGIC,
          version: int = VERSION, checksum: int | None = None, length: int | None = None,
          last: int = 0, ethertype: int = ETHERTYPE,
          source_mac: bytes = b"\x02\0\0\0\0\0") -> bytes:
    """One frame, exactly as the C side builds it unless a field is overridden
    (``last``: the payload bytes of its message's last frame; see
    :func:`fragments` for a whole message's frames)."""
    length = len(payload) if length is None else length
    head = HEADER.pack(magic, version, 0, cluster, source, destination, session, message,
                       index, count, length, last, 0)[:-4]
    if checksum is None:
        checksum = crc32c(payload, crc32c(head))
    return (ETH.pack(BROADCAST, source_mac, ethertype) + head
            + checksum.to_bytes(4, "little") + payload)


def fragments(message_bytes: bytes, per: int, **fields) -> list[bytes]:
    """The frames of one message cut as the C side cuts it: ``per`` payload
    bytes a frame (a link's frame size less :data:`OVERHEAD_BYTES`), the
    last frame's length in every header; ``fields`` as for :func:`frame`."""
    if per <= 0:
        raise ValueError(f"per must be positive, not {per}")
    count = max(1, -(-len(message_bytes) // per))
    last = len(message_bytes) - (count - 1) * per
    return [frame(payload=message_bytes[i * per:(i + 1) * per], index=i, count=count,
                  last=last, **fields) for i in range(count)]
