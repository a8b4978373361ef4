"""Free ports for local clusters (``cluster up``, the demo, benchmarks, tests)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

BLOCK_TRIES_MAX = 100


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_block(n: int, host: str = "127.0.0.1") -> int:
    """A base port with ``n`` consecutive free ports from it.

    Chosen *below* the kernel's ephemeral range: a node restarted on its
    ports must not find one taken meanwhile by some outgoing connection.
    Best effort: another process may still bind one before the cluster does.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(BLOCK_TRIES_MAX):
        base = rng.randrange(10_000, max(10_001, low - n))
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise OSError(f"no block of {n} free ports on {host}")
