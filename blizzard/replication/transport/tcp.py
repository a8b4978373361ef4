"""TCP transport: length-prefixed frames over one connection per direction.

Node A sends to node B on a connection A dialled; it receives from B on the
connection B dialled. Each outbound connection has a bounded outbox and one
writer task that takes *everything* queued and writes it with one call, so a
burst of Raft messages costs one system call, not one per message.

Sending without TLS goes to the kernel at once: the dialled socket is a
plain non-blocking one, and a frame handed over while nothing is queued
ahead of it is written by ``send`` itself (``sendmsg`` of its length and
its parts: no join, no writer task woken). A frame can be handed over as
parts (``send_parts``): a leader sends a MsgApp as its fixed part followed
by views of its Raft log's records, so entries go from the log to the socket
without being copied into a frame. The transport keeps no reference to the
parts once the call returns: what the socket did not take (a full send
buffer), and a frame queued behind others, is copied and counted
(``stats.bytes_copied_sending``, the stage ``entries_to_frame`` of
:mod:`~blizzard.replication.copies`), so the caller may change or free what
its views show right after. The outbox then holds those bytes for the writer
task, which waits until the socket is writable. With TLS every frame goes
through the outbox and the stream (parts joined, counted the same way):
OpenSSL encrypts from its own buffers.

Wire format (little endian)::

    handshake (dialler -> listener): magic b"BLZT" | version u8 | node id u64 |
                                     cluster id length u8 | cluster id (UTF-8)
    reply     (listener -> dialler): status u8 (0 accepted, else a refusal code)
    frames    (dialler -> listener): length u32 | payload

Receiving (without TLS) reads non-blocking sockets with ``recv_into`` from a
reader callback of the loop, until the socket is empty, so a frame's bytes
can go where the node wants them: a node may
offer itself as the transport's region sink (``set_region_sink``, see
:class:`~blizzard.replication.transport.base.RegionSink`). On a connection
from the node it follows, the transport then reads each frame's first
``head_bytes`` (a MsgApp's fixed part) and no further, asks the sink for a
region for the rest, and receives the rest straight into it: the Raft log's
free tail, so the entries land where they will stay. The sink may give a
region up before its frame is all in (it releases the view: its log was
written meanwhile); the rest of that frame is then read and dropped, counted
``regions_lost``, and Raft sends its entries again. Any other frame, and
every frame on other connections (read in bursts of many frames per system
call), is delivered whole as ``bytes``. With TLS the stream path reads
frames: the records are decrypted into OpenSSL's buffers and cannot land in
the log, so they are copied as before (and counted, see
:mod:`~blizzard.replication.copies`).

A listener refuses (and logs one line saying why) a wrong magic or version,
an unknown node id, another cluster's id, and -- with TLS -- any peer whose
certificate its CA did not sign, or whose certificate is not the node
certificate of the node id it claims (``node-<id>``, see
:mod:`~blizzard.replication.transport.tls`): a client certificate, or
another node's, cannot speak as a node. A dialler checks the listener's
certificate names the node it meant to reach. A frame longer than
``frame_bytes_max`` closes the connection; the dialler reconnects with
exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
from collections import deque
from collections.abc import Mapping

import attrs

from blizzard.replication.transport.base import Receiver, RegionSink, TransportStats
from blizzard.replication.transport.registry import TRANSPORTS, TransportSpec
from blizzard.replication.transport.tls import (
    common_name,
    handshake_reason,
    node_name,
    node_of,
    tls_contexts,
)

__all__ = ["TcpTransport", "tls_contexts"]

log = logging.getLogger("blizzard.transport.tcp")

MAGIC = b"BLZT"
VERSION = 1
_HELLO = struct.Struct("<4sBQB")
_LEN = struct.Struct("<I")
FRAME_BYTES_MAX = 64 << 20
OUTBOX_BYTES_MAX = 64 << 20
OUTBOX_FRAMES_MAX = 100_000
HANDSHAKE_TIMEOUT_S = 5.0
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 2.0
CLUSTER_ID_BYTES_MAX = 255
#: The most of a frame read before asking the region sink where the rest goes
#: (a MsgApp's fixed part is 54 bytes); frames no longer than this carry no entry.
HEAD_BYTES_MAX = 64
#: What one read takes from a connection not read into regions (bursts of frames).
READ_BYTES = 256 << 10
#: The most one readiness callback reads from one connection before letting
#: the loop run other callbacks (the others' reads, the node's turn).
READ_BYTES_PER_CALL = 4 << 20
ACCEPTS_PER_CALL = 16

REFUSALS = {
    1: "bad magic or version",
    2: "unknown node id",
    3: "wrong cluster id",
    4: "our certificate is not this node id's",
}


class _Peer:
    """One outbound connection: its outbox, its writer task, its state.

    The outbox holds byte chunks to write in order (a frame's length and its
    payload, or the unsent rest of a frame written in part). ``sock`` is the
    connected socket without TLS while frames may be written to it directly:
    nothing queued, the writer task not in the middle of a write (``busy``).
    """

    __slots__ = ("address", "broken", "busy", "bytes_queued", "frames_queued", "node_id",
                 "outbox", "sock", "task", "wakeup")

    def __init__(self, node_id: int, address: tuple[str, int]) -> None:
        self.node_id = node_id
        self.address = address
        self.outbox: deque[bytes | memoryview] = deque()
        self.bytes_queued = 0
        self.frames_queued = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.sock: socket.socket | None = None
        self.busy = False
        self.broken = False


class TcpTransport:
    """A :class:`~blizzard.replication.transport.base.Transport` over TCP (asyncio).

    ``peers`` maps every node id of the cluster (this one included) to
    ``(host, port)``. ``server_ssl``/``client_ssl`` enable TLS; for mutual
    authentication the server context must require client certificates
    (see :func:`tls_contexts`).
    """

    def __init__(self, node_id: int, peers: Mapping[int, tuple[str, int]], *,
                 cluster_id: str = "blizzard",
                 server_ssl: ssl.SSLContext | None = None,
                 client_ssl: ssl.SSLContext | None = None,
                 frame_bytes_max: int = FRAME_BYTES_MAX,
                 outbox_bytes_max: int = OUTBOX_BYTES_MAX,
                 outbox_frames_max: int = OUTBOX_FRAMES_MAX,
                 seed: int | None = None) -> None:
        if node_id not in peers:
            raise ValueError(f"node {node_id} is not among the peers {sorted(peers)}")
        raw_cluster = cluster_id.encode("utf-8")
        if not raw_cluster or len(raw_cluster) > CLUSTER_ID_BYTES_MAX:
            raise ValueError(f"cluster id must be 1 to {CLUSTER_ID_BYTES_MAX} UTF-8 bytes")
        self.node_id = node_id
        self.stats = TransportStats()
        self._addresses = dict(peers)
        self._cluster = raw_cluster
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._frame_bytes_max = frame_bytes_max
        self._outbox_bytes_max = outbox_bytes_max
        self._outbox_frames_max = outbox_frames_max
        self._rng = random.Random(seed)
        self._receiver: Receiver | None = None
        self._server: asyncio.base_events.Server | None = None  # with TLS
        self._listener: socket.socket | None = None  # without
        self._peers = {nid: _Peer(nid, addr) for nid, addr in peers.items() if nid != node_id}
        self._inbound: set[asyncio.Task] = set()
        self._inbound_plain: set[_Inbound] = set()
        self._sink: RegionSink | None = None
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------

    def set_receiver(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def set_region_sink(self, sink: RegionSink | None) -> None:
        """Receive frames' tails where ``sink`` says (see the module docstring);
        on connections without TLS only."""
        self._sink = sink

    async def start(self) -> None:
        host, port = self._addresses[self.node_id]
        if self._server_ssl is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            listener = socket.create_server((host, port), family=family, backlog=128)
            listener.setblocking(False)
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept_plain)
            self._listener = listener
        else:
            # TLS is started per connection (not by the server), so that a failed
            # handshake is logged and counted like any other refusal.
            self._server = await asyncio.start_server(self._accept, host, port,
                                                      reuse_address=True)
        self._running = True
        for peer in self._peers.values():
            peer.task = asyncio.get_running_loop().create_task(self._dial_loop(peer))

    @property
    def address(self) -> tuple[str, int]:
        """The address actually listened on (port 0 in the config picks a free one)."""
        if self._listener is not None:
            return self._listener.getsockname()[:2]
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[:2]

    def set_peer_address(self, node_id: int, address: tuple[str, int]) -> None:
        """Point a peer at a new address (used when ports are picked at start)."""
        self._addresses[node_id] = address
        if node_id in self._peers:
            self._peers[node_id].address = address

    def add_peer(self, node_id: int, address: tuple[str, int]) -> None:
        """Talk to a node added to the cluster at run time (accept it, dial it)."""
        self._addresses[node_id] = address
        if node_id == self.node_id:
            return
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.address = address
            return
        peer = self._peers[node_id] = _Peer(node_id, address)
        if self._running:
            peer.task = asyncio.get_running_loop().create_task(self._dial_loop(peer))

    def remove_peer(self, node_id: int) -> None:
        """Stop talking to a node removed from the cluster (frames to it are dropped)."""
        self._addresses.pop(node_id, None)
        peer = self._peers.pop(node_id, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()

    async def stop(self) -> None:
        self._running = False
        if self._server is not None:
            self._server.close()
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        tasks = [p.task for p in self._peers.values() if p.task] + list(self._inbound)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for inbound in list(self._inbound_plain):
            inbound.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def status(self) -> dict:
        """The counters (see :class:`TransportStats`)."""
        return {"kind": "tcp", **attrs.asdict(self.stats)}

    # -- sending ------------------------------------------------------------------------

    def send(self, target: int, payload: bytes) -> bool:
        peer = self._peers.get(target)
        n = len(payload)
        if (peer is None or n > self._frame_bytes_max
                or peer.bytes_queued + n > self._outbox_bytes_max
                or peer.frames_queued >= self._outbox_frames_max):
            self.stats.frames_dropped += 1
            return False
        if peer.sock is not None and not peer.outbox and not peer.busy:
            return self._send_now(peer, (_LEN.pack(n), payload), n, False)
        self._queue(peer, payload, n)
        return True

    def send_parts(self, target: int, parts) -> bool:
        """Send one frame, the concatenation of ``parts`` (bytes-like objects of
        unsigned bytes); False if it was dropped. Never blocks, and keeps no
        reference to ``parts`` once it returns (see the module docstring)."""
        peer = self._peers.get(target)
        n = 0
        for part in parts:
            n += len(part)
        if (peer is None or n > self._frame_bytes_max
                or peer.bytes_queued + n > self._outbox_bytes_max
                or peer.frames_queued >= self._outbox_frames_max):
            self.stats.frames_dropped += 1
            return False
        if peer.sock is not None and not peer.outbox and not peer.busy:
            return self._send_now(peer, (_LEN.pack(n), *parts), n, True)
        self.stats.bytes_copied_sending += n
        self._queue(peer, b"".join(parts), n)
        return True

    def _queue(self, peer: _Peer, payload: bytes, n: int) -> None:
        peer.outbox.append(_LEN.pack(n))
        peer.outbox.append(payload)
        peer.bytes_queued += n
        peer.frames_queued += 1
        peer.wakeup.set()

    def _send_now(self, peer: _Peer, parts, n: int, lent: bool) -> bool:
        """Write a frame (its length first) to ``peer``'s socket at once; queue
        what the socket does not take -- a copy of it when the parts are
        ``lent`` (views the caller may change once this returns)."""
        stats = self.stats
        try:
            sent = peer.sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the connection broke: the writer task reconnects
            peer.broken = True
            peer.sock = None
            peer.wakeup.set()
            stats.frames_dropped += 1
            return False
        stats.frames_sent += 1
        stats.bytes_sent += sent
        stats.writes += 1
        if sent < n + 4:
            rest = []
            for part in parts:
                size = len(part)
                if sent >= size:
                    sent -= size
                    continue
                rest.append(part[sent:] if sent else part)
                sent = 0
            data = b"".join(rest)  # a copy: the parts may change once we return
            if lent:
                stats.bytes_copied_sending += len(data)
            peer.outbox.append(data)
            peer.bytes_queued += len(data)
            peer.wakeup.set()
        return True

    async def _dial_loop(self, peer: _Peer) -> None:
        backoff = BACKOFF_MIN_S
        while self._running:
            writer = None
            if self._client_ssl is None:
                if await self._dial_plain(peer):
                    backoff = BACKOFF_MIN_S
                backoff = await self._backoff(peer, backoff)
                continue
            try:
                reader, writer = await asyncio.open_connection(
                    *peer.address, ssl=self._client_ssl,
                    server_hostname=None if self._client_ssl is None else "blizzard")
                writer.write(_HELLO.pack(MAGIC, VERSION, self.node_id, len(self._cluster))
                             + self._cluster)
                status = await asyncio.wait_for(reader.readexactly(1), HANDSHAKE_TIMEOUT_S)
                if status[0]:
                    reason = REFUSALS.get(status[0], f"code {status[0]}")
                    log.warning("node %d refused our connection: %s", peer.node_id, reason)
                    raise ConnectionRefusedError(reason)
                if self._client_ssl is not None:
                    self._check_listener(peer, writer.get_extra_info("peercert"))
                self.stats.connects += 1
                backoff = BACKOFF_MIN_S
                await self._write_loop(peer, writer)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            backoff = await self._backoff(peer, backoff)

    async def _backoff(self, peer: _Peer, backoff: float) -> float:
        """After a connection ended (or never began): wait, and say how long the
        next wait is. Frames queued while the peer is unreachable are stale for
        Raft: they are dropped rather than replayed as an old burst."""
        self._drop_outbox(peer)
        await asyncio.sleep(backoff * (0.5 + self._rng.random()))
        return min(backoff * 2, BACKOFF_MAX_S)

    async def _dial_plain(self, peer: _Peer) -> bool:
        """Connect to ``peer`` without TLS, say hello, and write frames until the
        connection breaks; whether it was accepted."""
        loop = asyncio.get_running_loop()
        sock = None
        try:
            host, port = peer.address
            error: OSError | None = None
            for family, kind, proto, _, address in await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM):
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, address)
                    break
                except OSError as exc:
                    error = exc
                    sock.close()
                    sock = None
            if sock is None:
                raise error or OSError(f"no address for {host}:{port}")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_sendall(sock, _HELLO.pack(MAGIC, VERSION, self.node_id,
                                                      len(self._cluster)) + self._cluster)
            status = await asyncio.wait_for(loop.sock_recv(sock, 1), HANDSHAKE_TIMEOUT_S)
            if not status:
                raise ConnectionResetError("the listener closed the connection")
            if status[0]:
                reason = REFUSALS.get(status[0], f"code {status[0]}")
                log.warning("node %d refused our connection: %s", peer.node_id, reason)
                raise ConnectionRefusedError(reason)
            self.stats.connects += 1
        except asyncio.CancelledError:
            if sock is not None:
                sock.close()
            raise
        except (TimeoutError, OSError):
            if sock is not None:
                sock.close()
            return False
        try:
            await self._write_loop_plain(peer, sock)
        except (TimeoutError, OSError):
            pass
        finally:
            sock.close()
        return True

    async def _write_loop_plain(self, peer: _Peer, sock: socket.socket) -> None:
        """Write what ``send`` queued, until the connection breaks. The listener
        says nothing after its status byte: the socket turning readable means
        the connection is closing."""
        loop = asyncio.get_running_loop()
        stats = self.stats
        fd = sock.fileno()

        def closing() -> None:
            peer.broken = True
            peer.sock = None
            peer.wakeup.set()

        peer.broken = False
        peer.busy = False
        loop.add_reader(fd, closing)
        peer.sock = sock
        try:
            while True:
                if peer.broken:
                    raise ConnectionResetError("the connection broke")
                if not peer.outbox:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue
                outbox = peer.outbox
                chunks = list(outbox)
                outbox.clear()
                stats.frames_sent += peer.frames_queued
                peer.frames_queued = 0
                peer.bytes_queued = 0
                data = b"".join(chunks)
                peer.busy = True
                await loop.sock_sendall(sock, data)
                peer.busy = False
                stats.bytes_sent += len(data)
                stats.writes += 1
        finally:
            peer.sock = None
            peer.busy = False
            loop.remove_reader(fd)

    def _check_listener(self, peer: _Peer, peercert) -> None:
        """Refuse to send to a listener that is not the node we dialled."""
        if node_of(peercert) != peer.node_id:
            log.warning("node %d: the listener at %s:%d presents the certificate of %r, not "
                        "%r: not sending to it", self.node_id, *peer.address,
                        common_name(peercert), node_name(peer.node_id))
            raise ConnectionRefusedError("the listener's certificate names another node")

    def _drop_outbox(self, peer: _Peer) -> None:
        self.stats.frames_dropped += peer.frames_queued
        peer.outbox.clear()
        peer.bytes_queued = 0
        peer.frames_queued = 0

    async def _write_loop(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        while True:
            if not peer.outbox:
                peer.wakeup.clear()
                await peer.wakeup.wait()
            outbox = peer.outbox
            data = b"".join(outbox)  # lengths and payloads, queued by ``_queue``
            outbox.clear()
            count, peer.frames_queued = peer.frames_queued, 0
            peer.bytes_queued = 0
            writer.write(data)
            stats.frames_sent += count
            stats.bytes_sent += len(data)
            stats.writes += 1
            await writer.drain()

    # -- receiving ----------------------------------------------------------------------

    def _accept_plain(self) -> None:
        """The listener without TLS is readable: take the connections waiting."""
        listener = self._listener
        for _ in range(ACCEPTS_PER_CALL):
            if listener is None:
                return
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the next accept may work
                log.warning("node %d could not accept a connection: %s", self.node_id, exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Inbound(self, conn, address)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._inbound.add(task)
        peer_name = writer.get_extra_info("peername")
        try:
            if self._server_ssl is not None:
                try:
                    await writer.start_tls(self._server_ssl,
                                           ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    self.stats.refused += 1
                    log.warning("node %d refused a connection from %s: TLS handshake failed: "
                                "%s", self.node_id, peer_name, handshake_reason(exc))
                    return
            source = await self._handshake(reader, writer, peer_name)
            if source is not None:
                await self._read_frames(reader, source, peer_name)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._inbound.discard(task)
            writer.close()

    async def _handshake(self, reader, writer, peer_name) -> int | None:
        try:
            hello = await asyncio.wait_for(reader.readexactly(_HELLO.size), HANDSHAKE_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError):
            self._refuse(writer, peer_name, 1, "no handshake")
            return None
        magic, version, source, cluster_len = _HELLO.unpack(hello)
        if magic != MAGIC or version != VERSION:
            self._refuse(writer, peer_name, 1,
                         f"bad handshake (magic {magic!r}, version {version})")
            return None
        cluster = await asyncio.wait_for(reader.readexactly(cluster_len), HANDSHAKE_TIMEOUT_S)
        refusal = self._hello_refusal(source, cluster, writer.get_extra_info("peercert"))
        if refusal is not None:
            self._refuse(writer, peer_name, *refusal)
            return None
        writer.write(b"\0")
        return source

    def _hello_refusal(self, source: int, cluster: bytes, peercert) -> tuple[int, str] | None:
        """Why a dialler's hello (past magic and version) is refused: (code, reason)."""
        if cluster != self._cluster:
            theirs = cluster.decode("utf-8", "replace")
            return 3, (f"node {source} belongs to cluster {theirs!r}, "
                       f"not {self._cluster.decode()!r}")
        if source not in self._peers:
            return 2, f"unknown node id {source}"
        if self._server_ssl is not None and node_of(peercert) != source:
            return 4, (f"claims to be node {source} with the certificate of "
                       f"{common_name(peercert)!r} (node {source}'s is {node_name(source)!r})")
        return None

    def _refuse(self, writer, peer_name, code: int, why: str) -> None:
        self.stats.refused += 1
        log.warning("node %d refused a connection from %s: %s", self.node_id, peer_name, why)
        with contextlib.suppress(Exception):
            writer.write(bytes([code]))

    async def _read_frames(self, reader: asyncio.StreamReader, source: int, peer_name) -> None:
        unpack_len = _LEN.unpack
        limit = self._frame_bytes_max
        stats = self.stats
        while True:
            (n,) = unpack_len(await reader.readexactly(4))
            if n > limit:
                stats.bad_frames += 1
                log.warning("node %d dropped the connection from node %d (%s): "
                            "frame of %d bytes exceeds the %d-byte limit",
                            self.node_id, source, peer_name, n, limit)
                return
            payload = await reader.readexactly(n)
            stats.frames_received += 1
            stats.bytes_received += n + 4
            # the stream's buffer took the bytes from the socket's, then readexactly
            # copied them out into ``payload``: two copies
            stats.bytes_copied += 2 * n
            self._deliver(source, payload)

    def _deliver(self, source: int, payload: bytes) -> None:
        receiver = self._receiver
        if receiver is not None:
            try:
                receiver(source, payload)
            except Exception:  # a bad message must not take the connection down
                self.stats.bad_frames += 1
                log.exception("node %d: receiver failed on a frame from node %d",
                              self.node_id, source)


