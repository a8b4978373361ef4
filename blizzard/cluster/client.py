"""The remote client: structures of a running cluster, from any process.

::

    from blizzard.client import connect

    c = connect("cluster.toml")         # or ["127.0.0.1:7101", "127.0.0.1:7103", ...]
    users = c.hashmap("users")          # a PHashMap of the cluster: same methods
    users[b"ada"] = b"1815"
    jobs = c.queue("jobs")
    jobs.put(b"build"); jobs.get()
    dates = c.bptree("dates", key_codec=int)
    list(dates.irange(20260101, 20261231))
    c.status()                          # the Store's status keys, every node's status

The client offers the surface of :class:`~blizzard.cluster.store.Store`
(``hashmap``, ``queue``, ``bptree``, ``skiplist``, ``names``, ``drop``,
``check``, ``status``, ``close``); its structures are the local classes
bound to the network (:mod:`blizzard.cluster.remote`).

Any node serves any request (a follower forwards writes to the leader, and
reads wait for a ReadIndex barrier unless ``linearizable=False``), so the
client talks to whichever node answers, and moves to the leader once it
knows where that is (every response names the leader; node ids map to
addresses through the config, or :meth:`Client.node_statuses`). On a
connection error, a timeout or a NOT_READY answer it moves to the next node
and sends the *same* request, with the same (client id, seq): the cluster's
session table applies a write once however often it is retried -- for up to
``timeout_s`` (30 s). A cluster that is down is not waited for that long:
when no node has accepted a connection for ``connect_timeout_s`` (3 s), the
request raises :class:`~blizzard.exceptions.ClusterUnavailableError` naming
every node tried and why ("Connection refused", "no answer").

Each thread using a :class:`Client` gets its own blocking socket and its
own session (client id), with at most one write in flight -- the session
table's rule. :meth:`Client.submit_many` pipelines: it keeps up to
``window`` writes in flight on one socket, each on its own session lane.

With TLS (``[tls] ca``, ``cert``, ``key`` of the config, or ``ca=``,
``cert=``, ``key=`` of :func:`connect`) every connection is mutual TLS and
the node must present a node certificate of the cluster's CA; with a token
(``[auth] token_file``, or ``token=``) every connection sends it first. A
node refusing the client -- a bad certificate, an unknown token, a write
from a read-only client -- raises :class:`~blizzard.exceptions.AuthenticationError`
or :class:`~blizzard.exceptions.AuthorizationError` at once: no other node
would answer otherwise, so there is no retry.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from blizzard.cluster import config as configmod
from blizzard.cluster import protocol as proto
from blizzard.cluster.config import ClusterConfig
from blizzard.cluster.protocol import Kind, ReadKind, Request, Response, Status
from blizzard.cluster.remote import (
    RemoteBPlusTree,
    RemoteHashMap,
    RemoteQueue,
    RemoteReplicator,
    RemoteSkipList,
)
from blizzard.exceptions import (
    AccessDeniedError,
    AuthenticationError,
    BlizzardError,
    ClusterUnavailableError,
    ConfigError,
    InvalidArgumentError,
    RemoteError,
)
from blizzard.replication.transport import tls as tlsmod
from blizzard.replication.transport.registry import TlsFiles
from blizzard.structures import KIND_OF_TAG, ops
from blizzard.structures.codecs import CodecLike
from blizzard.structures.ops import OpCode

__all__ = ["Client", "ClusterUnavailableError", "RemoteBPlusTree", "RemoteError",
           "RemoteHashMap", "RemoteQueue", "RemoteSkipList", "connect"]

TIMEOUT_S = 30.0
#: How long a request keeps trying while no node accepts a connection at all
#: (refused, unreachable, no answer to the TCP handshake) before it raises
#: ClusterUnavailableError naming every node tried; ``connect_timeout_s=``.
CONNECT_TIMEOUT_S = 3.0
#: The longest one TCP connect may take (less when ``connect_timeout_s`` is).
SOCKET_CONNECT_TIMEOUT_S = 1.0
HANDSHAKE_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0  # longer than the server's own request deadline
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.5
WINDOW = 64


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("Connection refused", "timed out")."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Reach:
    """Which nodes one request could not even connect to, and why: once every
    node has refused (or not answered) for ``connect_timeout_s`` and none
    accepted, the request fails at once instead of retrying until its full
    timeout -- a cluster that is down says so in seconds."""

    __slots__ = ("client", "failures", "reached", "start")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.start = time.monotonic()
        self.failures: dict[int, str] = {}  # address index -> last reason
        self.reached = False

    def failed(self, index: int, exc: BaseException) -> None:
        self.failures[index] = _reason(exc)

    def check(self) -> None:
        client = self.client
        everyone = len(self.failures) == len(client.addresses) or not client.failover
        if self.reached or not everyone:
            return
        if time.monotonic() - self.start >= client.connect_timeout_s:
            raise ClusterUnavailableError(
                f"no node answers (tried for {client.connect_timeout_s} s): "
                f"{client.describe_failures(self.failures)}")


def _error(payload: bytes) -> BaseException:
    return proto.make_error(*proto.decode_error(payload))


def _address(value: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Credentials:
    """What a client presents: a TLS context (None: plain TCP) and a token."""

    __slots__ = ("context", "token")

    def __init__(self, tls: TlsFiles | ssl.SSLContext | None, token: str | bytes | None
                 ) -> None:
        if isinstance(tls, TlsFiles):
            tls = tlsmod.client_context(ca_file=str(tls.ca), cert_file=str(tls.cert),
                                        key_file=str(tls.key))
        self.context = tls
        self.token = token.encode() if isinstance(token, str) else token


def _refusal(address: tuple[str, int], exc: ssl.SSLError) -> BlizzardError | None:
    """The error to raise for a TLS failure that retrying cannot cure; None for
    one that it may (the connection closed under us)."""
    where = f"{address[0]}:{address[1]}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return AuthenticationError(f"{where}: its certificate is not one of this cluster's CA: "
                                   f"{exc.verify_message}")
    reason = exc.reason or ""
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
        return ConfigError(f"{where} does not speak TLS, but this client was given TLS "
                           "settings ([tls] of its config, or ca=)")
    if "ALERT" in reason or "CERTIFICATE" in reason:
        return AuthenticationError(f"{where} refused this client's TLS handshake: "
                                   f"{tlsmod.handshake_reason(exc)}")
    return None


class _Connection:
    """One blocking socket to one node (TLS and token first, if given)."""

    def __init__(self, address: tuple[str, int], timeout_s: float,
                 credentials: _Credentials | None = None, node_id: int | None = None,
                 connect_timeout_s: float = SOCKET_CONNECT_TIMEOUT_S) -> None:
        self.address = address
        self._buf = bytearray()
        sock = socket.create_connection(address, timeout=connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        if credentials is None:
            sock.settimeout(timeout_s)
            return
        try:
            if credentials.context is not None:
                sock.settimeout(max(connect_timeout_s, min(timeout_s, HANDSHAKE_TIMEOUT_S)))
                self.sock = credentials.context.wrap_socket(sock)
                self._check_node(node_id)
            self.sock.settimeout(timeout_s)
            if credentials.token is not None:
                self.send(proto.encode_request(Request(Kind.AUTH, 0,
                                                       payload=credentials.token)))
                response = self.recv()
                if response.status != Status.OK:
                    raise _error(response.payload)
        except BaseException:
            self.close()
            sock.close()
            raise

    def _check_node(self, node_id: int | None) -> None:
        """The peer must be a node of the cluster (the one expected, if known)."""
        peercert = self.sock.getpeercert()  # type: ignore[attr-defined]  # an SSLSocket here
        found = tlsmod.node_of(peercert)
        if found is None or (node_id is not None and found != node_id):
            expected = tlsmod.node_name(node_id) if node_id is not None else "node-<id>"
            raise AuthenticationError(
                f"{self.address[0]}:{self.address[1]} presents the certificate of "
                f"{tlsmod.common_name(peercert)!r}, not {expected!r}: not a node of this "
                "cluster")

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except ssl.SSLError as exc:
            raise _refusal(self.address, exc) or exc from None

    def recv(self) -> Response:
        try:
            return self._recv()
        except ssl.SSLError as exc:
            raise _refusal(self.address, exc) or exc from None

    def _recv(self) -> Response:
        head = self._exactly(4)
        (size,) = proto.FRAME.unpack(head)
        if size > proto.FRAME_BYTES_MAX:
            raise proto.ProtocolError(f"response frame of {size} bytes")
        return proto.decode_response(self._exactly(size))

    def _exactly(self, n: int) -> bytes:
        buf = self._buf
        while len(buf) < n:
            chunk = self.sock.recv(max(65536, n - len(buf)))
            if not chunk:
                raise ConnectionResetError(f"{self.address[0]}:{self.address[1]} closed the "
                                           "connection")
            buf += chunk
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Lane:
    """A session: a client id and its last seq; at most one write in flight."""

    __slots__ = ("client", "seq")

    def __init__(self) -> None:
        self.client = int.from_bytes(os.urandom(8), "little") or 1
        self.seq = 0


class Client:
    """A connection to a cluster; see the module docstring. Thread-safe."""

    def __init__(self, addresses: Sequence[str | tuple[str, int]], *,
                 timeout_s: float = TIMEOUT_S, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 failover: bool = True, node_ids: Sequence[int] | None = None,
                 tls: TlsFiles | ssl.SSLContext | None = None,
                 token: str | bytes | None = None) -> None:
        if not addresses:
            raise ValueError("no node addresses")
        self._credentials = (_Credentials(tls, token) if tls is not None or token is not None
                             else None)
        self.addresses = [_address(a) for a in addresses]
        if not connect_timeout_s > 0:
            raise InvalidArgumentError(f"connect_timeout_s must be a positive number of "
                                       f"seconds, got {connect_timeout_s!r}")
        self.timeout_s = timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.failover = failover
        self._local = threading.local()
        self._request_ids = itertools.count(1)
        self._ids_lock = threading.Lock()
        self._preferred = random.randrange(len(self.addresses))
        self._all: list[_Connection] = []
        self._all_lock = threading.Lock()
        # node id -> index in addresses, to follow the leader hint of responses
        self._index_of: dict[int, int] = (
            {node_id: i for i, node_id in enumerate(node_ids)} if node_ids else {})
        self._replicator = RemoteReplicator(self)
        self.requests = 0  # requests sent, retries included

    # -- structures (the Store's surface) --------------------------------------------------

    def hashmap(self, name: str, *, key_codec: CodecLike = None, value_codec: CodecLike = None,
                linearizable: bool | None = None, create: bool = True) -> RemoteHashMap:
        """The :class:`~blizzard.structures.PHashMap` ``name`` of the cluster,
        created (with these codecs, bytes by default) if missing and ``create``.
        Reads are linearizable unless ``linearizable=False`` (then the node
        answering reads its own state, possibly behind the leader)."""
        return RemoteHashMap(self, name, key_codec=key_codec, value_codec=value_codec,
                             linearizable=linearizable, create=create)

    def queue(self, name: str, *, value_codec: CodecLike = None,
              linearizable: bool | None = None, create: bool = True) -> RemoteQueue:
        """The :class:`~blizzard.structures.PQueue` ``name``, created if missing."""
        return RemoteQueue(self, name, value_codec=value_codec, linearizable=linearizable,
                           create=create)

    def bptree(self, name: str, *, key_codec: CodecLike = None, value_codec: CodecLike = None,
               fanout: int | None = None, linearizable: bool | None = None,
               create: bool = True) -> RemoteBPlusTree:
        """The :class:`~blizzard.structures.PBPlusTree` ``name``, created if missing."""
        return RemoteBPlusTree(self, name, key_codec=key_codec, value_codec=value_codec,
                               fanout=fanout, linearizable=linearizable, create=create)

    def skiplist(self, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, seed: int | None = None,
                 linearizable: bool | None = None, create: bool = True) -> RemoteSkipList:
        """The :class:`~blizzard.structures.PSkipList` ``name``, created if missing."""
        return RemoteSkipList(self, name, key_codec=key_codec, value_codec=value_codec,
                              seed=seed, linearizable=linearizable, create=create)

    def drop(self, name: str) -> None:
        """Remove structure ``name`` and free its memory (KeyError if there is none)."""
        self.submit(ops.encode(ops.Op(name, OpCode.DROP)))

    # -- requests ------------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._request_ids)

    def _thread_state(self):
        local = self._local
        if not hasattr(local, "lane"):
            local.lane = _Lane()
            local.lanes = []
            local.conn = None
            local.index = self._preferred
        return local

    def _node_at(self, index: int) -> int | None:
        for node_id, i in self._index_of.items():
            if i == index:
                return node_id
        return None

    def _open(self, index: int, reply_timeout_s: float) -> _Connection:
        return _Connection(self.addresses[index], reply_timeout_s, self._credentials,
                           self._node_at(index),
                           min(SOCKET_CONNECT_TIMEOUT_S, self.connect_timeout_s))

    def describe_failures(self, failures: Mapping[int, str]) -> str:
        """``"node 1 at 127.0.0.1:7101: Connection refused; ..."`` (address indexes)."""
        parts = []
        for index, why in sorted(failures.items()):
            host, port = self.addresses[index]
            node = self._node_at(index)
            parts.append(f"{'' if node is None else f'node {node} at '}{host}:{port}: {why}")
        return "; ".join(parts)

    def _connection(self, local, reach: _Reach | None = None) -> _Connection:
        if local.conn is None:
            try:
                conn = self._open(local.index, self.reply_timeout_s)
            except OSError as exc:
                if reach is not None:
                    reach.failed(local.index, exc)
                raise
            if reach is not None:
                reach.reached = True
            local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return local.conn

    def _drop(self, local) -> None:
        """Forget this thread's connection and move to the next node."""
        if local.conn is not None:
            local.conn.close()
            with self._all_lock:
                if local.conn in self._all:
                    self._all.remove(local.conn)
            local.conn = None
        if self.failover:
            local.index = (local.index + 1) % len(self.addresses)

    def _call(self, kind: Kind, payload: bytes, *, client: int = 0, seq: int = 0,
              flags: int = 0) -> bytes:
        """Send one request until a node answers OK or ERROR; retries reuse (client, seq)."""
        if len(payload) + proto.REQUEST.size > proto.FRAME_BYTES_MAX:
            proto.encode_request(Request(kind, 0, client, seq, payload, flags))  # raises
        local = self._thread_state()
        deadline = time.monotonic() + self.timeout_s
        reach = _Reach(self)
        backoff = BACKOFF_MIN_S
        last = "no attempt"
        while True:
            request = Request(kind, self._next_id(), client, seq, payload, flags)
            self.requests += 1
            try:
                conn = self._connection(local, reach)
                conn.send(proto.encode_request(request))
                response = conn.recv()
                while response.request_id != request.request_id:
                    if response.request_id == 0 and response.status == Status.ERROR:
                        break  # the server could not read the request at all
                    response = conn.recv()  # a late answer to an abandoned request
            except (AccessDeniedError, ConfigError):
                self._drop(local)
                raise
            except (OSError, proto.ProtocolError) as exc:
                last = f"{self._where(local)}: {exc}"
                self._drop(local)
            else:
                if response.status != Status.NOT_READY:
                    self._follow(local, response.leader)
                    if response.status == Status.ERROR:
                        raise _error(response.payload)
                    return response.payload
                leader, message = proto.decode_not_ready(response.payload)
                last = f"{self._where(local)}: not ready: {message}"
                if not self._to_leader(local, leader):
                    self._drop(local)
            reach.check()
            if time.monotonic() + backoff > deadline:
                raise ClusterUnavailableError(
                    f"no node completed the request within {self.timeout_s} s (last: {last})")
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _to_leader(self, local, leader: int) -> bool:
        """Move to ``leader`` if it is known and elsewhere: a NOT_READY names the
        node that can serve the request (say, after an election)."""
        index = self._index_of.get(leader)
        if not self.failover or index is None or index == local.index:
            return False
        if local.conn is not None:
            local.conn.close()
            with self._all_lock:
                if local.conn in self._all:
                    self._all.remove(local.conn)
            local.conn = None
        local.index = index
        return True

    def _follow(self, local, leader: int) -> None:
        """Talk to ``leader`` from the next request on, if it is known and elsewhere."""
        self._to_leader(local, leader)
        self._preferred = local.index

    def _where(self, local) -> str:
        host, port = self.addresses[local.index]
        return f"{host}:{port}"

    @property
    def replicator(self) -> RemoteReplicator:
        """Where the remote structures' Ops go (SUBMITs through this client)."""
        return self._replicator

    def submit(self, op: bytes) -> Any:
        """Apply one Op record through the cluster; its result (exceptions raised)."""
        lane = self._thread_state().lane
        lane.seq += 1
        value = proto.decode_value(self._call(Kind.SUBMIT, op, client=lane.client, seq=lane.seq))
        if isinstance(value, BaseException):
            raise value
        return value

    def submit_many(self, records: Iterable[bytes], *, window: int = WINDOW) -> list[Any]:
        """Apply many Ops, up to ``window`` in flight on one socket; results in order.

        Each in-flight write has its own session lane, so retries after a
        failover are still applied once. A result that is an error is
        returned in its place, not raised.
        """
        local = self._thread_state()
        while len(local.lanes) < window:
            local.lanes.append(_Lane())
        free = list(local.lanes[:window])
        pending = deque(enumerate(records))
        results: list[Any] = [None] * len(pending)
        in_flight: dict[int, tuple[int, _Lane, bytes]] = {}
        deadline = time.monotonic() + self.timeout_s
        reach = _Reach(self)
        backoff = BACKOFF_MIN_S
        resend: list[tuple[int, _Lane, bytes]] = []
        while pending or in_flight or resend:
            try:
                conn = self._connection(local, reach)
                out = []
                for item in resend:
                    rid = self._next_id()
                    in_flight[rid] = item
                    out.append(proto.encode_request(
                        Request(Kind.SUBMIT, rid, item[1].client, item[1].seq, item[2])))
                resend = []
                while pending and free:
                    position, op = pending.popleft()
                    lane = free.pop()
                    lane.seq += 1
                    rid = self._next_id()
                    in_flight[rid] = (position, lane, op)
                    out.append(proto.encode_request(
                        Request(Kind.SUBMIT, rid, lane.client, lane.seq, op)))
                if out:
                    conn.send(b"".join(out))
                response = conn.recv()
            except (AccessDeniedError, ConfigError):
                self._drop(local)
                raise
            except (OSError, proto.ProtocolError):
                # Keep what was waiting to be resent too: the reconnect itself may fail.
                resend = [*resend, *in_flight.values()]
                in_flight.clear()
                self._drop(local)
            else:
                if response.request_id not in in_flight:
                    continue
                item = in_flight.pop(response.request_id)
                if response.status == Status.NOT_READY:
                    resend = [item, *in_flight.values()]  # elsewhere, all of them
                    in_flight.clear()
                    self._drop(local)
                else:
                    position, lane, _ = item
                    results[position] = (proto.decode_value(response.payload)
                                         if response.status == Status.OK
                                         else _error(response.payload))
                    if isinstance(results[position], AccessDeniedError):
                        raise results[position]  # every write of the batch would be refused
                    free.append(lane)
                    backoff = BACKOFF_MIN_S
                    continue
            reach.check()
            if time.monotonic() > deadline:
                raise ClusterUnavailableError(
                    f"{len(resend) + len(pending)} writes not completed within {self.timeout_s} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        return results

    def read(self, read: ReadKind, name: str, args: bytes = b"", *, stale: bool = False) -> bytes:
        """One READ; the raw OK payload."""
        return self._call(Kind.READ, proto.read_payload(read, name, args),
                          flags=proto.STALE if stale else 0)

    def read_value(self, read: ReadKind, name: str, args: bytes = b"", *,
                   stale: bool = False) -> Any:
        return proto.decode_value(self.read(read, name, args, stale=stale))

    def check(self, *, stale: bool = True) -> bool:
        """Run ``check()`` on every structure and the pool of the node answering."""
        return self.read_value(ReadKind.CHECK, "", stale=stale)

    def names(self, *, stale: bool = False) -> dict[str, str]:
        """Structure name -> kind (``hashmap``, ``queue``, ``bptree``, ``skiplist``)."""
        tags = proto.decode_json(self.read(ReadKind.NAMES, "", stale=stale))
        return {name: KIND_OF_TAG.get(tag.encode(), tag) for name, tag in tags.items()}

    def info(self, name: str, *, stale: bool = False) -> dict[str, Any]:
        """Kind, codecs and item count of structure ``name``
        (:class:`NoSuchStructureError` if there is none)."""
        return proto.decode_json(self.read(ReadKind.INFO, name, stale=stale))

    # -- membership ----------------------------------------------------------------------

    def members(self) -> dict[str, Any]:
        """``{"voters": [...], "learners": [...], "leader": id}``, from the leader."""
        return self._members("list", 0)

    def add_node(self, node_id: int, raft: str | tuple[str, int],
                 client: str | tuple[str, int] | None = None) -> dict[str, Any]:
        """Add node ``node_id`` (already running, reachable at ``raft``) to the
        cluster: a learner until it has caught up, then a voter. Returns the members."""
        return self._members("add", node_id, raft=raft, client=client)

    def remove_node(self, node_id: int) -> dict[str, Any]:
        """Remove node ``node_id`` (running or dead) from the cluster."""
        return self._members("remove", node_id)

    def transfer_leader(self, node_id: int) -> dict[str, Any]:
        """Make voter ``node_id`` the leader."""
        return self._members("transfer", node_id)

    def _members(self, operation: str, node_id: int, **addresses: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"op": operation, "node": node_id}
        for key, value in addresses.items():
            if value is not None:
                host, port = _address(value)
                args[key] = f"{host}:{port}"
        return proto.decode_json(self._call(Kind.MEMBERS, proto.encode_json(args)))

    def status(self) -> dict[str, Any]:
        """The Store's status keys, as the cluster reports them: ``backend``
        ("remote"), ``transport`` and ``node`` (None: this process is no node),
        ``role`` ("client"), and ``term``, ``leader``, ``commit``, ``applied``
        from the leader's status (the most advanced node's while there is
        none); ``counters`` holds this client's; ``nodes`` every node's status."""
        nodes = self.node_statuses()
        answered = [s for s in nodes.values() if "term" in s]
        best = max(answered, key=lambda s: (s.get("role") in ("leader", "primary"), s["term"],
                                            s.get("commit") or 0), default={})
        return {"backend": "remote", "transport": None, "node": None, "role": "client",
                "term": best.get("term"), "leader": best.get("leader") or None,
                "commit": best.get("commit"), "applied": best.get("applied"),
                "counters": {"nodes": len(self.addresses), "answering": len(answered),
                             "requests": self.requests},
                "nodes": nodes}

    def node_statuses(self) -> dict[int | str, dict[str, Any]]:
        """Every node's status, by node id (by address for a node whose id is not
        known). Each holds ``address`` ("host:port"); a node that did not answer
        has ``role`` "unreachable", ``error`` (why: "Connection refused"...) and
        ``node`` when its id is known (from the config, or an earlier answer)."""
        statuses: dict[int | str, dict[str, Any]] = {}
        for i, (host, port) in enumerate(self.addresses):
            where = f"{host}:{port}"
            try:
                conn = self._open(i, min(self.reply_timeout_s, 5.0))
            except (AccessDeniedError, ConfigError):
                raise
            except OSError as exc:
                self._unreachable(statuses, i, exc)
                continue
            try:
                conn.send(proto.encode_request(Request(Kind.STATUS, 1)))
                response = conn.recv()
                if response.status == Status.ERROR:
                    raise _error(response.payload)
                status = proto.decode_json(response.payload)
                status["address"] = where
                statuses[status.get("node", where)] = status
                if "node" in status:
                    self._index_of[status["node"]] = i
            except (AccessDeniedError, ConfigError):
                raise
            except (OSError, proto.ProtocolError, ValueError) as exc:
                self._unreachable(statuses, i, exc)
            finally:
                conn.close()
        return statuses

    def _unreachable(self, statuses: dict[int | str, dict[str, Any]], index: int,
                     exc: BaseException) -> None:
        host, port = self.addresses[index]
        status: dict[str, Any] = {"role": "unreachable", "error": _reason(exc),
                                  "address": f"{host}:{port}"}
        node = self._node_at(index)
        if node is not None:
            status["node"] = node
        statuses[node if node is not None else f"{host}:{port}"] = status

    def wait_for_leader(self, timeout_s: float = 30.0) -> int:
        """Block until some node reports a leader every answering node agrees on."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = [s for s in self.node_statuses().values() if "leader" in s]
            leaders = {s["leader"] for s in statuses}
            if statuses and len(leaders) == 1 and 0 not in leaders and any(
                    s["role"] == "leader" for s in statuses):
                return leaders.pop()
            if time.monotonic() > deadline:
                raise ClusterUnavailableError(f"no leader within {timeout_s} s")
            time.sleep(0.05)

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        nodes = ", ".join(f"{h}:{p}" for h, p in self.addresses)
        return f"<Client of [{nodes}]>"


def connect(target: str | os.PathLike[str] | Sequence[str | tuple[str, int]] | Mapping[str, Any]
            | ClusterConfig, *, ca: str | os.PathLike[str] | None = None,
            cert: str | os.PathLike[str] | None = None,
            key: str | os.PathLike[str] | None = None, token: str | bytes | None = None,
            **options: Any) -> Client:
    """A :class:`Client` for the nodes at ``target``: ``["host:port", ...]``, one
    ``"host:port"``, the path of a cluster TOML file or a dict of its tables
    (its nodes' client addresses), or a loaded config.

    TLS: ``ca``, ``cert`` and ``key`` (PEM files), else the config's ``[tls]``
    ``ca``, ``cert`` and ``key``. A token: ``token``, else the contents of the
    config's ``[auth] token_file``.
    ``options`` are :class:`Client`'s; ``connect_timeout_s`` defaults to the
    config's ``[client] connect_timeout_s``, else 3 s.
    """
    config = None
    if isinstance(target, Mapping):
        config = configmod.parse(dict(target))
    elif isinstance(target, ClusterConfig):
        config = target
    elif isinstance(target, str | os.PathLike):
        text = os.fspath(target)
        if text.endswith(".toml") or Path(text).is_file():
            config = configmod.load(text)
        else:
            target = [text]
    options.update(_credentials(config, ca, cert, key, token))
    if config is not None:
        if config.client.connect_timeout_s is not None:
            options.setdefault("connect_timeout_s", config.client.connect_timeout_s)
        nodes = config.client_addresses
        if not nodes:
            where = f"{config.source}: " if config.source else ""
            raise ConfigError(f"{where}nodes: no node has a client address "
                              "(nodes[i].client = \"host:port\")")
        return Client(list(nodes.values()), node_ids=list(nodes), **options)
    return Client(list(target), **options)  # type: ignore[arg-type]  # a sequence here


def _credentials(config: ClusterConfig | None, ca, cert, key, token) -> dict[str, Any]:
    """``tls`` and ``token`` for a :class:`Client`, from the arguments, else the config."""
    found: dict[str, Any] = {}
    if (cert is None) != (key is None):
        raise ConfigError("cert, key: give both (the client's certificate and its key) or "
                          "neither")
    if ca is not None or cert is not None:
        ca = ca if ca is not None else (config.tls.ca if config and config.tls else None)
        if ca is None:
            raise ConfigError("ca: a client certificate needs the cluster's CA too (ca=, or "
                              "[tls] ca)")
        if cert is None and config is not None and config.tls is not None:
            tls_files = configmod.client_tls(config)
            if tls_files is not None:
                cert, key = tls_files.cert, tls_files.key
        if cert is None:
            raise ConfigError("cert, key: missing (the nodes ask TLS clients for a "
                              "certificate)")
        for name, path in (("ca", ca), ("cert", cert), ("key", key)):
            if not Path(path).exists():
                raise ConfigError(f"{name}: {path} does not exist")
        found["tls"] = TlsFiles(Path(ca), Path(cert), Path(key))
    elif config is not None and config.tls is not None:
        found["tls"] = configmod.client_tls(config)
    if token is None and config is not None and config.auth.token_file is not None:
        try:
            token = config.auth.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"auth.token_file: {exc}") from None
        if not token:
            raise ConfigError(f"auth.token_file: {config.auth.token_file} is empty")
    if token is not None:
        found["token"] = token
    return found
