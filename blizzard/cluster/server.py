"""``blizzard serve``: one cluster node plus the client-protocol server.

The client server runs on the node's own asyncio loop (the
:class:`RaftReplicator`'s thread), so a READ touches the pool on the same
thread that applies committed entries: no locks, no torn reads. Every request
is its own task, so a connection may pipeline many requests; the responses go
back as they complete, paired by request id.

* SUBMIT proposes the client's own envelope ``wrap(client, seq, op)``
  through the node (a follower forwards it to the leader) and retries the
  same envelope until the request deadline; the session table applies it
  once however many times it reaches the log. A request that cannot commit
  in time is answered NOT_READY, and the client tries elsewhere.
* READ waits for a read barrier (ReadIndex), then reads the local pool;
  with the STALE flag it reads at once.
* A malformed request gets an ERROR response; a frame over the size limit,
  or a connection closed mid-frame, closes that connection. Either way one
  warning line says what and from whom, and the server keeps serving.
* With ``[tls]`` the port speaks TLS only and takes only clients with a
  certificate of the cluster's CA (a failed handshake is one warning line);
  every request is checked against the connection's role
  (:mod:`blizzard.cluster.access`), and a refused one is answered ERROR
  (``AuthenticationError`` / ``AuthorizationError``) with one warning line.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from blizzard._signals import stop_on_signals
from blizzard.cluster import config as configmod
from blizzard.cluster import exposure
from blizzard.cluster import protocol as proto
from blizzard.cluster.access import AccessPolicy, Principal
from blizzard.cluster.config import AuthConfig, ClusterConfig, NodeConfig
from blizzard.cluster.protocol import Kind, ReadKind, Request, Response, Status
from blizzard.cluster.replicator import RaftReplicator
from blizzard.exceptions import (
    AccessDeniedError,
    AuthenticationError,
    BlizzardError,
    Empty,
    NodeFailedError,
    NodeNotReadyError,
    NoSuchStructureError,
    NotLeaderError,
    NotTlsError,
    ProposalDroppedError,
    StructureKindError,
)
from blizzard.replication.base import Replicator
from blizzard.replication.sessions import wrap
from blizzard.replication.transport import tls as tlsmod
from blizzard.replication.transport.tlsstream import ServerTlsStream
from blizzard.structures import KIND_OF_TAG, KINDS, PBPlusTree, PHashMap, ops
from blizzard.structures.registry import registry_for

log = logging.getLogger("blizzard.server")

REQUEST_TIMEOUT_S = 5.0
MEMBERSHIP_TIMEOUT_S = 120.0  # adding a node waits for it to catch up
RETRY_BACKOFF_S = 0.02
IN_FLIGHT_MAX = 1024  # requests per connection being served at once
PAGE_ITEMS_MAX = 10_000
PAGE_BYTES_MAX = 4 << 20
HANDSHAKE_TIMEOUT_S = 10.0


def _address_or_none(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = str(value).rpartition(":")
    return host.strip("[]"), int(port)


class ClientServer:
    """The client-protocol listener of one node; lives on the node's loop."""

    def __init__(self, replicator: RaftReplicator, address: tuple[str, int], *,
                 tls: ssl.SSLContext | None = None, policy: AccessPolicy | None = None,
                 frame_bytes_max: int = proto.FRAME_BYTES_MAX,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.replicator = replicator
        self.tls = tls
        self.policy = policy or AccessPolicy(AuthConfig(), tls=tls is not None)
        self.address = address
        self.frame_bytes_max = frame_bytes_max
        self.request_timeout_s = request_timeout_s
        self.node_id = replicator.node_id
        self.registry = registry_for(replicator.pool)
        self._faces: dict[str, tuple[Any, Any]] = {}  # name -> (core, raw read face)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._stopping = False
        self.requests = 0
        self.refused = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.address
        self._server = await asyncio.start_server(self._connection, host, port)
        self.address = self._server.sockets[0].getsockname()[:2]
        how = ("TLS, client certificates required" if self.tls is not None
               else "tokens required" if not self.policy.open else "no authentication")
        log.info("node %d: serving clients on %s:%d (%s)", self.node_id, *self.address, how)

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- connections ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._connections.add(writer)
        slots = asyncio.Semaphore(IN_FLIGHT_MAX)
        tasks: set[asyncio.Task] = set()
        limit = self.frame_bytes_max
        try:
            if self.tls is not None:
                stream = ServerTlsStream(reader, writer, self.tls)
                try:
                    await stream.handshake(HANDSHAKE_TIMEOUT_S)
                except NotTlsError:
                    self.refused += 1
                    log.warning("node %d: refused client %s: it does not speak TLS",
                                self.node_id, where)
                    self._send(writer, Response(0, Status.ERROR, proto.encode_error(
                        AuthenticationError("this node takes TLS clients only, with a "
                                            "certificate of the cluster's CA: give the client "
                                            "[tls] ca, cert and key (or ca=, cert=, key=)"))))
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    return
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    self.refused += 1
                    log.warning("node %d: refused client %s: TLS handshake failed: %s",
                                self.node_id, where, tlsmod.handshake_reason(exc))
                    return
                self._connections.discard(writer)
                reader = writer = stream  # the same calls, through TLS
                self._connections.add(writer)
            principal = self.policy.connected(writer.get_extra_info("peercert"))
            if principal is not None and not self.policy.open:
                where = f"{principal} at {where}"
            while True:
                try:
                    head = await reader.readexactly(4)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        log.warning("node %d: client %s closed the connection inside a frame's "
                                    "length prefix", self.node_id, where)
                    break
                (size,) = proto.FRAME.unpack(head)
                if size > limit:
                    self.refused += 1
                    log.warning("node %d: closing the connection from %s: frame of %d bytes "
                                "exceeds the limit of %d", self.node_id, where, size, limit)
                    self._send(writer, Response(0, Status.ERROR, proto.encode_error(
                        proto.ProtocolError(f"frame of {size} bytes exceeds the limit of "
                                            f"{limit}; closing the connection"))))
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    break
                try:
                    body = await reader.readexactly(size)
                except asyncio.IncompleteReadError as exc:
                    log.warning("node %d: client %s closed the connection mid-frame (%d of %d "
                                "bytes)", self.node_id, where, len(exc.partial), size)
                    break
                try:
                    request = proto.decode_request(body)
                except proto.ProtocolError as exc:
                    self.refused += 1
                    log.warning("node %d: malformed request from %s: %s", self.node_id, where, exc)
                    self._send(writer, Response(proto.peek_request_id(body) or 0, Status.ERROR,
                                                proto.encode_error(exc)))
                    continue
                if request.kind == Kind.AUTH:
                    principal, where = self._authenticate(request, writer, principal, where)
                    continue
                try:
                    self.policy.check(principal, request.kind)
                except AccessDeniedError as exc:
                    self.refused += 1
                    log.warning("node %d: refused %s: %s", self.node_id, where, exc)
                    self._send(writer, Response(request.request_id, Status.ERROR,
                                                proto.encode_error(exc), self._leader()))
                    continue
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(self._serve(request, writer))
                tasks.add(task)
                task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
                if writer.transport.get_write_buffer_size() > limit:
                    await writer.drain()  # a client that does not read its responses waits
        except (ConnectionError, OSError) as exc:
            log.info("node %d: connection from %s lost: %s", self.node_id, where, exc)
        finally:
            for task in tasks:
                task.cancel()
            self._connections.discard(writer)
            writer.close()

    def _authenticate(self, request: Request, writer: asyncio.StreamWriter,
                      principal: Principal | None, where: str) -> tuple[Principal | None, str]:
        """An AUTH request: the connection's principal from now on, if the token is known."""
        address = where.rpartition(" at ")[2]
        try:
            principal = self.policy.token(request.payload)
        except AccessDeniedError as exc:
            self.refused += 1
            log.warning("node %d: refused %s: %s", self.node_id, where, exc)
            self._send(writer, Response(request.request_id, Status.ERROR,
                                        proto.encode_error(exc), self._leader()))
            return principal, where
        self._send(writer, Response(request.request_id, Status.OK, proto.encode_json(
            {"name": principal.name, "role": principal.role}), self._leader()))
        return principal, f"{principal} at {address}"

    def _send(self, writer: asyncio.StreamWriter, response: Response) -> None:
        if not writer.is_closing():
            writer.write(proto.encode_response(response))

    async def _serve(self, request: Request, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            if self._stopping:
                raise NodeNotReadyError("the node is shutting down")
            payload = await self._handle(request)
            response = Response(request.request_id, Status.OK, payload, self._leader())
        except NodeNotReadyError as exc:
            response = Response(request.request_id, Status.NOT_READY,
                                proto.encode_not_ready(self._leader(), str(exc)), self._leader())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client's problem, not the server's: answer and go on
            if not isinstance(exc, BlizzardError | LookupError | ValueError | TypeError):
                log.exception("node %d: request %d failed", self.node_id, request.request_id)
            response = Response(request.request_id, Status.ERROR, proto.encode_error(exc),
                                self._leader())
        self._send(writer, response)

    def _leader(self) -> int:
        node = self.replicator.node
        return node.raft.lead if node is not None else 0

    # -- requests ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> bytes:
        if request.kind == Kind.SUBMIT:
            if not request.client or not request.seq:
                raise proto.ProtocolError("SUBMIT needs a client id and a seq (both non-zero)")
            ops.decode_head(request.payload)  # refuse garbage before it reaches the log
            envelope = wrap(request.client, request.seq, request.payload)
            return proto.encode_value(await self._submit(envelope))
        if request.kind == Kind.READ:
            read = proto.decode_read(request.payload)
            if not request.flags & proto.STALE:
                await self._barrier()
            return self._read(read)
        if request.kind == Kind.MEMBERS:
            return proto.encode_json(await self._members(request.payload))
        return proto.encode_json(self.status())

    async def _members(self, payload: bytes) -> dict[str, Any]:
        try:
            args = proto.decode_json(payload)
            operation, node = args["op"], args.get("node", 0)
            raft = _address_or_none(args.get("raft"))
            client = _address_or_none(args.get("client"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise proto.ProtocolError(f"bad MEMBERS request: {exc!r}") from None
        membership = self.replicator.membership
        if operation == "list":
            return membership.members()
        if not isinstance(node, int) or node < 1:
            raise proto.ProtocolError(f"MEMBERS {operation}: node must be an id >= 1")
        try:
            return await membership.run(operation, node, raft=raft, client=client,
                                        timeout_s=MEMBERSHIP_TIMEOUT_S)
        except NotLeaderError as exc:
            raise NodeNotReadyError(str(exc)) from None

    async def _submit(self, envelope: bytes) -> Any:
        loop = asyncio.get_running_loop()
        node = self.replicator.node
        deadline = loop.time() + self.request_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                raise NodeNotReadyError(f"not committed within {self.request_timeout_s} s "
                                        f"(leader: {self._leader() or 'unknown'})")
            try:
                future = node.propose(envelope)
            except ProposalDroppedError:
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            try:
                return await asyncio.wait_for(
                    asyncio.shield(future), min(self.replicator.attempt_timeout_s, remaining))
            except TimeoutError:
                continue
            except ProposalDroppedError:
                await asyncio.sleep(RETRY_BACKOFF_S)

    async def _barrier(self) -> None:
        loop = asyncio.get_running_loop()
        node = self.replicator.node
        deadline = loop.time() + self.request_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                raise NodeNotReadyError(f"read barrier not confirmed within "
                                        f"{self.request_timeout_s} s "
                                        f"(leader: {self._leader() or 'unknown'})")
            try:
                await asyncio.wait_for(node.read_barrier(),
                                       min(self.replicator.attempt_timeout_s, remaining))
                return
            except TimeoutError:
                continue
            except ProposalDroppedError:
                await asyncio.sleep(RETRY_BACKOFF_S)

    def _face(self, name: str, *kinds: str) -> Any:
        """A raw read-only face of structure ``name``, which must be of one of ``kinds``.

        Faces are cached per structure, and made anew when the name is bound to
        another core (dropped and created again)."""
        tag = self.registry.kind(name)
        if tag is None:
            self._faces.pop(name, None)
            raise NoSuchStructureError(f"no structure named {name!r} on node {self.node_id}")
        kind = KIND_OF_TAG.get(tag, tag.decode())
        if kind not in kinds:
            raise StructureKindError(f"{name!r} is a {kind}, not a {' or '.join(kinds)}")
        core = self.registry.core(name)
        cached = self._faces.get(name)
        if cached is None or cached[0] is not core:
            face = KINDS[kind](self.registry.pool, name, replicator=_READS_ONLY,
                               linearizable=False, raw=True)
            cached = self._faces[name] = (core, face)
        return cached[1]

    def _read(self, read: proto.ReadArgs) -> bytes:
        """Serve one READ from the local pool (on the loop thread, between applies),
        through the structures' own faces, in raw (bytes) mode."""
        kind, name, args = read
        if kind == ReadKind.CHECK:
            self.registry.check()
            return proto.encode_value(True)
        if kind == ReadKind.NAMES:
            return proto.encode_json({n: self.registry.kind(n).decode()
                                      for n in self.registry.names()})
        if kind == ReadKind.INFO:
            face = self._face(name, *KINDS)
            core = self.registry.core(name)
            info = {"kind": face.tag.decode(), "key_codec": core.key_codec,
                    "value_codec": core.value_codec, "count": len(face)}
            if isinstance(face, PBPlusTree):
                info["fanout"] = face.fanout
            return proto.encode_json(info)
        if kind == ReadKind.LEN:
            return proto.encode_value(len(self._face(name, *KINDS)))
        if kind == ReadKind.PEEK:
            try:
                return proto.encode_value(self._face(name, "queue").peek())
            except Empty:
                return proto.encode_value(None)
        if kind == ReadKind.QUEUE_SCAN:
            start, limit = proto.decode_page_args(args)
            seq, values = self._face(name, "queue").page(None if start == proto.END else start,
                                                         _limit(limit))
            values = _within_bytes(values)
            return proto.encode_page(seq, values)
        if kind == ReadKind.GET:
            return proto.encode_value(self._face(name, *_MAPS).get(args))
        if kind == ReadKind.SCAN:
            return self._scan(name, proto.decode_scan_args(args))
        face = self._face(name, *_ORDERED)
        if kind == ReadKind.PEEKITEM:
            return proto.encode_page(0, list(face.peekitem(proto.decode_index_args(args))))
        if kind == ReadKind.BISECT:
            if not args:
                raise proto.ProtocolError("BISECT takes a side u8 and a key")
            bisect = face.bisect_right if args[0] else face.bisect_left
            return proto.encode_value(bisect(args[1:]))
        return proto.encode_value(face.index(args))

    def _scan(self, name: str, scan: proto.ScanArgs) -> bytes:
        """A page of a map's keys (or items) after ``scan.after``; its cursor is
        END when nothing follows, 0 when more may."""
        face = self._face(name, *_MAPS)
        limit = _limit(scan.limit)
        if isinstance(face, PHashMap):
            if scan.lo is not None or scan.hi is not None or scan.reverse:
                raise ValueError(f"{name!r} is a hash map: a scan of it takes no bounds "
                                 "and no direction")
            after = () if scan.after is None else (scan.after,)
            page = face.page(*after, limit=limit, values=scan.values)
            rows = page if scan.values else [(key, b"") for key in page]
        else:
            lo, hi = scan.lo, scan.hi
            inclusive = [scan.lo_inclusive, scan.hi_inclusive]
            if scan.after is not None:  # resume past the last key returned
                if scan.reverse:
                    hi, inclusive[1] = scan.after, False
                else:
                    lo, inclusive[0] = scan.after, False
            if scan.values:
                rows = face.irange_items(lo, hi, tuple(inclusive), scan.reverse)
            else:
                rows = ((key, b"") for key in face.irange(lo, hi, tuple(inclusive),
                                                          scan.reverse))
        fields: list[bytes] = []
        size = 0
        more = False
        for key, value in rows:
            fields.append(key)
            size += len(key)
            if scan.values:
                fields.append(value)
                size += len(value)
            if len(fields) >= limit * (1 + scan.values) or size >= PAGE_BYTES_MAX:
                more = True  # perhaps: the next page may be empty
                break
        return proto.encode_page(0 if more else proto.END, fields)

    def status(self) -> dict[str, Any]:
        status = self.replicator.node.status()
        status.update(pid=os.getpid(), client=f"{self.address[0]}:{self.address[1]}",
                      requests=self.requests, refused=self.refused,
                      connections=len(self._connections),
                      heap_frozen=gc.get_freeze_count(),  # see blizzard._heap
                      gc_threshold=gc.get_threshold())
        return status


def _limit(limit: int) -> int:
    return max(1, min(limit, PAGE_ITEMS_MAX))


def _within_bytes(values: list[bytes]) -> list[bytes]:
    """The first values of a page up to PAGE_BYTES_MAX (at least one)."""
    size = 0
    for i, value in enumerate(values):
        if i and size >= PAGE_BYTES_MAX:
            return values[:i]
        size += len(value)
    return values


class _ReadsOnly(Replicator):
    """The replicator of the server's read faces: they never write (writes arrive
    as SUBMITs and go through the node), and they never create a structure."""

    def submit(self, op: bytes) -> Any:
        raise TypeError("the server's read faces do not write")

    def stats(self) -> dict[str, Any]:
        return {}


_READS_ONLY = _ReadsOnly()
_MAPS = ("hashmap", "bptree", "skiplist")
_ORDERED = ("bptree", "skiplist")


# -- the process --------------------------------------------------------------------------


def setup_logging(node_id: int, level: int = logging.INFO) -> Callable[[], None]:
    """One stderr line per event, tagged with the node id; returns a function
    that puts back the root logger's handlers and level (see :func:`node_logging`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s node {node_id} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    handlers, previous_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(level)

    def restore() -> None:
        root.handlers[:] = handlers
        root.setLevel(previous_level)
        handler.close()

    return restore


@contextlib.contextmanager
def node_logging(node_id: int, level: int = logging.INFO) -> Iterator[None]:
    """:func:`setup_logging` for the duration of a command. The handler holds
    the ``sys.stderr`` of the moment: a command run inside another program (a
    test, whose captured stderr is closed after it) must not leave it on the
    root logger for every later thread to write into."""
    restore = setup_logging(node_id, level)
    try:
        yield
    finally:
        restore()


def serve(config: ClusterConfig | str | os.PathLike[str], node_id: int, *,
          stop: threading.Event | None = None) -> int:
    """Run node ``node_id`` and its client server until SIGTERM/SIGINT (or ``stop``).

    A physical cluster's node (``[replication] backend = "physical"``) runs
    as primary or backup instead (:mod:`blizzard.cluster.physical_server`)."""
    if not isinstance(config, ClusterConfig):
        config = configmod.load(config)
    if config.replication.backend == "physical":
        from blizzard.cluster.physical_server import serve_physical

        return serve_physical(config, node_id, stop=stop)
    if config.replication.backend != "raft":
        raise configmod.ConfigError(
            f"replication.backend: blizzard serve runs raft and physical nodes; this config's "
            f"backend is {config.replication.backend!r}")
    config.require_nodes("blizzard serve")
    node = config.node(node_id)
    if node.client is None:
        raise configmod.ConfigError(f"nodes[id={node_id}].client: missing (blizzard serve needs "
                                    "the client address)")
    exposure.check(config, node_id, ("raft", "client"))
    tls_files = configmod.node_tls(config, node_id)
    tls = None
    if tls_files is not None:
        tls = tlsmod.server_context(ca_file=str(tls_files.ca), cert_file=str(tls_files.cert),
                                    key_file=str(tls_files.key))
    policy = AccessPolicy(config.auth, tls=tls is not None)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
        faulthandler.enable(all_threads=True)  # a crash leaves its threads' stacks in the log
    with stop_on_signals(stop):
        return _serve_until(config, node_id, node, tls, policy, stop)


def _serve_until(config: ClusterConfig, node_id: int, node: NodeConfig, tls: ssl.SSLContext | None,
                 policy: AccessPolicy, stop: threading.Event) -> int:
    """:func:`serve`'s node, from start to a clean stop."""
    replicator = RaftReplicator(config, node_id)
    server = ClientServer(replicator, node.client, tls=tls, policy=policy)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), replicator._loop).result()
    except BaseException:
        replicator.stop()
        raise
    record = record_serving(config, node_id)
    log.info("node %d: up (pid %d, raft %s:%d, data %s)", node_id, os.getpid(), *node.raft,
             config.node_dir(node_id))
    failure: BaseException | None = None
    while not stop.wait(0.5):
        # A node whose Raft loop died (say, the pool filled up while applying) must
        # not keep answering as if it were a member: exit, so clients go elsewhere.
        raft_loop = replicator.node._task
        if raft_loop is not None and raft_loop.done():
            failure = (raft_loop.exception() if not raft_loop.cancelled() else None) \
                or RuntimeError("cancelled")
            log.error("node %d: the Raft loop stopped (%s); exiting", node_id, failure)
            break
    log.info("node %d: shutting down", node_id)
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(server.stop(), replicator._loop).result(5)
    with contextlib.suppress(Exception):
        replicator.stop()
    forget_serving(record)
    log.info("node %d: stopped", node_id)
    if failure is not None:
        raise NodeFailedError(f"node {node_id}: the Raft loop stopped: "
                              f"{type(failure).__name__}: {failure}") from failure
    return 0


# -- local clusters of `blizzard serve` processes (``blizzard cluster up/down``) ------------
#
# Every `blizzard serve` records itself in its node directory (``serve.pid``:
# pid, node and the process's start time, so a recycled pid is never taken
# for it) once it serves, and removes the record when it exits cleanly.
# `blizzard cluster down` stops every node that has a live record, however
# it was started: by `cluster up`, by hand, by a supervisor, or after a
# membership change added it.

PIDS_FILE = "pids.json"
SERVING_FILE = "serve.pid"


def _pids_path(config: ClusterConfig) -> Path:
    return config.data_dir / PIDS_FILE


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def serving(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) ``blizzard serve`` process (started at
    ``started`` clock ticks after boot, when given)."""
    fields = _proc_stat(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if fields is None or fields[0] == "Z" or b"serve" not in cmdline:
        return False
    return started is None or int(fields[19]) == started


def record_serving(config: ClusterConfig, node_id: int) -> Path:
    """Record this process as the server of ``node_id`` (see above); returns the record."""
    path = config.node_dir(node_id) / SERVING_FILE
    pid = os.getpid()
    fields = _proc_stat(pid)
    record = {"pid": pid, "node": node_id, "started": int(fields[19]) if fields else None}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)
    return path


def forget_serving(path: Path) -> None:
    """Remove this process's record, if it is still this process's."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def serving_nodes(config: ClusterConfig) -> dict[int, int]:
    """Node id -> pid of every node of the cluster that is serving now: the live
    records in the node directories, and the pids `cluster up` wrote."""
    found: dict[int, int] = {}
    for path in sorted(config.data_dir.glob(f"node*/{SERVING_FILE}")):
        try:
            record = json.loads(path.read_text())
            pid, node, started = int(record["pid"]), int(record["node"]), record.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if serving(pid, started):
            found[node] = pid
    record = _pids_path(config)
    if record.exists():
        with contextlib.suppress(OSError, ValueError):
            for node, pid in json.loads(record.read_text()).items():
                if int(node) not in found and serving(pid):
                    found[int(node)] = pid
    return found


def start_node(config: ClusterConfig, node_id: int) -> subprocess.Popen:
    """Start ``blizzard serve`` for one node, in its own session, logging to
    ``data_dir/node<id>.log``."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with open(f"{config.node_dir(node_id)}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "blizzard", "serve", "--config", str(config.source),
             "--node", str(node_id)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)


def start_cluster(path: str | os.PathLike[str], *, timeout_s: float = 30.0
                  ) -> tuple[dict[int, int], int]:
    """Start every node of the cluster at ``path``; ``(pids by node id, leader id)``
    once a leader is elected. The PIDs are recorded in ``data_dir/pids.json``."""
    from blizzard.cluster.client import ClusterUnavailableError, connect

    config = configmod.load(path)
    record = _pids_path(config)
    running = serving_nodes(config)
    if running:
        raise BlizzardError(f"the cluster already runs (node: pid {running}); "
                            "stop it with `blizzard cluster down` first")
    processes = {n.id: start_node(config, n.id) for n in config.nodes}
    pids = {i: p.pid for i, p in processes.items()}
    record.write_text(json.dumps(pids))
    deadline = time.monotonic() + timeout_s
    with connect(str(config.source), timeout_s=2.0) as client:
        while True:
            dead = [i for i, p in processes.items() if p.poll() is not None]
            if dead:
                for p in processes.values():
                    if p.poll() is None:
                        p.terminate()
                log_path = f"{config.node_dir(dead[0])}.log"
                raise BlizzardError(f"node {dead[0]} exited at start (code "
                                    f"{processes[dead[0]].returncode}): "
                                    f"{exit_cause(Path(log_path))} (see {log_path}); "
                                    "the other nodes were stopped")
            statuses = client.node_statuses()
            leaders = {s.get("leader") for s in statuses.values()}
            if len(statuses) == len(processes) and len(leaders) == 1 and \
                    all(s.get("leader") for s in statuses.values()):
                return pids, leaders.pop()
            if time.monotonic() > deadline:
                raise ClusterUnavailableError(
                    f"not every node is up and agreeing on a leader within {timeout_s} s; "
                    f"see the logs in {config.data_dir}")
            time.sleep(0.05)


#: What the ``blizzard`` command prints before the one line of a fatal error.
ERROR_PREFIX = "blizzard: error:"
_LOG_PREFIX = re.compile(r"^\S+ \S+ node \d+ ERROR \S+: ")


def exit_cause(log_path: Path) -> str:
    """Why a ``blizzard serve`` process ended, from its log: its last
    ``blizzard: error:`` line (what the command printed as it exited), else
    the first ERROR it logged (the first failure, not the noise of shutting
    down after it), else its last line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    for line in lines:
        if _LOG_PREFIX.match(line):
            return _LOG_PREFIX.sub("", line)
    return lines[-1] if lines else "(no output)"


class Stopped(NamedTuple):
    """What :func:`stop_cluster` did, by node id."""

    stopped: list[int]  # serving, now stopped (killed ones included)
    killed: list[int]  # still up after the grace period: SIGKILLed
    not_running: list[int]  # nodes of the config that were not serving already


def _ids(nodes: Sequence[int]) -> str:
    return f"node{'s' if len(nodes) > 1 else ''} {', '.join(map(str, nodes))}"


def stop_cluster(path: str | os.PathLike[str], *, grace_s: float = 10.0) -> Stopped:
    """SIGTERM every serving node of the cluster (:func:`serving_nodes`: however it
    was started), SIGKILL those still up after ``grace_s``; which were stopped,
    killed, or already down. BlizzardError if no node was serving."""
    config = configmod.load(path)
    record = _pids_path(config)
    running = serving_nodes(config)
    not_running = sorted(n.id for n in config.nodes if n.id not in running)
    if not running:
        record.unlink(missing_ok=True)
        raise BlizzardError(f"no node of the cluster in {config.data_dir} is serving "
                            f"({_ids(not_running)} already stopped)" if not_running else
                            f"no node of the cluster in {config.data_dir} is serving")
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(serving(pid) for pid in running.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = sorted(node for node, pid in running.items() if serving(pid))
    for node in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running[node], signal.SIGKILL)
    record.unlink(missing_ok=True)
    for path in config.data_dir.glob(f"node*/{SERVING_FILE}"):
        path.unlink(missing_ok=True)  # of processes gone now (a killed one left its record)
    return Stopped(sorted(running), killed, not_running)


# -- membership of a local cluster (``blizzard cluster add / remove / transfer-leader``) -----


def _rewrite_config(config: ClusterConfig, nodes: tuple) -> ClusterConfig:
    """Write ``config`` with ``nodes`` over its file (atomically: comments in the
    file are not kept); the new config."""
    changed = _with_nodes(config, nodes)
    temporary = config.source.with_suffix(".tmp")
    temporary.write_text(configmod.dump(changed))
    os.replace(temporary, config.source)
    return configmod.load(config.source)


def add_node(path: str | os.PathLike[str], *, node_id: int | None = None,
             raft: tuple[str, int] | None = None, client: tuple[str, int] | None = None,
             timeout_s: float = 120.0) -> tuple[int, dict[str, Any]]:
    """Grow the cluster at ``path`` by one node on this machine: write it into the
    file (``join = true``), start its ``blizzard serve``, and have the leader add
    it (a learner, then a voter once caught up). ``(node id, members)``."""
    from blizzard.cluster.client import connect
    from blizzard.cluster.config import NodeConfig
    from blizzard.cluster.ports import port_block

    config = configmod.load(path)
    config.require_nodes("cluster add")
    if node_id is None:
        node_id = max(n.id for n in config.nodes) + 1
    if any(n.id == node_id for n in config.nodes):
        raise BlizzardError(f"node {node_id} is already in {config.source}")
    if raft is None or client is None:
        base = port_block(2)
        raft = raft or ("127.0.0.1", base)
        client = client or ("127.0.0.1", base + 1)
    config = _rewrite_config(config, (*config.nodes, NodeConfig(node_id, raft, client, True)))
    process = start_node(config, node_id)
    record = config.node_dir(node_id) / SERVING_FILE
    deadline = time.monotonic() + timeout_s
    while not record.exists():
        if process.poll() is not None:
            log_path = f"{config.node_dir(node_id)}.log"
            tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-1:]
            raise BlizzardError(f"node {node_id} exited at start (code {process.returncode}): "
                                f"{tail[0] if tail else '(no output)'} (see {log_path})")
        if time.monotonic() > deadline:
            raise BlizzardError(f"node {node_id} did not start within {timeout_s} s")
        time.sleep(0.05)
    with connect(config, timeout_s=timeout_s, reply_timeout_s=timeout_s) as cluster:
        return node_id, cluster.add_node(node_id, raft, client)


def remove_node(path: str | os.PathLike[str], node_id: int, *, grace_s: float = 10.0,
                timeout_s: float = 60.0) -> dict[str, Any]:
    """Take node ``node_id`` out of the cluster at ``path`` (dead or alive): the
    leader removes it, its process (if it serves here) is stopped, and it leaves
    the file. Returns the members."""
    from blizzard.cluster.client import connect

    config = configmod.load(path)
    config.node(node_id)  # refuses an unknown id
    others = tuple(n for n in config.nodes if n.id != node_id)
    if not others:
        raise BlizzardError(f"node {node_id} is the cluster's only node")
    with connect(_with_nodes(config, others), timeout_s=timeout_s,
                 reply_timeout_s=timeout_s) as cluster:
        members = cluster.remove_node(node_id)
    pid = serving_nodes(config).get(node_id)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while serving(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if serving(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _rewrite_config(config, others)
    return members


def _with_nodes(config: ClusterConfig, nodes: tuple) -> ClusterConfig:
    """``config`` with other ``nodes`` (not written anywhere)."""
    return attrs.evolve(config, nodes=nodes)


def transfer_leader(path: str | os.PathLike[str], node_id: int, *,
                    timeout_s: float = 30.0) -> dict[str, Any]:
    """Make node ``node_id`` the leader of the cluster at ``path``; the members."""
    from blizzard.cluster.client import connect

    config = configmod.load(path)
    config.node(node_id)
    with connect(config, timeout_s=timeout_s) as cluster:
        return cluster.transfer_leader(node_id)