class _Inbound:
    """One inbound connection without TLS, read with ``recv_into``: the hello,
    then frames (see the module docstring).

    Bytes are read into ``head`` (the hello, or frames), or into ``target`` (the
    rest of one frame: a region of the sink's, or a buffer of its own for a
    frame too long for ``head``). While the sink wants regions from this
    connection's node, a read into ``head`` stops ``head_bytes`` into the first
    frame not yet handled, so no byte of a long frame's tail lands in ``head``;
    otherwise a read takes whatever has arrived, up to :data:`READ_BYTES`.
    One readiness callback reads until the socket is empty (or
    :data:`READ_BYTES_PER_CALL`), so a frame read in two parts costs no extra
    turn of the loop.
    """

    def __init__(self, owner: TcpTransport, sock: socket.socket, peer_name) -> None:
        self.owner = owner
        self.sock: socket.socket | None = sock
        self.fd = sock.fileno()
        self.source: int | None = None  # set by the hello
        self.peer_name = peer_name
        self.head = bytearray(READ_BYTES)
        self.view = memoryview(self.head)
        self.filled = 0
        self.want = _HELLO.size  # bytes of the hello ``head`` must hold
        self.cluster_len = -1  # the hello's cluster id length, once read
        self.target: memoryview | None = None
        self.target_filled = 0
        self.frame_head = b""  # the first bytes of the frame whose rest is read
        self.rest_bytes = 0  # how many bytes that rest has
        self.in_region = False
        self.lost = False  # its region was given up: the rest is read and dropped
        loop = asyncio.get_running_loop()
        self.loop = loop
        owner._inbound_plain.add(self)
        loop.add_reader(self.fd, self._readable)
        self.timer: asyncio.TimerHandle | None = loop.call_later(HANDSHAKE_TIMEOUT_S,
                                                                self._no_hello)

    def _readable(self) -> None:
        budget = READ_BYTES_PER_CALL
        while budget > 0:
            sock = self.sock
            if sock is None:
                return
            buf = self.get_buffer()
            try:
                nbytes = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not nbytes:
                self.close()
                return
            budget -= nbytes
            self.buffer_updated(nbytes)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.owner._inbound_plain.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.loop.remove_reader(self.fd)
        sock.close()
        # A region half received is never handed over: the log's next write
        # reuses its space (its records never verify, see pmem_storage).
        self.target = None

    def get_buffer(self) -> memoryview:
        if self.target is not None:
            try:
                return self.target[self.target_filled:]
            except ValueError:  # released: the sink gave the region up (see _lose_region)
                return self._lose_region()
        if self.source is None:
            return self.view[self.filled:self.want]
        if self._regions():
            want = 4 + self._head_bytes()
            if self.filled < want:
                return self.view[self.filled:want]
        return self.view[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.target is not None:
            self.target_filled += nbytes
            if self.target_filled == len(self.target):
                self._rest_done()
            return
        self.filled += nbytes
        if self.source is None:
            self._hello()
        else:
            self._frames()

    # -- the hello ----------------------------------------------------------------------

    def _no_hello(self) -> None:
        if self.source is None and self.sock is not None:
            self._refuse(1, "no handshake")

    def _refuse(self, code: int, why: str) -> None:
        owner = self.owner
        owner.stats.refused += 1
        log.warning("node %d refused a connection from %s: %s", owner.node_id,
                    self.peer_name, why)
        with contextlib.suppress(OSError):
            self.sock.send(bytes([code]))  # one byte into an empty send buffer
        self.close()

    def _hello(self) -> None:
        if self.filled < self.want:
            return
        magic, version, source, cluster_len = _HELLO.unpack_from(self.head, 0)
        if self.cluster_len < 0:
            if magic != MAGIC or version != VERSION:
                self._refuse(1, f"bad handshake (magic {magic!r}, version {version})")
                return
            self.cluster_len = cluster_len
            self.want = _HELLO.size + cluster_len
            if cluster_len:
                return
        cluster = bytes(self.head[_HELLO.size:self.want])
        refusal = self.owner._hello_refusal(source, cluster, None)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self.timer.cancel()
        try:
            self.sock.send(b"\0")  # one byte into an empty send buffer
        except OSError:
            self.close()
            return
        self.source = source
        self.filled = 0

    # -- frames -------------------------------------------------------------------------

    def _regions(self) -> bool:
        sink = self.owner._sink
        return sink is not None and sink.wants_regions(self.source)

    def _head_bytes(self) -> int:
        sink = self.owner._sink
        return min(sink.head_bytes, HEAD_BYTES_MAX) if sink is not None else HEAD_BYTES_MAX

    def _frames(self) -> None:
        """Handle every frame complete in ``head``; start reading the rest of a
        long one elsewhere; keep the bytes of an incomplete one at the front."""
        owner = self.owner
        stats = owner.stats
        head = self.head
        head_bytes = self._head_bytes()
        pos = 0
        filled = self.filled
        while filled - pos >= 4 and self.sock is not None:
            (n,) = _LEN.unpack_from(head, pos)
            if n > owner._frame_bytes_max:
                stats.bad_frames += 1
                log.warning("node %d dropped the connection from node %d (%s): "
                            "frame of %d bytes exceeds the %d-byte limit",
                            owner.node_id, self.source, self.peer_name, n,
                            owner._frame_bytes_max)
                self.close()
                return
            if filled - pos >= 4 + n:  # the whole frame is in ``head``
                payload = bytes(head[pos + 4:pos + 4 + n])
                pos += 4 + n
                stats.frames_received += 1
                stats.bytes_received += n + 4
                if n > head_bytes:  # shorter frames hold no entry: no payload copied
                    stats.bytes_copied += n
                owner._deliver(self.source, payload)
                continue
            if n > head_bytes and filled - pos <= 4 + head_bytes and self._regions():
                if filled - pos == 4 + head_bytes:  # its head, and nothing more: a region
                    self._start_rest(n, bytes(head[pos + 4:pos + 4 + head_bytes]))
                    pos = filled
            elif pos + 4 + n > len(head):  # too long for ``head``: a buffer of its own
                self._start_rest(n, bytes(head[pos + 4:filled]), region=False)
                pos = filled
            break
        if pos:  # keep an incomplete frame's bytes at the front
            rest = filled - pos
            head[:rest] = head[pos:filled]
            filled = rest
        self.filled = filled

    def _start_rest(self, n: int, frame_head: bytes, *, region: bool = True) -> None:
        """The first bytes of a frame of ``n`` are in: receive the rest into a
        region of the sink's, or else into a buffer."""
        sink = self.owner._sink
        length = n - len(frame_head)
        view = None
        if region and sink is not None and self._regions():
            try:
                view = sink.reserve_region(self.source, frame_head, length)
            except Exception:  # a confused sink must not take the connection down
                log.exception("node %d: the region sink failed on a frame from node %d",
                              self.owner.node_id, self.source)
            if view is not None and len(view) != length:
                view = None
        self.frame_head = frame_head
        self.rest_bytes = length
        if view is not None:
            self.in_region = True
            self.target = view
            self.target_filled = 0
        else:
            self.in_region = False
            self.target = memoryview(bytearray(n))
            self.target[:len(frame_head)] = frame_head
            self.target_filled = len(frame_head)

    def _lose_region(self) -> memoryview:
        """The sink released the region this frame's rest was arriving in (its
        log was written meanwhile: another leader's entries, a compaction): read
        the rest into a scratch buffer and drop the frame, which Raft treats as
        lost. Reading on into the region would write over whatever the log
        keeps there now; stopping would stall the connection."""
        self.in_region = False
        self.lost = True
        self.target = memoryview(bytearray(self.rest_bytes - self.target_filled))
        self.target_filled = 0
        return self.target

    def _rest_done(self) -> None:
        owner = self.owner
        stats = owner.stats
        target, self.target = self.target, None
        stats.frames_received += 1
        if self.lost:
            self.lost = False
            stats.regions_lost += 1
            stats.bytes_received += len(self.frame_head) + self.rest_bytes + 4
            return
        if self.in_region:
            stats.bytes_received += len(self.frame_head) + len(target) + 4
            try:
                owner._sink.region_received(self.source, self.frame_head, target)
            except Exception:
                stats.bad_frames += 1
                log.exception("node %d: the region sink failed on a frame from node %d",
                              owner.node_id, self.source)
            return
        payload = bytes(target)
        stats.bytes_received += len(payload) + 4
        # the head's bytes were copied into the buffer, then the whole into ``payload``
        stats.bytes_copied += len(payload) + len(self.frame_head)
        owner._deliver(self.source, payload)


def _build(spec: TransportSpec) -> TcpTransport:
    """The ``tcp`` transport factory: no options of its own; ``[tls]`` turns on TLS."""
    spec.check_options(())
    server_ssl = client_ssl = None
    if spec.tls is not None:
        server_ssl, client_ssl = tls_contexts(ca_file=str(spec.tls.ca),
                                              cert_file=str(spec.tls.cert),
                                              key_file=str(spec.tls.key))
    return TcpTransport(spec.node_id, spec.peers, cluster_id=spec.cluster_id,
                        server_ssl=server_ssl, client_ssl=client_ssl, seed=spec.seed)


TRANSPORTS.register("tcp", _build)
