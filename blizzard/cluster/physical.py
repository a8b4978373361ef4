"""Physical replication for a cluster described by its TOML file.

Every node of the cluster keeps ``data.pool`` and ``mirror.state`` in its
directory (``data_dir/nodeN``) and uses its ``raft`` address as its mirror
address (physical replication runs no Raft). One node is the primary; the
others run ``blizzard mirror serve`` (:func:`serve_backup`).

* :func:`open_primary` opens this node's pool as the primary, mirrored to
  every other node, and returns its :class:`PhysicalReplicator` (``.pool``).
  A node with no state yet becomes the cluster's first primary; a node
  that was a backup must be promoted first.
* :func:`request_promote` (``blizzard mirror promote --node N``) asks node N's
  running backup to become primary: it fences enough other nodes with a new
  epoch that no acknowledged write can be missing from the most advanced of
  them, refuses if another node holds later fences, opens its pool once so
  recovery rolls back the transaction in flight, records itself primary, and
  hands over: its ``mirror serve`` exits, and the node is opened as primary
  (by the application, with :func:`open_primary`).

What this does not give that Raft does: nothing here decides *when* to fail
over. An operator (or an external arbiter) must first make sure the old
primary is dead or cut off, then promote. Promoting while the old primary
still reaches enough backups to meet its acknowledgement rule splits the
brain: until the fencing reaches them, both acknowledge writes, and the
loser's are lost. See ``docs/physical.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from blizzard.cluster import config as configmod
from blizzard.cluster import exposure
from blizzard.cluster.backends import BACKENDS, check_options, per_op
from blizzard.cluster.config import ClusterConfig
from blizzard.exceptions import (
    ChannelClosedError,
    ConfigError,
    DeposedError,
    DpdkUnavailableError,
    MirrorProtocolError,
    MirrorUnavailableError,
    PromoteError,
)
from blizzard.pmem import FileMedia, Pool
from blizzard.pmem import _layout as L
from blizzard.replication.physical import frames
from blizzard.replication.physical.backup import POOL_FILE, BackupServer
from blizzard.replication.physical.channel import MirrorTransport
from blizzard.replication.physical.mirror import FENCE_MODES, MirroredMedia
from blizzard.replication.physical.replicator import PhysicalReplicator
from blizzard.replication.physical.state import MirrorState, epoch_text, first_epoch, next_epoch
from blizzard.replication.physical.tcp import TcpMirrorTransport
from blizzard.replication.sessions import SessionStateMachine
from blizzard.structures.registry import registry_for

log = logging.getLogger("blizzard.mirror")

LAYOUT = "blizzard.data"
READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 5.0
SEQ_RUN_BITS = 32  # each run of a primary numbers its fences from a fresh multiple of 2**32


def _load(config: ClusterConfig | str | os.PathLike[str]) -> ClusterConfig:
    return config if isinstance(config, ClusterConfig) else configmod.load(config)


def mirror_peers(config: ClusterConfig, node_id: int) -> dict[int, tuple[str, int]]:
    """The mirror addresses of every node but ``node_id``."""
    config.node(node_id)
    return {n.id: n.raft for n in config.nodes if n.id != node_id}


def acks_needed(config: ClusterConfig, acks: int | None) -> int:
    backups = len(config.nodes) - 1
    return backups if acks is None else acks


# -- the Store's backend ------------------------------------------------------------------------

OPTIONS = ("acks", "fence", "ready_timeout_s", "primary")


def options(config: ClusterConfig) -> tuple[int | None, str, float]:
    """``(acks, fence, ready_timeout_s)`` from ``[replication]``, validated."""
    check_options(config, OPTIONS)
    raw = config.replication.options
    backups = len(config.nodes) - 1
    acks = raw.get("acks", "all")
    if acks == "all":
        acks = None
    elif not isinstance(acks, int) or isinstance(acks, bool) or not 0 <= acks <= backups:
        raise ConfigError(f"replication.acks: \"all\" or 0..{backups} (backups that acknowledge "
                          f"each fence), got {acks!r}")
    fence = raw.get("fence", "sync")
    if fence not in FENCE_MODES:
        raise ConfigError(f"replication.fence: one of {', '.join(FENCE_MODES)}, got {fence!r}")
    ready = raw.get("ready_timeout_s", READY_TIMEOUT_S)
    if not isinstance(ready, int | float) or isinstance(ready, bool) or ready <= 0:
        raise ConfigError(f"replication.ready_timeout_s: a positive number, got {ready!r}")
    return acks, fence, float(ready)


def initial_primary(config: ClusterConfig) -> int:
    """``[replication] primary``: the node that is the first primary of a new
    cluster under ``blizzard serve`` (default: the first of ``[[nodes]]``)."""
    check_options(config, OPTIONS)
    config.require_nodes("the physical backend")
    ids = [n.id for n in config.nodes]
    primary = config.replication.options.get("primary", ids[0])
    if isinstance(primary, bool) or primary not in ids:
        raise ConfigError(f"replication.primary: the id of the first primary, one of "
                          f"{', '.join(map(str, ids))}; got {primary!r}")
    return primary


class PhysicalBackend:
    """``physical``: this process is node ``node``'s primary (:func:`open_primary`);
    every other node of ``[[nodes]]`` runs ``blizzard mirror serve``.

    Options (``[replication]``): ``acks`` (``"all"``, the default, or how many
    backups acknowledge each fence), ``fence`` (``"sync"`` or
    ``"pipelined"``), ``ready_timeout_s`` (how long opening waits for the
    backups, 30).
    """

    def __init__(self, config: ClusterConfig, node: int | None) -> None:
        acks, fence, ready = options(config)
        config.require_nodes("the physical backend")
        if node is None:
            ids = ", ".join(str(n.id) for n in config.nodes)
            raise ConfigError(
                f"node: the physical backend opens this node's pool as the primary: pass "
                f"node=<id> (one of {ids}); the other nodes run `blizzard mirror serve`")
        config.node(node)
        transport = mirror_transport(config, node)
        try:
            self.replicator = open_primary(config, node, acks=acks, fence=fence,
                                           ready_timeout_s=ready, transport=transport)
        except BaseException:
            close_transport(transport)
            raise
        self._mirror_transport = transport
        self.pool = self.replicator.pool
        self.transport = config.transport.kind

    def status(self) -> dict[str, Any]:
        rep = self.replicator
        mirror = rep.mirror
        s = mirror.stats
        applied = rep._sm.last_applied
        counters: dict[str, Any] = {
            "submitted": rep.submitted, "unacknowledged": rep.unacknowledged, "ops": rep.submitted,
            "seq": mirror.seq, "failures": s.failures, "bytes_sent": s.bytes_sent,
            "messages_sent": s.messages_sent, "round_trips": s.round_trips,
            "flushes": s.flushes, "fences": s.fences, "fences_shipped": s.fences_shipped,
            "backup_flushes": s.ranges_shipped, "backup_fences": s.fences_shipped,
            "range_bytes_shipped": s.range_bytes_shipped, "resyncs": s.resyncs,
            "resync_bytes": s.resync_bytes, "acks_needed": mirror.need,
            "backups_in_sync": sum(1 for b in mirror.backups().values()
                                   if b["state"] == "in-sync")}
        counters.update(per_op(counters, rep.submitted))
        return {"role": "primary", "term": mirror.epoch, "epoch": epoch_text(mirror.epoch),
                "leader": rep.node_id, "commit": applied, "applied": applied,
                "counters": counters, "backups": mirror.backups()}

    def close(self) -> None:
        try:
            close_primary(self.replicator)
        finally:
            close_transport(self._mirror_transport)


BACKENDS.register("physical", PhysicalBackend)


# -- the mirror's transport ---------------------------------------------------------------------

MIRROR_TRANSPORTS = ("tcp", "dpdk")


def mirror_transport(config: ClusterConfig, node_id: int) -> MirrorTransport:
    """The transport node ``node_id`` mirrors over, from ``[transport] kind``:
    ``tcp``, or ``dpdk`` (memif links between the nodes' processes, started
    here: close it with :func:`close_transport`). One per process and node,
    shared by the node's backup server and primary in turn."""
    kind = config.transport.kind
    if kind == "tcp":
        return TcpMirrorTransport()
    if kind != "dpdk":
        raise ConfigError(f"transport.kind: the physical backend mirrors over "
                          f"{' or '.join(MIRROR_TRANSPORTS)}, got {kind!r}")
    try:
        from blizzard.replication.physical.dpdk import DpdkMirrorTransport
        from blizzard.replication.transport.dpdk.options import parse
    except (ImportError, OSError) as exc:
        raise ConfigError(f"transport.kind: the transport 'dpdk' is not available here: "
                          f"{exc}") from exc
    options = parse(dict(config.transport.options), node_id, base_dir=config.base_dir)
    if options.af_packet:
        raise ConfigError("transport.nodes: the mirror runs over memif links only "
                          "(af_packet drops frames under load)")
    try:
        return DpdkMirrorTransport(node_id, mirror_peers(config, node_id),
                                   run_dir=config.data_dir, cluster_id=config.cluster_id,
                                   options=options)
    except DpdkUnavailableError as exc:
        raise ConfigError(f"transport.kind: the transport 'dpdk' is not available here: "
                          f"{exc}") from exc


