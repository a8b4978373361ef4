"""DpdkTransport: Raft messages over DPDK links, polled from the asyncio loop.

One link per peer: ``net_memif`` (shared memory between the two processes,
through a Unix socket in ``socket_dir``; the node with the lower id is the
memif server) or ``net_af_packet`` on a network interface named in the
options (a veth end inside a network namespace, in the tests). A message is
cut into frames of at most the link's frame size (``frames`` has the
layout), reassembled at the other end; lost, reordered and duplicated frames
are tolerated (Raft resends), refused frames counted and logged.

The loop must come from :meth:`DpdkTransport.new_event_loop` (its selector
polls the links; ``polling`` says how, and how it backs off when idle).
``send`` stages frames; they leave in one burst per link when the loop
next waits.

Received frames are reported by C where they lie in their mbufs (held for
one poll), and each payload is copied once from there. A node may offer
itself as the region sink (``set_region_sink``, see
:class:`~blizzard.replication.transport.base.RegionSink`): when the first
fragment of a message from the node it follows starts with a MsgApp's fixed
part (the sink's ``head_bytes``), the transport asks the sink once for a
region for the records (``reserve_region``: the Raft log's free tail; the
message's length is known from the first frame, whose header says how long
the last one is, see :mod:`.frames`) and copies each fragment's payload,
in C (``bz_rx_copy``), straight from its mbuf to its place there, in
whatever order the fragments come; the last one hands the region to the
sink (``region_received``). A fragment twice is a duplicate as ever; a
message never completed is evicted and releases nothing into the log (the
log replaces a region it handed out and never got back with the next one);
a region the log gave up meanwhile (its view released: another leader's
entries, a compaction) is written no more: the message is dropped, counted
``regions_lost``, and Raft sends its entries again. Every other message --
a first fragment that arrives after others of its message, too -- reaches
the node as ``bytes``: one copy out of the mbuf for a one-frame message,
two (out of the mbufs, then joined) for a reassembled one. Those copies are
``stats.bytes_copied`` (the stage ``socket_to_buffer`` of
:mod:`~blizzard.replication.copies`), for messages longer than a MsgApp's
head (shorter ones hold no entry), as on TCP; so is the one copy into the
log. What memif itself copies (its shared ring to our mbufs, and back on
sending) is the link's work, as a kernel's or a NIC's is: not counted.

Why that copy remains. The mbufs could be the log pool's memory: here
(DPDK 22.11, ``--no-huge``, IOVA as VA) ``rte_extmem_register`` of a mapped
file, ``rte_pktmbuf_pool_create_extbuf`` over it and a memif receive queue
on that pool work, and memif's receive copies each frame into it
(``scripts/dpdk_extmem_probe.c`` tries it). But a
frame lands where its mbuf's buffer is -- whichever one the pool hands the
driver next, at a fixed place in a fixed carve-up of the memory -- and
with its headers (50 bytes of Ethernet and frame header before each
fragment's payload), while the log wants a message's records contiguous
right after its last record, wherever that is now. Landing a fragment
there would need its buffer to start 50 bytes before that place, over the
previous fragment's records or the log's last record. So a pool over the
log's mapping would only move the mbufs into persistent memory and still
need this one copy into the records; it is not done.

Sending a MsgApp from the log (``send_parts``): its fixed part and views of
the log's records are gathered by C straight into the frames' mbufs (one
copy, counted ``bytes_copied_sending``: the stage ``entries_to_frame``),
never joined into one ``bytes`` first.

Doorbells: a node that goes to sleep raises a flag word in
``socket_dir/node<ID>.flag`` (a small mapped file); a peer that sends while
the flag is up sends one byte to the node's datagram socket
``socket_dir/node<ID>.bell``, which the sleeping loop's epoll watches. This
is what memif's receive interrupt does, which DPDK 22.11's memif driver does
not offer (its receive rings stay in polling mode). af_packet links have
no doorbell: a sleeping node polls them every ``sleep_us`` instead.

Links are added, started, stopped and removed on EAL's interrupt thread (the
helper queues each such call there and waits for it), the thread on which
memif runs its side of a link: its handshake, and its teardown when the
peer dies. A stop from the loop's thread could run that teardown a second
time at the same moment (descriptors closed twice, shared regions freed
twice); run there, it comes after memif's own and finds nothing left to do.
memif's teardown also unmaps the link's shared regions while a burst on
the loop's thread may be inside them; the helper's burst gate
(``_bzgate.h``) makes that unmapping wait for bursts in flight.

Invariants: every frame staged by a loop turn is flushed before the loop
waits; a message is handed to the receiver at most once per sender session;
the outbox of a link is bounded (frames that do not fit are dropped and
counted, never queued without bound); frames staged while a link is down
are dropped, not replayed stale when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import mmap
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from blizzard.exceptions import ConfigError, DpdkError
from blizzard.replication.transport.base import Receiver, RegionSink, TransportStats
from blizzard.replication.transport.dpdk import eal, frames, native, polling
from blizzard.replication.transport.dpdk.options import NODE_ID_MAX, DpdkOptions
from blizzard.replication.transport.dpdk.reassembly import Reassembler, RegionMessage

log = logging.getLogger("blizzard.transport.dpdk")

RX_MAX = 256  # frames taken per poll
MAINTAIN_S = 0.02  # link state checks
RECONNECT_S = 0.1  # a memif client retries its server this often while down
HANDSHAKE_MAX_S = 3.2  # the longest a memif client's handshake in progress is given
REFUSAL_LINES_PER_S = 20  # log lines for refused frames; the rest are counted
SOCKET_PATH_MAX = 107
FLAG_BYTES = 64
PARTS = 16  # pieces of a message send_parts gathers without allocating
CHECK_LOOP_NS = 2000  # while spinning, look at the loop's descriptors this often
PREEMPTED_NS = 50_000  # a poll that lost the core this long sleeps instead (see bz_wait)
GATE_CONTEXTS_MAX = 64  # transports one process can open: the burst gate's table (_bzgate.c)
_pools = itertools.count(1)


class _Link:
    """One peer's link: its device, its state, its reassembler."""

    __slots__ = ("args", "down_since", "frame_bytes", "iface", "index", "kind", "last_try",
                 "name", "patience", "peer", "reached", "reassembler", "removed", "role",
                 "socket", "up")

    def __init__(self, peer: int, kind: str, name: str, args: str, frame_bytes: int) -> None:
        self.peer = peer
        self.kind = kind
        self.name = name
        self.args = args
        self.frame_bytes = frame_bytes
        self.index = -1
        self.up = False
        self.down_since = 0.0
        self.last_try = 0.0
        self.reached = False  # the last start reached the peer (a memif handshake began)
        self.patience = RECONNECT_S  # how long that start is given to bring the link up
        self.role = ""
        self.socket: Path | None = None
        self.iface = ""
        self.reassembler: Reassembler | None = None
        self.removed = False  # its peer left the cluster: detached, its index kept


