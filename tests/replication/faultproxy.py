"""A fault-injecting TCP proxy for one direction of one link.

Node A dials node B through ``LinkProxy(A -> B)``: the proxy forwards bytes
both ways and can *cut* the link (close its connections and refuse new ones,
a partition), *delay* it (every chunk waits ``delay_s``, a slow link) or
*hold* it (stop reading: the sender's socket fills, a stalled receiver).
Cutting only A -> B, not B -> A, gives an asymmetric partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class LinkProxy:
    """``target`` may be set after the proxy starts (a node listening on a port
    the kernel picked); until then the proxy refuses, like a cut link."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.cut = False
        self.delay_s = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def hold(self, held: bool) -> None:
        """Stop (or resume) reading what the dialler sends."""
        if held:
            self._flowing.clear()
            for writer in self._writers:  # small buffers: the sender's fill soon
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        else:
            self._flowing.set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        self.set_cut(True)
        self._server.close()

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in list(self._writers):
                writer.close()

    async def _accept(self, reader, writer) -> None:
        if self.cut or self.target is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(self, reader, writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not self.cut:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data or self.cut:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        writer.close()
