"""Transports carry Raft messages (opaque bytes) between nodes."""

from blizzard.replication.transport.base import Transport, TransportStats
from blizzard.replication.transport.tcp import TcpTransport

__all__ = ["TcpTransport", "Transport", "TransportStats"]
