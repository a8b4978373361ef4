"""The remote client: structures of a running cluster, from any process.

::

    from blizzard.client import connect

    c = connect(["127.0.0.1:7101", "127.0.0.1:7103", "127.0.0.1:7105"])  # or "cluster.toml"
    users = c.hashmap("users")          # a MutableMapping
    users[b"ada"] = b"1815"
    jobs = c.queue("jobs")
    jobs.put(b"build"); jobs.get()
    c.status()                          # every node's role, term, indexes...

Any node serves any request (a follower forwards writes to the leader, and
reads wait for a ReadIndex barrier unless ``stale=True``), so the client
talks to whichever node answers, and moves to the leader once it knows
where that is (every response names the leader; node ids map to addresses
through the config, or :meth:`Client.status`). On a connection error, a timeout or a
NOT_READY answer it moves to the next node and sends the *same* request,
with the same (client id, seq): the cluster's session table applies a
write once however often it is retried.

Each thread using a :class:`Client` gets its own blocking socket and its
own session (client id), with at most one write in flight -- the session
table's rule. :meth:`Client.submit_many` pipelines: it keeps up to
``window`` writes in flight on one socket, each on its own session lane.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from blizzard.cluster import config as configmod
from blizzard.cluster import protocol as proto
from blizzard.cluster.config import ClusterConfig
from blizzard.cluster.protocol import (
    Kind,
    NoSuchStructureError,
    ReadKind,
    RemoteError,
    Request,
    Response,
    Status,
)
from blizzard.exceptions import BlizzardError, ConfigError, Empty
from blizzard.structures import ops
from blizzard.structures.codecs import CodecLike, get_codec
from blizzard.structures.ops import OpCode

__all__ = ["Client", "ClusterUnavailableError", "RemoteError", "RemoteHashMap", "RemoteQueue",
           "connect"]

TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 1.0
REPLY_TIMEOUT_S = 10.0  # longer than the server's own request deadline
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.5
PAGE_ITEMS = 1000
WINDOW = 64

_MAP_TAG = b"phashmap"
_QUEUE_TAG = b"pqueue"


class ClusterUnavailableError(BlizzardError, TimeoutError):
    """No node completed the request before the client's deadline."""


def _error(payload: bytes) -> BaseException:
    return proto.make_error(*proto.decode_error(payload))