def close_transport(transport: MirrorTransport) -> None:
    """Stop a transport of :func:`mirror_transport` (TCP's holds nothing)."""
    close = getattr(transport, "close", None)
    if close is not None:
        close()


# -- the primary --------------------------------------------------------------------------------


def open_primary(config: ClusterConfig | str | os.PathLike[str], node_id: int, *,
                 acks: int | None = None, fence: str = "sync",
                 ready_timeout_s: float = READY_TIMEOUT_S,
                 sessions: bool = False,
                 transport: MirrorTransport | None = None) -> PhysicalReplicator:
    """Open node ``node_id``'s pool as the primary; see the module docstring.

    Waits until enough backups are in sync (resynchronised if needed) for the
    rule; raises :class:`MirrorUnavailableError` if they are not within
    ``ready_timeout_s``, :class:`DeposedError` if a backup holds a newer epoch,
    :class:`PromoteError` if this node is a backup.

    With ``sessions``, Ops are applied through the session table
    (:class:`~blizzard.replication.sessions.SessionStateMachine`: submit
    enveloped Ops, ``sessions.wrap``), as the client server does: a retried
    write is applied once, on this primary or on one promoted after it.
    ``transport``: what the mirror runs over (TCP by default;
    :func:`mirror_transport` gives the config's); the caller keeps it.
    """
    config = _load(config)
    directory = config.node_dir(node_id)
    directory.mkdir(parents=True, exist_ok=True)
    state = MirrorState(directory, mode=config.durability)
    mirror = None
    try:
        if state.epoch == 0:
            state.raise_epoch(first_epoch(node_id))
            state.set_primary(True)
            log.info("node %d: first primary of the cluster, epoch %s", node_id,
                     epoch_text(state.epoch))
        elif not state.primary:
            raise PromoteError(f"node {node_id} is a backup (epoch {epoch_text(state.epoch)}); "
                               f"promote it first: blizzard mirror promote --node {node_id}")
        epoch = state.epoch
        seq = ((state.position[1] >> SEQ_RUN_BITS) + 1) << SEQ_RUN_BITS
        if state.position[0] != epoch:
            state.set_in_sync(False)
        state.set_position(epoch, seq)
        path = directory / POOL_FILE
        fresh = not path.exists() or _unformatted(path)
        if fresh:
            path.unlink(missing_ok=True)
        inner = FileMedia(path, mode=config.durability,
                          create_size=config.pool_size if fresh else None)
        mirror = MirroredMedia(inner, mirror_peers(config, node_id), node=node_id, epoch=epoch,
                               seq=seq, cluster_id=config.cluster_id, acks=acks,
                               fence=fence, transport=transport).start()
        if not mirror.wait_ready(ready_timeout_s):
            if mirror.deposed is not None:
                raise DeposedError(f"node {node_id} was deposed: a backup holds epoch "
                                   f"{epoch_text(mirror.deposed)}, newer than "
                                   f"{epoch_text(epoch)}")
            states = ", ".join(f"node {n}: {b['state']} {b['error']}".rstrip()
                               for n, b in mirror.backups().items())
            raise MirrorUnavailableError(f"node {node_id}: fewer than {mirror.need} backup(s) "
                                         f"in sync after {ready_timeout_s} s ({states})")
        pool = (Pool.create(mirror, layout=LAYOUT) if fresh else Pool.open(mirror, layout=LAYOUT))
    except BaseException:
        if mirror is not None:
            mirror.close()
        state.close()
        raise
    machine = registry_for(pool)
    if sessions:
        try:
            machine = SessionStateMachine(machine, pool)
        except BaseException:
            pool.close()
            state.close()
            raise
    replicator = PhysicalReplicator(machine, mirror)
    replicator.pool = pool
    replicator.node_id = node_id
    replicator.mirror_state = state
    return replicator


