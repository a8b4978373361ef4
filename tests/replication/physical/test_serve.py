"""Remote clients of a physical cluster: every node runs ``blizzard serve``
(``[replication] backend = "physical"``), a client writes to the primary on all
four structures, the primary is SIGKILLed under that load, a backup is
promoted, and the same client carries on with the promoted node: every
acknowledged write is there, once, and writing continues.

Replay a run: the seed is printed in the failure message (BLIZZARD_SEED=...).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from blizzard.client import Client, connect
from blizzard.cluster import config as configmod
from blizzard.cluster import protocol as proto
from blizzard.cluster.client import _Connection
from blizzard.cluster.ports import port_block
from blizzard.cluster.protocol import Kind, ReadKind, Request, Status
from blizzard.cluster.server import start_node
from blizzard.exceptions import BlizzardError
from tests.cluster.test_processes import tls_settings

START_TIMEOUT_S = 120.0
KINDS = ("h", "b", "s", "q")


class PhysicalCluster:
    """``blizzard serve`` processes of one physical cluster, owned (and killed) here."""

    def __init__(self, n: int = 3, *, tls: bool = False, acks: int | str = 1,
                 transport: str = "tcp") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="physical-serve-", dir="/dev/shm"))
        settings = tls_settings(self.dir / "certs", n) if tls else {}
        config = configmod.local_cluster(
            n, self.dir, base_port=port_block(2 * n), pool_size="16M",
            replication={"backend": "physical", "acks": acks},
            transport={"kind": transport, **({"memory_mb": 128} if transport == "dpdk" else {})},
            **settings)
        self.path = self.dir / "cluster.toml"
        self.path.write_text(configmod.dump(config))
        self.config = configmod.load(self.path)
        self.credentials = {"tls": configmod.client_tls(self.config)} if tls else {}
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self, node_id: int) -> None:
        self.procs[node_id] = start_node(self.config, node_id)

    def status(self, node_id: int) -> dict:
        with Client([self.config.node(node_id).client], failover=False, timeout_s=0.5,
                    **self.credentials) as c:
            return proto.decode_json(c._call(Kind.STATUS, b""))

    def await_role(self, node_id: int, role: str, *, in_sync: bool = False,
                   timeout_s: float = START_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        while True:
            proc = self.procs[node_id]
            assert proc.poll() is None, f"node {node_id} exited:\n{self.log(node_id)}"
            with contextlib.suppress(OSError, BlizzardError):
                status = self.status(node_id)
                if status["role"] == role and (not in_sync or status.get("in_sync")):
                    return status
            assert time.monotonic() < deadline, \
                f"node {node_id} is not {role}: {status}\n{self.log(node_id)}"
            time.sleep(0.05)

    def kill(self, node_id: int) -> None:
        proc = self.procs.pop(node_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def promote(self, node_id: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blizzard", "mirror", "promote", "--config",
                               str(self.path), "--node", str(node_id)],
                              capture_output=True, text=True, timeout=START_TIMEOUT_S)

    def log(self, node_id: int) -> str:
        path = Path(f"{self.config.node_dir(node_id)}.log")
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def physical_cluster():
    made: list[PhysicalCluster] = []

    def make(**options) -> PhysicalCluster:
        c = PhysicalCluster(**options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def value(key: bytes) -> bytes:
    return key * 3


class Writer(threading.Thread):
    """Writes round i (``p-i`` into h, b, s and onto q) until told to stop;
    records each write once the cluster acknowledged it."""

    def __init__(self, client: Client, prefix: str) -> None:
        super().__init__(daemon=True)
        self.structures = {"h": client.hashmap("h"), "b": client.bptree("b"),
                           "s": client.skiplist("s"), "q": client.queue("q")}
        self.prefix = prefix
        self.acked: list[tuple[str, bytes]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                key = f"{self.prefix}-{i:05d}".encode()
                for kind, structure in self.structures.items():
                    if kind == "q":
                        structure.put(value(key))
                    else:
                        structure[key] = value(key)
                    self.acked.append((kind, key))
                i += 1
        except BaseException as exc:
            self.error = exc

    def wait_acked(self, count: int, seed: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < count:
            assert self.error is None, f"BLIZZARD_SEED={seed}: {self.error!r}"
            assert time.monotonic() < deadline, f"BLIZZARD_SEED={seed}: {len(self.acked)} acked"
            time.sleep(0.01)

    def finish(self, seed: int) -> None:
        self.stop.set()
        self.join(START_TIMEOUT_S)
        assert self.error is None, f"BLIZZARD_SEED={seed}: {self.error!r}"


def assert_acknowledged(client: Client, acked: list[tuple[str, bytes]], seed: int) -> None:
    """Every acknowledged write is there; the queue holds each put once, in order."""
    maps = {"h": client.hashmap("h"), "b": client.bptree("b"), "s": client.skiplist("s")}
    contents = {kind: dict(m.items()) for kind, m in maps.items()}
    for kind, key in acked:
        if kind != "q":
            assert contents[kind].get(key) == value(key), \
                f"BLIZZARD_SEED={seed}: acknowledged {kind} {key!r} lost"
    puts = [value(key) for kind, key in acked if kind == "q"]
    assert list(client.queue("q")) == puts, f"BLIZZARD_SEED={seed}: the queue differs"
    client.check()


def test_a_backup_names_the_primary(physical_cluster):
    """A backup's client port answers NOT_READY naming the primary (node and epoch),
    which the client follows; STATUS says each node's role."""
    c = physical_cluster()
    for node_id in (1, 2, 3):
        c.start(node_id)
    c.await_role(1, "primary")
    status = c.await_role(2, "backup", in_sync=True)
    assert status["leader"] == 1 and status["epoch"] == "1.1"
    c.await_role(3, "backup", in_sync=True)
    conn = _Connection(c.config.node(2).client, 10.0)
    try:
        conn.send(proto.encode_request(Request(
            Kind.READ, 7, payload=proto.read_payload(ReadKind.NAMES, "", b""))))
        response = conn.recv()
    finally:
        conn.close()
    assert response.status == Status.NOT_READY and response.leader == 1
    leader, message = proto.decode_not_ready(response.payload)
    assert leader == 1
    assert message == "node 2 is a backup, not the primary; the primary is node 1 (epoch 1.1)"
    shown = subprocess.run([sys.executable, "-m", "blizzard", "cluster", "status", "--config",
                            str(c.path)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[:4] for line in shown.stdout.splitlines()[2:]] == [
        ["1", "primary", "1.1", "1"], ["2", "backup", "1.1", "1"], ["3", "backup", "1.1", "1"]]
    with connect(c.path) as client:  # whichever node it tries first, it ends on node 1
        client.hashmap("h")[b"k"] = b"v"
        assert client.hashmap("h")[b"k"] == b"v"
        assert client.status()["leader"] == 1


@pytest.mark.parametrize("transport", ["tcp", "dpdk"])
def test_sigkill_primary_promote_and_the_client_continues(physical_cluster, transport):
    """SIGKILL the primary while a remote client writes to all four structures;
    promote a backup; the client's write in flight completes on the promoted
    node, which holds every acknowledged write exactly once, and writing goes
    on. The old primary, restarted, rejoins as a backup of the new epoch.
    Over DPDK the mirror's fences travel on memif links between the processes."""
    seed = int(os.environ.get("BLIZZARD_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    c = physical_cluster(transport=transport)
    for node_id in (1, 2, 3):
        c.start(node_id)
    c.await_role(1, "primary")
    c.await_role(2, "backup", in_sync=True)
    c.await_role(3, "backup", in_sync=True)
    client = connect(c.path, timeout_s=START_TIMEOUT_S)
    writer = Writer(client, "a")
    writer.start()
    writer.wait_acked(4 * rng.randrange(5, 40), seed)
    c.kill(1)
    killed_at = len(writer.acked)
    time.sleep(rng.uniform(0.0, 0.5))
    promote = c.promote(2)
    promoted = 2
    if promote.returncode != 0 and "promote node 3" in promote.stderr:
        promote, promoted = c.promote(3), 3  # node 3 held later fences
    assert promote.returncode == 0, f"BLIZZARD_SEED={seed}: {promote.stderr}"
    c.await_role(promoted, "primary")
    writer.wait_acked(killed_at + 4 * 10, seed)  # writing goes on, on the new primary
    writer.finish(seed)
    assert client.status()["leader"] == promoted
    assert_acknowledged(client, writer.acked, seed)

    c.start(1)  # deposed: it rejoins as a backup and is resynchronised
    status = c.await_role(1, "backup", in_sync=True)
    assert status["leader"] == promoted and status["demotions"] == 1
    client.hashmap("h")[b"after"] = b"rejoin"
    assert client.hashmap("h")[b"after"] == b"rejoin"
    client.close()


def test_tls_on_a_physical_primary(physical_cluster):
    """With [tls] configured the primary's client port speaks mutual TLS, as a
    Raft node's does; a client without TLS is refused."""
    c = physical_cluster(n=2, tls=True, acks="all")
    for node_id in (1, 2):
        c.start(node_id)
    c.await_role(1, "primary")
    with connect(c.path) as client:
        for kind in ("hashmap", "bptree", "skiplist"):
            getattr(client, kind)(kind)[b"k"] = b"v"
        client.queue("q").put(b"job")
        assert [client.hashmap("hashmap")[b"k"], client.queue("q").get()] == [b"v", b"job"]
    with pytest.raises(BlizzardError, match="TLS"), \
            Client([c.config.node(1).client], timeout_s=5) as plain:
        plain.hashmap("h")