def _address(value: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Connection:
    """One blocking socket to one node."""

    def __init__(self, address: tuple[str, int], timeout_s: float) -> None:
        self.address = address
        self.sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout_s)
        self._buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Response:
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
                 failover: bool = True, node_ids: Sequence[int] | None = None) -> None:
        if not addresses:
            raise ValueError("no node addresses")
        self.addresses = [_address(a) for a in addresses]
        self.timeout_s = timeout_s
        self.reply_timeout_s = reply_timeout_s
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

    # -- structures ----------------------------------------------------------------------

    def hashmap(self, name: str, *, key_codec: CodecLike = None, value_codec: CodecLike = None,
                stale: bool = False, create: bool = True) -> RemoteHashMap:
        """The map ``name``, created (with these codecs, bytes by default) if missing."""
        return RemoteHashMap(self, name, key_codec=key_codec, value_codec=value_codec,
                             stale=stale, create=create)

    def queue(self, name: str, *, value_codec: CodecLike = None, stale: bool = False,
              create: bool = True) -> RemoteQueue:
        """The queue ``name``, created if missing."""
        return RemoteQueue(self, name, value_codec=value_codec, stale=stale, create=create)

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

    def _connection(self, local) -> _Connection:
        if local.conn is None:
            conn = _Connection(self.addresses[local.index], self.reply_timeout_s)
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
        backoff = BACKOFF_MIN_S
        last = "no attempt"
        while True:
            request = Request(kind, self._next_id(), client, seq, payload, flags)
            try:
                conn = self._connection(local)
                conn.send(proto.encode_request(request))
                response = conn.recv()
                while response.request_id != request.request_id:
                    if response.request_id == 0 and response.status == Status.ERROR:
                        break  # the server could not read the request at all
                    response = conn.recv()  # a late answer to an abandoned request
            except (OSError, proto.ProtocolError) as exc:
                last = f"{self._where(local)}: {exc}"
                self._drop(local)
            else:
                if response.status != Status.NOT_READY:
                    self._follow(local, response.leader)
                    if response.status == Status.ERROR:
                        raise _error(response.payload)
                    return response.payload
                _, message = proto.decode_not_ready(response.payload)
                last = f"{self._where(local)}: not ready: {message}"
                self._drop(local)
            if time.monotonic() + backoff > deadline:
                raise ClusterUnavailableError(
                    f"no node completed the request within {self.timeout_s} s (last: {last})")
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _follow(self, local, leader: int) -> None:
        """Talk to ``leader`` from the next request on, if it is known and elsewhere."""
        index = self._index_of.get(leader)
        if self.failover and index is not None and index != local.index:
            if local.conn is not None:
                local.conn.close()
                with self._all_lock:
                    if local.conn in self._all:
                        self._all.remove(local.conn)
                local.conn = None
            local.index = index
        self._preferred = local.index

    def _where(self, local) -> str:
        host, port = self.addresses[local.index]
        return f"{host}:{port}"

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
        backoff = BACKOFF_MIN_S
        resend: list[tuple[int, _Lane, bytes]] = []
        while pending or in_flight or resend:
            try:
                conn = self._connection(local)
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
            except (OSError, proto.ProtocolError):
                # Keep what was waiting to be resent too: the reconnect itself may fail.
                resend = [*resend, *in_flight.values()]
                in_flight.clear()
                self._drop(local)
            else:
                item = in_flight.pop(response.request_id, None)
                if item is None:
                    continue
                if response.status == Status.NOT_READY:
                    resend = [item, *in_flight.values()]  # elsewhere, all of them
                    in_flight.clear()
                    self._drop(local)
                else:
                    position, lane, _ = item
                    results[position] = (proto.decode_value(response.payload)
                                         if response.status == Status.OK
                                         else _error(response.payload))
                    free.append(lane)
                    backoff = BACKOFF_MIN_S
                    continue
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

    def pages(self, read: ReadKind, name: str, *, stale: bool = False,
              limit: int = PAGE_ITEMS) -> Iterator[bytes]:
        """Every field of a paged READ, page after page."""
        cursor = 0
        while cursor != proto.END:
            cursor, fields = proto.decode_page(
                self.read(read, name, proto.page_args(cursor, limit), stale=stale))
            yield from fields

    def check(self, *, stale: bool = True) -> bool:
        """Run ``check()`` on every structure and the pool of the node answering."""
        return self.read_value(ReadKind.CHECK, "", stale=stale)

    def names(self, *, stale: bool = False) -> dict[str, str]:
        """Structure name -> kind, on the node answering."""
        return proto.decode_json(self.read(ReadKind.NAMES, "", stale=stale))

    def info(self, name: str, *, stale: bool = False) -> dict[str, Any]:
        """Kind, codecs and item count of structure ``name``
        (:class:`NoSuchStructureError` if there is none)."""
        return proto.decode_json(self.read(ReadKind.INFO, name, stale=stale))

    def status(self) -> dict[int | str, dict[str, Any]]:
        """Every node's status, by node id (or by address if it did not answer)."""
        statuses: dict[int | str, dict[str, Any]] = {}
        for host, port in self.addresses:
            try:
                conn = _Connection((host, port), min(self.reply_timeout_s, 5.0))
            except OSError as exc:
                statuses[f"{host}:{port}"] = {"role": "unreachable", "error": str(exc)}
                continue
            try:
                conn.send(proto.encode_request(Request(Kind.STATUS, 1)))
                response = conn.recv()
                status = proto.decode_json(response.payload)
                statuses[status.get("node", f"{host}:{port}")] = status
                if "node" in status:
                    self._index_of[status["node"]] = self.addresses.index((host, port))
            except (OSError, proto.ProtocolError, ValueError) as exc:
                statuses[f"{host}:{port}"] = {"role": "unreachable", "error": str(exc)}
            finally:
                conn.close()
        return statuses

    def wait_for_leader(self, timeout_s: float = 30.0) -> int:
        """Block until some node reports a leader every answering node agrees on."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = [s for s in self.status().values() if "leader" in s]
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


class _Remote:
    def __init__(self, client: Client, name: str, tag: bytes, key_codec: CodecLike,
                 value_codec: CodecLike, stale: bool, create: bool) -> None:
        self.client = client
        self.name = name
        self.stale = stale
        if key_codec is None or value_codec is None:
            # Reopening needs no codecs: take the ones it was created with.
            try:
                info = client.info(name, stale=stale)
            except NoSuchStructureError:
                info = None
            if info is not None and info["kind"] == tag.decode():
                key_codec = key_codec if key_codec is not None else info["key_codec"]
                value_codec = value_codec if value_codec is not None else info["value_codec"]
        self.key_codec = get_codec(key_codec if key_codec is not None else "bytes")
        self.value_codec = get_codec(value_codec if value_codec is not None else "bytes")
        self._encoder = ops.Encoder(name)
        if create:
            client.submit(ops.encode(ops.Op(name, OpCode.CREATE, (
                tag, self.key_codec.name.encode(), self.value_codec.name.encode()))))

    def _read(self, read: ReadKind, args: bytes = b"") -> Any:
        return self.client.read_value(read, self.name, args, stale=self.stale)


class RemoteHashMap(_Remote, MutableMapping):
    """A :class:`~blizzard.structures.PHashMap` of the cluster, as a MutableMapping.

    Every call is one round trip (iteration: one per page of keys).
    """

    def __init__(self, client: Client, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, stale: bool = False, create: bool = True) -> None:
        super().__init__(client, name, _MAP_TAG, key_codec, value_codec, stale, create)

    def __getitem__(self, key: Any) -> Any:
        raw = self._read(ReadKind.MAP_GET, self.key_codec.encode(key))
        if raw is None:
            raise KeyError(key)
        return self.value_codec.decode(raw)

    def __contains__(self, key: object) -> bool:
        try:
            kb = self.key_codec.encode(key)
        except TypeError:
            return False
        return self._read(ReadKind.MAP_CONTAINS, kb)

    def __len__(self) -> int:
        return self._read(ReadKind.MAP_LEN)

    def __iter__(self) -> Iterator[Any]:
        decode = self.key_codec.decode
        for kb in self.client.pages(ReadKind.MAP_KEYS, self.name, stale=self.stale):
            yield decode(kb)

    def scan(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value), a page of whole buckets per round trip."""
        fields = self.client.pages(ReadKind.MAP_ITEMS, self.name, stale=self.stale)
        kdec, vdec = self.key_codec.decode, self.value_codec.decode
        for kb in fields:
            yield kdec(kb), vdec(next(fields))

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """(key, value) pairs, fetched by pages (not one request per key)."""
        return list(self.scan())

    def __setitem__(self, key: Any, value: Any) -> None:
        self.client.submit(self._encoder.two(OpCode.MAP_PUT, self.key_codec.encode(key),
                                             self.value_codec.encode(value)))

    def __delitem__(self, key: Any) -> None:
        if not self.client.submit(self._encoder.one(OpCode.MAP_DELETE,
                                                    self.key_codec.encode(key))):
            raise KeyError(key)

    _MISSING = object()

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        raw = self.client.submit(self._encoder.one(OpCode.MAP_POP, self.key_codec.encode(key)))
        if raw is None:
            if default is self._MISSING:
                raise KeyError(key)
            return default
        return self.value_codec.decode(raw)

    def clear(self) -> None:
        self.client.submit(self._encoder.zero(OpCode.MAP_CLEAR))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Put many pairs, pipelined (see :meth:`Client.submit_many`).

        Pipelined writes may apply in any order, so a key given twice is sent
        once, with its last value (what a sequential update would leave).
        """
        pairs = other.items() if hasattr(other, "items") else other
        kenc, venc, two = self.key_codec.encode, self.value_codec.encode, self._encoder.two
        last = {kenc(k): v for k, v in itertools.chain(pairs, kwargs.items())}
        records = [two(OpCode.MAP_PUT, kb, venc(v)) for kb, v in last.items()]
        for result in self.client.submit_many(records):
            if isinstance(result, BaseException):
                raise result

    def __repr__(self) -> str:
        return f"<RemoteHashMap {self.name!r} of {self.client!r}>"


class RemoteQueue(_Remote):
    """A :class:`~blizzard.structures.PQueue` of the cluster: put/get/peek/len/iteration."""

    def __init__(self, client: Client, name: str, *, value_codec: CodecLike = None,
                 stale: bool = False, create: bool = True) -> None:
        super().__init__(client, name, _QUEUE_TAG, "bytes", value_codec, stale, create)

    def put(self, item: Any) -> None:
        self.client.submit(self._encoder.one(OpCode.QUEUE_PUT, self.value_codec.encode(item)))

    put_nowait = put

    def put_many(self, items: Iterable[Any]) -> None:
        """Append many items, pipelined; their order in the queue is not guaranteed."""
        one, enc = self._encoder.one, self.value_codec.encode
        for result in self.client.submit_many([one(OpCode.QUEUE_PUT, enc(i)) for i in items]):
            if isinstance(result, BaseException):
                raise result

    def get(self, block: bool = False, timeout: float | None = None) -> Any:
        """Remove and return the head; :class:`blizzard.Empty` if empty (after
        ``timeout`` seconds, polling, with ``block=True``)."""
        op = self._encoder.zero(OpCode.QUEUE_GET)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            raw = self.client.submit(op)
            if raw is not None:
                return self.value_codec.decode(raw)
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise Empty(f"queue {self.name!r} is empty")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def get_nowait(self) -> Any:
        return self.get()

    def peek(self) -> Any:
        raw = self._read(ReadKind.QUEUE_PEEK)
        if raw is None:
            raise Empty(f"queue {self.name!r} is empty")
        return self.value_codec.decode(raw)

    def __len__(self) -> int:
        return self._read(ReadKind.QUEUE_LEN)

    qsize = __len__

    def __iter__(self) -> Iterator[Any]:
        decode = self.value_codec.decode
        for raw in self.client.pages(ReadKind.QUEUE_ITEMS, self.name, stale=self.stale):
            yield decode(raw)

    def clear(self) -> None:
        self.client.submit(self._encoder.zero(OpCode.QUEUE_CLEAR))

    def __repr__(self) -> str:
        return f"<RemoteQueue {self.name!r} of {self.client!r}>"


def connect(target: str | os.PathLike[str] | Sequence[str | tuple[str, int]] | Mapping[str, Any]
            | ClusterConfig, **options: Any) -> Client:
    """A :class:`Client` for the nodes at ``target``: ``["host:port", ...]``, one
    ``"host:port"``, the path of a cluster TOML file or a dict of its tables
    (its nodes' client addresses), or a loaded config."""
    if isinstance(target, Mapping):
        target = configmod.parse(dict(target))
    elif isinstance(target, str | os.PathLike):
        text = os.fspath(target)
        if not (text.endswith(".toml") or Path(text).is_file()):
            return Client([text], **options)
        target = configmod.load(text)
    if isinstance(target, ClusterConfig):
        nodes = target.client_addresses
        if not nodes:
            where = f"{target.source}: " if target.source else ""
            raise ConfigError(f"{where}nodes: no node has a client address "
                              "(nodes[i].client = \"host:port\")")
        return Client(list(nodes.values()), node_ids=list(nodes), **options)
    return Client(list(target), **options)
