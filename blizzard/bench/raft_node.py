"""``blizzard bench raft-node``: CPU per replicated put of the node code alone.

A replicated put costs CPU in three processes, and ``bench cluster``
measures it whole: sockets, the event loop, the replicator's threads and the
load generator included. This runs the same three nodes in one process,
without any of those, to say how much of that is the node's own work --
the Raft core, the persistent log, the session table, the registry and the
map -- and how much the machinery around it:

* three :class:`~blizzard.replication.node.Node` objects over
  :class:`~blizzard.replication.raft.pmem_storage.PmemStorage` logs and
  :class:`~blizzard.replication.sessions.SessionStateMachine` s over their
  registries, every pool a file under ``--dir`` in ``pmem`` mode (real
  cache-line flushes and fences), as in a cluster;
* frames handed from node to node by function calls, the way TCP without TLS
  carries them: a leader sends a MsgApp as its fixed part plus views of its
  log's records (``send_parts``), and a follower receives the records straight
  into its log's free tail (``reserve_region`` / ``region_received``). The
  copies the kernel would make (``sendmsg`` gathering the parts, ``recv_into``
  filling the region) are done here too, but not counted as the nodes' CPU;
* ``--window`` requests in flight, each on its own session (client id), as
  the cluster's replicator keeps them; their envelopes are built before the
  timing starts.

Reported per value size: µs of CPU per put spent in the leader's node, in a
follower's (the mean of the two), and the three summed; the
median of ``--runs``. Each node's calls (``submit``, ``receive``, ``turn``) are
timed with this thread's CPU clock (a system call of about 1 µs; a round of
``--window`` puts makes a few dozen calls, well under 0.1 µs per put).
Everything runs in one thread, so the figures stay steady on a busy
machine, and ``valgrind --tool=cachegrind`` counts its instructions exactly.
The garbage collector is set as in a serving node's process
(:mod:`blizzard._heap`), and restored afterwards.
"""

from __future__ import annotations

import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blizzard._argparse import ArgumentParser
from blizzard._heap import prepare_serving_heap
from blizzard.bench import _report
from blizzard.cluster.images import FileImages
from blizzard.pmem import Pool
from blizzard.replication.node import Node
from blizzard.replication.raft.core import Role
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.structures import ops, registry_for

__all__ = ["main", "run_once"]

IDS = (1, 2, 3)
MAP = "bench"
KEY_BYTES = 16
POOL_BYTES = 256 << 20
LOG_BYTES = 256 << 20
CLOCK = time.thread_time_ns
# a cluster node's defaults (blizzard.cluster.config): the log is compacted as there
SNAPSHOT_ENTRIES = 100_000
SNAPSHOT_TAIL_ENTRIES = 5_000


