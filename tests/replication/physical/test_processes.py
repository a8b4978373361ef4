"""Physical replication with real processes: ``blizzard mirror serve`` backups,
an application embedding the primary, SIGKILL at a random moment under load,
promotion, and the deposed primary refused.

Replay a run: the seed is printed in the failure message (BLIZZARD_SEED=...).
"""

from __future__ import annotations

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

from blizzard.cluster import config as configmod
from blizzard.cluster.ports import port_block
from blizzard.pmem import Pool
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList
from tests.replication.physical.primary_app import value

KINDS = {"h": PHashMap, "b": PBPlusTree, "s": PSkipList, "q": PQueue}
START_TIMEOUT_S = 120.0


class MirrorCluster:
    """Backups as ``blizzard mirror serve`` processes, primaries as app processes."""

    def __init__(self, n: int = 3, transport: str = "tcp") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="physical-proc-", dir="/dev/shm"))
        config = configmod.local_cluster(
            n, self.dir, base_port=port_block(2 * n), pool_size="16M", log_pool_size="16M",
            transport={"kind": transport, **({"memory_mb": 128} if transport == "dpdk" else {})})
        self.path = self.dir / "cluster.toml"
        self.path.write_text(configmod.dump(config))
        self.config = configmod.load(self.path)
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, list[str]] = {}

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=log,
                                    text=True, env={**os.environ, **(env or {})})
        self.procs[name] = proc
        lines: list[str] = []
        self.outputs[name] = lines
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                         daemon=True).start()
        return proc

    def start_backup(self, node: int) -> None:
        self._spawn(f"backup{node}", ["-m", "blizzard", "mirror", "serve", "--config",
                                      str(self.path), "--node", str(node)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while "backup up" not in self.log(f"backup{node}"):
            assert self.procs[f"backup{node}"].poll() is None, self.log(f"backup{node}")
            assert time.monotonic() < deadline, f"backup {node} did not start"
            time.sleep(0.05)

    def start_app(self, name: str, node: int, prefix: str, count: int, acks: str = "all",
                  acked: Path | None = None, sync_s: float = 0) -> subprocess.Popen:
        argv = ["-m", "tests.replication.physical.primary_app", str(self.path), str(node),
                prefix, str(count), acks]
        return self._spawn(name, argv + ([str(acked)] if acked else []),
                           {"BLIZZARD_APP_SYNC_S": str(sync_s)})

    def wait_lines(self, name: str, predicate, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.outputs[name]):
            proc = self.procs[name]
            assert proc.poll() is None or predicate(self.outputs[name]), \
                f"{name} exited {proc.returncode}:\n{self.log(name)[-3000:]}"
            assert time.monotonic() < deadline, f"{name}: timed out\n{self.log(name)[-3000:]}"
            time.sleep(0.01)

    def finish(self, name: str, timeout_s: float = START_TIMEOUT_S) -> int:
        code = self.procs[name].wait(timeout_s)
        time.sleep(0.05)  # the reader thread takes the last lines
        return code

    def acked(self, name: str) -> list[str]:
        return [line.split(None, 1)[1].strip() for line in self.outputs[name]
                if line.startswith("ack ")]

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pool_copy(self, node: int) -> Path:
        """A copy of the node's pool file, to open without disturbing the node."""
        target = self.dir / f"copy{node}.pool"
        shutil.copyfile(self.config.node_dir(node) / "data.pool", target)
        return target

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def assert_holds(path: Path, acked: list[str], seed: int) -> None:
    """The pool at ``path`` opens (recovery first), passes check() and holds every
    acknowledged write."""
    with Pool.open(path, mode="none") as pool:
        pool.check()
        handles = {name: cls(pool, name) for name, cls in KINDS.items() if name in pool.roots()}
        queue = set(handles["q"]) if "q" in handles else set()
        for entry in acked:
            kind, key = entry.split()
            k = key.encode()
            if kind == "q":
                assert value(k) in queue, f"BLIZZARD_SEED={seed}: acknowledged q {key} lost"
            else:
                assert kind in handles and handles[kind].get(k) == value(k), \
                    f"BLIZZARD_SEED={seed}: acknowledged {kind} {key} lost"
        for handle in handles.values():
            handle.check()


@pytest.fixture
def cluster():
    c = MirrorCluster()
    yield c
    c.close()


def test_sigkill_primary_then_promote_and_continue(cluster):
    """SIGKILL the primary at a random moment under load on all four structures:
    each backup's pool opens, passes check() and holds every acknowledged write;
    promote a backup, the application continues on it with nothing acknowledged
    lost, the other backup follows the new epoch, and the old primary, restarted,
    is refused as deposed."""
    seed = int(os.environ.get("BLIZZARD_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    c = cluster
    c.start_backup(2)
    c.start_backup(3)
    c.start_app("app1", 1, "a", 100_000)
    c.wait_lines("app1", lambda lines: sum(1 for x in lines if x.startswith("ack ")) >= 8)
    time.sleep(rng.uniform(0.0, 1.5))
    c.procs["app1"].send_signal(signal.SIGKILL)
    c.finish("app1")
    acked = c.acked("app1")
    assert acked, f"BLIZZARD_SEED={seed}: nothing acknowledged"
    for node in (2, 3):
        assert_holds(c.pool_copy(node), acked, seed)

    # Promote node 2; its backup process hands over and exits.
    promote = subprocess.run([sys.executable, "-m", "blizzard", "mirror", "promote", "--config",
                              str(c.path), "--node", "2"], capture_output=True, text=True,
                             timeout=START_TIMEOUT_S)
    assert promote.returncode == 0, promote.stderr
    assert "promoted" in promote.stdout
    assert c.finish("backup2") == 0
    acked_file = c.dir / "acked.txt"
    acked_file.write_text("\n".join(acked) + "\n")
    # Node 1 is gone: the new primary runs on the one backup left.
    c.start_app("app2", 2, "b", 30, "1", acked_file)
    assert c.finish("app2") == 0, c.log("app2")
    assert any(line.startswith("verified ") for line in c.outputs["app2"])
    acked2 = c.acked("app2")
    assert len(acked2) == 4 * 30 and not any(x.startswith("unack") for x in c.outputs["app2"])

    # The other backup followed the new epoch and holds everything.
    assert_holds(c.pool_copy(3), acked + acked2, seed)

    # The old primary, restarted, is refused: node 3 promised a newer epoch.
    c.start_app("app1-again", 1, "c", 5, "1")
    assert c.finish("app1-again") == 3, c.log("app1-again")
    assert any(line.startswith("deposed") for line in c.outputs["app1-again"])
    assert_holds(c.pool_copy(3), acked + acked2, seed)


def test_a_primary_waits_for_its_backups(cluster):
    """With every backup's acknowledgement needed, a primary whose backup is down
    applies nothing until it is up and resynchronised, then runs normally."""
    c = cluster
    c.start_backup(2)
    c.start_app("app1", 1, "a", 20)
    time.sleep(0.5)
    assert not c.acked("app1")
    assert c.procs["app1"].poll() is None  # waiting for node 3
    c.start_backup(3)
    assert c.finish("app1") == 0, c.log("app1")
    assert len(c.acked("app1")) == 80


def test_a_backup_killed_under_load_resynchronises(cluster):
    """With one acknowledgement of two needed, SIGKILL a backup mid-load: writes go
    on; restarted, it resynchronises and ends holding every acknowledged write."""
    seed = int(os.environ.get("BLIZZARD_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    c = cluster
    c.start_backup(2)
    c.start_backup(3)
    c.start_app("app1", 1, "a", 400, "1", sync_s=60)
    c.wait_lines("app1", lambda lines: sum(1 for x in lines if x.startswith("ack ")) >= 8)
    time.sleep(rng.uniform(0.0, 0.5))
    c.procs["backup3"].send_signal(signal.SIGKILL)
    c.finish("backup3")
    acked_at_kill = len(c.acked("app1"))
    c.wait_lines("app1", lambda lines: len([x for x in lines if x.startswith("ack ")])
                 >= acked_at_kill + 40)  # the primary goes on with node 2 alone
    c.start_backup(3)
    assert c.finish("app1") == 0, c.log("app1")
    acked = c.acked("app1")
    assert len(acked) == 4 * 400, f"BLIZZARD_SEED={seed}: {c.outputs['app1'][-3:]}"
    assert "synced True" in c.outputs["app1"][-1], c.outputs["app1"][-3:]  # node 3 caught up
    from blizzard.cluster.physical import node_status

    status = node_status(c.path)[3]
    assert status["reachable"] and status["in_sync"], f"BLIZZARD_SEED={seed}: {status}"
    assert status["resyncs"] >= 1
    assert_holds(c.pool_copy(3), acked, seed)
    assert_holds(c.pool_copy(2), acked, seed)


@pytest.mark.parametrize("seed", [1])
def test_backup_images_equal_the_primary_byte_for_byte_over_dpdk(seed):
    """test_mirror.py's image check with the fences on DPDK memif links: a seeded
    workload on all four structures, every fence acknowledged by both backups,
    then each backup's pool file is the primary's pool, byte for byte. (One DPDK
    node per process: the primary and the backups are processes here.)"""
    import hashlib

    c = MirrorCluster(transport="dpdk")
    try:
        c.start_backup(2)
        c.start_backup(3)
        release = c.dir / "release"
        c._spawn("app", ["-m", "tests.replication.physical.image_app", str(c.path), str(seed),
                         "300", str(release)])
        c.wait_lines("app", lambda lines: any(x.startswith("image ") for x in lines))
        primary = next(x.split()[1] for x in c.outputs["app"] if x.startswith("image "))
        for node in (2, 3):
            image = (c.config.node_dir(node) / "data.pool").read_bytes()
            assert hashlib.blake2b(image).hexdigest() == primary, \
                f"seed {seed}: backup {node} differs from the primary"
        release.touch()
        assert c.finish("app") == 0, c.log("app")
        for node in (2, 3):  # the stream came over DPDK, not the backup's TCP control port
            assert "connected from node 1 (dpdk channel" in c.log(f"backup{node}"), \
                c.log(f"backup{node}")
    finally:
        c.close()