class DpdkTransport:
    """A :class:`~blizzard.replication.transport.base.Transport` over DPDK links.

    ``nodes`` are every node id of the cluster (this one included);
    ``run_dir`` holds the node-independent files (memif sockets, doorbells)
    unless ``options.socket_dir`` says otherwise. Building one checks that
    DPDK is available (:class:`~blizzard.exceptions.DpdkUnavailableError`
    naming the packages if not); the EAL starts with the first transport
    started in the process.
    """

    def __init__(self, node_id: int, nodes: Iterable[int], *, run_dir: str | os.PathLike[str],
                 cluster_id: str = "blizzard", options: DpdkOptions | None = None,
                 seed: int | None = None) -> None:
        self._ffi, self._lib = native.load()
        nodes = sorted(set(nodes))
        if node_id not in nodes:
            raise ValueError(f"node {node_id} is not among the nodes {nodes}")
        if not all(1 <= n <= NODE_ID_MAX for n in nodes):
            raise ValueError(f"node ids must be from 1 to {NODE_ID_MAX}: {nodes}")
        self.node_id = node_id
        self.stats = TransportStats()
        self.options = options if options is not None else DpdkOptions()
        self.cluster_id = cluster_id
        self._cluster = frames.cluster_tag(cluster_id)
        self._run_dir = Path(run_dir)
        self._dir = self.options.socket_dir or self._run_dir / "dpdk"
        self._receiver: Receiver | None = None
        self._sink: RegionSink | None = None
        self._head_bytes = 0  # the sink's MsgApp fixed part: a message no longer has no records
        self._links = {peer: self._plan(peer) for peer in nodes if peer != node_id}
        self._by_index: list[_Link] = []  # by the helper's link index (removed ones too)
        self._fragments_max = 1
        self._ctx = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: polling.PollingSelector | None = None
        self._maintainer: asyncio.TimerHandle | None = None
        self._session = 0
        self._message = 0
        self._flag_maps: list[mmap.mmap] = []
        self._bell: socket.socket | None = None
        self._refusal_window = (0.0, 0, 0)  # (second, lines logged, suppressed)
        self._seed = seed  # sessions are drawn at random whatever the seed (see start)
        self._rx = self._ffi.new("struct bz_rx[]", RX_MAX)
        self._buf = self._ffi.new("uint8_t[]", RX_MAX * self.options.frame_bytes)
        self._view = self._ffi.buffer(self._buf)
        self._parts = self._ffi.new("struct bz_part[]", PARTS)
        o = self.options
        self._policy = self._ffi.new("struct bz_policy *", {
            "spin_ns": o.spin_us * 1000, "yield_ns": o.yield_us * 1000,
            "sleep_ns": o.sleep_us * 1000, "check_ns": CHECK_LOOP_NS,
            "preempted_ns": PREEMPTED_NS})

    # -- the plan -----------------------------------------------------------------------

    def _plan(self, peer: int) -> _Link:
        o = self.options
        iface = o.af_packet.get(peer)
        if iface is not None:
            frame_bytes = min(o.frame_bytes, _mtu(iface) + frames.ETH_BYTES)
            # TPACKET_V2 slots hold the frame plus the kernel's header.
            slot = 2048 if frame_bytes <= 2048 - 128 else 16384
            link = _Link(peer, "af_packet", f"net_af_packet_{self.node_id}_{peer}",
                         f"iface={iface},qpairs=1,framesz={slot},blocksz={max(slot, 4096)},"
                         f"framecnt=512", frame_bytes)
            link.iface = iface
            return link
        low, high = sorted((self.node_id, peer))
        path = self._dir / f"memif-{low}-{high}.sock"
        if len(str(path)) > SOCKET_PATH_MAX:
            raise ConfigError(f"transport.socket_dir: memif socket path too long "
                              f"({len(str(path))} > {SOCKET_PATH_MAX} bytes): {path}; "
                              f"choose a shorter directory")
        role = "server" if self.node_id == low else "client"
        size = o.ring_size.bit_length() - 1
        link = _Link(peer, "memif", f"net_memif_{self.node_id}_{peer}",
                     f"role={role},id=0,socket={path},socket-abstract=no,"
                     f"bsize={o.frame_bytes},rsize={size}", o.frame_bytes)
        link.role, link.socket = role, path
        return link

    # -- lifecycle ----------------------------------------------------------------------

    @staticmethod
    def new_event_loop() -> asyncio.AbstractEventLoop:
        """The event loop this transport must run on (its selector polls the links)."""
        return polling.new_event_loop()

    def set_receiver(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def set_region_sink(self, sink: RegionSink | None) -> None:
        """Receive MsgApps' records where ``sink`` says (see the module docstring)."""
        self._sink = sink
        self._head_bytes = sink.head_bytes if sink is not None else 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        selector = polling.selector_of(loop)
        if selector is None:
            raise RuntimeError("the DPDK transport polls from its event loop: run it on a "
                               "loop made by DpdkTransport.new_event_loop()")
        eal.start(self.options, self.node_id, self._run_dir)
        ffi, lib = self._ffi, self._lib
        o = self.options
        self._dir.mkdir(parents=True, exist_ok=True)
        self._new_session()
        # Links added later (membership changes) live with this bound: memif
        # links have the configured frame size, so it holds for them.
        smallest = min([o.frame_bytes, *(lk.frame_bytes for lk in self._links.values())])
        fragments_max = o.message_bytes_max // (smallest - frames.OVERHEAD_BYTES) + 1
        self._fragments_max = fragments_max
        name = f"bz{os.getpid() % 100000}_{next(_pools)}".encode()
        with eal.control:
            ctx = lib.bz_ctx_new(name, self._cluster, self.node_id, self._session, o.mbufs,
                                 o.frame_bytes, fragments_max)
        if ctx == ffi.NULL:
            error = lib.bz_errno()
            if error == errno.EMFILE:  # the burst gate's table is full (_bzgate.h)
                raise DpdkError(f"too many DPDK transports open in this process (at most "
                                f"{GATE_CONTEXTS_MAX}): close one before starting another")
            raise DpdkError(f"no mbuf pool of {o.mbufs} x {o.frame_bytes} bytes: "
                            f"{ffi.string(lib.bz_strerror(error)).decode()} "
                            f"(raise transport.memory_mb, now {o.memory_mb})")
        self._ctx = ctx
        try:
            self._open_doorbell(loop)
            for link in self._links.values():
                self._add_link(link, fragments_max)
        except BaseException:
            self._close()
            raise
        self._loop, self._selector = loop, selector
        selector.attach(self)
        self._maintainer = loop.call_later(MAINTAIN_S, self._maintain)

    # -- membership at run time ---------------------------------------------------------

    def add_peer(self, node_id: int, address: tuple[str, int]) -> None:
        """Talk to a node added to the cluster at run time: plan its link (memif
        from the two ids, whatever ``address`` says; af_packet if the options
        name an interface for it) and, when running, attach it at once. A link
        that cannot be made is logged as an error (the node goes on without
        that peer; membership is the log's business, not the transport's)."""
        del address  # links are not addressed by host and port
        if node_id == self.node_id or node_id in self._links:
            return
        link: _Link | None = None
        try:
            if not 1 <= node_id <= NODE_ID_MAX:
                raise ValueError(f"node ids must be from 1 to {NODE_ID_MAX}")
            link = self._plan(node_id)
            if self._ctx is not None:
                if link.kind == "memif" and self._bell is None and self._loop is not None:
                    self._open_doorbell(self._loop, force=True)  # the first memif link
                self._add_link(link, self._fragments_max)
        except (ConfigError, DpdkError, ValueError, OSError) as exc:
            log.error("node %d: cannot make a link to node %d, added to the cluster: %s; "
                      "it gets no messages from this node", self.node_id, node_id, exc)
            if link is not None and link.index >= 0:  # attached, but it did not start
                self._detach(link)
            return
        self._links[node_id] = link
        log.info("node %d: node %d added: %s link", self.node_id, node_id, link.kind)

    def remove_peer(self, node_id: int) -> None:
        """Stop talking to a node removed from the cluster: its link is detached
        (frames to it are dropped, frames from it no longer arrive); the slot
        stays (the helper's link indexes do not move)."""
        link = self._links.pop(node_id, None)
        if link is None:
            return
        self._detach(link)
        log.info("node %d: node %d removed: its link detached", self.node_id, node_id)

    def _detach(self, link: _Link) -> None:
        link.removed, link.up = True, False
        if self._ctx is not None and link.index >= 0:
            with eal.control:
                self._lib.bz_link_remove(self._ctx, link.index)

    def _new_session(self) -> None:
        # Random whatever the seed: a restarted node must not reuse its last
        # session, or its peers would take its new messages for duplicates.
        self._session = secrets.randbits(32) or 1
        self._message = 0
        if self._ctx is not None:
            self._lib.bz_set_session(self._ctx, self._session)

    def _add_link(self, link: _Link, fragments_max: int) -> None:
        lib, ffi = self._lib, self._ffi
        if link.role == "server" and link.socket is not None:
            # The server binds the socket; one left by a killed process of
            # this node would make the bind fail. Nobody else serves it.
            with contextlib.suppress(FileNotFoundError):
                link.socket.unlink()
        with eal.control:
            index = lib.bz_link_add(self._ctx, link.peer, link.name.encode(),
                                    link.args.encode(), link.frame_bytes, self.options.ring_size)
        if index < 0:
            raise DpdkError(f"cannot attach {link.name},{link.args} (the link to node "
                            f"{link.peer}): {ffi.string(lib.bz_strerror(index)).decode()}")
        link.index = index
        payload = lib.bz_link_payload_max(self._ctx, index)
        link.reassembler = Reassembler(partial_bytes_max=2 * fragments_max * payload)
        self._by_index.append(link)
        assert self._by_index[index] is link
        if link.kind == "memif" and self._bell is not None:
            flag = self._map_flag(link.peer)
            bell = str(self._dir / f"node{link.peer}.bell").encode()
            lib.bz_link_doorbell(self._ctx, index, ffi.cast("uint32_t *", ffi.from_buffer(flag)),
                                 bell)
        link.down_since = time.monotonic()
        self._try_start(link)

    def _try_start(self, link: _Link) -> None:
        """Start the device; a memif client fails while its server is not up (retried)."""
        link.last_try = time.monotonic()
        with eal.control:
            result = self._lib.bz_link_start(self._ctx, link.index)
        link.reached = result >= 0
        if result < 0 and link.kind != "memif":
            raise DpdkError(f"cannot start {link.name} ({link.args}): "
                            f"{self._ffi.string(self._lib.bz_strerror(result)).decode()}")

    def _map_flag(self, node: int) -> mmap.mmap:
        path = self._dir / f"node{node}.flag"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < FLAG_BYTES:
                os.ftruncate(fd, FLAG_BYTES)
            flag = mmap.mmap(fd, FLAG_BYTES)
        finally:
            os.close(fd)
        self._flag_maps.append(flag)
        return flag

    def _open_doorbell(self, loop: asyncio.AbstractEventLoop, force: bool = False) -> None:
        if not force and not any(link.kind == "memif" for link in self._links.values()):
            return
        path = self._dir / f"node{self.node_id}.bell"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bell.setblocking(False)
        bell.bind(str(path))
        self._bell = bell
        flag = self._map_flag(self.node_id)
        self._lib.bz_set_flag(self._ctx, self._ffi.cast("uint32_t *", self._ffi.from_buffer(flag)))
        loop.add_reader(bell.fileno(), self._drain_bell)

    def _drain_bell(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._bell.recv(64):
                pass

    async def stop(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            self._maintainer = None
        if self._selector is not None:
            self._selector.detach(self)
            self._selector = None
        if self._bell is not None:
            with contextlib.suppress(Exception):
                (self._loop or asyncio.get_running_loop()).remove_reader(self._bell.fileno())
            self._bell.close()
            with contextlib.suppress(FileNotFoundError):
                (self._dir / f"node{self.node_id}.bell").unlink()
            self._bell = None
        if self._ctx is not None:
            self._sync_stats()
            with eal.control:
                self._lib.bz_ctx_free(self._ctx)  # stops and detaches every link
            self._ctx = None
        for link in self._links.values():
            link.index, link.up = -1, False
        self._by_index.clear()
        for flag in self._flag_maps:
            with contextlib.suppress(BufferError):
                flag.close()
        self._flag_maps.clear()
        self._loop = None

    # -- link upkeep --------------------------------------------------------------------

    def _maintain(self) -> None:
        """Every MAINTAIN_S: notice links going up or down; reconnect memif clients.

        A client whose last start was refused (its server is not listening)
        tries again every RECONNECT_S. One whose start reached the server is
        in memif's handshake, a few messages each way on both processes' EAL
        interrupt threads: cutting it off after a fixed RECONNECT_S could cut
        off every attempt on a loaded machine, so each such attempt is given
        twice as long as the last (up to HANDSHAKE_MAX_S) before the next."""
        now = time.monotonic()
        lib = self._lib
        for link in self._by_index:
            if link.removed:
                continue
            up = bool(lib.bz_link_up(self._ctx, link.index))
            if up != link.up:
                link.up = up
                if up:
                    link.patience = RECONNECT_S
                    log.info("node %d: link to node %d up (%s)", self.node_id, link.peer,
                             link.kind)
                else:
                    link.down_since = now
                    log.info("node %d: link to node %d down (%s)", self.node_id, link.peer,
                             link.kind)
                    # Stale frames are not replayed when it comes back.
                    with eal.control:
                        lib.bz_link_stop(self._ctx, link.index)
                    if link.role != "client":
                        self._try_start(link)
            if not up and link.role == "client" and now - link.last_try >= link.patience:
                link.patience = (min(2 * link.patience, HANDSHAKE_MAX_S) if link.reached
                                 else RECONNECT_S)
                with eal.control:
                    lib.bz_link_stop(self._ctx, link.index)
                self._try_start(link)
        self._sync_stats()
        self._maintainer = self._loop.call_later(MAINTAIN_S, self._maintain)

    def _sync_stats(self) -> None:
        counters = self._ffi.new("struct bz_link_counters *")
        writes = 0
        for link in self._by_index:
            self._lib.bz_link_counters(self._ctx, link.index, counters)
            writes += counters.tx_bursts
        self.stats.writes = writes

    # -- sending ------------------------------------------------------------------------

    def send(self, target: int, payload: bytes) -> bool:
        link = self._links.get(target)
        n = len(payload)
        if link is None or not link.up or n > self.options.message_bytes_max:
            self.stats.frames_dropped += 1
            return False
        if self._message == 0xFFFFFFFF:
            self._new_session()
        self._message += 1
        if self._lib.bz_send(self._ctx, link.index, self._message, payload, n) < 0:
            self.stats.frames_dropped += 1
            return False
        self.stats.frames_sent += 1
        self.stats.bytes_sent += n
        return True

    def send_parts(self, target: int, parts: Sequence[Any]) -> bool:
        """Send the concatenation of ``parts`` (bytes-like: a MsgApp's fixed part
        and views of the Raft log's records) as one message, each part copied
        by C straight into the frames' mbufs, never joined first. Nothing
        refers to the parts once this returns. The copy is counted
        (``stats.bytes_copied_sending``: the stage ``entries_to_frame``)."""
        link = self._links.get(target)
        if link is None or not link.up:
            self.stats.frames_dropped += 1
            return False
        ffi = self._ffi
        n_parts = len(parts)
        cparts = self._parts if n_parts <= PARTS else ffi.new("struct bz_part[]", n_parts)
        held = []
        try:
            total = 0
            for k, part in enumerate(parts):
                data = ffi.from_buffer(part)
                held.append(data)
                cparts[k].data = data
                cparts[k].length = n = len(data)
                total += n
            if total > self.options.message_bytes_max:
                self.stats.frames_dropped += 1
                return False
            if self._message == 0xFFFFFFFF:
                self._new_session()
            self._message += 1
            sent = self._lib.bz_send_parts(self._ctx, link.index, self._message, cparts,
                                           n_parts, total)
        finally:
            for data in held:
                ffi.release(data)
        if sent < 0:
            self.stats.frames_dropped += 1
            return False
        stats = self.stats
        stats.frames_sent += 1
        stats.bytes_sent += total
        stats.bytes_copied_sending += total
        return True

    def link_up(self, peer: int) -> bool:
        """Whether the link to ``peer`` is up (as of the last link check, every
        MAINTAIN_S): ``send`` to a peer whose link is down returns False."""
        link = self._links.get(peer)
        return link is not None and link.up

    def send_raw(self, target: int, frame: bytes) -> bool:
        """Send one frame exactly as given to ``target``'s link (tests, diagnostics:
        see :func:`frames.frame`). False if the link is down or the frame too big."""
        link = self._links.get(target)
        if link is None or not link.up:
            return False
        return self._lib.bz_send_raw(self._ctx, link.index, frame, len(frame)) > 0

    # -- the poller (called by the loop's selector) -------------------------------------

    def flush(self) -> None:
        self._lib.bz_flush(self._ctx)

    def wait(self, epoll_fd: int, timeout_ns: int) -> int:
        return self._lib.bz_wait(self._ctx, epoll_fd, timeout_ns, self._policy)

    def receive(self) -> int:
        ffi, lib = self._ffi, self._lib
        n = lib.bz_poll(self._ctx, self._rx, RX_MAX, self._buf, len(self._view))
        if not n:
            return 0
        try:
            rx, links, sink, buffer = self._rx, self._by_index, self._sink, ffi.buffer
            for i in range(n):
                r = rx[i]
                if r.status:
                    self._refused(r)
                    continue
                reassembler = links[r.link].reassembler
                if r.count == 1:
                    if reassembler.single(r.session, r.message) and not (
                            sink is not None and r.length > self._head_bytes
                            and self._single_in_place(r, i)):
                        # one copy: out of the mbuf into ``bytes``
                        self._deliver(r.source, buffer(r.data, r.length)[:], 1)
                    continue
                message = r.message
                if not reassembler.fresh(r.session, message):
                    continue
                entry = reassembler.regions.get(message)
                if entry is not None:
                    self._region_fragment(reassembler, entry, r, i)
                    continue
                if (r.index == 0 and sink is not None and r.last
                        and r.length >= self._head_bytes and not reassembler.begun(message)
                        and self._open_region(reassembler, r, i)):
                    continue
                whole = reassembler.fragment(r.session, message, r.index, r.count,
                                             buffer(r.data, r.length)[:])
                if whole is not None:
                    # each fragment copied out of its mbuf, then joined
                    self._deliver(r.source, whole, 2)
        finally:
            lib.bz_release(self._ctx)  # the payloads' mbufs go back to the pool
        return n

    # -- receiving into the log (the region sink) ----------------------------------------

    def _reserve(self, source: int, head: bytes, length: int) -> memoryview | None:
        try:
            region = self._sink.reserve_region(source, head, length)
        except Exception:  # a confused sink must not stop the node
            log.exception("node %d: the region sink failed on a message from node %d",
                          self.node_id, source)
            return None
        if region is not None and len(region) != length:
            return None
        return region

    def _fill(self, region: memoryview, at: int, i: int, skip: int, n: int) -> bool:
        """Copy ``n`` payload bytes of the ``i``-th frame polled, from its byte
        ``skip``, out of its mbuf into ``region[at:]``; False if the sink gave
        the region up meanwhile (its view is released: the log was written)."""
        ffi = self._ffi
        try:
            dest = ffi.from_buffer(region)
        except ValueError:  # released
            return False
        try:
            self._lib.bz_rx_copy(self._rx + i, skip, dest + at, n)
        finally:
            ffi.release(dest)  # no export of the log's view outlives the copy
        self.stats.bytes_copied += n
        return True

    def _single_in_place(self, r: Any, i: int) -> bool:
        """A one-frame message: into the sink's region if it takes it there."""
        source = r.source
        if not self._sink.wants_regions(source):
            return False
        head_bytes = self._head_bytes
        head = self._ffi.buffer(r.data, head_bytes)[:]
        length = r.length - head_bytes
        region = self._reserve(source, head, length)
        if region is None:
            return False
        self._fill(region, 0, i, head_bytes, length)  # just reserved: not given up yet
        self.stats.frames_received += 1
        self.stats.bytes_received += r.length
        self._region_received(source, head, region)
        return True

    def _open_region(self, reassembler: Reassembler, r: Any, i: int) -> bool:
        """The first fragment of a message, none of which arrived before: if it
        is one the sink takes into its region, reserve the region (its length
        from the frame's ``last``) and copy the fragment there."""
        source = r.source
        per, last, count, head_bytes = r.length, r.last, r.count, self._head_bytes
        if last > per or not self._sink.wants_regions(source):
            return False
        length = (count - 1) * per + last - head_bytes
        if length <= 0:
            return False
        head = self._ffi.buffer(r.data, head_bytes)[:]
        region = self._reserve(source, head, length)
        if region is None:
            return False
        entry = RegionMessage(source, count, per, last, head, region)
        reassembler.open_region(r.message, entry)
        self._fill(region, 0, i, head_bytes, per - head_bytes)  # just reserved
        entry.got[0] = True
        entry.missing -= 1
        return True

    def _region_fragment(self, reassembler: Reassembler, entry: RegionMessage, r: Any,
                         i: int) -> None:
        """A later fragment of a message received into a region: copy it to its
        place; the last one hands the region to the sink."""
        index = r.index
        if not entry.fits(index, r.count, r.length):  # fragments that disagree: garbage
            reassembler.drop_region(r.message)
            return
        if entry.got[index]:
            reassembler.duplicates += 1
            return
        entry.got[index] = True
        entry.missing -= 1
        if not entry.lost and not self._fill(entry.region, entry.offset(index), i, 0, r.length):
            # The log gave the region up (another leader's entries, a
            # compaction): what it holds now must not be written over. The
            # message is lost; Raft sends its entries again.
            entry.lost = True
            entry.region = None
            self.stats.regions_lost += 1
        if entry.missing:
            return
        reassembler.close_region(r.message)
        if entry.lost:
            return
        stats = self.stats
        stats.frames_received += 1
        stats.bytes_received += len(entry.head) + len(entry.region)
        self._region_received(entry.source, entry.head, entry.region)

    def _region_received(self, source: int, head: bytes, region: memoryview) -> None:
        try:
            self._sink.region_received(source, head, region)
        except Exception:  # a bad message must not stop the node
            self.stats.bad_frames += 1
            log.exception("node %d: the region sink failed on a message from node %d",
                          self.node_id, source)

    def _deliver(self, source: int, payload: bytes, copies: int) -> None:
        stats = self.stats
        stats.frames_received += 1
        n = len(payload)
        stats.bytes_received += n
        if n > self._head_bytes:  # a message no longer than a MsgApp's head holds no entry
            stats.bytes_copied += copies * n
        receiver = self._receiver
        if receiver is None:
            return
        try:
            receiver(source, payload)
        except Exception:  # a bad message must not stop the node
            stats.bad_frames += 1
            log.exception("node %d: receiver failed on a message from node %d",
                          self.node_id, source)

    def _refused(self, r: Any) -> None:
        """Count a refused frame; log one line for it (at most REFUSAL_LINES_PER_S a second)."""
        self.stats.bad_frames += 1
        second, lines, suppressed = self._refusal_window
        now = time.monotonic()
        if now - second >= 1.0:
            if suppressed:
                log.warning("node %d: %d more refused frames in the last second(s), not logged",
                            self.node_id, suppressed)
            second, lines, suppressed = now, 0, 0
        if lines < REFUSAL_LINES_PER_S:
            link = self._by_index[r.link]
            log.warning("node %d refused a frame on the link to node %d: %s (claims source %d, "
                        "%d bytes)", self.node_id, link.peer,
                        frames.REASONS.get(r.status, f"reason {r.status}"), r.source, r.length)
            lines += 1
        else:
            suppressed += 1
        self._refusal_window = (second, lines, suppressed)

    # -- inspection ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The counters, the EAL's arguments, each link (kind, state, its own
        counters) and how the poller waited (spins, yields, sleeps, wake-ups)."""
        ffi, lib = self._ffi, self._lib
        out: dict[str, Any] = {"kind": "dpdk", **attrs.asdict(self.stats),
                               "eal": " ".join((eal.started() or ())[1:]), "links": {}}
        if self._ctx is None:
            return out
        counters = ffi.new("struct bz_link_counters *")
        for link in self._by_index:
            if link.removed:
                continue
            lib.bz_link_counters(self._ctx, link.index, counters)
            entry = {"kind": link.kind, "up": link.up, "device": link.name}
            entry.update({name: getattr(counters, name) for name in dir(counters)})
            entry["duplicates"] = link.reassembler.duplicates
            entry["evicted"] = link.reassembler.evicted
            out["links"][link.peer] = entry
        waits = ffi.new("struct bz_wait_counters *")
        lib.bz_wait_counters(self._ctx, waits)
        out["waits"] = {name: getattr(waits, name) for name in dir(waits)}
        return out


def _mtu(iface: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{iface}/mtu").read_text())
    except (OSError, ValueError):
        raise DpdkError(f"no network interface {iface!r} here (af_packet link)") from None