def close_primary(replicator: PhysicalReplicator) -> None:
    """Close the pool, the mirror and the state file of :func:`open_primary`."""
    replicator.stop()
    with contextlib.suppress(Exception):
        replicator.pool.close()
    replicator.mirror_state.close()


def _unformatted(path: Path) -> bool:
    """A pool file whose magic was never persisted (a crash while formatting)."""
    with open(path, "rb") as f:
        return f.read(len(L.MAGIC)) != L.MAGIC


# -- backups ------------------------------------------------------------------------------------


def serve_backup(config: ClusterConfig | str | os.PathLike[str], node_id: int, *,
                 stop: threading.Event | None = None, acks: int | None = None) -> int:
    """``blizzard mirror serve``: be node ``node_id``'s backup until stopped or promoted.

    Returns 0 (stopped, or promoted: then the node is to be opened as primary).
    ``acks`` is the rule the primaries of this cluster use; promotion needs it
    to know how many nodes it must fence.
    """
    config = _load(config)
    if acks is None:
        acks = options(config)[0]
    stop = stop or threading.Event()
    node = config.node(node_id)
    # the mirror protocol has no TLS: a backup off loopback needs insecure = true
    exposure.check(config, node_id, ("raft",), tls=False,
                   what="as a mirror (physical replication has no TLS)")
    server: BackupServer | None = None

    def on_promote() -> frames.State:
        return server.describe(text=json.dumps(promote_here(config, server, acks=acks)))

    transport = mirror_transport(config, node_id)
    try:
        server = BackupServer(config.node_dir(node_id), node.raft, node=node_id,
                              cluster_id=config.cluster_id, mode=config.durability,
                              on_promote=on_promote, **backup_transports(transport))
    except BaseException:
        close_transport(transport)
        raise
    log.info("node %d: backup up (pid %d, mirror %s:%d, epoch %s, position %s/%d%s)", node_id,
             os.getpid(), *server.address, epoch_text(server.state.epoch),
             epoch_text(server.state.position[0]), server.state.position[1],
             "" if server.state.in_sync else ", out of sync")
    try:
        while not stop.wait(0.05) and not server.promoted.is_set():
            pass
    finally:
        server.close()
        close_transport(transport)
    log.info("node %d: %s", node_id, "promoted: open it as primary" if server.promoted.is_set()
             else "backup stopped")
    return 0


