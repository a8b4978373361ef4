"""``blizzard serve`` on a physical cluster: one node, primary or backup, with its client port.

Every node of a ``[replication] backend = "physical"`` cluster runs
``blizzard serve --config C --node N``, as on Raft. The node's role comes
from its own record (``mirror.state``): a node that was serving as primary
opens its pool as primary again; a node that was a backup stays one; a node
with no record yet is the cluster's first primary if it is
``[replication] primary`` (the first node of ``[[nodes]]`` by default), a
backup otherwise.

* **The primary** serves the client protocol on its ``client`` address
  (TLS and tokens as a Raft node does): a SUBMIT is applied to the mirrored
  pool and answered once its fences met the acknowledgement rule; a READ
  reads the pool. Both run on one worker thread, in arrival order, so a read
  never sees an Op half-applied. Each SUBMIT goes through the session table
  (``replication.sessions``), kept in the pool and therefore mirrored too: a
  client that retries a write after a failover gets the result recorded the
  first time, and the write is applied once.
* **A backup** mirrors the primary's fences (as ``blizzard mirror serve``
  does) and answers every SUBMIT and READ on its client port NOT_READY: "node
  2 is a backup, not the primary; the primary is node 1 (epoch 1.1)", with
  that node as the leader hint. The remote client already follows such an
  answer to the node it names, so it needs nothing of its own for physical
  clusters; and since a backup keeps answering while the primary is down,
  the client keeps retrying through a failover (up to its ``timeout_s``)
  instead of giving up after ``connect_timeout_s`` as it would if no node
  accepted a connection at all. STATUS is answered (the node's role, epoch
  and position).
* **Promotion** (``blizzard mirror promote --node N``) turns N's running
  backup into the primary in the same process: the backup hands over, the
  node opens its pool as primary and its client port starts serving.
* **A deposed primary** (a backup reports a newer epoch: another node was
  promoted) stops serving writes and rejoins as a backup; the new primary
  resynchronises it (its writes that no backup acknowledged are lost, as
  they must be).

Nothing here decides when to fail over: see ``docs/physical.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any

from blizzard._signals import stop_on_signals
from blizzard.cluster import config as configmod
from blizzard.cluster import exposure, physical
from blizzard.cluster import protocol as proto
from blizzard.cluster.access import AccessPolicy
from blizzard.cluster.config import ClusterConfig, NodeConfig
from blizzard.cluster.protocol import Kind, Request
from blizzard.cluster.server import (
    REQUEST_TIMEOUT_S,
    ClientServer,
    forget_serving,
    record_serving,
)
from blizzard.exceptions import (
    ConfigError,
    DeposedError,
    MirrorUnavailableError,
    NodeNotReadyError,
    PromoteError,
    ReplicatorStoppedError,
)
from blizzard.replication.physical import frames
from blizzard.replication.physical.backup import BackupServer
from blizzard.replication.physical.replicator import PhysicalReplicator
from blizzard.replication.physical.state import NODE_MAX, MirrorState, epoch_text
from blizzard.replication.sessions import wrap
from blizzard.replication.transport import tls as tlsmod
from blizzard.structures import ops
from blizzard.structures.registry import Registry, registry_for

log = logging.getLogger("blizzard.mirror.serve")

POLL_S = 0.05
OPEN_RETRY_S = 1.0

STARTING, BACKUP, OPENING, PRIMARY, STOPPED = "starting", "backup", "opening", "primary", "stopped"


def epoch_node(epoch: int) -> int:
    """The node that chose ``epoch`` -- the primary of that epoch (0: none yet)."""
    return epoch & NODE_MAX if epoch else 0


class PhysicalNode:
    """One node of a physical cluster: its role, its pool when primary, its
    backup server when backup. Every touch of the primary's pool (applies,
    reads, closing it) runs on :attr:`worker`, one thread."""

    def __init__(self, config: ClusterConfig, node_id: int) -> None:
        self.config = config
        self.node_id = node_id
        self.acks, self.fence, self.ready_timeout_s = physical.options(config)
        self.first_primary = physical.initial_primary(config)
        self.role = STARTING
        self.epoch = 0  # this node's latest known epoch (a backup's: the primary's)
        self.replicator: PhysicalReplicator | None = None
        self.registry: Registry | None = None
        self.backup: BackupServer | None = None
        self.worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"node{node_id}-pool")
        self.promotions = 0
        self.demotions = 0
        #: what the mirror runs over, in both roles (one DPDK context per process)
        self.transport = physical.mirror_transport(config, node_id)

    # -- what clients are told ------------------------------------------------------------

    def primary_hint(self) -> int:
        """The node clients should talk to: this one when primary, else the
        node whose epoch this node holds (0 when it knows none)."""
        return self.node_id if self.role == PRIMARY else epoch_node(self.epoch)

    def not_primary(self) -> str:
        """Why this node does not serve a request, naming the primary if known."""
        if self.role == BACKUP:
            hint = epoch_node(self.epoch)
            where = (f"the primary is node {hint} (epoch {epoch_text(self.epoch)})" if hint
                     else "no primary has reached it yet")
            return f"node {self.node_id} is a backup, not the primary; {where}"
        if self.role == OPENING:
            return f"node {self.node_id} is opening as primary (waiting for its backups)"
        if self.role == STOPPED:
            return f"node {self.node_id} is shutting down"
        return f"node {self.node_id} is starting"

    # -- requests (on the worker thread) ----------------------------------------------------

    def submit(self, envelope: bytes) -> bytes:
        """Apply one client envelope; its encoded result. NodeNotReadyError when
        this node is not the primary, or its backups did not acknowledge."""
        rep = self.replicator
        if self.role != PRIMARY or rep is None:
            raise NodeNotReadyError(self.not_primary())
        try:
            result = rep.submit(envelope)
        except (DeposedError, MirrorUnavailableError, ReplicatorStoppedError) as exc:
            raise NodeNotReadyError(f"node {self.node_id}: {exc}") from None
        except Exception as exc:
            result = exc
        return proto.encode_value(result)

    def read(self, read: Callable[[], bytes]) -> bytes:
        if self.role != PRIMARY or self.registry is None:
            raise NodeNotReadyError(self.not_primary())
        return read()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"node": self.node_id, "backend": "physical",
                                  "role": self.role, "term": self.epoch,
                                  "epoch": epoch_text(self.epoch), "leader": self.primary_hint(),
                                  "commit": 0, "applied": 0, "promotions": self.promotions,
                                  "demotions": self.demotions}
        rep = self.replicator
        if self.role == PRIMARY and rep is not None:
            applied = rep._sm.last_applied
            status.update(commit=applied, applied=applied, backups=rep.mirror.backups(),
                          counters=rep.stats()["per_op"], submitted=rep.submitted,
                          unacknowledged=rep.unacknowledged)
        backup = self.backup
        if self.role == BACKUP and backup is not None:
            with contextlib.suppress(Exception):  # closing meanwhile: the answer is thinner
                info = backup.info()
                status.update(position=info["position"], in_sync=info["in_sync"],
                              counters={k: v for k, v in info.items()
                                        if isinstance(v, int) and not isinstance(v, bool)
                                        and k != "node"})
        return status

    # -- roles (on the main thread) ---------------------------------------------------------

    def starts_as_primary(self) -> bool:
        """From this node's record: primary if it was serving as one, or if it has
        no record yet and is the cluster's first primary."""
        directory = self.config.node_dir(self.node_id)
        directory.mkdir(parents=True, exist_ok=True)
        state = MirrorState(directory, mode=self.config.durability)
        try:
            self.epoch = state.epoch
            return state.primary or (state.epoch == 0 and self.node_id == self.first_primary)
        finally:
            state.close()

    def run_backup(self, stop: threading.Event) -> bool:
        """Be a backup until promoted (True) or stopped (False)."""
        config, node_id = self.config, self.node_id
        server: BackupServer | None = None

        def on_promote() -> frames.State:
            assert server is not None
            summary = physical.promote_here(config, server, acks=self.acks)
            return server.describe(text=json.dumps(summary))

        server = BackupServer(config.node_dir(node_id), config.node(node_id).raft,
                              node=node_id, cluster_id=config.cluster_id,
                              mode=config.durability, on_promote=on_promote,
                              **physical.backup_transports(self.transport))
        self.backup = server
        self.epoch = server.state.epoch
        self.role = BACKUP
        log.info("node %d: backup (mirror %s:%d, epoch %s, position %s/%d%s)", node_id,
                 *server.address, epoch_text(server.state.epoch),
                 epoch_text(server.state.position[0]), server.state.position[1],
                 "" if server.state.in_sync else ", out of sync")
        try:
            while not stop.wait(POLL_S) and not server.promoted.is_set():
                self.epoch = server.state.epoch
        finally:
            promoted = server.promoted.is_set()
            self.role = OPENING if promoted else STOPPED
            self.backup = None
            server.close()
        if promoted:
            self.promotions += 1
            log.info("node %d: promoted; opening the pool as primary", node_id)
        return promoted

    def open_primary(self, stop: threading.Event) -> bool:
        """Open this node's pool as primary, retrying while too few backups are in
        sync; True once serving, False if stopped or deposed (then demoted)."""
        self.role = OPENING
        while not stop.is_set():
            try:
                rep = physical.open_primary(self.config, self.node_id, acks=self.acks,
                                            fence=self.fence,
                                            ready_timeout_s=self.ready_timeout_s,
                                            sessions=True, transport=self.transport)
            except MirrorUnavailableError as exc:
                log.warning("%s; retrying", exc)
                stop.wait(OPEN_RETRY_S)
                continue
            except (DeposedError, PromoteError) as exc:
                log.warning("node %d: %s; serving as a backup", self.node_id, exc)
                self.demote()
                return False
            # a write waits for its backups no longer than a client waits for its answer
            rep.ready_timeout_s = min(rep.ready_timeout_s, REQUEST_TIMEOUT_S)
            self.worker.submit(self._become_primary, rep).result()
            log.info("node %d: primary, epoch %s (acks %s, fence %s)", self.node_id,
                     epoch_text(self.epoch), "all" if self.acks is None else self.acks,
                     self.fence)
            return True
        self.role = STOPPED
        return False

    def _become_primary(self, rep: PhysicalReplicator) -> None:
        self.replicator = rep
        self.registry = registry_for(rep.pool)
        self.epoch = rep.mirror.epoch
        self.role = PRIMARY

    def run_primary(self, stop: threading.Event) -> None:
        """Serve as primary until stopped or deposed (then demoted)."""
        rep = self.replicator
        assert rep is not None
        while not stop.wait(POLL_S):
            if rep.mirror.deposed is not None:
                log.error("node %d: deposed: a backup holds epoch %s; serving as a backup",
                          self.node_id, epoch_text(rep.mirror.deposed))
                self.worker.submit(self._close_primary, BACKUP).result()
                self.demote()
                return
        self.worker.submit(self._close_primary, STOPPED).result()

    def _close_primary(self, role: str) -> None:
        rep = self.replicator
        self.role = role
        self.replicator = None
        self.registry = None
        if rep is not None:
            physical.close_primary(rep)

    def demote(self) -> None:
        """Record this node as a backup, out of sync: the primary of the newer epoch
        resynchronises it before it counts."""
        state = MirrorState(self.config.node_dir(self.node_id), mode=self.config.durability)
        try:
            state.set_in_sync(False)
            state.set_primary(False)
            self.epoch = state.epoch
        finally:
            state.close()
        self.demotions += 1
        self.role = BACKUP

    def run(self, stop: threading.Event) -> None:
        """Serve in whichever role until stopped."""
        primary = self.starts_as_primary()
        while not stop.is_set():
            if primary:
                if self.open_primary(stop):
                    self.run_primary(stop)
                primary = False
            else:
                primary = self.run_backup(stop)
        self.role = STOPPED

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        physical.close_transport(self.transport)


