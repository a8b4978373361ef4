"""Real clusters: three ``python -m blizzard serve`` processes on loopback.

Nodes are killed with SIGKILL mid-load and restarted from their pool files.
After each run: every acknowledged write is present, every replica holds the
same contents (full scans through stale local reads on each node) and passes
``check()``, and the clients' register histories are linearizable.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest

from blizzard.client import Client, connect
from blizzard.cluster import certs, protocol
from blizzard.cluster import config as configmod
from blizzard.cluster.ports import port_block
from blizzard.cluster.protocol import Kind
from blizzard.cluster.server import start_node
from blizzard.exceptions import BlizzardError, Empty
from blizzard.replication.linearizability import GET, PUT, Operation, check_history
from blizzard.structures import ops
from blizzard.structures.ops import OpCode

SNAPSHOT_ENTRIES = 200


def tls_settings(directory: Path, n: int) -> dict:
    """``[tls]`` and ``[auth]`` tables for ``n`` nodes, with certificates made in
    ``directory`` (see ``blizzard certs create``)."""
    certs.create(directory, n)
    return tomllib.loads(certs.config_snippet(directory))


class ProcessCluster:
    """A cluster of ``blizzard serve`` processes this test owns (and kills); with
    ``tls``, every port speaks mutual TLS and clients present ``client-rw``."""

    def __init__(self, n: int = 3, *, pool_size: str = "16M", tls: bool = False,
                 transport: str = "tcp", **settings) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="blizzard-test-", dir="/dev/shm"))
        self.transport = transport
        if tls:
            settings = {**tls_settings(self.dir / "certs", n), **settings}
        config = configmod.local_cluster(
            n, self.dir, base_port=port_block(2 * n), pool_size=pool_size, log_pool_size="16M",
            raft={"tick_ms": 10, "election_ticks": 10, "snapshot_entries": SNAPSHOT_ENTRIES,
                  "snapshot_tail_entries": 0},
            transport={"kind": transport, **({"memory_mb": 128} if transport == "dpdk" else {})},
            **settings)
        self.path = self.dir / "cluster.toml"
        self.path.write_text(configmod.dump(config))
        self.config = configmod.load(self.path)
        self.procs: dict[int, subprocess.Popen] = {}
        self.ids = [node.id for node in self.config.nodes]
        self.tls = tls
        #: what a Client made by hand needs to be let in
        self.credentials = {"tls": configmod.client_tls(self.config)} if tls else {}

    def start(self, node_id: int, *, wait: bool = True) -> None:
        self.procs[node_id] = start_node(self.config, node_id)
        if wait:
            self.await_start(node_id)

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id, wait=False)
        for node_id in self.ids:
            self.await_start(node_id)

    def await_start(self, node_id: int, timeout: float = 60.0) -> None:
        """Until the node answers. A start that failed only because a port was
        briefly taken is retried; any other failure fails the test."""
        deadline = time.monotonic() + timeout
        for _ in range(5):
            proc = self.procs[node_id]
            while proc.poll() is None:
                try:
                    with Client([self.config.node(node_id).client], failover=False,
                                timeout_s=0.2, **self.credentials) as c:
                        c._call(Kind.STATUS, b"")
                    return
                except (OSError, BlizzardError):
                    assert time.monotonic() < deadline, f"node {node_id} did not start\n" \
                        + self.diagnosis()
                    time.sleep(0.05)
            tail = self.log(node_id)[-3000:]
            assert "address already in use" in tail.lower(), \
                f"node {node_id} exited at start:\n{tail}"
            time.sleep(0.5)
            self.procs[node_id] = start_node(self.config, node_id)
        raise AssertionError(f"node {node_id}: its ports stayed taken")

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(node_id)
        proc.send_signal(sig)
        proc.wait(30)

    def client(self, **options) -> Client:
        return connect(self.path, **options)

    def node_client(self, node_id: int) -> Client:
        """A client bound to one node only (no failover), for its local state."""
        return Client([self.config.node(node_id).client], failover=False, timeout_s=10.0,
                      **self.credentials)

    def _log_path(self, node_id: int) -> str:
        return f"{self.config.node_dir(node_id)}.log"

    def log(self, node_id: int) -> str:
        return Path(self._log_path(node_id)).read_text()

    def status(self) -> dict:
        with self.client(timeout_s=5.0) as c:
            return c.node_statuses()

    def wait_for_leader(self, *, not_in: tuple[int, ...] = (), timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        with self.client(timeout_s=5.0) as c:
            while True:
                up = [s for s in c.node_statuses().values() if "leader" in s]
                leaders = {s["leader"] for s in up}
                if (len(leaders) == 1 and not leaders & {0, *not_in}
                        and any(s["role"] == "leader" for s in up)):
                    return leaders.pop()
                assert time.monotonic() < deadline, f"no leader: {up}\n{self.diagnosis()}"
                time.sleep(0.05)

    def wait_converged(self, timeout: float = 60.0) -> dict:
        """Until every node is up and has applied the same, committed, index."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            applied = {s.get("applied") for s in status.values()}
            commits = {s.get("commit") for s in status.values()}
            if len(status) == len(self.ids) and len(applied) == 1 and applied == commits \
                    and None not in applied:
                return status
            assert time.monotonic() < deadline, \
                f"replicas did not converge: {status}\n{self.diagnosis()}"
            time.sleep(0.1)

    def diagnosis(self) -> str:
        """Which processes exited, and the end of every node's log."""
        lines = [f"node {i}: exited with {p.returncode}" for i, p in self.procs.items()
                 if p.poll() is not None]
        for node_id in self.ids:
            try:
                tail = self.log(node_id).splitlines()[-30:]
            except OSError:
                tail = ["(no log)"]
            lines += [f"--- node {node_id} log", *tail]
        return "\n".join(lines)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