def backup_transports(transport: MirrorTransport) -> dict[str, MirrorTransport]:
    """A :class:`BackupServer`'s ``transport`` and, when that is not TCP, TCP as
    its ``control`` (requests from processes that are no node)."""
    if isinstance(transport, TcpMirrorTransport):
        return {"transport": transport}
    return {"transport": transport, "control": TcpMirrorTransport()}


def promote_here(config: ClusterConfig, server: BackupServer, *,
                 acks: int | None = None) -> dict[str, Any]:
    """Promote the backup ``server`` (see the module docstring); returns a summary."""
    state = server.state
    node_id = server.node
    if state.primary:
        raise PromoteError(f"node {node_id} is already primary")
    if not state.in_sync:
        raise PromoteError(f"node {node_id}'s pool is mid-resynchronisation, not a crash image "
                           "of any primary: promote another node")
    others = mirror_peers(config, node_id)
    needed = len(others) - acks_needed(config, acks) + 1  # nodes, this one included
    epoch = next_epoch(state.epoch, node_id)
    server.fence_epoch(epoch)
    answers = {}
    for peer, address in others.items():
        try:
            answer = _request(address, frames.fence_epoch(epoch))
        except (OSError, ChannelClosedError, MirrorProtocolError) as exc:
            log.info("node %d: promotion: node %d unreachable (%s)", node_id, peer, exc)
            continue
        if answer.status == frames.Status.OK and not answer.primary:
            answers[peer] = answer
    if 1 + len(answers) < needed:
        raise PromoteError(
            f"node {node_id}: only {1 + len(answers)} node(s) fenced with epoch "
            f"{epoch_text(epoch)}, {needed} needed: the old primary may still be acknowledging "
            "writes through the others")
    mine = state.position
    for peer, answer in answers.items():
        if answer.in_sync and answer.position > mine:
            raise PromoteError(
                f"node {peer} holds later fences ({epoch_text(answer.position[0])}/"
                f"{answer.position[1]} > {epoch_text(mine[0])}/{mine[1]}): promote node {peer}")
    media = server.release_pool()
    pool = Pool.open(media, layout=LAYOUT)  # recovery rolls back the transaction in flight
    try:
        recovered = pool.recovered_entries
        pool.check()
    finally:
        pool.close()
    state.set_primary(True)
    log.info("node %d: promoted, epoch %s (fenced nodes %s; %d undo entries rolled back)",
             node_id, epoch_text(epoch), sorted(answers), recovered)
    return {"node": node_id, "epoch": epoch_text(epoch), "fenced": sorted(answers),
            "recovered_entries": recovered, "position": f"{epoch_text(mine[0])}/{mine[1]}"}


