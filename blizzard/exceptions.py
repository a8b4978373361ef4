"""Every error Blizzard raises on purpose.

Each class also subclasses the builtin a caller would naturally catch
(``FileNotFoundError``, ``ValueError``, ``MemoryError``...), so code written
against the standard library keeps working.
"""

from __future__ import annotations


class BlizzardError(Exception):
    """Base of every error Blizzard raises on purpose."""


class ConfigError(BlizzardError, ValueError):
    """A configuration is invalid, or asks for something not available here;
    the message names the field (``replication.backend``, ``nodes[1].raft``)."""


# --- persistent memory -------------------------------------------------------


class PmemUnavailableError(BlizzardError, OSError):
    """libpmem could not be loaded, so the ``pmem`` durability mode is impossible."""


class PoolError(BlizzardError):
    """Base of the errors about a pool file or its contents."""


class PoolNotFoundError(PoolError, FileNotFoundError):
    """The pool file does not exist."""


class PoolExistsError(PoolError, FileExistsError):
    """``Pool.create`` was asked to create a pool where a file already exists."""


class NotAPoolError(PoolError, ValueError):
    """The file is not a Blizzard pool (wrong magic)."""


class PoolLayoutError(PoolError, ValueError):
    """The pool was created for another layout than the one asked for."""


class PoolVersionError(PoolError, ValueError):
    """The pool's format version is not one this release can read."""


class PoolTruncatedError(PoolError, ValueError):
    """The file is shorter than the pool size its header records."""


class PoolCorruptError(PoolError, ValueError):
    """A checksum or an invariant of the persistent layout does not hold."""


class PoolLockedError(PoolError, BlockingIOError):
    """Another process (or another handle in this one) has the pool open."""


class PoolFullError(PoolError, MemoryError):
    """An allocation did not fit; the transaction was rolled back."""


class UndoLogFullError(PoolFullError):
    """A transaction's undo log had to grow and no free extent could hold its
    next segment; the transaction was rolled back.

    ``needed`` is the segment size asked for (bytes), ``largest_free_extent``
    the largest free extent at that moment.
    """

    def __init__(self, message: str, *, needed: int, largest_free_extent: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.largest_free_extent = largest_free_extent


class PoolClosedError(PoolError, ValueError):
    """The pool was used after ``close()``."""


class TransactionError(PoolError, RuntimeError):
    """A transaction was misused (range out of bounds, bad free, no active tx)."""


class InvalidSizeError(PoolError, ValueError):
    """A pool or allocation size is out of the accepted range."""


# --- replication -------------------------------------------------------------


class MessageDecodeError(BlizzardError, ValueError):
    """A Raft message frame is truncated, malformed or of an unknown kind."""


class DpdkUnavailableError(BlizzardError, ImportError):
    """The DPDK transport cannot run here: its native module was not built
    (Debian's ``dpdk`` and ``libdpdk-dev`` missing at install time) or DPDK's
    environment (EAL) did not start. The message says which, and the fix."""


class DpdkError(BlizzardError, OSError):
    """A DPDK call failed (a device that would not attach or start)."""


class ProposalDroppedError(BlizzardError, RuntimeError):
    """A Raft proposal was not accepted: no known leader, or a transfer or
    membership change is in progress. Nothing was appended; retry later."""


class MirrorError(BlizzardError, RuntimeError):
    """Base of the errors of physical replication (the mirrored media)."""


class MirrorUnavailableError(MirrorError, ConnectionError):
    """Fewer backups than the acknowledgement rule needs answered in time.

    Raised for an operation during which a fence went unacknowledged: the
    operation may or may not be applied (like a timeout); it was not
    acknowledged, so nothing promised it survives a failover.
    """


class DeposedError(MirrorError):
    """A backup holds a newer epoch: another node was promoted primary."""


class MirrorProtocolError(MirrorError, ValueError):
    """A mirror frame is truncated, malformed, or not what the exchange expects."""


class ChannelClosedError(MirrorError, ConnectionError):
    """A mirror channel was closed or broke (peer gone, reset, timed out)."""


class PromoteError(MirrorError):
    """A backup cannot be promoted (say, its image is mid-resynchronisation)."""


# --- structures --------------------------------------------------------------

import queue as _queue  # noqa: E402  (only to subclass queue.Empty below)


class OpDecodeError(BlizzardError, ValueError):
    """An Op record is truncated, has trailing bytes, or is malformed."""


class OpVersionError(OpDecodeError):
    """An Op record carries a format version this release cannot read."""


class EncodeError(BlizzardError, TypeError):
    """A key or value of a type its structure's codec does not store exactly
    (the codec would have to change it, or cannot represent it at all)."""


class EncodeRangeError(BlizzardError, OverflowError):
    """A number outside the range its codec can represent."""


class DecodeError(BlizzardError, ValueError):
    """Stored bytes that the structure's codec cannot decode."""


class StructureKindError(BlizzardError, TypeError):
    """A name is bound to a structure of another kind (a queue opened as a map)."""


class CodecMismatchError(BlizzardError, ValueError):
    """A structure was opened with codecs other than the ones it was created with."""


class StructureCorruptError(PoolCorruptError):
    """A structure's persistent layout breaks one of its invariants."""


class Empty(BlizzardError, _queue.Empty):
    """``get`` or ``peek`` on an empty :class:`~blizzard.structures.PQueue`."""


class ReplicatorStoppedError(BlizzardError, RuntimeError):
    """An Op was submitted to a replicator that has been stopped."""
