"""TcpTransport on real loopback sockets: delivery, batching, bounds,
reconnects, and refusal of bad input (garbage, oversized frames, strangers,
other clusters, peers without the TLS certificate)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
from collections import defaultdict

import pytest

from blizzard.replication.transport.tcp import TcpTransport, tls_contexts


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cluster(n: int = 3, **kwargs) -> tuple[dict[int, TcpTransport], dict[int, list]]:
    ports = free_ports(n)
    peers = {i + 1: ("127.0.0.1", ports[i]) for i in range(n)}
    nodes = {i: TcpTransport(i, peers, seed=i, **kwargs) for i in peers}
    inbox: dict[int, list] = defaultdict(list)
    for i, t in nodes.items():
        t.set_receiver(lambda src, payload, i=i: inbox[i].append((src, payload)))
    return nodes, inbox


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_all_to_all_in_order():
    """Every frame arrives once, in order per sender (each written at once, or
    queued behind a write in progress and sharing the next one)."""
    async def main():
        nodes, inbox = cluster(3)
        for t in nodes.values():
            await t.start()
        count = 3000
        for i in range(count):
            for src, t in nodes.items():
                for dst in nodes:
                    if dst != src:
                        assert t.send(dst, f"{src}:{i}".encode())
        await until(lambda: all(len(inbox[d]) == 2 * count for d in nodes))
        for dst, got in inbox.items():
            for src in nodes:
                seq = [int(p.split(b":")[1]) for s, p in got if s == src]
                assert seq == (list(range(count)) if src != dst else [])
        stats = nodes[1].stats
        assert stats.frames_sent == 2 * count and stats.writes <= stats.frames_sent
        assert stats.bytes_copied_sending == 0  # no frame was given as parts
        for t in nodes.values():
            await t.stop()
    asyncio.run(main())


def test_outbox_is_bounded_and_drops_when_peer_is_down():
    async def main():
        nodes, _ = cluster(2, outbox_frames_max=100)
        await nodes[1].start()  # node 2 never starts
        accepted = sum(nodes[1].send(2, b"x" * 10) for _ in range(1000))
        assert accepted <= 100 and nodes[1].stats.frames_dropped >= 900
        assert not nodes[1].send(7, b"unknown peer")
        await nodes[1].stop()
    asyncio.run(main())


def test_reconnects_after_the_peer_restarts():
    async def main():
        nodes, inbox = cluster(2)
        for t in nodes.values():
            await t.start()
        nodes[1].send(2, b"before")
        await until(lambda: inbox[2] == [(1, b"before")])
        await nodes[2].stop()
        peers = {1: nodes[1]._addresses[1], 2: nodes[1]._addresses[2]}
        reborn = TcpTransport(2, peers)
        reborn.set_receiver(lambda src, p: inbox[2].append((src, p)))
        await reborn.start()

        async def resend():
            while (1, b"after") not in inbox[2]:
                nodes[1].send(2, b"after")  # Raft retries; the transport may drop meanwhile
                await asyncio.sleep(0.02)
        await asyncio.wait_for(resend(), 10)
        assert nodes[1].stats.connects >= 2
        await nodes[1].stop()
        await reborn.stop()
    asyncio.run(main())


def test_frames_given_as_parts_are_sent_from_the_parts():
    """A frame given as parts (views of memory the caller owns, as a leader's
    log) arrives as their concatenation; with the socket taking each frame
    whole, nothing is copied to send it."""
    async def main():
        nodes, inbox = cluster(2)
        for t in nodes.values():
            await t.start()
        memory = bytearray(random.Random(3).randbytes(1 << 16))
        view = memoryview(memory)
        expected = []
        await until(lambda: nodes[1]._peers[2].sock is not None)
        for i in range(200):
            start = (i * 331) % 60_000
            parts = [b"head%03d" % i, view[start:start + 1000], view[start + 3000:start + 3100]]
            assert nodes[1].send_parts(2, parts)
            expected.append(b"".join(parts))
            await asyncio.sleep(0)
        await until(lambda: len(inbox[2]) == 200)
        assert [p for _, p in inbox[2]] == expected
        stats = nodes[1].stats
        assert stats.bytes_copied_sending == 0 and stats.frames_sent == 200
        assert not nodes[1].send_parts(7, [b"unknown peer"])
        view.release()
        for t in nodes.values():
            await t.stop()
    asyncio.run(main())


def test_parts_the_socket_cannot_take_are_copied_before_send_parts_returns():
    """A listener that does not read fills the socket: frames given as parts
    are then written in part and the rest copied, or copied whole behind
    them, before ``send_parts`` returns -- overwriting the memory the parts
    showed right after changes nothing that arrives. The copies are counted,
    and frames queued behind a partial write share writes."""
    async def main():
        (port, listen) = free_ports(2)
        peers = {1: ("127.0.0.1", port), 2: ("127.0.0.1", listen)}
        reading = asyncio.Event()
        frames: list[bytes] = []

        async def accept(reader, writer):  # a listener that reads only when told
            hello = await reader.readexactly(14)
            await reader.readexactly(hello[13])
            writer.write(b"\0")
            await reading.wait()
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    (n,) = struct.unpack("<I", await reader.readexactly(4))
                    frames.append(await reader.readexactly(n))

        server = await asyncio.start_server(accept, *peers[2])
        sender = TcpTransport(1, peers, seed=1)
        await sender.start()
        try:
            await until(lambda: sender._peers[2].sock is not None)
            rng = random.Random(5)
            memory = bytearray(256 << 10)
            view = memoryview(memory)
            expected = []
            for i in range(96):  # 24 MiB: far more than the socket buffers hold
                memory[:] = rng.randbytes(len(memory))
                parts = [b"frame%02d" % i, view[:100_000], view[150_000:]]
                assert sender.send_parts(2, parts)
                expected.append(b"".join(parts))
                memory[:] = bytes(len(memory))  # the caller reuses its memory at once
            stats = sender.stats
            assert stats.bytes_copied_sending > 0  # the socket was full: copies were made
            assert stats.bytes_copied_sending <= sum(map(len, expected))
            reading.set()
            await until(lambda: len(frames) == len(expected), timeout=60)
            assert frames == expected
            assert stats.writes < stats.frames_sent
            view.release()
        finally:
            await sender.stop()
            server.close()
    asyncio.run(main())


async def _raw(port: int, data: bytes, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = b""
    if read:
        with contextlib.suppress(TimeoutError):
            reply = await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    return reply


def _hello(node: int, cluster: bytes = b"blizzard") -> bytes:
    return struct.pack("<4sBQB", b"BLZT", 1, node, len(cluster)) + cluster


def test_bad_input_is_refused_and_the_node_keeps_serving(caplog):
    """Garbage, strangers, other clusters, oversized and truncated frames."""
    caplog.set_level(logging.WARNING, "blizzard.transport.tcp")

    async def main():
        nodes, inbox = cluster(2, frame_bytes_max=1024)
        for t in nodes.values():
            await t.start()
        port = nodes[2].address[1]
        assert await _raw(port, b"GET / HTTP/1.1\r\n\r\n" * 3) == b"\x01"
        assert await _raw(port, _hello(9)) == b"\x02"
        assert await _raw(port, _hello(1, b"other-cluster")) == b"\x03"
        # valid handshake, then a frame over the limit: connection dropped
        await _raw(port, _hello(1) + struct.pack("<I", 1 << 30) + b"x" * 10)
        # valid handshake, then a truncated frame and a hang-up
        await _raw(port, _hello(1) + struct.pack("<I", 100) + b"short", read=False)
        nodes[1].send(2, b"still alive")
        await until(lambda: (1, b"still alive") in inbox[2])
        assert nodes[2].stats.refused == 3 and nodes[2].stats.bad_frames == 1
        for t in nodes.values():
            await t.stop()
    asyncio.run(main())
    text = caplog.text
    assert "bad handshake" in text and "unknown node id 9" in text
    assert "belongs to cluster 'other-cluster'" in text and "exceeds the 1024-byte limit" in text


def test_a_receiver_error_does_not_kill_the_connection(caplog):
    async def main():
        nodes, _ = cluster(2)
        calls = []

        def receiver(src, payload):
            calls.append(payload)
            if payload == b"boom":
                raise ValueError("malformed message")
        nodes[2].set_receiver(receiver)
        for t in nodes.values():
            await t.start()
        nodes[1].send(2, b"boom")
        nodes[1].send(2, b"fine")
        await until(lambda: b"fine" in calls)
        assert nodes[2].stats.bad_frames == 1
        for t in nodes.values():
            await t.stop()
    asyncio.run(main())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The cluster's CA with node certificates node-1..node-3 and a client's; a
    stranger CA with its own node-1."""
    from blizzard.cluster import certs

    d = tmp_path_factory.mktemp("pki")
    certs.create(d / "ca", 3)
    certs.create(d / "evil", 1)
    return d


