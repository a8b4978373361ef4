"""One end of ``blizzard bench frames``: a DPDK and a TCP transport, and ping-pong.

``python -m blizzard.bench._frames_node SPEC`` (JSON: node, nodes, run_dir,
cluster_id, tcp addresses) starts both transports on one polling event loop
and answers JSON lines (the protocol of :mod:`._cluster_node`):

``ping MODE N SIZE``   N round trips of a SIZE-byte message to the other end,
                       one after another; returns p50/p99/mean in microseconds
                       and the CPU seconds this process used;
``echo MODE N``        send back each message that arrives, N of them (or
                       until nothing came for a few seconds); returns CPU seconds;
``quit``.

MODE is how a message travels:

``floor``      the least Python can do over memif: one cffi call copies the
               bytes into an mbuf and bursts it, one takes a burst of one and
               copies it out; busy polling; no header, no checksum;
``frame``      Blizzard frames through the C helper (header, CRC32C,
               fragmentation, validation): ``bz_send`` / ``bz_poll``, busy polling;
``dpdk``       the DPDK transport as a Raft node uses it: ``send`` and the
               receiver callback, on the asyncio loop that polls, with its
               adaptive spin / yield / sleep;
``tcp``        the TCP transport the same way (asyncio streams on loopback).

``floor`` and ``frame`` run inside one callback of the loop: the loop (and the
transport's own polling) is paused meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

ECHO_IDLE_S = 5.0
ECHO_TAIL_NS = 200_000_000  # after the count: pings sent again may still come
RESEND_NS = 20_000_000  # a busy-polling ping lost (the echo loop was not running yet)
GIVE_UP_NS = 10_000_000_000
PING, REPLY = b"P", b"R"
C_SESSION = 0xB0B


class FramesNode:
    def __init__(self, spec: dict[str, Any]) -> None:
        from blizzard.replication.transport.dpdk import DpdkTransport
        from blizzard.replication.transport.dpdk.options import DpdkOptions
        from blizzard.replication.transport.tcp import TcpTransport

        self.node = spec["node"]
        self.peer = next(n for n in spec["nodes"] if n != self.node)
        self.dpdk = DpdkTransport(self.node, spec["nodes"], run_dir=spec["run_dir"],
                                  cluster_id=spec["cluster_id"], options=DpdkOptions())
        self.tcp = TcpTransport(self.node, {int(k): tuple(v) for k, v in spec["tcp"].items()},
                                cluster_id=spec["cluster_id"])
        self.loop = self.dpdk.new_event_loop()
        self.inbox: asyncio.Queue | None = None

    # -- set-up -----------------------------------------------------------------------

    async def start(self) -> None:
        self.inbox = asyncio.Queue()
        for transport in (self.dpdk, self.tcp):
            transport.set_receiver(self._receiver(transport))
            await transport.start()

    async def _linked(self) -> None:
        """Until the memif link is up (the other end starts after this one)."""
        deadline = time.monotonic() + 30
        while not all(link["up"] for link in self.dpdk.status()["links"].values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the memif link did not come up")
            await asyncio.sleep(0.01)

    def _receiver(self, transport):
        """Pings are answered at once, whatever command runs; replies go to the inbox."""
        def receive(source: int, payload: bytes) -> None:
            if payload[:1] == PING:
                transport.send(source, REPLY + payload[1:])
            else:
                self.inbox.put_nowait(payload)
        return receive

    # -- the modes ----------------------------------------------------------------------

    def _c_round_trips(self, mode: str, n: int, size: int) -> tuple[list[int], int]:
        """Busy-polling round trips; a ping unanswered for RESEND_NS is sent again
        (the other end's echo loop may start a moment after ours)."""
        lib, ctx = self.dpdk._lib, self.dpdk._ctx
        link = self.dpdk._links[self.peer].index
        payload = PING + bytes(size - 1)
        rx, buf = self.dpdk._rx, self.dpdk._buf
        cap = len(self.dpdk._view)
        clock = time.perf_counter_ns
        floor = mode == "floor"
        samples, resent = [], 0
        for i in range(n):
            t = sent = clock()
            if floor:
                lib.bz_floor_send(ctx, link, payload, size)
                while not lib.bz_floor_recv(ctx, link, buf, cap):
                    if clock() - sent > RESEND_NS:
                        self._give_up(t)
                        lib.bz_floor_send(ctx, link, payload, size)
                        sent, resent = clock(), resent + 1
            else:
                lib.bz_send(ctx, link, i + 1, payload, size)
                while not lib.bz_poll(ctx, rx, 1, buf, cap):
                    if clock() - sent > RESEND_NS:
                        self._give_up(t)
                        lib.bz_send(ctx, link, i + 1, payload, size)
                        sent, resent = clock(), resent + 1
            samples.append(clock() - t)
        return samples, resent

    @staticmethod
    def _give_up(since_ns: int) -> None:
        if time.perf_counter_ns() - since_ns > GIVE_UP_NS:
            raise TimeoutError(f"no answer for {GIVE_UP_NS / 1e9:.0f} s (is the other end up?)")

    def _c_echo(self, mode: str, n: int) -> None:
        lib, ctx = self.dpdk._lib, self.dpdk._ctx
        link = self.dpdk._links[self.peer].index
        rx, buf = self.dpdk._rx, self.dpdk._buf
        cap = len(self.dpdk._view)
        payload_of = self.dpdk._ffi.buffer
        idle_ns = int(ECHO_IDLE_S * 1e9)
        clock = time.perf_counter_ns
        done, last = 0, clock()
        while clock() - last < (idle_ns if done < n else ECHO_TAIL_NS):
            if mode == "floor":
                got = lib.bz_floor_recv(ctx, link, buf, cap)
                if got:
                    buf[0] = REPLY[0]
                    lib.bz_floor_send(ctx, link, buf, got)
            else:
                got = lib.bz_poll(ctx, rx, 1, buf, cap)
                if got:
                    r = rx[0]
                    # the payload where it lies in its mbuf, copied once
                    reply = REPLY + payload_of(r.data + 1, r.length - 1)[:]
                    lib.bz_send(ctx, link, done + 1, reply, r.length)
            if got:
                done += 1
                last = clock()

    async def _async_round_trips(self, mode: str, n: int, size: int) -> tuple[list[int], int]:
        transport = self.dpdk if mode == "dpdk" else self.tcp
        payload = PING + bytes(size - 1)
        clock = time.perf_counter_ns
        samples, resent = [], 0
        for _ in range(n):
            t = clock()
            transport.send(self.peer, payload)
            while True:
                try:
                    await asyncio.wait_for(self.inbox.get(), RESEND_NS / 1e9 * 50)
                    break
                except TimeoutError:
                    self._give_up(t)
                    transport.send(self.peer, payload)
                    resent += 1
            samples.append(clock() - t)
        return samples, resent

    async def _async_echo(self, mode: str, n: int) -> None:
        """The receiver answers pings by itself: wait until n were answered."""
        transport = self.dpdk if mode == "dpdk" else self.tcp
        start = transport.stats.frames_received
        last, last_count = time.monotonic(), start
        while transport.stats.frames_received - start < n:
            await asyncio.sleep(0.05)
            count = transport.stats.frames_received
            if count != last_count:
                last, last_count = time.monotonic(), count
            elif time.monotonic() - last > ECHO_IDLE_S:
                break

    # -- commands -----------------------------------------------------------------------

    def _c_session(self, on: bool) -> None:
        """Frames sent from C directly carry a session of their own: their ids
        must not look, to the transport's reassembler, like its own later messages."""
        self.dpdk._lib.bz_set_session(self.dpdk._ctx, C_SESSION if on else self.dpdk._session)

    async def ping(self, mode: str, n: str, size: str) -> dict[str, Any]:
        from blizzard.bench._cluster_node import summarize

        await self._linked()
        cpu = time.process_time()
        if mode in ("floor", "frame"):
            self._c_session(True)
            try:
                samples, resent = self._c_round_trips(mode, int(n), int(size))
            finally:
                self._c_session(False)
        else:
            samples, resent = await self._async_round_trips(mode, int(n), int(size))
        return {**summarize(samples), "cpu_seconds": time.process_time() - cpu, "resent": resent}

    async def echo(self, mode: str, n: str) -> dict[str, Any]:
        await self._linked()
        cpu = time.process_time()
        if mode in ("floor", "frame"):
            self._c_session(True)
            try:
                self._c_echo(mode, int(n))
            finally:
                self._c_session(False)
        else:
            await self._async_echo(mode, int(n))
        return {"cpu_seconds": time.process_time() - cpu}

    def run(self) -> int:
        from blizzard.bench._cluster_node import serve

        started = threading.Event()
        failure: list[BaseException] = []

        def loop_thread() -> None:
            try:
                self.loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.dpdk.stop())
            self.loop.run_until_complete(self.tcp.stop())

        thread = threading.Thread(target=loop_thread, daemon=True, name="frames-loop")
        thread.start()
        started.wait()
        if failure:
            raise failure[0]

        def on_loop(coro) -> dict[str, Any]:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

        def quit_() -> None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(30)

        handlers = {"ping": lambda *a: on_loop(self.ping(*a)),
                    "echo": lambda *a: on_loop(self.echo(*a)), "quit": quit_}
        return serve(handlers, {"node": self.node})


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    return FramesNode(json.loads(argv[0])).run()


if __name__ == "__main__":
    sys.exit(main())
