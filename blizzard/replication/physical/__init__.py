"""Physical replication: every persisted byte range mirrored to backups, RDMA style.

``MirroredMedia`` wraps the primary's Media and ships each fence's flushed
ranges; ``BackupServer`` writes them into its own pool file; ``channel``
is the transport interface (TCP in ``tcp``); ``frames`` the wire format;
``state`` a node's epoch and position. See ``docs/physical.md``.
"""

from blizzard.replication.physical.backup import BackupServer
from blizzard.replication.physical.channel import Channel, ChannelStats, MirrorTransport
from blizzard.replication.physical.mirror import MirroredMedia, MirrorStats
from blizzard.replication.physical.state import MirrorState
from blizzard.replication.physical.tcp import TcpMirrorTransport

__all__ = [
    "BackupServer",
    "Channel",
    "ChannelStats",
    "MirrorState",
    "MirrorStats",
    "MirrorTransport",
    "MirroredMedia",
    "TcpMirrorTransport",
]