def _contexts(pki, name: str, ca: str = "ca"):
    return tls_contexts(ca_file=str(pki / "ca" / "ca.pem"), cert_file=str(pki / ca / f"{name}.pem"),
                        key_file=str(pki / ca / f"{name}.key"))


async def _speak_as(port: int, context, node: int) -> bytes:
    """The handshake's reply to a peer saying it is ``node`` over TLS with ``context``;
    b"" if the TLS handshake itself failed."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        w.write(_hello(node))
        await w.drain()
        reply = await asyncio.wait_for(r.read(1), 5)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return b""
    w.close()
    return reply


def test_mutual_tls(pki, caplog):
    """Nodes with their own certificates talk; a peer without a certificate, with
    one from another CA, with a client's certificate, or with another node's
    than the id it claims, is refused with one line, and the node keeps serving."""
    caplog.set_level(logging.WARNING, "blizzard.transport.tcp")
    contexts = {i: _contexts(pki, f"node{i}") for i in (1, 2)}

    async def main():
        ports = free_ports(2)
        peers = {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}
        inbox: dict[int, list] = defaultdict(list)
        nodes = {}
        for i in (1, 2):
            nodes[i] = TcpTransport(i, peers, seed=i, server_ssl=contexts[i][0],
                                    client_ssl=contexts[i][1])
            nodes[i].set_receiver(lambda src, payload, i=i: inbox[i].append((src, payload)))
            await nodes[i].start()
        nodes[1].send(2, b"secret")
        await until(lambda: inbox[2] == [(1, b"secret")])
        port = nodes[2].address[1]
        bare = ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem"))
        bare.check_hostname = False
        assert await _speak_as(port, bare, 1) == b""  # no certificate
        assert await _speak_as(port, _contexts(pki, "node1", "evil")[1], 1) == b""  # other CA
        # a certificate of this CA, but not node 1's
        assert await _speak_as(port, _contexts(pki, "client-rw")[1], 1) == b"\x04"
        assert await _speak_as(port, _contexts(pki, "node3")[1], 1) == b"\x04"
        assert await _speak_as(port, contexts[1][1], 1) == b"\0"  # node 1 itself
        # plain TCP to a TLS port is refused too
        assert await _raw(port, _hello(1)) == b""
        nodes[1].send(2, b"still up")
        await until(lambda: (1, b"still up") in inbox[2])
        assert nodes[2].stats.refused == 5
        for t in nodes.values():
            await t.stop()
    asyncio.run(main())
    text = caplog.text
    assert text.count("TLS handshake failed") == 3
    assert "claims to be node 1 with the certificate of 'client-rw'" in text
    assert "claims to be node 1 with the certificate of 'node-3'" in text


def test_a_dialler_refuses_a_listener_with_another_nodes_certificate(pki, caplog):
    """Node 1 dialling node 2 finds node 3's certificate there: it sends nothing."""
    caplog.set_level(logging.WARNING, "blizzard.transport.tcp")

    async def main():
        ports = free_ports(2)
        peers = {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}
        inbox: dict[int, list] = defaultdict(list)
        one = TcpTransport(1, peers, server_ssl=_contexts(pki, "node1")[0],
                           client_ssl=_contexts(pki, "node1")[1])
        impostor = TcpTransport(2, peers, server_ssl=_contexts(pki, "node3")[0],
                                client_ssl=_contexts(pki, "node3")[1])
        impostor.set_receiver(lambda src, payload: inbox[2].append(payload))
        for t in (one, impostor):
            await t.start()
        one.send(2, b"for node 2 only")
        await until(lambda: "presents the certificate of 'node-3', not 'node-2'" in caplog.text)
        await asyncio.sleep(0.1)
        assert inbox[2] == [] and one.stats.connects == 0
        for t in (one, impostor):
            await t.stop()
    asyncio.run(main())


