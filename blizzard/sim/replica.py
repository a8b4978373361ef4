"""One simulated replica: the real node, log, sessions, registry and structures.

Everything but the media and the network is the production code: a
:class:`~blizzard.replication.node.Node` over a
:class:`~blizzard.replication.raft.pmem_storage.PmemStorage` in one pool
and a :class:`~blizzard.replication.sessions.SessionStateMachine` over the
registry of another, each pool on a
:class:`~blizzard.pmem.crashsim.CrashSimMedia`. What survives a crash is
what the media say survives:

* a **process crash** leaves every store (the mapping outlives the
  process): the restart opens an image of the current contents;
* a **power failure** leaves the durable lines plus any subset of the
  flushed-but-unfenced and dirty ones (``CrashSimMedia.crash_image``).

A crash may be *armed* to strike at the k-th fence from now, in the middle
of whatever the replica is doing then (an append, an apply, a snapshot, the
recovery of an earlier crash): the media's fence hook takes both images --
the two pools lose power at the same instant -- and raises
:class:`ReplicaCrash`, which unwinds the replica's code; its objects are
then dropped, as a dead process's would be.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from blizzard.exceptions import SnapshotInstallError
from blizzard.pmem import Pool
from blizzard.pmem.crashsim import CrashSimMedia, all_or_nothing, random_chooser
from blizzard.pmem.image import geometry, used_pieces
from blizzard.replication.node import Node
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine
from blizzard.sim.checks import AppliedLog, recording_state_machine
from blizzard.sim.network import Network
from blizzard.structures import registry_for

DATA_LAYOUT = "blizzard.data"
LOG_LAYOUT = "blizzard.raftlog"
PROCESS = "process"
POWER = "power"


class ReplicaCrash(BaseException):
    """Raised from a fence hook: the replica's process died there.

    A ``BaseException`` so that no ``except Exception`` in the code under
    test swallows it: a crash stops everything, as SIGKILL does.
    """


class Replica:
    """A replica that can crash (at a fence, or between turns) and restart."""

    def __init__(self, node_id: int, *, voters: tuple[int, ...], network: Network,
                 applied_log: AppliedLog, rng: random.Random, params: dict,
                 clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.voters = voters
        self.network = network
        self.applied_log = applied_log
        self.rng = rng
        self.params = params
        self.clock = clock
        self.disks: tuple[bytes, bytes] | None = None  # what a restart opens (None: fresh)
        # A snapshot image being received, "the file beside the pool": kept across
        # crashes once complete (``incoming_ready`` its index), dropped before.
        self.incoming: bytearray | None = None
        self.incoming_ready: int | None = None
        self.machine = None
        self.node: Node | None = None
        self.pool: Pool | None = None
        self.log_pool: Pool | None = None
        self.registry = None
        self.sessions: SessionStateMachine | None = None
        self.woken = False
        self.crashes = {PROCESS: 0, POWER: 0}
        self.boots = 0
        self._armed: tuple[int, str] | None = None  # (fences left, kind)
        self._medias: tuple[CrashSimMedia, CrashSimMedia] | None = None

    @property
    def up(self) -> bool:
        return self.node is not None

    # -- booting ------------------------------------------------------------------------

    def boot(self) -> None:
        """Start the process: open (recovering) or create both pools, build the node.

        May raise :class:`ReplicaCrash` if an armed crash strikes during recovery.
        """
        params = self.params
        if self.disks is None:
            data = CrashSimMedia(params["data_pool_bytes"])
            log = CrashSimMedia(params["log_pool_bytes"])
        else:
            data, log = (CrashSimMedia.from_image(image) for image in self.disks)
        self._medias = (data, log)
        data.fence_hook = log.fence_hook = self._fence
        self.boots += 1
        if self.disks is None:
            pool = Pool.create(data, layout=DATA_LAYOUT)
            log_pool = Pool.create(log, layout=LOG_LAYOUT)
        else:
            if self.incoming_ready is not None:  # an install a crash interrupted: again
                _copy_image(self.incoming, data.buf, data.flush)
                data.drain()
                self.incoming = self.incoming_ready = None
            self.incoming = None  # an image never completed is of no use
            pool = Pool.open(data, layout=DATA_LAYOUT)
            log_pool = Pool.open(log, layout=LOG_LAYOUT)
        registry = registry_for(pool)
        machine = recording_state_machine(registry, pool, self.node_id, self.applied_log,
                                          capacity=params["sessions"])
        sessions = machine.sessions
        storage = PmemStorage(log_pool, conf_state=ConfState(self.voters),
                              segment_bytes=params["segment_bytes"])
        node = Node(self.node_id, storage=storage, state_machine=machine,
                    transport=self.network.endpoint(self.node_id), wake=self._wake,
                    clock=self.clock, election_tick=params["election_tick"],
                    heartbeat_tick=params["heartbeat_tick"],
                    snapshot_entries=params["snapshot_entries"],
                    snapshot_tail_entries=params["snapshot_tail_entries"],
                    images=SimImages(self) if params["images"] else None,
                    seed=self.rng.getrandbits(32),
                    config={"entries_per_msg_max": params["entries_per_msg_max"],
                            "inflight_max": params["inflight_max"]})
        self.pool, self.log_pool, self.registry, self.sessions = pool, log_pool, registry, sessions
        self.machine = machine
        self.node = node
        self.check()
        machine.record_state()  # what recovery left must equal the others' at that index
        self.network.attach(self.node_id, self.receive)
        self.woken = True

    def check(self) -> None:
        """Every persistent invariant: both pools, every structure, the Raft log."""
        self.pool.check()
        self.log_pool.check()
        self.registry.check()
        self.node.storage.check()

    # -- crashing -----------------------------------------------------------------------

    def arm(self, fences: int, kind: str) -> None:
        """Crash (``PROCESS`` or ``POWER``) at the ``fences``-th fence from now."""
        assert fences >= 1 and kind in (PROCESS, POWER)
        self._armed = (fences, kind)

    def disarm(self) -> None:
        self._armed = None

    def crash_now(self, kind: str) -> None:
        """Crash between two turns."""
        self._take_images(kind)
        self._down()

    def _fence(self, media: CrashSimMedia) -> None:
        if self._armed is None:
            return
        left, kind = self._armed
        if left > 1:
            self._armed = (left - 1, kind)
            return
        self._take_images(kind)
        self._armed = None
        self._medias_dead()  # the code unwinding from here must not persist anything
        raise ReplicaCrash(f"{kind} failure at a fence")

    def _take_images(self, kind: str) -> None:
        self.crashes[kind] += 1
        chooser = (all_or_nothing(True) if kind == PROCESS
                   else random_chooser(self.rng.getrandbits(32)))
        self.disks = tuple(media.crash_image(chooser) for media in self._medias)

    def crashed(self) -> None:
        """A :class:`ReplicaCrash` unwound the replica: drop the dead process."""
        self._down()

    def _down(self) -> None:
        self.network.detach(self.node_id)
        self._armed = None
        self.node = self.pool = self.log_pool = self.registry = self.sessions = None
        self.machine = None
        self._medias_dead()
        self.woken = False

    def _medias_dead(self) -> None:
        if self._medias is not None:
            for media in self._medias:
                media.fence_hook = _dead
        self._medias = None

    # -- running ------------------------------------------------------------------------

    def _wake(self) -> None:
        self.woken = True

    def receive(self, source: int, frame: bytes) -> None:
        self.node.receive(source, frame)


def _dead(media: CrashSimMedia) -> None:
    raise ReplicaCrash("the replica is down")


def _copy_image(image: bytearray, target, flush) -> None:
    g = geometry(image)
    for off, n in used_pieces(image, heap_off=g["heap_off"], table_off=g["table_off"],
                              nchunks=g["nchunks"]):
        target[off:off + n] = image[off:off + n]
        flush(off, n)


class SimImages:
    """The snapshot images of one simulated replica (see ``StateImages``): the
    incoming image lives in the replica, where a crash leaves it once complete."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    @property
    def pool(self) -> Pool:
        return self.replica.pool

    def begin(self, index: int, size: int, total: int) -> None:
        replica = self.replica
        if replica.incoming_ready is not None:
            raise SnapshotInstallError("an image received earlier waits to be installed")
        if size != replica.pool.size:
            raise SnapshotInstallError(f"an image of a {size}-byte pool")
        replica.incoming = bytearray(size)

    def write(self, offset: int, data: bytes) -> None:
        self.replica.incoming[offset:offset + len(data)] = data

    def complete(self, index: int, term: int) -> None:
        replica = self.replica
        pool = replica.pool
        if geometry(replica.incoming) != {"size": pool.size, "heap_off": pool._heap_off,
                                          "table_off": pool._table_off,
                                          "nchunks": pool._nchunks}:
            replica.incoming = None
            raise SnapshotInstallError("an image of another pool layout")
        replica.incoming_ready = index

    def abort(self) -> None:
        if self.replica.incoming_ready is None:
            self.replica.incoming = None

    def discard(self) -> None:
        self.replica.incoming = self.replica.incoming_ready = None

    def install(self, index: int) -> None:
        replica = self.replica
        pool = replica.pool
        if replica.incoming_ready is not None:
            assert replica.incoming_ready == index, (replica.incoming_ready, index)
            _copy_image(replica.incoming, pool.buf, pool.media.flush)
            pool.media.drain()  # a crash may strike here: the next boot copies it again
            replica.incoming = replica.incoming_ready = None
        pool.reload()
        replica.machine.sessions.reload()
        replica.machine.record_state()