def _request(address: tuple[str, int], message: bytes) -> frames.State:
    channel = TcpMirrorTransport().connect(address, REQUEST_TIMEOUT_S)
    try:
        channel.send(message)
        reply = channel.receive(REQUEST_TIMEOUT_S * 6)
        if reply is None:
            raise MirrorProtocolError(f"no answer from {address[0]}:{address[1]}")
        return frames.parse_state(reply)
    finally:
        channel.close()


def request_promote(config: ClusterConfig | str | os.PathLike[str], node_id: int
                    ) -> dict[str, Any]:
    """``blizzard mirror promote``: ask node ``node_id``'s running backup to promote itself."""
    config = _load(config)
    try:
        answer = _request(config.node(node_id).raft, frames.promote())
    except MirrorProtocolError as exc:
        raise PromoteError(str(exc)) from None
    except OSError as exc:
        raise PromoteError(f"node {node_id}: no backup answering at "
                           f"{config.node(node_id).raft[0]}:{config.node(node_id).raft[1]} "
                           f"({exc}); is `blizzard mirror serve` running?") from None
    return json.loads(answer.text)


def node_status(config: ClusterConfig | str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """``blizzard mirror status``: each backup's epoch, position and counters."""
    config = _load(config)
    out: dict[int, dict[str, Any]] = {}
    for node in config.nodes:
        try:
            s = _request(node.raft, frames.status_request())
        except (OSError, ChannelClosedError, MirrorProtocolError) as exc:
            out[node.id] = {"reachable": False, "error": str(exc)}
            continue
        out[node.id] = {"reachable": True, "epoch": epoch_text(s.epoch),
                        "position": f"{epoch_text(s.position[0])}/{s.position[1]}",
                        "in_sync": s.in_sync, "pool_size": s.pool_size,
                        **json.loads(s.text or "{}")}
    return out