class _Regions:
    """A region sink that lends a buffer of its own for every long frame (the
    node lends its Raft log: tests/replication/test_receive_into_log.py)."""

    head_bytes = 54

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.frames: list[bytes] = []

    def wants_regions(self, source: int) -> bool:
        return self.wanted

    def reserve_region(self, source: int, head: bytes, length: int) -> memoryview | None:
        return memoryview(bytearray(length)) if head[0] != 0xFF else None

    def region_received(self, source: int, head: bytes, region: memoryview) -> None:
        self.frames.append(head + bytes(region))


@pytest.mark.parametrize("wanted", [True, False], ids=["regions", "bursts"])
def test_frames_cut_anywhere_arrive_whole(wanted):
    """Frames of every size (empty to longer than one read), written in chunks
    cut at random, each arrive once and whole: through regions (or, refused one,
    as bytes) while the sink wants them, as bytes from bursts otherwise."""
    import random

    from blizzard.replication.transport import tcp

    rng = random.Random(7)
    sizes = [0, 1, 53, 54, 55, 64, 65, 200, 4096, tcp.READ_BYTES + 3, 9]
    frames = [bytes([0xFF if i % 3 == 0 else 1]) + rng.randbytes(max(n - 1, 0))
              if n else b"" for i, n in enumerate(sizes * 3)]

    async def main():
        (port,) = free_ports(1)
        node = TcpTransport(1, {1: ("127.0.0.1", port), 2: ("127.0.0.1", 1)}, seed=1)
        got: list[bytes] = []
        sink = _Regions(wanted)
        node.set_receiver(lambda src, payload: got.append(payload))
        node.set_region_sink(sink)
        await node.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack("<4sBQB", b"BLZT", 1, 2, 8) + b"blizzard")
            assert await reader.readexactly(1) == b"\0"
            stream = b"".join(struct.pack("<I", len(f)) + f for f in frames)
            pos = 0
            while pos < len(stream):
                step = rng.choice([1, 3, 60, 1000, 70_000])
                writer.write(stream[pos:pos + step])
                await writer.drain()
                pos += step
                if rng.random() < 0.1:
                    await asyncio.sleep(0.001)
            await until(lambda: len(got) + len(sink.frames) == len(frames))
            writer.close()
        finally:
            await node.stop()
        if wanted:
            long_ok = [f for f in frames if len(f) > sink.head_bytes and f[0] != 0xFF]
            assert sink.frames == long_ok
            assert got == [f for f in frames if f not in long_ok]
        else:
            assert sink.frames == [] and got == frames

    asyncio.run(main())
