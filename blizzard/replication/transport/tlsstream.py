"""The server side of TLS over an asyncio stream, driven through memory BIOs.

Why not ``StreamWriter.start_tls``: when asyncio's handshake fails (no
client certificate, one from another CA, an expired one) it closes the
connection *without sending the TLS alert* OpenSSL prepared, so the client
only sees the connection drop and cannot tell a refusal from a crash -- it
would retry, elsewhere and again, until its deadline. Here the alert is
written and flushed first, and the connection is closed only after the
client had a moment to read it and hang up (a close with unread input
would send a reset, which may overtake the alert). The client then raises
the alert's reason ("certificate required", "unknown ca", "certificate
expired") at once.

After the handshake, :class:`ServerTlsStream` offers what the client
server uses of a ``StreamReader``/``StreamWriter`` pair: ``readexactly``,
``write``, ``drain``, ``is_closing``, ``close``, ``get_extra_info``
(``peercert``, ``peername``, ``ssl_object``) and ``transport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from blizzard.exceptions import NotTlsError

READ_BYTES = 1 << 16
HANDSHAKE_RECORD = 0x16  # the first byte of any TLS ClientHello
LINGER_S = 2.0  # how long a refused peer is given to read the alert and close


class ServerTlsStream:
    """TLS (server side) over ``reader``/``writer``; call :meth:`handshake` first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 context: ssl.SSLContext) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._plain = bytearray()
        self.transport = writer.transport

    async def handshake(self, timeout_s: float) -> None:
        """Complete the handshake; on failure send the alert, linger, and raise."""
        try:
            await asyncio.wait_for(self._handshake(), timeout_s)
        except ssl.SSLError:
            self._flush()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._linger(), LINGER_S)
            raise

    async def _handshake(self) -> None:
        first = True
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                data = await self._fill("during the TLS handshake")
                if first and data[0] != HANDSHAKE_RECORD:
                    raise NotTlsError("the peer does not speak TLS") from None
                first = False
                continue
            self._flush()  # the last handshake bytes (and TLS 1.3 session tickets)
            return

    async def _linger(self) -> None:
        """Stop writing, then wait for the peer to close (discarding what it sends)."""
        await self._writer.drain()
        if self._writer.can_write_eof():
            self._writer.write_eof()
        while await self._reader.read(READ_BYTES):
            pass

    async def _fill(self, when: str) -> bytes:
        data = await self._reader.read(READ_BYTES)
        if not data:
            raise ConnectionResetError(f"the peer closed the connection {when}")
        self._incoming.write(data)
        return data

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` plaintext bytes; ``IncompleteReadError`` if the peer ends first."""
        plain = self._plain
        while len(plain) < n:
            try:
                chunk = self._tls.read(max(READ_BYTES, n - len(plain)))
            except ssl.SSLWantReadError:
                self._flush()  # post-handshake messages (key updates) may want answers
                try:
                    await self._fill("mid-stream")
                except ConnectionResetError:
                    raise asyncio.IncompleteReadError(bytes(plain), n) from None
                continue
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                raise asyncio.IncompleteReadError(bytes(plain), n) from None
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(plain), n)
            plain += chunk
        data = bytes(plain[:n])
        del plain[:n]
        return data

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._tls.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._writer.drain()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        if not self._writer.is_closing():
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            self._flush()
        self._writer.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peercert":
            return self._tls.getpeercert()
        if name == "ssl_object":
            return self._tls
        return self._writer.get_extra_info(name, default)