#: the fixture's parameter: which transport, and TLS or not
VARIANTS = {"plain": {"transport": "tcp"}, "tls": {"transport": "tcp", "tls": True},
            "dpdk": {"transport": "dpdk"}}


@pytest.fixture(params=["plain", "tls"])
def cluster(request):
    """Every test here runs twice: over plain TCP, and with TLS on every port; a
    test marked ``@pytest.mark.parametrize("cluster", [...], indirect=True)``
    names its own variants (``VARIANTS``: DPDK too)."""
    c = ProcessCluster(**VARIANTS[request.param])
    try:
        c.start_all()
        c.wait_for_leader()
        yield c
    finally:
        c.close()


def replica_contents(cluster: ProcessCluster) -> dict[int, tuple[dict, list]]:
    """Each node's full map "kv" and queue "jobs", by stale local reads, after check()."""
    contents = {}
    for node_id in cluster.ids:
        with cluster.node_client(node_id) as c:
            assert c.check(stale=True) is True
            names = c.names(stale=True)
            kv = jobs = ()
            if "kv" in names:
                kv = c.hashmap("kv", linearizable=False, create=False).items()
            if "jobs" in names:
                jobs = c.queue("jobs", linearizable=False, create=False)
            kv, jobs = dict(kv), list(jobs)
            contents[node_id] = (kv, jobs)
    return contents


def assert_replicas_identical(cluster: ProcessCluster) -> tuple[dict, list]:
    cluster.wait_converged()
    contents = replica_contents(cluster)
    first = contents[cluster.ids[0]]
    for node_id, other in contents.items():
        assert other[0] == first[0], f"node {node_id}'s map differs from node {cluster.ids[0]}'s"
        assert other[1] == first[1], f"node {node_id}'s queue differs from node {cluster.ids[0]}'s"
    return first


class Load:
    """Client threads writing unique keys, a register history, a producer and a consumer."""

    def __init__(self, cluster: ProcessCluster, *, seed: int = 0) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[bytes, bytes] = {}
        self.sequential = 0
        self.history: list[Operation] = []
        self.produced: list[int] = []
        self.consumed: list[int] = []
        self.errors: list[BaseException] = []
        self.seed = seed
        self.threads = [threading.Thread(target=self._guard, args=(fn, i), daemon=True)
                        for i, fn in enumerate((self._writer, self._writer, self._register,
                                                self._register, self._producer, self._consumer,
                                                self._pipelined))]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"
        assert not self.errors, self.errors

    def _guard(self, fn, i: int) -> None:
        try:
            with self.cluster.client() as client:
                fn(client, i)
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)

    def acknowledged(self) -> int:
        """Writes acknowledged one at a time (the pipelined batches run ahead)."""
        return self.sequential

    def _writer(self, client: Client, i: int) -> None:
        kv = client.hashmap("kv")
        n = 0
        while not self.stop.is_set():
            key, value = b"u%d-%d" % (i, n), b"v%d" % n
            kv[key] = value  # raises if not committed in time: the test fails
            with self.lock:
                self.acked[key] = value
                self.sequential += 1
            n += 1

    def _pipelined(self, client: Client, i: int) -> None:
        """Batches of puts through ``update`` (many in flight on one socket)."""
        kv = client.hashmap("kv")
        n = 0
        while not self.stop.is_set():
            batch = {b"p%d-%d" % (i, n + j): b"w%d" % (n + j) for j in range(20)}
            kv.update(batch)
            with self.lock:
                self.acked.update(batch)
            n += 20

    def _register(self, client: Client, i: int) -> None:
        kv = client.hashmap("kv")
        rng = random.Random(self.seed * 100 + i)
        n = 0
        while not self.stop.is_set():
            key = b"r%d" % rng.randrange(3)
            if rng.random() < 0.5:
                value = b"%d-%d" % (i, n)
                invoke = time.monotonic()
                try:
                    kv[key] = value
                    ret = time.monotonic()
                except Exception:
                    ret = math.inf
                self.history.append(Operation(PUT, key, value, invoke, ret))
            else:
                invoke = time.monotonic()
                value = kv.get(key)
                self.history.append(Operation(GET, key, value, invoke, time.monotonic()))
            n += 1

    def _producer(self, client: Client, i: int) -> None:
        jobs = client.queue("jobs")
        n = 0
        while not self.stop.is_set():
            jobs.put(b"%d" % n)
            self.produced.append(n)
            n += 1
            time.sleep(0.002)

    def _consumer(self, client: Client, i: int) -> None:
        jobs = client.queue("jobs")
        while not self.stop.is_set():
            with contextlib.suppress(Empty):  # wake up now and then to see whether to stop
                self.consumed.append(int(jobs.get(timeout=0.2)))


