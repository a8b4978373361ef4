"""The load generator for the etcd reference rows of ``blizzard bench report``.

``python -m blizzard.bench._etcd_node HOST:PORT`` puts keys into the etcd
member at HOST:PORT (the leader: etcd forwards writes there anyway) through
etcd's v3 JSON gateway (``POST /v3/kv/put``, keys and values base64), and
answers the JSON loop of :mod:`._cluster_node`:

``load N WINDOW PREFIX STALL VBYTES SECONDS``  up to N puts with WINDOW in
                          flight (WINDOW client threads, one keep-alive HTTP
                          connection each), for at most SECONDS; with the
                          latency of every request;
``quit``

This is a Python client over HTTP/1.1 and JSON: its own CPU (reported as the
load's process) is part of what a Python application would pay to use etcd.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from blizzard.bench._cluster_node import make_key, serve, summarize, windowed

TIMEOUT_S = 10.0


def _put_body(key: bytes, value: bytes) -> bytes:
    return json.dumps({"key": base64.b64encode(key).decode(),
                       "value": base64.b64encode(value).decode()}).encode()


def load(host: str, port: int, n: str, window: str, prefix: str, stall_s: str, vbytes: str,
         seconds: str) -> dict[str, Any]:
    count, clients = int(n), int(window)
    value = bytes(i & 0xFF for i in range(int(vbytes)))
    bodies = [_put_body(make_key(prefix, i), value) for i in range(count)]
    work: queue.SimpleQueue = queue.SimpleQueue()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        while (item := work.get()) is not None:
            i, done = item
            try:
                conn.request("POST", "/v3/kv/put", bodies[i],
                             {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                done(None if reply.status == 200 else f"HTTP {reply.status}")
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
                done(exc)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()

    def start(i: int, done: Callable[[Any], None]) -> None:
        work.put((i, done))

    samples: list[int] = []
    cpu = time.process_time()
    result = windowed(count, clients, start, float(stall_s), max_seconds=float(seconds),
                      latencies=samples)
    result["cpu_seconds"] = time.process_time() - cpu
    result["latency"] = summarize(samples)
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join(TIMEOUT_S)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m blizzard.bench._etcd_node HOST:PORT", file=sys.stderr)
        return 2
    host, port = argv[0].rsplit(":", 1)
    handlers = {"load": lambda *a: load(host, int(port), *a), "quit": lambda: None}
    return serve(handlers, {"system": "etcd", "member": argv[0]})


if __name__ == "__main__":
    sys.exit(main())
