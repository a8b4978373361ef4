"""Fixtures for physical replication: a primary pool mirrored to in-process backups.

The backups are real :class:`BackupServer` objects with their own pool files
on ``/dev/shm`` and real TCP sockets on loopback; only the process boundary
is left out here (``test_processes.py`` has it).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from blizzard.cluster.ports import port_block
from blizzard.pmem import FileMedia, Pool
from blizzard.replication.physical import BackupServer, MirroredMedia
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

POOL_BYTES = 8 << 20


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="physical-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Mirror:
    """A primary (node 1) and ``n`` backups (nodes 2..n+1), in this process."""

    def __init__(self, root: Path, backups: int = 2, **options) -> None:
        self.root = root
        base = port_block(backups + 1)
        self.addresses = {node: ("127.0.0.1", base + node - 1) for node in range(1, backups + 2)}
        self.servers: dict[int, BackupServer] = {}
        for node in range(2, backups + 2):
            self.start_backup(node)
        self.options = options
        self.media: MirroredMedia | None = None
        self.pool: Pool | None = None

    def start_backup(self, node: int) -> BackupServer:
        server = BackupServer(self.root / f"node{node}", self.addresses[node], node=node,
                              mode="pmem")
        self.servers[node] = server
        return server

    def stop_backup(self, node: int) -> None:
        self.servers.pop(node).close()

    def open_primary(self, *, epoch: int = (1 << 16) | 1, seq: int = 0,
                     create: bool = True) -> Pool:
        path = self.root / "node1" / "data.pool"
        path.parent.mkdir(exist_ok=True)
        inner = FileMedia(path, create_size=POOL_BYTES if create else None)
        backups = {n: a for n, a in self.addresses.items() if n != 1}
        self.media = MirroredMedia(inner, backups, node=1, epoch=epoch, seq=seq,
                                   **self.options).start()
        assert self.media.wait_ready(30), self.media.backups()
        self.pool = Pool.create(self.media) if create else Pool.open(self.media)
        return self.pool

    def primary_image(self) -> bytes:
        return bytes(self.media.buf)

    def backup_image(self, node: int) -> bytes:
        server = self.servers[node]
        with server._lock:
            return bytes(server.media.buf)

    def close(self) -> None:
        if self.pool is not None and not self.pool.closed:
            self.pool.close()
        for server in list(self.servers.values()):
            server.close()


@pytest.fixture
def mirror(workdir):
    made: list[Mirror] = []

    def make(**kw) -> Mirror:
        m = Mirror(workdir, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        with contextlib.suppress(Exception):
            m.close()


def workload(pool: Pool, seed: int, ops: int, value_bytes: int = 64, *,
             suffix: str = "") -> dict:
    """A seeded mix of writes on all four structures (named h, b, s, q plus
    ``suffix``, new or empty); returns the model."""
    rng = random.Random(seed)
    structures = {
        "hashmap": PHashMap(pool, "h" + suffix),
        "bptree": PBPlusTree(pool, "b" + suffix),
        "skiplist": PSkipList(pool, "s" + suffix),
    }
    queue = PQueue(pool, "q" + suffix)
    model: dict = {name: {} for name in structures}
    model["queue"] = []
    for _ in range(ops):
        name = rng.choice([*structures, "queue"])
        if name == "queue":
            if model["queue"] and rng.random() < 0.4:
                assert queue.get() == model["queue"].pop(0)
            else:
                v = rng.randbytes(rng.randrange(1, value_bytes * 2))
                queue.put(v)
                model["queue"].append(v)
            continue
        key = b"k%05d" % rng.randrange(ops // 2 + 1)
        if rng.random() < 0.2 and key in model[name]:
            del structures[name][key]
            del model[name][key]
        else:
            v = rng.randbytes(rng.randrange(1, value_bytes * 2))
            structures[name][key] = v
            model[name][key] = v
    return model


def check_model(pool: Pool, model: dict, *, suffix: str = "") -> None:
    """Every structure of ``pool`` passes check() and holds exactly ``model``."""
    pool.check()
    for name, cls in (("hashmap", PHashMap), ("bptree", PBPlusTree), ("skiplist", PSkipList)):
        handle = cls(pool, name[0] + suffix)
        handle.check()
        assert dict(handle.items()) == model[name], name
    queue = PQueue(pool, "q" + suffix)
    queue.check()
    assert list(queue) == model["queue"]


Workload = Callable[[Pool, int, int], dict]