def wait_for(predicate, timeout: float = 60.0, what: str = "condition",
             cluster: ProcessCluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, \
            f"{what} not reached in time\n{cluster.diagnosis() if cluster else ''}"
        time.sleep(0.02)


def check_run(cluster: ProcessCluster, load: Load) -> None:
    kv, queued = assert_replicas_identical(cluster)
    missing = [k for k, v in load.acked.items() if kv.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # The queue: every acknowledged put was consumed or is still queued, exactly once, in order.
    seen = load.consumed + [int(x) for x in queued]
    assert len(seen) == len(set(seen)), "an item was delivered twice"
    assert seen == sorted(seen), "the queue is not FIFO"
    assert set(load.produced) <= set(seen), "an acknowledged put was lost"
    assert check_history(load.history), "the register history is not linearizable"


ALL = pytest.mark.parametrize("cluster", ["plain", "tls", "dpdk"], indirect=True)


@ALL
def test_leader_killed_mid_load_then_restarted(cluster):
    """SIGKILL the leader under load: a new leader takes over, no acknowledged write
    is lost, and the old leader, restarted from its pools, catches up."""
    leader = cluster.wait_for_leader()
    with Load(cluster, seed=1) as load:
        wait_for(lambda: load.acknowledged() >= 100, what="100 writes")
        cluster.kill(leader)
        before = load.acknowledged()
        new_leader = cluster.wait_for_leader(not_in=(leader,))
        assert new_leader != leader
        wait_for(lambda: load.acknowledged() >= before + 100, what="writes after the failover",
                 cluster=cluster)
        cluster.start(leader)
        wait_for(lambda: load.acknowledged() >= before + 200, what="writes after the restart")
    assert len(load.history) > 50 and load.consumed
    check_run(cluster, load)
    assert "up (pid" in cluster.log(leader)


@ALL
def test_followers_restarted_one_catching_up_from_a_snapshot(cluster):
    """A follower stopped (SIGTERM, a graceful exit under load) and restarted catches
    up from the log; one SIGKILLed and restarted after the leader compacted its log
    past the follower's position gets a snapshot."""
    leader = cluster.wait_for_leader()
    first, second = (i for i in cluster.ids if i != leader)
    with Load(cluster, seed=2) as load:
        wait_for(lambda: load.acknowledged() >= 50, what="50 writes", cluster=cluster)
        cluster.kill(first, signal.SIGTERM)
        assert f"node {first}: stopped" in cluster.log(first)
        wait_for(lambda: load.acknowledged() >= 100, what="writes with a follower down",
                 cluster=cluster)
        cluster.start(first)
        wait_for(lambda: load.acknowledged() >= 150, what="writes after the restart",
                 cluster=cluster)
        cluster.kill(second)
        down_at = load.acknowledged()

        def compacted_past_second() -> bool:
            status = cluster.status()[leader]
            return status["first_index"] > last_applied_of_second + SNAPSHOT_ENTRIES // 2

        last_applied_of_second = max(s.get("applied", 0) for s in cluster.status().values())
        wait_for(compacted_past_second, what="the leader compacting its log", cluster=cluster)
        assert load.acknowledged() > down_at
        cluster.start(second)
        wait_for(lambda: load.acknowledged() >= down_at + 100, what="writes after the restart",
                 cluster=cluster)
    status = cluster.wait_converged()
    assert status[second]["first_index"] > last_applied_of_second  # it got a snapshot...
    assert status[second]["snapshots_installed"] >= 1  # ...as an image of the leader's pool
    check_run(cluster, load)


def test_a_client_fails_over_when_its_node_dies(cluster):
    """A client whose first choice is a dead node moves on and retries there."""
    victim = cluster.ids[0]
    cluster.kill(victim)
    addresses = [cluster.config.node(i).client for i in cluster.ids]  # the dead one first
    client = Client(addresses, timeout_s=30.0, **cluster.credentials)
    client._preferred = 0
    with client:
        try:
            m = client.hashmap("kv")
        except Exception as exc:
            raise AssertionError(cluster.diagnosis()) from exc
        m[b"a"] = b"1"
        assert m[b"a"] == b"1"
        assert dict(m.items()) == {b"a": b"1"}
        # Once it knows which address is which node, it follows the leader hint.
        leader = cluster.wait_for_leader()
        client.node_statuses()
        m[b"b"] = b"2"
        assert client._local.index == cluster.ids.index(leader)
    cluster.start(victim)
    kv, _ = assert_replicas_identical(cluster)
    assert kv == {b"a": b"1", b"b": b"2"}


def test_a_request_retried_on_another_node_is_applied_once(cluster):
    """The same (client id, seq) sent to every node in turn -- what a client does
    when it fails over -- pops the queue once; every node answers the same."""
    with cluster.client() as client:
        jobs = client.queue("jobs")
        jobs.put_many([b"first"])
        jobs.put(b"second")
    pop = ops.encode(ops.Op("jobs", OpCode.QUEUE_GET))
    answers = []
    for node_id in cluster.ids:
        with cluster.node_client(node_id) as c:
            answers.append(protocol.decode_value(c._call(Kind.SUBMIT, pop, client=4242, seq=1)))
    assert answers == [b"first"] * len(cluster.ids)
    _, queued = assert_replicas_identical(cluster)
    assert queued == [b"second"]



@pytest.mark.parametrize("cluster", ["plain", "dpdk"], indirect=True)  # rogue: no TLS
def test_frames_from_a_rogue_peer_are_refused_and_nothing_is_lost(cluster):
    """A follower is killed and something else takes its place on the network:
    it speaks the transport (a valid handshake, or live memif links) but sends
    damaged frames and messages that are not Raft. The nodes count and drop
    them, keep serving, and once the real follower is back the run checks out."""
    from tests.replication.transport.conftest import HostProcess

    leader = cluster.wait_for_leader()
    victim = max(i for i in cluster.ids if i != leader)
    config = cluster.config
    spec = {"kind": cluster.transport, "node": victim, "nodes": cluster.ids,
            "run_dir": str(config.data_dir), "cluster_id": config.cluster_id,
            "addresses": {str(n.id): list(n.raft) for n in config.nodes},
            "options": dict(config.transport.options)}
    with Load(cluster, seed=3) as load:
        wait_for(lambda: load.acknowledged() >= 50, what="50 writes")
        cluster.kill(victim)
        before = {i: s for i, s in cluster.status().items() if i != victim}
        rogue = HostProcess(spec, cluster.dir / "rogue.log")
        try:
            others = [i for i in cluster.ids if i != victim]
            wait_for(lambda: all(rogue.call("links")["links"][str(i)] for i in others),
                     what="the rogue's links", cluster=cluster)
            for target in others:
                rogue.call(f"send {target} 20 100")  # framed right, but not Raft messages
                if cluster.transport == "dpdk":
                    for frame in _damaged_frames(config, victim, target):
                        assert rogue.call(f"raw {target} {frame}")["accepted"]

            def counted() -> bool:
                status = cluster.status()
                return all(status[i]["bad_frames"] >= before[i]["bad_frames"] + 20
                           and status[i]["transport"]["bad_frames"]
                           >= before[i]["transport"]["bad_frames"]
                           + (4 if cluster.transport == "dpdk" else 0) for i in others)

            wait_for(counted, what="the rogue's frames counted", cluster=cluster)
        finally:
            rogue.kill()
        mark = load.acknowledged()
        wait_for(lambda: load.acknowledged() >= mark + 50, what="writes after the rogue",
                 cluster=cluster)
        cluster.start(victim)
        wait_for(lambda: load.acknowledged() >= mark + 100, what="writes after the restart")
    check_run(cluster, load)
    for node_id in cluster.ids:
        if node_id != victim:
            assert f"dropped a malformed frame from node {victim}" in cluster.log(node_id)
            if cluster.transport == "dpdk":
                assert f"refused a frame on the link to node {victim}: bad checksum" \
                    in cluster.log(node_id)


def _damaged_frames(config, source: int, target: int) -> list[str]:
    """Frames of the DPDK transport's format, each wrong in one way (hex)."""
    from blizzard.replication.transport.dpdk import frames

    tag = frames.cluster_tag(config.cluster_id)

    def frame(**fields) -> str:
        values = {"cluster": tag, "source": source, "destination": target, "session": 5,
                  "message": 1, "payload": b"\x01" * 40, **fields}
        return frames.frame(**values).hex()

    return [frame(checksum=7), frame(cluster=tag ^ 1), frame(destination=99),
            frame(source=99), frame(index=3, count=2)]
