"""``blizzard bench cluster``: replicated PHashMap puts, against local and PySyncObj.

The workload is PHashMap puts of 16-byte keys and 64-byte values. Systems,
all measured in the same run so their ratios mean something on a shared
machine:

* ``blizzard-leader``   -- a 3-node Blizzard Raft cluster over loopback TCP,
  one process per node (:mod:`._cluster_node`), pools on /dev/shm in
  ``pmem`` mode; the load generator runs inside the leader's process (the
  embedded use: the application lives beside its replica);
* ``blizzard-follower`` -- the same cluster, load from a follower's process:
  every write is forwarded to the leader;
* ``blizzard-local``    -- the same PHashMap on a FileMedia pool under
  /dev/shm (``pmem`` mode) with the default LocalReplicator, in this process;
* ``blizzard-client``   -- (not in the default set) 3 ``blizzard serve``
  processes, the load from a remote client (:func:`blizzard.client.connect`)
  in this process: pipelined ``submit_many`` for throughput, one put at a
  time for latency;
* ``...-tls``           -- ``--tls`` adds, after each Blizzard cluster system
  run, the same system with ``[tls]``: mutual TLS on the replication and
  client ports (certificates of ``blizzard certs create``), so the cost of
  TLS is read from one run;
* ``pysyncobj``         -- PySyncObj 0.3.x, 3 ``SyncObj`` processes with a
  ``ReplDict`` on loopback, its defaults (:mod:`._pysyncobj_node`);
* ``pysyncobj-nobatch`` -- the same with ``appendEntriesUseBatch=False``;
* ``pysyncobj-nocompact`` -- its defaults but no log compaction (which
  pickles the whole dict every 5000 entries): its best throughput.

For each: throughput with a window of ``--window`` asynchronous requests in
flight, after a short warm-up, and the latency of synchronous puts issued one
after another (p50 / p99). CPU time of every process of the cluster during
the throughput run is read from /proc (``cpu us/op``: summed over the nodes).

Every process runs in its own process group and is killed, and every file
under the run's /dev/shm directory removed, whatever happens.

Usage: ``python -m blizzard.bench.cluster [--ops N] [--quick] [--tls] [--json PATH]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blizzard
from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.bench._cluster_node import MAP_NAME, VALUE_BYTES, make_key, summarize
from blizzard.cluster.config import RaftConfig
from blizzard.cluster.ports import port_block
from blizzard.exceptions import BenchmarkError

SYSTEMS = ("blizzard-leader", "blizzard-follower", "blizzard-local", "pysyncobj",
           "pysyncobj-nobatch", "pysyncobj-nocompact")
#: Systems run only when asked for (``--systems``, ``--tls``, ``--transport``).
EXTRA_SYSTEMS = ("blizzard-client", "blizzard-leader-tls", "blizzard-follower-tls",
                 "blizzard-client-tls", "blizzard-leader-dpdk", "blizzard-follower-dpdk")
TLS_SUFFIX = "-tls"
TRANSPORTS = ("tcp", "dpdk")
LABELS = {
    "blizzard-leader": "blizzard raft, load on leader",
    "blizzard-follower": "blizzard raft, load on follower",
    "blizzard-client": "blizzard serve, remote client",
    "blizzard-leader-tls": "  the same, TLS",
    "blizzard-follower-tls": "  the same, TLS",
    "blizzard-client-tls": "  the same, TLS",
    "blizzard-leader-dpdk": "blizzard raft over dpdk, load on leader",
    "blizzard-follower-dpdk": "blizzard raft over dpdk, load on follower",
    "blizzard-local": "blizzard local (no replication)",
    "pysyncobj": "pysyncobj defaults",
    "pysyncobj-nobatch": "pysyncobj appendEntriesUseBatch=False",
    "pysyncobj-nocompact": "pysyncobj no log compaction",
}
DEFAULT_OPS = 40_000
DEFAULT_WINDOW = 2000
DEFAULT_LATENCY_OPS = 2000
QUICK_OPS = 3000
QUICK_LATENCY_OPS = 300
LATENCY_MAX_S = 5.0  # a synchronous-put run stops after this long (PySyncObj: ~100 ms each)
TARGET_VS_PYSYNCOBJ = 4.0
TARGET_VS_LOCAL = 0.5
TARGET_P50_US = 500.0  # was 1 ms until the hot paths were compiled
TARGET_LEADER_RATE = 60_000.0  # puts/s, load on the leader, 64-byte values
TARGET_CPU_US = 25.0  # CPU per replicated put, summed over the three nodes
TARGET_DPDK_P50_VS_TCP = 1 / 3  # DPDK's sync put p50 at most a third of TCP's
TARGET_DPDK_RATE_VS_TCP = 1.0   # throughput at least TCP's
TARGET_DPDK_CPU_VS_TCP = 1.0    # CPU per put no higher than TCP's
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 900.0
STALL_S = 15.0  # a throughput run stops when no request completes for this long


@dataclass
class Result:
    """One system: throughput of the windowed run and sync-put latency.

    ``cpu_us_per_op`` is the CPU time of every process of the system during
    the throughput run, per op, summed (``cpu_by_process`` keeps them apart:
    the load's process first; its time making the run's keys is left out).
    ``failed`` counts requests that completed
    with an error or never did (``unanswered``, and ``not_issued`` after a
    stall); ``lost`` the puts (windowed and synchronous) the map did not grow
    by -- anything but 0 is a bug. ``note`` says why a system was skipped or
    failed, how it was configured, and any loss or leader change.
    """

    system: str
    ops: int = 0
    seconds: float | None = None
    rate: float | None = None
    window: int | None = None
    failed: int = 0
    latency: dict[str, Any] = field(default_factory=dict)
    cpu_us_per_op: float | None = None
    cpu_by_process: list[float] = field(default_factory=list)
    #: payload bytes copied per op by stage (blizzard Raft systems), one figure per
    #: process in the order of ``cpu_by_process`` (see blizzard.replication.copies)
    copies_per_op: dict[str, list[float]] = field(default_factory=dict)
    #: transport frames sent and received per op (blizzard Raft systems), per process
    #: in the same order: how many messages carried the puts
    frames_per_op: dict[str, list[float]] = field(default_factory=dict)
    #: frames whose records a follower began receiving into its Raft log, and
    #: dropped because the log gave that region up meanwhile (Raft resent them)
    regions_lost: int = 0
    lost: int | None = None
    unanswered: int = 0
    not_issued: int = 0
    note: str = ""

    @property
    def p50_us(self) -> float | None:
        return self.latency.get("p50_us")

    @property
    def p99_us(self) -> float | None:
        return self.latency.get("p99_us")


# -- processes --------------------------------------------------------------------------


RAFT_DEFAULTS = RaftConfig()  # what a cluster config gets when it says nothing

#: The size of the values every system puts (``--value-bytes``; children read
#: it from ``BLIZZARD_BENCH_VALUE_BYTES``).
_VALUE = {"bytes": VALUE_BYTES}


def _value() -> bytes:
    return bytes(i & 0xFF for i in range(_VALUE["bytes"]))


def _child_env() -> dict[str, str]:
    """The environment for a child: this blizzard importable, output unbuffered,
    the value size of the run."""
    env = dict(os.environ)
    env["BLIZZARD_BENCH_VALUE_BYTES"] = str(_VALUE["bytes"])
    root = str(Path(blizzard.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("BLIZZARD_CHECKS", None)  # expensive invariant walks: tests only
    return env


class NodeProcess:
    """A child speaking the JSON line protocol of :mod:`._cluster_node`."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 -- closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, start_new_session=True, text=True, env=_child_env())
        self.pid = self.proc.pid
        self._replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"bench-reader-{name}")
        self._reader.start()
        self.hello = self._reply(START_TIMEOUT_S, "start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise BenchmarkError(f"{self.name}: no answer to {what!r} "
                                 f"within {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(5)
            raise BenchmarkError(f"{self.name}: exited ({self.proc.returncode}) during {what!r}:\n"
                                 f"{self._stderr_tail()}")
        try:
            return json.loads(line)
        except ValueError:
            raise BenchmarkError(f"{self.name}: unexpected output {line!r}") from None

    def call(self, command: str, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        self.start_call(command)
        return self.finish_call(command, timeout)

    def start_call(self, command: str) -> None:
        """Send ``command`` without waiting (another process's command runs meanwhile)."""
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchmarkError(f"{self.name}: gone before {command!r}:\n"
                                 f"{self._stderr_tail()}") from None

    def finish_call(self, command: str, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """The reply to the command sent last by :meth:`start_call`."""
        reply = self._reply(timeout, command)
        if not reply.get("ok"):
            raise BenchmarkError(f"{self.name}: {command!r} failed: {reply.get('error')}\n"
                                 f"{self._stderr_tail()}")
        return reply

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, from /proc."""
        return _report.process_cpu_seconds(self.pid)

    def kill(self) -> None:
        """Ask it to quit, then kill its process group whatever it answered."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self._log.close()


def free_port_block(n: int) -> int:
    """A base port with ``n`` free consecutive ports (see ``blizzard.cluster.ports``)."""
    try:
        return port_block(n)
    except OSError as exc:
        raise BenchmarkError(str(exc)) from None


def _per_op(before: list[dict], after: list[dict], part: str, ops: int, *,
            digits: int = 1) -> dict[str, list[float]]:
    """Each numeric counter of the status part ``part``, per op, per process."""
    names = [k for k, v in after[0].get(part, {}).items()
             if isinstance(v, int) and not isinstance(v, bool)]
    return {name: [round((a.get(part, {}).get(name, 0) - b.get(part, {}).get(name, 0)) / ops,
                         digits) for a, b in zip(after, before, strict=True)]
            for name in names}


def _wait(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(0.05)


def _measure(nodes: list[NodeProcess], load_node: NodeProcess, command: str,
             result: Result) -> None:
    """Run a throughput command on ``load_node``, recording rate and CPU per op."""
    order = [load_node, *(n for n in nodes if n is not load_node)]
    before = [n.cpu_seconds() for n in order]
    reply = load_node.call(f"{command} {STALL_S}")
    after = [n.cpu_seconds() for n in order]
    result.ops = reply["ops"]
    result.failed = reply["failed"] + reply["unanswered"] + reply["not_issued"]
    result.unanswered, result.not_issued = reply["unanswered"], reply["not_issued"]
    if reply["unanswered"] or reply["not_issued"]:
        result.note += (f"; STALLED: nothing completed for {STALL_S:.0f} s, "
                        f"{reply['unanswered']} requests never answered, "
                        f"{reply['not_issued']} not issued")
    result.seconds = reply["seconds"]
    result.rate = reply["ops"] / reply["seconds"] if reply["seconds"] > 0 else None
    if reply["errors"]:
        result.note = (result.note + "; " if result.note else "") + \
            f"{reply['failed']} failed, e.g. {reply['errors'][0]}"
    if result.ops:
        # the load node's CPU time spent making its keys before the first request
        # is the harness's, not the system's
        after[0] -= reply.get("prep_cpu_seconds", 0.0)
        result.cpu_by_process = [round((a - b) * 1e6 / result.ops, 1)
                                 for a, b in zip(after, before, strict=True)]
        result.cpu_us_per_op = round(sum(result.cpu_by_process), 1)


# -- the systems -----------------------------------------------------------------------


def _pool_bytes(entries: int) -> int:
    """Room for ``entries`` map entries of this run's values at half occupancy plus
    slack, in 4 KiB units (a value's bytes count twice: an update leaves the old
    entry in its page until the page is compacted)."""
    per_entry = max(400, 200 + 2 * _VALUE["bytes"])
    return ((64 << 20) + entries * per_entry + 4095) // 4096 * 4096


def bench_local(workdir: Path, ops: int, latency_ops: int, warmup: int) -> Result:
    """PHashMap with the LocalReplicator on FileMedia (pmem mode), in this process."""
    from blizzard.pmem import Pool
    from blizzard.structures import PHashMap

    result = Result("blizzard-local", note="FileMedia pmem, LocalReplicator, one put per call")
    VALUE = _value()
    path = workdir / "local.pool"
    pool = Pool.create(path, _pool_bytes(ops + latency_ops + warmup), mode="pmem")
    try:
        m = PHashMap(pool, MAP_NAME)
        for key in [make_key("w", i) for i in range(warmup)]:
            m[key] = VALUE
        keys = [make_key("t", i) for i in range(ops)]
        setitem = m.__setitem__
        cpu = time.process_time()
        t0 = time.perf_counter()
        for key in keys:
            setitem(key, VALUE)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        result.ops, result.seconds, result.rate = ops, seconds, ops / seconds
        result.cpu_us_per_op = round(cpu * 1e6 / ops, 1)
        result.cpu_by_process = [result.cpu_us_per_op]
        samples = []
        clock = time.perf_counter_ns
        for key in [make_key("l", i) for i in range(latency_ops)]:
            t = clock()
            setitem(key, VALUE)
            samples.append(clock() - t)
        result.latency = summarize(samples)
        result.lost = ops + latency_ops + warmup - len(m)
    finally:
        pool.close()
        path.unlink(missing_ok=True)
    return result


def _tls_settings(directory: Path) -> dict[str, Any]:
    """``[tls]`` and ``[auth]`` for a 3-node cluster, certificates made in ``directory``."""
    import tomllib

    from blizzard.cluster import certs

    certs.create(directory, 3, cluster_id="bench")
    return tomllib.loads(certs.config_snippet(directory))


def _cluster_config(workdir: Path, name: str, entries: int, raft: dict[str, int] | None,
                    tls: bool, transport: str = "tcp") -> Path:
    """A 3-node cluster's TOML under ``workdir/name`` (``[tls]`` on every port if
    ``tls``; Raft over ``transport``)."""
    from blizzard.cluster.config import dump, local_cluster

    settings: dict[str, Any] = {"raft": raft} if raft else {}
    settings["transport"] = {"kind": transport}
    if tls:
        settings.update(_tls_settings(workdir / f"{name}-certs"))
    config = local_cluster(3, workdir / name, base_port=free_port_block(6),
                           cluster_id="bench", pool_size=_pool_bytes(entries),
                           log_pool_size=128 << 20, durability="pmem", **settings)
    path = workdir / f"{name}.toml"
    path.write_text(dump(config))
    return path


def bench_blizzard(workdir: Path, ops: int, latency_ops: int, warmup: int, window: int,
                   follower: bool, nodes: list[NodeProcess],
                   profile_dir: Path | None = None, step=None,
                   raft: dict[str, int] | None = None, tls: bool = False,
                   transport: str = "tcp") -> list[Result]:
    """A 3-node Blizzard cluster, one process per node; load on the leader, then a follower.
    With ``tls`` the nodes speak mutual TLS (and the results are named ``...-tls``);
    ``transport`` is the ``[transport] kind`` they replicate over (results of
    another than tcp are named ``...-<transport>``)."""
    from blizzard.cluster.config import load

    follower_ops = ops // 2
    entries = warmup + ops + latency_ops + (follower_ops + latency_ops if follower else 0)
    suffix = TLS_SUFFIX if tls else _suffix(transport)
    config_path = _cluster_config(workdir, f"raft{suffix}", entries, raft, tls, transport)
    config = load(config_path)
    for n in config.nodes:
        nodes.append(NodeProcess(f"blizzard node {n.id} ({transport})", [
            "-m", "blizzard.bench._cluster_node", str(config_path), str(n.id)],
            workdir / f"blizzard{suffix}-node{n.id}.log"))

    def leader() -> int:
        leaders = {n.call("status")["status"]["leader"] for n in nodes}
        return leaders.pop() if len(leaders) == 1 and 0 not in leaders else 0

    by_id = {n.hello["node"]: n for n in nodes}
    lead = _wait(leader, START_TIMEOUT_S, "a leader known to every Blizzard node")
    if step:
        step(f"blizzard{suffix}: warm-up, {warmup:,} puts on the leader (node {lead})")
    by_id[lead].call(f"load {warmup} {window} w")
    results = []
    for on_follower in (False, True) if follower else (False,):
        # roles are looked up again: a leader may have changed since
        lead = _wait(leader, START_TIMEOUT_S, "a leader known to every Blizzard node")
        if on_follower:
            node_id = min(i for i in by_id if i != lead)
            n = follower_ops
            result = Result(f"blizzard-follower{suffix}", window=window,
                            note=f"node {node_id} forwards every write to the leader")
            tag, where = "f", f"a follower (node {node_id})"
        else:
            node_id, n = lead, ops
            link = (f"TCP loopback{' + mutual TLS' if tls else ''}" if transport == "tcp"
                    else f"{transport} ({_links(nodes)})")
            result = Result(f"blizzard-leader{suffix}", window=window,
                            note=f"3 processes, {link}, "
                                 f"pmem pools, load in the leader's process (node {node_id})")
            tag, where = "t", f"the leader (node {node_id})"
        node = by_id[node_id]
        if step:
            step(f"blizzard{suffix}: {n:,} puts on {where}, window {window}")
        term, count = _term(nodes), node.call("count")["count"]
        order = [node, *(x for x in nodes if x is not node)]
        before = [x.call("status")["status"] for x in order]
        _measure(nodes, node, f"load {n} {window} {tag}", result)
        if result.ops:
            after = [x.call("status")["status"] for x in order]
            result.copies_per_op = _per_op(before, after, "copies", result.ops)
            result.frames_per_op = {
                what: figures for what, figures in _per_op(
                    before, after, "transport", result.ops, digits=3).items()
                if what in ("frames_sent", "frames_received")}
            result.regions_lost = sum(
                a.get("transport", {}).get("regions_lost", 0)
                - b.get("transport", {}).get("regions_lost", 0)
                for a, b in zip(after, before, strict=True))
            if result.regions_lost:
                result.note += (f"; {result.regions_lost} frames received into a log region "
                                f"given up meanwhile (dropped, then resent)")
        if not on_follower:
            now = _wait(leader, START_TIMEOUT_S, "a leader known to every Blizzard node")
            if now != node_id:
                result.note += f"; the synchronous puts ran on the new leader (node {now})"
                node, where = by_id[now], f"the new leader (node {now})"
        if step:
            step(f"blizzard{suffix}: {latency_ops:,} synchronous puts on {where}")
        result.latency = _latency(node.call(f"latency {latency_ops} {tag}l {LATENCY_MAX_S}"))
        if "error" in result.latency:
            result.note += f"; a synchronous put failed: {result.latency['error']}"
        # every put used a fresh key: the map grew by exactly the puts acknowledged
        grown = node.call("count")["count"] - count
        result.lost = n - result.not_issued + result.latency.get("n", 0) - grown
        if result.lost:
            result.note += (f"; LOST WRITES: {result.lost} puts not applied "
                            f"({result.failed} acknowledged with an error)")
        after = _term(nodes)
        if after != term:
            result.note += f"; the leader changed during the run (term {term} -> {after})"
        results.append(result)
    counts = {n.hello["node"]: n.call("count")["count"] for n in nodes}
    if len(set(counts.values())) != 1:
        for result in results:
            result.note += f"; REPLICAS DISAGREE: map sizes {counts}"
    if profile_dir is not None:
        if step:
            step("blizzard: profiled run (cProfile on the leader and a follower)")
        lead = _wait(leader, START_TIMEOUT_S, "a leader known to every Blizzard node")
        other = min(i for i in by_id if i != lead)
        _profile(by_id[lead], by_id[other], profile_dir, ops, window)
    return results


def _suffix(transport: str) -> str:
    """Result names: ``blizzard-leader`` over TCP, ``blizzard-leader-dpdk`` over DPDK."""
    return "" if transport == "tcp" else f"-{transport}"


def _links(nodes: list[NodeProcess]) -> str:
    """What the DPDK links were, from a node's transport status."""
    status = nodes[0].call("status")["status"].get("transport", {})
    kinds = sorted({link.get("kind", "?") for link in status.get("links", {}).values()})
    return ", ".join(f"net_{k}" for k in kinds) or "?"


class ServeProcess:
    """A ``blizzard serve`` child, for :func:`bench_client`; killed with its group."""

    def __init__(self, config_path: Path, node_id: int, log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "blizzard", "serve", "--config", str(config_path),
                 "--node", str(node_id)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, env=_child_env())
        self.pid = self.proc.pid

    cpu_seconds = NodeProcess.cpu_seconds

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def bench_client(workdir: Path, ops: int, latency_ops: int, warmup: int, window: int,
                 processes: list, step=None, raft: dict[str, int] | None = None,
                 tls: bool = False) -> Result:
    """3 ``blizzard serve`` processes; the load from a remote client in this process."""
    VALUE = _value()
    from blizzard.client import connect
    from blizzard.cluster.config import load
    from blizzard.structures import ops as opmod

    suffix = TLS_SUFFIX if tls else ""
    system = f"blizzard-client{suffix}"
    config_path = _cluster_config(workdir, f"serve{suffix}", warmup + ops + latency_ops, raft,
                                  tls)
    config = load(config_path)
    for n in config.nodes:
        processes.append(ServeProcess(config_path, n.id, workdir / f"serve{suffix}-{n.id}.log"))
    result = Result(system, window=window,
                    note=f"3 blizzard serve processes, client protocol over TCP loopback"
                         f"{' + mutual TLS (replication and client ports)' if tls else ''}, "
                         f"pipelined submit_many from this process")
    client = connect(config_path, timeout_s=START_TIMEOUT_S)
    try:
        def up() -> bool:
            try:
                return bool(client.wait_for_leader(1.0))
            except Exception:
                return False

        _wait(up, START_TIMEOUT_S, "a leader known to every blizzard serve node")
        m = client.hashmap(MAP_NAME)

        def records(prefix: str, n: int) -> list[bytes]:
            return [opmod.encode(opmod.Op(MAP_NAME, opmod.OpCode.MAP_PUT,
                                          (make_key(prefix, i), VALUE))) for i in range(n)]

        if step:
            step(f"blizzard{suffix} serve: warm-up, {warmup:,} puts from a remote client")
        client.submit_many(records("w", warmup), window=window)
        count = len(m)
        batch = records("t", ops)
        if step:
            step(f"blizzard{suffix} serve: {ops:,} puts from a remote client, window {window}")
        before = [p.cpu_seconds() for p in processes]
        own = time.process_time()
        t0 = time.perf_counter()
        answers = client.submit_many(batch, window=window)
        seconds = time.perf_counter() - t0
        own = time.process_time() - own
        after = [p.cpu_seconds() for p in processes]
        errors = [a for a in answers if isinstance(a, BaseException)]
        result.ops, result.seconds, result.rate = ops, seconds, ops / seconds
        result.failed = len(errors)
        if errors:
            result.note += f"; {len(errors)} failed, e.g. {errors[0]!r}"
        result.cpu_by_process = [round(own * 1e6 / ops, 1)] + [
            round((a - b) * 1e6 / ops, 1) for a, b in zip(after, before, strict=True)]
        result.cpu_us_per_op = round(sum(result.cpu_by_process), 1)
        if step:
            step(f"blizzard{suffix} serve: {latency_ops:,} synchronous puts from a remote client")
        samples = []
        clock = time.perf_counter_ns
        deadline = time.monotonic() + LATENCY_MAX_S
        for key in [make_key("l", i) for i in range(latency_ops)]:
            t = clock()
            m[key] = VALUE
            samples.append(clock() - t)
            if time.monotonic() > deadline:
                break
        result.latency = summarize(samples)
        result.lost = ops - len(errors) + len(samples) - (len(m) - count)
        if result.lost:
            result.note += f"; LOST WRITES: {result.lost} puts not applied"
    finally:
        client.close()
    return result


def _term(nodes: list[NodeProcess]) -> int:
    return max(n.call("status")["status"]["term"] for n in nodes)


def _profile(on_leader: NodeProcess, on_follower: NodeProcess, profile_dir: Path, ops: int,
             window: int) -> None:
    profile_dir.mkdir(parents=True, exist_ok=True)
    for n in (on_leader, on_follower):
        n.call("profile_start")
    on_leader.call(f"load {ops} {window} p")
    for n, role in ((on_leader, "leader"), (on_follower, "follower")):
        n.call(f"profile_stop {profile_dir.resolve() / f'{role}.pstats'}")


def _latency(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: reply[k] for k in ("n", "p50_us", "p99_us", "mean_us", "max_us", "error")
            if k in reply}


def pysyncobj_version() -> str | None:
    try:
        from importlib.metadata import version

        import pysyncobj  # noqa: F401
    except ImportError:
        return None
    try:
        return version("pysyncobj")
    except Exception:
        return "?"


def bench_pysyncobj(workdir: Path, conf: str, ops: int, latency_ops: int, warmup: int,
                    window: int, nodes: list[NodeProcess], step=None) -> Result:
    """A 3-node PySyncObj cluster of ReplDicts, load on the leader."""
    system = "pysyncobj" if conf == "default" else f"pysyncobj-{conf}"
    version = pysyncobj_version()
    if version is None:
        return Result(system, note="skipped: pysyncobj is not installed (pip install pysyncobj)")
    base = free_port_block(3)
    addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
    for i, address in enumerate(addresses):
        peers = [a for a in addresses if a != address]
        nodes.append(NodeProcess(f"pysyncobj node {i + 1}", [
            "-m", "blizzard.bench._pysyncobj_node", conf, address, *peers],
            workdir / f"pysyncobj-{conf}-node{i + 1}.log"))

    def leader() -> NodeProcess | None:
        status = [n.call("status")["status"] for n in nodes]
        leads = [n for n, s in zip(nodes, status, strict=True) if s["is_leader"]]
        if len(leads) == 1 and all(s["ready"] and s["leader"] for s in status):
            return leads[0]
        return None

    on_leader = _wait(leader, START_TIMEOUT_S, "a ready PySyncObj leader")
    what = {"default": "defaults", "nobatch": "appendEntriesUseBatch=False",
            "nocompact": "no log compaction"}[conf]
    r = Result(system, window=window,
               note=f"pysyncobj {version}, {what}, ReplDict, in-memory journal (its default)")
    if step:
        step(f"pysyncobj ({what}): warm-up, {warmup:,} sets on the leader")
    on_leader.call(f"load {warmup} {window} w")
    on_leader = _wait(leader, START_TIMEOUT_S, "a ready PySyncObj leader")
    first = on_leader.call("status")["status"]["self"]
    if step:
        step(f"pysyncobj ({what}): {ops:,} sets on the leader, window {window}")
    _measure(nodes, on_leader, f"load {ops} {window} t", r)  # its load reads VBYTES from env
    if step:
        step(f"pysyncobj ({what}): up to {latency_ops:,} synchronous sets "
             f"(at most {LATENCY_MAX_S:.0f} s)")
    on_leader = _wait(leader, START_TIMEOUT_S, "a ready PySyncObj leader")  # may have moved
    r.latency = _latency(on_leader.call(f"latency {latency_ops} l {LATENCY_MAX_S}"))
    if "error" in r.latency:
        r.note += f"; a synchronous set failed: {r.latency['error']}"
    last = on_leader.call("status")["status"]["leader"]
    if last != first:
        r.note += f"; the leader changed during the run ({first} -> {last})"
    return r


# -- the run ------------------------------------------------------------------------------


def run(ops: int = DEFAULT_OPS, *, window: int = DEFAULT_WINDOW,
        latency_ops: int = DEFAULT_LATENCY_OPS, warmup: int | None = None,
        systems: tuple[str, ...] = SYSTEMS, directory: str | os.PathLike[str] = "/dev/shm",
        profile_dir: str | os.PathLike[str] | None = None,
        raft: dict[str, int] | None = None, progress: bool = False,
        tls: bool = False, transports: tuple[str, ...] = ("tcp",)) -> list[Result]:
    """Measure each system in ``systems``; one :class:`Result` each, in that order.

    The Blizzard Raft systems (leader, follower) run once per transport in
    ``transports``: ``blizzard-leader`` over TCP, ``blizzard-leader-dpdk``
    over DPDK, each right after the other. A PySyncObj system that is not
    installed gets a Result with no rate and a ``note``. ``tls`` adds the
    ``...-tls`` twin of every Blizzard cluster system asked for, each run
    right after its plain twin. ``raft`` overrides the cluster's ``[raft]``
    settings (say
    ``{"election_ticks": 50}``); by default the config's defaults apply.
    Every child process is killed and the run's directory under ``directory``
    removed before this returns or raises.
    """
    if ops < 1 or window < 1 or latency_ops < 1:
        raise ValueError("ops, window and latency_ops must be at least 1")
    unknown = set(systems) - set(SYSTEMS) - set(EXTRA_SYSTEMS)
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}; choose from "
                         f"{', '.join(SYSTEMS + EXTRA_SYSTEMS)}")
    strange = set(transports) - set(TRANSPORTS)
    if strange or not transports:
        raise ValueError(f"unknown transports {sorted(strange)}; choose from "
                         f"{', '.join(TRANSPORTS)}")
    if tls:
        systems = tuple(dict.fromkeys(
            x for s in systems
            for x in (s, *([s + TLS_SUFFIX] if s + TLS_SUFFIX in EXTRA_SYSTEMS else []))))
    raft_systems = ("blizzard-leader", "blizzard-follower")
    if "dpdk" in transports:
        systems = tuple(dict.fromkeys(
            x for s in systems for x in (s, *([s + "-dpdk"] if s in raft_systems else []))))
    if "tcp" not in transports:
        systems = tuple(s for s in systems if s not in raft_systems)
    warmup = max(500, min(ops // 10, 5000)) if warmup is None else warmup
    steps = (("blizzard-local" in systems)
             + 3 * bool({"blizzard-leader", "blizzard-follower"} & set(systems))
             + 2 * ("blizzard-follower" in systems) + (profile_dir is not None)
             + 3 * bool({"blizzard-leader-tls", "blizzard-follower-tls"} & set(systems))
             + 2 * ("blizzard-follower-tls" in systems)
             + 3 * bool({"blizzard-leader-dpdk", "blizzard-follower-dpdk"} & set(systems))
             + 2 * ("blizzard-follower-dpdk" in systems)
             + 3 * len({"blizzard-client", "blizzard-client-tls"} & set(systems))
             + 3 * len({"pysyncobj", "pysyncobj-nobatch", "pysyncobj-nocompact"} & set(systems)))
    meter = _report.Progress(steps) if progress else None
    step = meter.step if meter else None
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-cluster-", dir=directory))
    results: dict[str, Result] = {}
    nodes: list[NodeProcess] = []
    try:
        if "blizzard-local" in systems:
            if step:
                step(f"local: {ops:,} puts, then {latency_ops:,} timed one by one")
            results["blizzard-local"] = bench_local(workdir, ops, latency_ops, warmup)
        for suffix, transport in (("", "tcp"), (TLS_SUFFIX, "tcp"), ("-dpdk", "dpdk")):
            leader, follower = f"blizzard-leader{suffix}", f"blizzard-follower{suffix}"
            if {leader, follower} & set(systems):
                try:
                    for r in bench_blizzard(workdir, ops, latency_ops, warmup, window,
                                            follower in systems, nodes,
                                            _profile_dir(profile_dir, suffix),
                                            step, raft, tls=suffix == TLS_SUFFIX,
                                            transport=transport):
                        results[r.system] = r
                except BenchmarkError as exc:
                    if transport == "tcp":
                        raise
                    # another transport failing is reported beside TCP's figures
                    results[leader] = Result(leader, note=f"failed: {exc}"[:2000])
                finally:
                    _kill_all(nodes)
        for suffix in ("", TLS_SUFFIX):
            if f"blizzard-client{suffix}" in systems:
                try:
                    results[f"blizzard-client{suffix}"] = bench_client(
                        workdir, ops, latency_ops, warmup, window, nodes, step, raft,
                        tls=bool(suffix))
                finally:
                    _kill_all(nodes)
        for conf, system in (("default", "pysyncobj"), ("nobatch", "pysyncobj-nobatch"),
                             ("nocompact", "pysyncobj-nocompact")):
            if system in systems:
                try:
                    results[system] = bench_pysyncobj(workdir, conf, ops, latency_ops, warmup,
                                                      window, nodes, step)
                except BenchmarkError as exc:  # the reference failing is a result, not a crash
                    results[system] = Result(system, note=f"failed: {exc}".splitlines()[0])
                finally:
                    _kill_all(nodes)
    finally:
        _kill_all(nodes)
        shutil.rmtree(workdir, ignore_errors=True)
        if meter:
            meter.finish()
    return [results[s] for s in systems if s in results]


def _profile_dir(profile_dir: str | os.PathLike[str] | None, suffix: str) -> Path | None:
    """Where a run's profiles go: ``profile_dir`` for TCP, a subdirectory for DPDK;
    TLS runs are not profiled."""
    if profile_dir is None or suffix == TLS_SUFFIX:
        return None
    return Path(profile_dir) / suffix.lstrip("-") if suffix else Path(profile_dir)


def _kill_all(nodes: list[NodeProcess]) -> None:
    """Kill every node (each in turn, whatever the others do) and forget them."""
    while nodes:
        node = nodes.pop()
        try:
            node.kill()
        except BaseException:
            with contextlib.suppress(OSError):
                os.killpg(node.pid, signal.SIGKILL)
            raise


# -- the report ---------------------------------------------------------------------------


def ratios(results: list[Result]) -> dict[str, float | None]:
    """The figures the targets are about, from this run's results."""
    by = {r.system: r for r in results}

    def rate(system: str) -> float | None:
        r = by.get(system)
        return r.rate if r is not None and r.rate else None

    ours = rate("blizzard-leader")
    out: dict[str, float | None] = {}
    for system in ("pysyncobj", "pysyncobj-nobatch", "pysyncobj-nocompact"):
        ref = rate(system)
        out[f"leader_vs_{system}"] = ours / ref if ours and ref else None
    local = rate("blizzard-local")
    out["leader_vs_local"] = ours / local if ours and local else None
    follower = rate("blizzard-follower")
    out["follower_vs_local"] = follower / local if follower and local else None
    leader = by.get("blizzard-leader")
    out["leader_p50_us"] = leader.p50_us if leader is not None else None
    out["leader_rate"] = ours
    out["leader_cpu_us"] = leader.cpu_us_per_op if leader is not None else None
    for system in ("blizzard-leader", "blizzard-follower", "blizzard-client"):
        plain, tls = by.get(system), by.get(system + TLS_SUFFIX)
        name = system.removeprefix("blizzard-")
        if plain is not None and tls is not None and plain.rate and tls.rate:
            out[f"{name}_tls_vs_plain"] = tls.rate / plain.rate
            if plain.p50_us and tls.p50_us:
                out[f"{name}_tls_p50_vs_plain"] = tls.p50_us / plain.p50_us
    dpdk = by.get("blizzard-leader-dpdk")
    if dpdk is not None and leader is not None:
        out["dpdk_vs_tcp_p50"] = (dpdk.p50_us / leader.p50_us
                                  if dpdk.p50_us and leader.p50_us else None)
        out["dpdk_vs_tcp_rate"] = dpdk.rate / leader.rate if dpdk.rate and leader.rate else None
        out["dpdk_vs_tcp_cpu"] = (dpdk.cpu_us_per_op / leader.cpu_us_per_op
                                  if dpdk.cpu_us_per_op and leader.cpu_us_per_op else None)
    return out


def targets(results: list[Result]) -> list[str]:
    """One line per target: the figure, the target, met or MISSED."""
    q = ratios(results)
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    if q["leader_vs_pysyncobj"] is not None:
        x = q["leader_vs_pysyncobj"]
        lines.append(f"replicated / pysyncobj (defaults) throughput: {x:.2f}x "
                     f"(target >= {TARGET_VS_PYSYNCOBJ:.0f}x: {verdict(x >= TARGET_VS_PYSYNCOBJ)})")
    for system, what in (("pysyncobj-nobatch", "no batching"),
                         ("pysyncobj-nocompact", "no compaction")):
        x = q[f"leader_vs_{system}"]
        if x is not None:
            lines.append(f"replicated / pysyncobj ({what}) throughput: {x:.2f}x "
                         f"(same target: {verdict(x >= TARGET_VS_PYSYNCOBJ)})")
    if q["leader_vs_local"] is not None:
        x = q["leader_vs_local"]
        lines.append(f"replicated / local throughput: {x:.0%} "
                     f"(target >= {TARGET_VS_LOCAL:.0%}: {verdict(x >= TARGET_VS_LOCAL)})")
    if q["leader_p50_us"] is not None:
        x = q["leader_p50_us"]
        lines.append(f"replicated synchronous put p50: {x / 1000:.2f} ms "
                     f"(target <= {TARGET_P50_US / 1000:.1f} ms: {verdict(x <= TARGET_P50_US)})")
    if q["leader_rate"] is not None:
        x = q["leader_rate"]
        lines.append(f"3 nodes, load on the leader: {x:,.0f} puts/s "
                     f"(target >= {TARGET_LEADER_RATE:,.0f}: {verdict(x >= TARGET_LEADER_RATE)})")
    if q["leader_cpu_us"] is not None:
        x = q["leader_cpu_us"]
        lines.append(f"CPU per replicated put, 3 processes: {x:.1f} µs "
                     f"(target <= {TARGET_CPU_US:.0f} µs: {verdict(x <= TARGET_CPU_US)})")
    for name in ("leader", "follower", "client"):
        if f"{name}_tls_vs_plain" in q:
            p50 = q.get(f"{name}_tls_p50_vs_plain")
            lines.append(f"TLS / plain, load on {name}: throughput {q[f'{name}_tls_vs_plain']:.0%}"
                         + (f", sync p50 {p50:.2f}x" if p50 else "") + " (no target)")
    if q.get("dpdk_vs_tcp_p50") is not None:
        x = q["dpdk_vs_tcp_p50"]
        lines.append(f"dpdk / tcp synchronous put p50: {x:.2f} "
                     f"(target <= {TARGET_DPDK_P50_VS_TCP:.2f}: "
                     f"{verdict(x <= TARGET_DPDK_P50_VS_TCP)})")
    if q.get("dpdk_vs_tcp_rate") is not None:
        x = q["dpdk_vs_tcp_rate"]
        lines.append(f"dpdk / tcp throughput: {x:.2f} (target >= {TARGET_DPDK_RATE_VS_TCP:.2f}: "
                     f"{verdict(x >= TARGET_DPDK_RATE_VS_TCP)})")
    if q.get("dpdk_vs_tcp_cpu") is not None:
        x = q["dpdk_vs_tcp_cpu"]
        lines.append(f"dpdk / tcp cpu per put: {x:.2f} (target <= {TARGET_DPDK_CPU_VS_TCP:.2f}: "
                     f"{verdict(x <= TARGET_DPDK_CPU_VS_TCP)})")
    return lines


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


HEADER = ["system", "in flight", "ops/s", "p50 ms", "p99 ms", "cpu µs/op",
          "cpu µs/op by process", "failed", "lost"]


def format_results(results: list[Result]) -> str:
    """The results table, one row per system, as text."""
    rows = []
    for r in results:
        rows.append([
            LABELS[r.system],
            r.window or "-",
            _report.rate(r.rate) if r.rate else "skipped",
            _ms(r.p50_us), _ms(r.p99_us),
            "-" if r.cpu_us_per_op is None else f"{r.cpu_us_per_op:.0f}",
            " + ".join(f"{x:.0f}" for x in r.cpu_by_process) or "-",
            r.failed, "-" if r.lost is None else r.lost,
        ])
    return _report.table(HEADER, rows)


def notes(results: list[Result]) -> list[str]:
    return [f"{LABELS[r.system]}: {r.note}" for r in results if r.note] + NOTES


NOTES = [
    "ops/s: puts of 16-byte keys and --value-bytes values (64 unless said), with 'in flight' "
    "asynchronous requests "
    "outstanding, issued from inside the process named; p50/p99: synchronous puts, one after "
    "another.",
    "failed: requests that completed with an error or never did; lost: puts missing from the map "
    "afterwards (blizzard: counted on the replica; anything but 0 is a bug).",
    "cpu us/op by process: the load's process first, then the other nodes; a 3-node "
    "cluster on 2 cores cannot go faster than ~2e6 / (sum) puts/s.",
    "blizzard persists its Raft log and maps to /dev/shm pools (pmem mode: cache-line "
    "flushes + fences); pysyncobj keeps its log in memory by default and never fsyncs.",
]


def command_line(argv: list[str] | None) -> str:
    if argv is not None:
        return _report.command_line("blizzard bench cluster", argv)
    launcher = sys.argv[0]
    if Path(launcher).name == "cluster.py":
        launcher = "python -m blizzard.bench.cluster"
    return _report.command_line(launcher, sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; 0 unless ``--check`` finds a miss."""
    parser = ArgumentParser(
        prog="blizzard bench cluster",
        description="Replicated PHashMap puts (3-node Blizzard Raft on loopback) against "
                    "the local PHashMap and PySyncObj.")
    parser.add_argument("--ops", type=int, default=None,
                        help=f"puts per throughput run (default {DEFAULT_OPS:,}; "
                             f"--quick: {QUICK_OPS:,}); the follower run does half")
    parser.add_argument("--latency-ops", type=int, default=None,
                        help=f"synchronous puts timed one by one (default "
                             f"{DEFAULT_LATENCY_OPS:,}; --quick: {QUICK_LATENCY_OPS}; "
                             f"at most {LATENCY_MAX_S:.0f} s each)")
    parser.add_argument("--value-bytes", type=int, default=VALUE_BYTES,
                        help=f"size of the values put (default {VALUE_BYTES})")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help=f"asynchronous requests in flight (default {DEFAULT_WINDOW})")
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from {','.join(SYSTEMS + EXTRA_SYSTEMS)}")
    parser.add_argument("--tls", action="store_true",
                        help="also run every blizzard cluster system with mutual TLS on every "
                             "port, right after the plain run (the TLS cost, in one run)")
    parser.add_argument("--dir", default="/dev/shm",
                        help="where the pools go (default /dev/shm, tmpfs)")
    parser.add_argument("--profile", metavar="DIR",
                        help="after the measured runs, one more leader run under cProfile "
                             "on the leader and a follower; pstats files go to DIR")
    parser.add_argument("--election-ticks", type=int, default=None,
                        help=f"the Blizzard cluster's raft.election_ticks (default: the "
                             f"config's, {RAFT_DEFAULTS.election_ticks} ticks of "
                             f"{RAFT_DEFAULTS.tick_ms} ms)")
    parser.add_argument("--transport", default="tcp",
                        help=f"comma-separated, from {','.join(TRANSPORTS)}: the Blizzard Raft "
                             f"clusters run over each; with dpdk, the round trip of one frame "
                             f"(blizzard bench frames) is measured too")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    ops = args.ops or (QUICK_OPS if args.quick else DEFAULT_OPS)
    latency_ops = args.latency_ops or (QUICK_LATENCY_OPS if args.quick else DEFAULT_LATENCY_OPS)
    systems = tuple(s for s in args.systems.split(",") if s)
    transports = tuple(t for t in args.transport.split(",") if t)
    if args.value_bytes < 1:
        parser.error("--value-bytes must be at least 1")
    _VALUE["bytes"] = args.value_bytes
    params = {"ops": ops, "latency_ops": latency_ops, "window": args.window,
              "value_bytes": args.value_bytes,
              "systems": list(systems), "dir": args.dir, "quick": args.quick,
              "tls": args.tls, "election_ticks": args.election_ticks,
              "transports": list(transports)}
    run_ = _report.Run("cluster", command_line(argv), params)
    try:
        results = run(ops, window=args.window, latency_ops=latency_ops, systems=systems,
                      directory=args.dir, profile_dir=args.profile, progress=not args.quiet,
                      tls=args.tls, transports=transports,
                      raft={"election_ticks": args.election_ticks} if args.election_ticks
                      else None)
    except ValueError as exc:
        parser.error(str(exc))
    round_trips = []
    if "dpdk" in transports:
        from blizzard.bench import frames

        meter = _report.Progress(len(frames.MODES), quiet=args.quiet)
        round_trips = frames.run(frames.QUICK_SYNC_ROUNDS if args.quick else frames.SYNC_ROUNDS,
                                 frames.QUICK_ASYNC_ROUNDS if args.quick
                                 else frames.ASYNC_ROUNDS, directory=args.dir, step=meter.step)
        meter.finish()
    run_.end()
    body = [format_results(results)]
    if round_trips:
        body.append(frames.format_results(round_trips))
    if args.profile:
        body.append(f"profiles: {args.profile}/leader.pstats, {args.profile}/follower.pstats "
                    "(python -m pstats FILE)")
    verdict = targets(results)
    _report.print_report(
        run_, body, title=f"blizzard bench cluster: {ops:,} puts of {args.value_bytes} B values "
                          f"per throughput run, "
                          f"{args.window} in flight, {latency_ops:,} synchronous puts",
        targets=verdict, notes=notes(results))
    _report.write_json(args.json, run_.record(
        targets={"vs_pysyncobj": TARGET_VS_PYSYNCOBJ, "vs_local": TARGET_VS_LOCAL,
                 "p50_us": TARGET_P50_US, "leader_rate": TARGET_LEADER_RATE,
                 "cpu_us": TARGET_CPU_US},
        verdict=verdict, ratios=ratios(results),
        results=[{**asdict(r), "label": LABELS[r.system]} for r in results], notes=NOTES,
        round_trips=[asdict(r) for r in round_trips]))
    return _report.exit_status(args.check, verdict)


if __name__ == "__main__":
    sys.exit(main())