class _Wire:
    """Frames between the nodes, each delivered by a call at the next pump."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, Any]] = []  # (source, target, bytes or parts)
        self.kernel_ns = 0  # the copies a kernel would make: not the nodes' CPU

    def endpoint(self, source: int) -> Any:
        wire = self

        class Endpoint:
            """What a node sends through (TCP without TLS offers both calls)."""

            def send(self, target: int, payload: bytes) -> bool:
                wire.frames.append((source, target, payload))
                return True

            def send_parts(self, target: int, parts: Sequence[Any]) -> bool:
                start = CLOCK()
                wire.frames.append((source, target, b"".join(parts)))  # sendmsg's gather
                wire.kernel_ns += CLOCK() - start
                return True

        return Endpoint()


class _Cluster:
    """Three nodes in this process, pumped until nothing is left to do."""

    def __init__(self, directory: Path) -> None:
        self.wire = _Wire()
        self.woken: set[int] = set()
        self.cpu_ns = dict.fromkeys(IDS, 0)
        self.pools: list[Pool] = []
        self.nodes: dict[int, Node] = {}
        for i in IDS:
            data = Pool.create(str(directory / f"data{i}.pool"), POOL_BYTES, mode="pmem")
            log = Pool.create(str(directory / f"log{i}.pool"), LOG_BYTES, mode="pmem")
            self.pools += [data, log]
            machine = SessionStateMachine(registry_for(data), data)
            (directory / f"node{i}").mkdir()
            # compactions as a cluster node makes them: the data pool is the snapshot
            images = FileImages(directory / f"node{i}", data, machine.reload)
            self.nodes[i] = Node(
                i, storage=PmemStorage(log, conf_state=ConfState(IDS)), state_machine=machine,
                transport=self.wire.endpoint(i), wake=lambda i=i: self.woken.add(i),
                clock=time.monotonic, seed=i, images=images,
                snapshot_entries=SNAPSHOT_ENTRIES, snapshot_tail_entries=SNAPSHOT_TAIL_ENTRIES)

    def close(self) -> None:
        for pool in self.pools:
            pool.close()

    def timed(self, i: int, call: Callable[..., Any], *args: Any) -> Any:
        start = CLOCK()
        try:
            return call(*args)
        finally:
            self.cpu_ns[i] += CLOCK() - start

    def elect(self) -> Node:
        """Tick until a leader is known to all (not timed: the runs reset the clocks)."""
        for _ in range(200):
            for node in self.nodes.values():
                node.tick()
            self.pump()
            leaders = [n for n in self.nodes.values() if n.raft.role == Role.LEADER]
            if leaders and all(n.raft.lead == leaders[0].node_id for n in self.nodes.values()):
                return leaders[0]
        raise RuntimeError("no leader was elected in 200 ticks")

    def pump(self) -> None:
        nodes = self.nodes
        wire = self.wire
        while True:
            while self.woken:
                i = self.woken.pop()
                self.timed(i, nodes[i].turn)
            if not wire.frames:
                return
            frames, wire.frames = wire.frames, []
            for source, target, frame in frames:
                self._deliver(source, target, frame)

    def _deliver(self, source: int, target: int, frame: bytes) -> None:
        """As TCP delivers: a MsgApp from the leader into the log where it can go."""
        node = self.nodes[target]
        head_bytes = node.head_bytes
        if len(frame) > head_bytes and node.wants_regions(source):
            head = frame[:head_bytes]
            region = self.timed(target, node.reserve_region, source, head,
                                len(frame) - head_bytes)
            if region is not None:
                start = CLOCK()
                region[:] = memoryview(frame)[head_bytes:]  # recv_into's copy
                self.wire.kernel_ns += CLOCK() - start
                self.timed(target, node.region_received, source, head, region)
                return
        self.timed(target, node.receive, source, frame)


def run_once(*, directory: str, puts: int, window: int, value_bytes: int) -> dict[str, float]:
    """Replicate ``puts`` puts through three nodes; µs of CPU per put by role."""
    workdir = Path(tempfile.mkdtemp(prefix="raft-node-", dir=directory))
    cluster = _Cluster(workdir)
    try:
        leader = cluster.elect()
        lid = leader.node_id
        answered = [0]
        failed: list[BaseException] = []

        def settled(key: Any, result: Any, error: BaseException | None) -> None:
            answered[0] += 1
            if error is not None or isinstance(result, BaseException):
                failed.append(error or result)

        create = ops.encode(ops.Op(MAP, ops.OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
        leader.submit(wrap(1, 1, create), settled)
        cluster.pump()
        encoder = ops.Encoder(MAP)
        code = int(ops.OpCode.MAP_PUT)
        value = b"v" * value_bytes
        # lane l (client l + 2) carries puts l, l + window, ...: one at a time, as a session
        envelopes = [wrap(i % window + 2, i // window + 1,
                          encoder.two(code, i.to_bytes(KEY_BYTES, "big"), value))
                     for i in range(puts)]
        answered[0] = 0
        cluster.cpu_ns = dict.fromkeys(IDS, 0)
        cluster.wire.kernel_ns = 0
        submit = leader.submit
        issued = 0
        while answered[0] < puts:
            # refill the window: every answered request's lane takes its next put
            room = min(window - (issued - answered[0]), puts - issued)
            start = CLOCK()
            for envelope in envelopes[issued:issued + room]:
                submit(envelope, settled)
            cluster.cpu_ns[lid] += CLOCK() - start
            issued += room
            before = answered[0]
            cluster.pump()
            if answered[0] == before and not room:
                raise RuntimeError(f"no progress after {answered[0]:,} of {puts:,} puts")
        # the followers learn the last commit from the leader's next tick, as in a
        # cluster (Config.lazy_commit_notice): that work is counted too
        cluster.timed(lid, leader.tick)
        cluster.pump()
        if failed:
            raise RuntimeError(f"{len(failed)} puts failed, the first: {failed[0]!r}")
        for node in cluster.nodes.values():  # every replica holds every put
            core = node.state_machine._inner.core(MAP)
            if core.count != puts:
                raise AssertionError(f"node {node.node_id} holds {core.count:,} of {puts:,}")
        follower = [cluster.cpu_ns[i] for i in IDS if i != lid]
        return {"leader_us": cluster.cpu_ns[lid] / puts / 1e3,
                "follower_us": statistics.mean(follower) / puts / 1e3,
                "summed_us": sum(cluster.cpu_ns.values()) / puts / 1e3,
                "kernel_us": cluster.wire.kernel_ns / puts / 1e3}
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)


HEADER = ["value B", "leader µs", "follower µs", "summed µs", "min summed", "max summed",
          "puts per CPU-s"]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="blizzard bench raft-node",
        description="CPU per replicated PHashMap put of the node code alone: three "
                    "nodes in one process, frames handed over by calls (no sockets, "
                    "event loop or threads), pools in pmem mode.")
    parser.add_argument("--puts", type=int, default=100_000, help="puts per run and size")
    parser.add_argument("--window", type=int, default=256, help="requests in flight")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per size")
    _report.add_log_arguments(parser, sizes_help="comma-separated value sizes in bytes")
    _report.add_arguments(parser, check=False)
    args = parser.parse_args(argv)
    sizes = _report.value_sizes(parser, args.value_bytes)
    if args.puts < 1 or args.window < 1 or args.runs < 1:
        parser.error("--puts, --window and --runs must be at least 1")
    launcher = "python -m blizzard.bench.raft_node" if argv is None else "blizzard bench raft-node"
    run = _report.Run("raft-node", _report.command_line(
        launcher, list(sys.argv[1:] if argv is None else argv)),
        {"puts": args.puts, "window": args.window, "value_bytes": sizes, "runs": args.runs})
    threshold = gc.get_threshold()
    prepare_serving_heap()  # as a serving node's process does
    try:
        results = _measure(args, sizes)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    run.end()
    rows = [[r["value_bytes"], f"{r['median_leader_us']:.2f}", f"{r['median_follower_us']:.2f}",
             f"{r['median_summed_us']:.2f}", f"{min(s['summed_us'] for s in r['samples']):.2f}",
             f"{max(s['summed_us'] for s in r['samples']):.2f}",
             _report.rate(1e6 / r["median_summed_us"])]
            for r in results.values()]
    _report.print_report(
        run, [_report.table(HEADER, rows)],
        title=f"blizzard bench raft-node: {args.runs} runs of {args.puts:,} puts per size, "
              f"{args.window} in flight, 3 nodes in one process, pools in pmem mode",
        notes=["µs: this thread's CPU inside each node's calls (submit, receive, turn) per "
               "put, median of the runs; follower: the mean of the two",
               "not counted: the copies the kernel would make (sendmsg gathering a frame's "
               "parts, recv_into filling the log), building the requests' envelopes",
               "bench cluster measures the same puts whole: the difference is the "
               "sockets, event loop, threads and load generator around the nodes"])
    _report.write_json(args.json, run.record(results=results))
    return 0


def _measure(args: Any, sizes: list[int]) -> dict[str, Any]:
    """A warm-up and ``args.runs`` runs per size: the report's results."""
    results = {}
    with _report.Progress(len(sizes) * (args.runs + 1), quiet=args.quiet) as progress:
        for size in sizes:
            progress.step(f"{size} B: warm-up")
            run_once(directory=args.dir, puts=max(args.puts // 10, 1), window=args.window,
                     value_bytes=size)
            samples = []
            for i in range(args.runs):
                progress.step(f"{size} B: run {i + 1}/{args.runs}")
                samples.append(run_once(directory=args.dir, puts=args.puts,
                                        window=args.window, value_bytes=size))
            results[str(size)] = {
                "value_bytes": size,
                **{f"median_{k}": statistics.median(s[k] for s in samples) for k in samples[0]},
                "samples": samples}
    return results


if __name__ == "__main__":
    sys.exit(main())