class PhysicalClientServer(ClientServer):
    """The client protocol of a physical node: the Raft node's listener (TLS,
    tokens, framing, reads through the structures' raw faces), with SUBMIT and
    READ served by the primary's worker thread, or refused NOT_READY naming
    the primary."""

    def __init__(self, node: PhysicalNode, address: tuple[str, int], *,
                 tls: ssl.SSLContext | None = None, policy: AccessPolicy) -> None:
        # No super().__init__: that one binds a Raft replicator's pool for good,
        # while this node's pool comes and goes with its role.
        self.physical = node
        self.tls = tls
        self.policy = policy
        self.address = address
        self.frame_bytes_max = proto.FRAME_BYTES_MAX
        self.request_timeout_s = REQUEST_TIMEOUT_S
        self.node_id = node.node_id
        self._faces: dict[str, tuple[Any, Any]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._stopping = False
        self.requests = 0
        self.refused = 0

    @property
    def registry(self) -> Registry:  # type: ignore[override]  # read on the worker only
        registry = self.physical.registry
        if registry is None:
            raise NodeNotReadyError(self.physical.not_primary())
        return registry

    def _leader(self) -> int:
        return self.physical.primary_hint()

    async def _handle(self, request: Request) -> bytes:
        node = self.physical
        loop = asyncio.get_running_loop()
        if request.kind == Kind.SUBMIT:
            if not request.client or not request.seq:
                raise proto.ProtocolError("SUBMIT needs a client id and a seq (both non-zero)")
            ops.decode_head(request.payload)  # refuse garbage before it reaches the pool
            if node.role != PRIMARY:
                raise NodeNotReadyError(node.not_primary())
            envelope = wrap(request.client, request.seq, request.payload)
            return await loop.run_in_executor(node.worker, node.submit, envelope)
        if request.kind == Kind.READ:
            read = proto.decode_read(request.payload)
            if node.role != PRIMARY:
                raise NodeNotReadyError(node.not_primary())
            return await loop.run_in_executor(node.worker, node.read, lambda: self._read(read))
        if request.kind == Kind.MEMBERS:
            raise ConfigError("replication.backend: membership changes need the raft backend "
                              "(a physical cluster's nodes are its [[nodes]])")
        return proto.encode_json(self.status())

    def status(self) -> dict[str, Any]:
        status = self.physical.status()
        status.update(pid=os.getpid(), client=f"{self.address[0]}:{self.address[1]}",
                      requests=self.requests, refused=self.refused,
                      connections=len(self._connections))
        return status


def serve_physical(config: ClusterConfig, node_id: int, *,
                   stop: threading.Event | None = None) -> int:
    """``blizzard serve`` for a physical cluster: run node ``node_id`` (primary or
    backup, see the module docstring) and its client port until SIGTERM/SIGINT
    (or ``stop``)."""
    config.require_nodes("blizzard serve")
    node = config.node(node_id)
    if node.client is None:
        raise ConfigError(f"nodes[id={node_id}].client: missing (blizzard serve needs the "
                          "client address)")
    physical.options(config)
    physical.initial_primary(config)
    exposure.check(config, node_id, ("client",))
    # the mirror protocol has no TLS: a mirror port off loopback needs insecure = true
    exposure.check(config, node_id, ("raft",), tls=False,
                   what="as a mirror (physical replication has no TLS)")
    tls_files = configmod.node_tls(config, node_id)
    tls = None
    if tls_files is not None:
        tls = tlsmod.server_context(ca_file=str(tls_files.ca), cert_file=str(tls_files.cert),
                                    key_file=str(tls_files.key))
    policy = AccessPolicy(config.auth, tls=tls is not None)
    member = PhysicalNode(config, node_id)  # the mirror's transport starts here
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        return _serve_until(config, node_id, node, member, tls, policy, stop)


def _serve_until(config: ClusterConfig, node_id: int, node: NodeConfig, member: PhysicalNode,
                 tls: ssl.SSLContext | None, policy: AccessPolicy, stop: threading.Event) -> int:
    """:func:`serve_physical`'s node, from start to a clean stop."""
    server = PhysicalClientServer(member, node.client, tls=tls, policy=policy)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"node{node_id}-clients",
                              daemon=True)
    thread.start()
    record = None
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result()
        config.node_dir(node_id).mkdir(parents=True, exist_ok=True)
        record = record_serving(config, node_id)
        log.info("node %d: up (pid %d, physical, mirror %s:%d over %s, data %s)", node_id,
                 os.getpid(), *node.raft, config.transport.kind, config.node_dir(node_id))
        member.run(stop)
    finally:
        log.info("node %d: shutting down", node_id)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        member.close()
        if record is not None:
            forget_serving(record)
    log.info("node %d: stopped", node_id)
    return 0
