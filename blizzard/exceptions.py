"""Every error Blizzard raises on purpose.

Each class also subclasses the builtin a caller would naturally catch
(``FileNotFoundError``, ``ValueError``, ``MemoryError``...), so code written
against the standard library keeps working. ``docs/errors.md`` is the
hierarchy with what each error means (a test keeps it complete). Errors
are defined here, not beside the code raising them: a replicated Op's error
result crosses the network by class name and is rebuilt from this module.
"""

from __future__ import annotations


class BlizzardError(Exception):
    """Base of every error Blizzard raises on purpose."""


def from_name(name: str, message: str) -> BlizzardError | None:
    """The error class of this module called ``name``, made from its message
    alone (how an error crosses the network or a replicated log), or None if
    no class here has that name. Attributes a class takes as keywords
    (``UndoLogFullError.needed``, ``SafetyViolation.kind``) do not travel."""
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, BlizzardError)):
        return None
    try:
        return cls(message)
    except TypeError:  # its constructor needs more than the message: skip it
        pass
    try:
        error: BlizzardError = BaseException.__new__(cls, message)
    except TypeError:  # a builtin base that must build its own instances
        return BlizzardError(f"{name}: {message}")
    error.args = (message,)
    return error


class ConfigError(BlizzardError, ValueError):
    """A configuration is invalid, or asks for something not available here;
    the message names the field (``replication.backend``, ``nodes[1].raft``)."""


class InvalidArgumentError(BlizzardError, ValueError):
    """An argument's value is outside what the call accepts (an unknown
    durability mode, a key codec a structure cannot use, a range outside
    the pool); the message says what is accepted."""


class InvalidNameError(InvalidArgumentError):
    """A name is empty or longer than its field holds (a pool's layout name,
    a root's or a structure's name)."""


class AccessDeniedError(BlizzardError, PermissionError):
    """A node refused a client or a peer: who it is could not be established,
    or it may not do what it asked. Retrying elsewhere will not help."""


class AuthenticationError(AccessDeniedError):
    """Nobody known: no certificate, one the cluster's CA did not sign or that
    has expired, an unknown token, or a certificate that is not the node's it
    claims to be."""


class AuthorizationError(AccessDeniedError):
    """Known, but not allowed: a read-only client asking to write, or a client
    whose name the nodes' ``[auth]`` table does not list."""


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


class LogCorruptError(PoolCorruptError):
    """The Raft log's root block is not one this code wrote."""


class PoolLockedError(PoolError, BlockingIOError):
    """Another process (or another handle in this one) has the pool open.

    ``holders`` lists the PIDs holding the file's lock, where the system
    tells (``/proc/locks``); empty otherwise.
    """

    def __init__(self, message: str, *, holders: list[int] | None = None) -> None:
        super().__init__(message)
        self.holders = holders or []


class MediaMapError(PoolError, OSError):
    """A pool file could not be sized or mapped (no memory or address space
    left, no space on its file system, a limit); nothing was created."""


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


class ReceiveRegionLostError(MessageDecodeError):
    """Entries received straight into the Raft log's free tail were overwritten
    before the node could take them (the log changed meanwhile: another
    leader's entries were appended, say): the frame is dropped, as a lost one
    would be, and the leader sends the entries again."""


class DpdkUnavailableError(BlizzardError, ImportError):
    """The DPDK transport cannot run here: its native module was not built
    (Debian's ``dpdk`` and ``libdpdk-dev`` missing at install time) or DPDK's
    environment (EAL) did not start. The message says which, and the fix."""


class DpdkError(BlizzardError, OSError):
    """A DPDK call failed (a device that would not attach or start)."""


class ProposalDroppedError(BlizzardError, RuntimeError):
    """A Raft proposal was not accepted: no known leader, or a transfer or
    membership change is in progress. Nothing was appended; retry later."""


class NotLeaderError(ProposalDroppedError):
    """No leader is known right now; retry shortly."""


