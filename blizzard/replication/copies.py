"""Counting the copies of replicated payload between the network and the structures.

A replicated Op travels from the leader's log to a socket (or a DPDK
frame), and from there to the structure it changes on each follower. Each
time its bytes are copied in user space on the way, the stage that copied
them adds the number of bytes here, so "the log is the network buffer" is a
measured claim rather than an assumed one. On the leader:

``entries_to_frame``
    entry data the node copied into a frame to send it: a MsgApp encoded
    whole (over TLS, or entries the log cannot lend), a MsgProp forwarded to
    the leader, and whatever the transport copied of a frame it was given as
    parts (its fixed part included): over TCP, what it could not send at
    once; over DPDK, the whole frame, gathered from the parts into the
    mbufs (one copy; memif's copy from the mbufs into its ring is the
    link's, like a NIC's DMA). A leader over TCP without TLS sends its
    MsgApps as their fixed part plus views of its log's records
    (``sendmsg``): nothing, when the socket takes the frame whole (see
    :mod:`~blizzard.replication.node`);

then, in the order an Op meets them on a follower:

``socket_to_buffer``
    a transport copied frame bytes into a buffer (asyncio's stream buffer,
    then the frame's ``bytes``: two copies per byte; DPDK: out of the
    mbufs into ``bytes``, once for a one-frame message, twice for a
    reassembled one, or once straight into the Raft log's free tail for
    entries received in place there). Frames no longer than a MsgApp's
    fixed part hold no entry and are not counted;
``frame_to_entries``
    decoding a frame cut each entry's data out of it (``bytes`` slices).
    Entries received straight into the Raft log (TCP without TLS, see
    :mod:`~blizzard.replication.transport.tcp`; DPDK, see
    :mod:`~blizzard.replication.transport.dpdk.transport`) are cut from their records,
    which stay where they landed: the one copy left before the structures';
    the core, the log's reads and the apply share that ``bytes``;
``entries_to_log``
    the Raft log wrote entry data that lived elsewhere into its records;
``log_to_apply``
    applying cut an Op's bytes out of its entry before handing them to the
    structures (stripping the session envelope from a ``bytes`` entry; none
    when the registry reads each Op where it lies, after its envelope);
``apply_to_structure``
    the Op's argument bytes (key, value) the structures copied into their
    own blocks: the one copy that must remain.

What is not a copy: the kernel filling a buffer we handed it (``recv_into``),
a CRC or a parse reading bytes where they lie, a flush.

The entries a leader writes into its own log are counted too, as
``entries_to_log`` (once per entry: the proposals it appends). The counter
is per node and never reset; a node's ``status()`` reports it
under ``copies`` (and the store's ``counters`` as ``copied_<stage>``).
"""

from __future__ import annotations

__all__ = ["STAGES", "Copies"]

STAGES = ("entries_to_frame", "socket_to_buffer", "frame_to_entries", "entries_to_log",
          "log_to_apply", "apply_to_structure")


class Copies:
    """Bytes copied per stage (see the module docstring); add with ``add(stage, n)``
    or, on hot paths, ``counts[stage] += n``."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, n: int) -> None:
        if stage not in self.counts:
            raise KeyError(f"unknown copy stage {stage!r}; stages: {', '.join(STAGES)}")
        self.counts[stage] += n

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts (JSON-able)."""
        return dict(self.counts)

    def __repr__(self) -> str:
        return f"Copies({self.counts})"
