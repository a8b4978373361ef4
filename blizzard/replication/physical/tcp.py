"""Mirror channels over TCP: blocking sockets, length-prefixed messages.

Wire: ``length u32 | message``, little endian. TCP is ordered and reliable,
which is what a :class:`~blizzard.replication.physical.channel.Channel`
promises; a reset, an EOF or an oversized length breaks the channel for
good. Sockets are blocking with ``TCP_NODELAY``: a fence is one ``sendall``
per backup and its acknowledgement one small read, from the thread that
fenced (no hand-off to another thread, which costs more than the round trip
on a busy two-core machine).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from blizzard.exceptions import ChannelClosedError
from blizzard.replication.physical.channel import Channel, ChannelStats

log = logging.getLogger("blizzard.mirror.tcp")

_LEN = struct.Struct("<I")
#: A message longer than this breaks the channel (a batch part is at most
#: ``frames.BATCH_BYTES_MAX`` plus headers; a resync block 64 KiB).
MESSAGE_BYTES_MAX = 64 << 20
_RECV_BYTES = 256 << 10
_LARGE = 64 << 10  # messages from this size on are received into their own buffer
#: How long :meth:`TcpListener.close` waits for its handler threads to end
#: (their sockets are shut down first, so they end as soon as they next read).
CLOSE_JOIN_S = 10.0


class TcpChannel:
    """A :class:`Channel` over one connected TCP socket."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self.sock = sock
        self.peer = peer
        self.stats = ChannelStats()
        self._buf = bytearray()
        self._pos = 0
        self._broken: str | None = None
        self._timeout: float | None = None

    # -- sending ----------------------------------------------------------------------------

    def send(self, *parts: bytes | memoryview) -> None:
        if self._broken is not None:
            raise ChannelClosedError(f"{self.peer}: {self._broken}")
        n = sum(len(p) for p in parts)
        if n > MESSAGE_BYTES_MAX:
            raise ValueError(f"message of {n} bytes exceeds {MESSAGE_BYTES_MAX}")
        data = b"".join((_LEN.pack(n), *parts))
        self._set_timeout(None)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self._break(f"send failed: {exc}")
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    # -- receiving ---------------------------------------------------------------------------

    def _set_timeout(self, timeout_s: float | None) -> None:
        if timeout_s != self._timeout:
            self.sock.settimeout(timeout_s)
            self._timeout = timeout_s

    def _buffered(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        n = _LEN.unpack_from(buf, pos)[0]
        if n > MESSAGE_BYTES_MAX:
            self._break(f"message of {n} bytes exceeds {MESSAGE_BYTES_MAX}")
        if len(buf) - pos - 4 < n:
            return None
        message = bytes(buf[pos + 4:pos + 4 + n])
        self._pos = pos + 4 + n
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        elif self._pos > _RECV_BYTES:
            del buf[:self._pos]
            self._pos = 0
        self.stats.messages_received += 1
        self.stats.bytes_received += 4 + n
        return message

    def ready(self) -> bool:
        if self._broken is not None:
            return True
        buf, pos = self._buf, self._pos
        return len(buf) - pos >= 4 and len(buf) - pos - 4 >= _LEN.unpack_from(buf, pos)[0]

    def receive(self, timeout_s: float | None) -> bytes | memoryview | None:
        if self._broken is not None:
            raise ChannelClosedError(f"{self.peer}: {self._broken}")
        message = self._buffered()
        if message is not None:
            return message
        self._set_timeout(timeout_s)
        while True:
            if len(self._buf) - self._pos >= 4:
                n = _LEN.unpack_from(self._buf, self._pos)[0]
                if n >= _LARGE and n <= MESSAGE_BYTES_MAX:
                    return self._receive_large(n)
            try:
                data = self.sock.recv(_RECV_BYTES)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError as exc:
                self._break(f"receive failed: {exc}")
            if not data:
                self._break("closed by the peer")
            self._buf += data
            message = self._buffered()
            if message is not None:
                return message

    def _receive_large(self, n: int) -> memoryview:
        """A big message straight into a buffer of its own (one copy, not two)."""
        out = bytearray(n)
        view = memoryview(out)
        have = min(n, len(self._buf) - self._pos - 4)
        view[:have] = self._buf[self._pos + 4:self._pos + 4 + have]
        self._buf.clear()
        self._pos = 0
        self._set_timeout(None)  # the message has begun: the rest follows
        while have < n:
            try:
                got = self.sock.recv_into(view[have:], n - have)
            except OSError as exc:
                self._break(f"receive failed: {exc}")
            if not got:
                self._break("closed by the peer mid-message")
            have += got
        self.stats.messages_received += 1
        self.stats.bytes_received += 4 + n
        return view

    def _break(self, why: str) -> None:
        self._broken = why
        with contextlib.suppress(OSError):
            self.sock.close()
        raise ChannelClosedError(f"{self.peer}: {why}")

    def close(self) -> None:
        if self._broken is None:
            self._broken = "closed"
        with contextlib.suppress(OSError):
            self.sock.close()

    def __repr__(self) -> str:
        return f"<TcpChannel {self.peer}{' broken' if self._broken else ''}>"


class TcpListener:
    """Accepts connections on a thread; one handler thread per channel.

    :meth:`close` returns once those threads have ended (or after
    ``CLOSE_JOIN_S``, with a warning): the owner may then release what the
    handlers use (a backup's pool), and no handler is left to log after the
    program thinks the listener gone (at interpreter exit, say, when logging
    is shut down).
    """

    def __init__(self, address: tuple[str, int], on_channel: Callable[[Channel], None]) -> None:
        self._sock = socket.create_server(address, reuse_port=False)
        self.address = self._sock.getsockname()[:2]
        self._on_channel = on_channel
        self._closed = False
        self._channels: set[TcpChannel] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"mirror-listen-{self.address[1]}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, addr = self._sock.accept()
            except OSError:
                return
            channel = TcpChannel(sock, f"{addr[0]}:{addr[1]}")
            thread = threading.Thread(target=self._run, args=(channel,), daemon=True,
                                      name=f"mirror-conn-{addr[1]}")
            with self._lock:
                if self._closed:  # accepted while closing: close() no longer sees it
                    channel.close()
                    return
                self._channels.add(channel)
                self._threads.add(thread)
            thread.start()

    def _run(self, channel: TcpChannel) -> None:
        try:
            self._on_channel(channel)
        except ChannelClosedError as exc:
            if self._closed:  # close() broke it: expected, not news
                log.debug("channel from %s closed with the listener: %s", channel.peer, exc)
            else:
                log.info("channel from %s closed: %s", channel.peer, exc)
        except Exception:
            log.exception("channel from %s failed", channel.peer)
        finally:
            channel.close()
            with self._lock:
                self._channels.discard(channel)
                self._threads.discard(threading.current_thread())

    def close(self) -> None:
        """Stop accepting, break every channel, and wait for the handler threads."""
        with self._lock:
            self._closed = True
            channels = list(self._channels)
            threads = [*self._threads, self._thread]
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()
        for channel in channels:
            with contextlib.suppress(OSError):
                channel.sock.shutdown(socket.SHUT_RDWR)
            channel.close()
        deadline = time.monotonic() + CLOSE_JOIN_S
        for thread in threads:
            if thread is not threading.current_thread():  # closed by one of its handlers
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive() and t is not threading.current_thread()]
        if stuck:
            log.warning("listener on port %d closed; threads still running after %.0f s: %s",
                        self.address[1], CLOSE_JOIN_S, ", ".join(stuck))


class TcpMirrorTransport:
    """The :class:`MirrorTransport` over TCP."""

    def connect(self, address: tuple[str, int], timeout_s: float) -> TcpChannel:
        sock = socket.create_connection(address, timeout=timeout_s)
        return TcpChannel(sock, f"{address[0]}:{address[1]}")

    def listen(self, address: tuple[str, int],
               on_channel: Callable[[Channel], None]) -> TcpListener:
        return TcpListener(address, on_channel)

    def wait(self, channels: Sequence[Channel], timeout_s: float) -> list[Channel]:
        ready = [c for c in channels if c.ready()]
        if ready or not channels:
            return ready
        with selectors.DefaultSelector() as sel:
            for c in channels:
                try:
                    sel.register(c.sock, selectors.EVENT_READ, c)  # type: ignore[attr-defined]
                except (ValueError, OSError):  # closed socket: reading it raises at once
                    return [c]
            return [key.data for key, _ in sel.select(timeout_s)]
