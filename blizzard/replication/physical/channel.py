"""The transport interface of physical replication: ordered message channels.

Raft tolerates loss and reordering, so its transport promises little (see
``replication/transport/base.py``). A mirror promises what RDMA's reliable
connections promise, and needs it: a backup must apply fences in the order
the primary issued them, each exactly once, or its image stops being a crash
image of the primary. So a :class:`Channel` is:

* **ordered and reliable**: messages arrive whole, once, in the order sent,
  or the channel breaks (:class:`ChannelClosedError`) and stays broken;
* **message-oriented**: ``send(*parts)`` sends one message made of the
  concatenated parts (a header and views of the pool, say); ``receive``
  returns one whole message;
* **two-way**: the primary sends ranges, the backup answers acknowledgements
  on the same channel.

A transport (:class:`MirrorTransport`) dials and listens, and can wait on
several channels at once (:meth:`MirrorTransport.wait`) so the primary
collects a quorum of acknowledgements without a thread per backup. TCP
implements it in ``tcp.py``; a user-space transport (DPDK) implements the same
three calls over its own links. Channels count what they carry
(:class:`ChannelStats`): the benchmark's bytes and messages per operation
come from these counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from blizzard.exceptions import ChannelClosedError

__all__ = ["Channel", "ChannelClosedError", "ChannelStats", "Listener", "MirrorTransport"]


@attrs.define
class ChannelStats:
    """Counters of one channel since it opened (framing overhead included)."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0


class Channel(Protocol):
    """One ordered, reliable, two-way message stream between two nodes."""

    stats: ChannelStats
    #: A name for log lines (``"127.0.0.1:7001"``, ``"memif0"``).
    peer: str

    def send(self, *parts: bytes | memoryview) -> None:
        """Send one message, the concatenation of ``parts``.

        Returns once the transport has taken the whole message (it may still
        be in flight). Raises :class:`ChannelClosedError` if the channel is
        broken; a channel that raised once stays broken.
        """

    def receive(self, timeout_s: float | None) -> bytes | memoryview | None:
        """The next whole message, or None if none arrived within ``timeout_s``.

        ``None`` timeout waits forever. The returned buffer is the caller's
        until its next ``receive``. Raises :class:`ChannelClosedError` when
        the peer closed the channel or it broke.
        """

    def ready(self) -> bool:
        """Whether ``receive(0)`` would return a message (or raise) at once."""

    def close(self) -> None:
        """Close the channel; idempotent."""


class Listener(Protocol):
    """An open listening endpoint; ``close`` stops accepting."""

    address: tuple[str, int]

    def close(self) -> None: ...


class MirrorTransport(Protocol):
    """Dials, listens, and waits on several channels at once."""

    def connect(self, address: tuple[str, int], timeout_s: float) -> Channel:
        """A channel to the node listening at ``address``; raises ``OSError``."""

    def listen(self, address: tuple[str, int],
               on_channel: Callable[[Channel], None]) -> Listener:
        """Accept channels at ``address``; each is handed to ``on_channel`` on a
        thread of its own and closed when ``on_channel`` returns."""

    def wait(self, channels: Sequence[Channel], timeout_s: float) -> list[Channel]:
        """The channels among ``channels`` that are :meth:`Channel.ready`,
        waiting up to ``timeout_s`` for at least one."""