class CompactedError(BlizzardError, LookupError):
    """The requested Raft log index is older than the latest snapshot."""


class UnavailableError(BlizzardError, LookupError):
    """The requested Raft log index is past the end of the stable log."""


class SnapshotOutOfDateError(BlizzardError, ValueError):
    """A snapshot older than the one already stored was offered."""


class SnapshotInstallError(BlizzardError, RuntimeError):
    """A snapshot could not be installed here (not enough room, another pool
    geometry): that install fails, the node keeps running on its old state."""


class StaleRequestError(BlizzardError, RuntimeError):
    """A retry of a request older than the client's latest: its result is gone."""


class EnvelopeError(BlizzardError, ValueError):
    """A Raft entry that is not a session envelope, or a recorded result
    that cannot be decoded."""


class NotTlsError(BlizzardError, ConnectionError):
    """The peer's first bytes are no TLS handshake: it speaks the plain protocol.
    Nothing was sent to it; the caller may answer in that protocol."""


class MembershipError(BlizzardError, RuntimeError):
    """A membership change (add, remove, transfer of leadership) could not be
    carried out; the message says why."""


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


class KeyTooLongError(InvalidArgumentError):
    """A key whose encoded form is longer than its structure stores
    (``key_bytes_max``: 992 bytes in a PHashMap, 256 in a PBPlusTree...)."""


class UnknownCodecError(InvalidArgumentError):
    """A codec asked for by a name or a type that no codec has."""


class StructureCorruptError(PoolCorruptError):
    """A structure's persistent layout breaks one of its invariants."""


class Empty(BlizzardError, _queue.Empty):
    """``get`` or ``peek`` on an empty :class:`~blizzard.structures.PQueue`."""


class NodeFailedError(BlizzardError, RuntimeError):
    """A cluster node stopped serving because its Raft loop died; the cause
    (say, PoolFullError) is chained and named in the message."""


class ReplicatorStoppedError(BlizzardError, RuntimeError):
    """An Op was submitted to a replicator that has been stopped."""


class ClusterUnavailableError(BlizzardError, TimeoutError):
    """A client's request could not complete: no node accepted a connection
    within the connect timeout (the message names every node tried and why),
    or no node completed it before the request's deadline."""


class RequestTimeoutError(BlizzardError, TimeoutError):
    """A request was not committed within its deadline (no quorum reachable?)."""


class NodeNotReadyError(BlizzardError, RuntimeError):
    """A node cannot serve a request now (it is shutting down, or the request
    was not committed or its read barrier not confirmed in time): it answers
    NOT_READY and the client tries again, there or on another node."""


class ProtocolError(BlizzardError, ValueError):
    """A frame that is not a valid request or response of the client protocol."""


class NoSuchStructureError(BlizzardError, KeyError):
    """A READ named a structure the node does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RemoteError(BlizzardError, RuntimeError):
    """A node answered with an error of a class this side does not know; the
    message starts with that class's name."""


# --- simulation and benchmarks -----------------------------------------------


class SafetyViolation(BlizzardError, AssertionError):
    """A simulation broke a property the replicated structures promise (a
    Raft safety property, linearizability, exactly-once application);
    ``kind`` names the property."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class LivenessFailure(BlizzardError, AssertionError):
    """After healing, a simulated cluster did not answer every request and
    converge in time."""


class BenchmarkError(BlizzardError, RuntimeError):
    """A benchmark could not run (a node process failed or did not start,
    writes never resumed); the message carries why, with the tail of a
    failed process's stderr."""


class BenchmarkSkippedError(BenchmarkError):
    """A benchmarked backend refused its configuration on this machine; the
    report lists it as skipped with this message."""


class PmemobjUnavailableError(BlizzardError, RuntimeError):
    """libpmemobj (Debian ``libpmemobj1``) or cffi cannot be loaded, so the
    pool benchmark's libpmemobj reference cannot run."""
