"""One Blizzard Raft node for ``blizzard bench cluster``: a JSON command loop.

``python -m blizzard.bench._cluster_node CONFIG NODE_ID`` makes this process
one node of the cluster (a :class:`RaftReplicator`), prints ``{"ready": ...}``
and then answers one JSON line on stdout per command line on stdin:

``status``                the node's Raft status (role, leader, indexes);
``load N WINDOW PREFIX [STALL]``  N puts of 16-byte keys (``PREFIX`` + a
                          counter) and 64-byte values (``BLIZZARD_BENCH_VALUE_BYTES``
                          in the environment sets another size), through ``submit_callback``
                          with at most WINDOW requests in flight; returns ops
                          and seconds (stops if nothing completes for STALL s);
``latency N PREFIX [S]``  N synchronous puts one after another (at most S
                          seconds); returns p50/p99/mean in microseconds;
``count``                 read barrier, then the map's length;
``profile_start``         cProfile on the calling thread and the Raft loop's;
``profile_stop PATH``     stop it, dump the merged stats to PATH;
``quit``                  leave the cluster and exit.

The load generator runs here, in the node's own process: this is the
embedded use, where the application lives beside its replica. Nothing but
protocol lines goes to stdout; logging goes to stderr.

The helpers :func:`serve`, :func:`summarize`, :func:`make_key` and
:func:`windowed` are shared with the PySyncObj node.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

KEY_BYTES = 16
#: The size of the values put; ``blizzard bench cluster --value-bytes`` sets it
#: for its children through the environment.
VALUE_BYTES = int(os.environ.get("BLIZZARD_BENCH_VALUE_BYTES", "64"))
VALUE = bytes(i & 0xFF for i in range(VALUE_BYTES))
MAP_NAME = "bench"


def make_key(prefix: str, i: int) -> bytes:
    """A 16-byte key: the prefix, then ``i`` zero-padded to fill."""
    head = prefix.encode()
    return head + b"%0*d" % (KEY_BYTES - len(head), i)


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / mean / max in microseconds, and the sample count."""
    if not samples_ns:
        return {"n": 0}
    ordered = sorted(samples_ns)
    n = len(ordered)

    def pct(p: float) -> float:
        return ordered[min(n - 1, int(p * n))] / 1000

    return {"n": n, "p50_us": pct(0.50), "p99_us": pct(0.99),
            "mean_us": statistics.fmean(ordered) / 1000, "max_us": ordered[-1] / 1000}


def _take(slots: queue.SimpleQueue[None], timeout: float) -> bool:
    """Take a free slot, waiting up to ``timeout`` seconds; False if none came."""
    try:
        slots.get(timeout=timeout)
    except queue.Empty:
        return False
    return True


def windowed(n: int, window: int, start: Callable[[int, Callable[[Any], None]], None],
             stall_s: float, *, max_seconds: float | None = None,
             latencies: list[int] | None = None,
             drain: Callable[[], None] | None = None) -> dict[str, Any]:
    """Issue ``n`` asynchronous requests with at most ``window`` outstanding.

    ``start(i, done)`` issues request ``i`` and arranges for ``done(error)`` to
    be called once it completes (``error`` None on success), from any thread.
    If no request completes for ``stall_s`` seconds the run stops there: the
    requests still outstanding are counted as ``unanswered`` and the rate is
    taken up to the last completion. With ``max_seconds``, no request is
    issued after that long (``not_issued`` counts the rest, not as a stall).
    With ``latencies``, each completed request's time from issue to
    completion (ns) is appended to it. ``drain``, for a replicator that
    delivers completions on the caller's thread, is called when the window
    is full, and must complete every request outstanding.
    """
    # A counting semaphore in C, one item per free slot: threading.Semaphore is
    # Python code (a Condition), which cost the loaded node ~2 µs per request.
    slots: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(window):
        slots.put(None)
    give_back = slots.put
    lock = threading.Lock()
    errors: list[str] = []  # the first few, for the report
    counts = [0, 0]  # completed, failed
    last = [0.0]
    clock = time.perf_counter_ns
    issued_at = [0] * n if latencies is not None else None

    def done(i: int, error: Any) -> None:
        now = clock()
        with lock:
            counts[0] += 1
            last[0] = time.perf_counter()
            if issued_at is not None:
                latencies.append(now - issued_at[i])
            if error is not None:
                counts[1] += 1
                if len(errors) < 5:
                    errors.append(repr(error))
        give_back(None)

    t0 = last[0] = time.perf_counter()
    deadline = None if max_seconds is None else t0 + max_seconds
    issued = 0
    stalled = False
    for i in range(n):
        if deadline is not None and time.perf_counter() > deadline:
            break
        if drain is not None and slots.empty():
            drain()
        if not _take(slots, stall_s):
            stalled = True
            break
        if issued_at is not None:
            issued_at[i] = clock()
        start(i, functools.partial(done, i))
        issued += 1
    if drain is not None:
        drain()
    if not stalled:
        for _ in range(window):  # wait for the tail
            if not _take(slots, stall_s):
                break
    with lock:
        completed, failed, end = counts[0], counts[1], last[0]
    return {"ops": completed - failed, "failed": failed, "unanswered": issued - completed,
            "not_issued": 0 if deadline is not None and not stalled else n - issued,
            "issued": issued, "seconds": max(end - t0, 1e-9), "errors": errors}


def sync_latency(n: int, put: Callable[[int], None], max_seconds: float) -> dict[str, Any]:
    """Time ``put(i)`` for i < n, stopping early after ``max_seconds`` or an error."""
    samples = []
    clock = time.perf_counter_ns
    stop = clock() + int(max_seconds * 1e9)
    error = None
    for i in range(n):
        t = clock()
        try:
            put(i)
        except Exception as exc:  # the figure so far is still worth reporting
            error = f"{type(exc).__name__}: {exc}"
            break
        end = clock()
        samples.append(end - t)
        if end > stop:
            break
    out: dict[str, Any] = summarize(samples)
    if error is not None:
        out["error"] = error
    return out


def serve(handlers: dict[str, Callable[..., Any]], ready: dict[str, Any]) -> int:
    """The command loop: one JSON reply per line read, until ``quit`` or EOF.

    Every system's node sets its collector for serving first (its start-up heap
    frozen, the youngest generation collected less often), as ``blizzard
    serve`` does (:mod:`blizzard._heap`): the same for all, PySyncObj's included.
    """
    from blizzard._heap import prepare_serving_heap

    frozen = prepare_serving_heap()
    out = sys.stdout

    def reply(obj: Any) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ready": True, "heap_frozen": frozen, **ready})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd == "quit":
            try:
                handlers["quit"]()
            finally:
                reply({"ok": True, "bye": True})
            return 0
        handler = handlers.get(cmd)
        if handler is None:
            reply({"ok": False, "error": f"unknown command {cmd!r}"})
            continue
        try:
            reply({"ok": True, **handler(*args)})
        except Exception as exc:  # report, keep serving
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    handlers["quit"]()
    return 0


class _Profiler:
    """cProfile on the command thread and on the replicator's asyncio thread."""

    def __init__(self, loop) -> None:
        import cProfile

        self.loop = loop
        self.main = cProfile.Profile()
        self.raft = cProfile.Profile()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def call() -> None:
            fn()
            done.set()

        self.loop.call_soon_threadsafe(call)
        if not done.wait(10):
            raise TimeoutError("the Raft loop did not answer")

    def start(self) -> None:
        self._on_loop(self.raft.enable)
        self.main.enable()

    def stop(self, path: str) -> None:
        import pstats

        self.main.disable()
        self._on_loop(self.raft.disable)
        self.main.dump_stats(path + ".main")
        self.raft.dump_stats(path + ".raft")
        stats = pstats.Stats(path + ".main")
        stats.add(path + ".raft")
        stats.dump_stats(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m blizzard.bench._cluster_node CONFIG NODE_ID", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    from blizzard.cluster.replicator import RaftReplicator
    from blizzard.structures import PHashMap
    from blizzard.structures.ops import Encoder, OpCode

    node_id = int(argv[1])
    rep = RaftReplicator(argv[0], node_id)
    state: dict[str, Any] = {}

    def the_map() -> PHashMap:
        if "map" not in state:
            rep.wait_for_leader(30)
            state["map"] = PHashMap(rep.pool, MAP_NAME, replicator=rep)
        return state["map"]

    def status() -> dict[str, Any]:
        return {"status": rep.status()}

    def load(n: str, window: str, prefix: str, stall_s: str = "20") -> dict[str, Any]:
        the_map()
        prep = time.process_time()
        count = int(n)
        keys = [make_key(prefix, i) for i in range(count)]
        put = Encoder(MAP_NAME).two
        code = int(OpCode.MAP_PUT)
        submit = rep.submit_callback  # like PySyncObj's callback=: no future per request

        def start(i: int, done: Callable[[Any], None]) -> None:
            def finished(result: Any, error: Any) -> None:
                done(error if error is not None or not isinstance(result, BaseException)
                     else result)

            submit(put(code, keys[i], VALUE), finished)

        t = time.process_time()
        result = windowed(count, int(window), start, float(stall_s))
        result["cpu_seconds"] = time.process_time() - t
        result["prep_cpu_seconds"] = t - prep  # making the keys: not the puts' cost
        return result

    def latency(n: str, prefix: str, max_seconds: str = "60") -> dict[str, Any]:
        m = the_map()
        keys = [make_key(prefix, i) for i in range(int(n))]

        def put(i: int) -> None:
            m[keys[i]] = VALUE

        return sync_latency(len(keys), put, float(max_seconds))

    def count() -> dict[str, Any]:
        m = the_map()
        rep.read_barrier()
        return {"count": len(m)}

    def profile_start() -> dict[str, Any]:
        state["profiler"] = _Profiler(rep._loop)
        state["profiler"].start()
        return {}

    def profile_stop(path: str) -> dict[str, Any]:
        state.pop("profiler").stop(path)
        return {"path": path}

    def quit_() -> None:
        rep.stop()

    handlers = {"status": status, "load": load, "latency": latency, "count": count,
                "profile_start": profile_start, "profile_stop": profile_stop, "quit": quit_}
    return serve(handlers, {"node": node_id, "system": "blizzard"})


if __name__ == "__main__":
    sys.exit(main())
