"""``blizzard demo``: the library end to end, in a few seconds.

1. **pool** -- create a pool under /dev/shm, write records in transactions,
   close, reopen (recovery runs), verify, print the pool's stats;
2. **structures** -- a PHashMap and a PQueue in that kind of pool, reopened;
3. **replicated** -- a 3-node Raft cluster on loopback (real TCP, real pools):
   writes through a follower, the leader stopped, writes to the new leader,
   the old leader restarted from its pool files, every replica compared.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def pool_section(directory: Path, records: int, mode: str) -> None:
    from blizzard.pmem import Pool

    path = directory / "demo.pool"
    started = time.perf_counter()
    with Pool.create(path, 64 << 20, layout="demo", mode=mode) as pool:
        with pool.transaction() as tx:
            table = tx.alloc(8 * records, zero=True)
            tx.set_root("records", table, b"demo")
        for i in range(records):
            with pool.transaction() as tx:
                record = f"record {i:06d}".encode()
                off = tx.alloc(len(record))
                pool.buf[off:off + len(record)] = record
                tx.write(table + 8 * i, off.to_bytes(8, "little"))
    elapsed = time.perf_counter() - started
    print(f"pool: wrote {records} records in {records + 1} transactions "
          f"({records / elapsed:,.0f} tx/s, durability {mode})")
    with Pool.open(path, layout="demo", mode=mode) as pool:
        table = pool.root("records").off
        for i in range(records):
            off = int.from_bytes(pool.read(table + 8 * i, 8), "little")
            expect = f"record {i:06d}".encode()
            if pool.read(off, len(expect)) != expect:
                raise SystemExit(f"record {i} is wrong after reopening")
        pool.check()
        stats = pool.stats()
        print(f"pool: reopened, {records} records verified, check() passed; "
              f"{_human(stats.capacity)} capacity, {_human(stats.used)} used, "
              f"largest free extent {_human(stats.largest_free_extent)}")
        print(f"pool: {pool.media.durability}")


def structures_section(directory: Path, mode: str) -> None:
    from blizzard.pmem import Pool
    from blizzard.structures import PHashMap, PQueue

    path = directory / "structures.pool"
    with Pool.create(path, 64 << 20, layout="demo", mode=mode) as pool:
        users = PHashMap(pool, "users", key_codec="str", value_codec="str")
        for i in range(1000):
            users[f"user{i}"] = f"name {i}"
        jobs = PQueue(pool, "jobs")
        for i in range(100):
            jobs.put(f"job {i}".encode())
        jobs.get()
    with Pool.open(path, layout="demo", mode=mode) as pool:
        users = PHashMap(pool, "users")  # codecs come from the pool
        jobs = PQueue(pool, "jobs")
        assert len(users) == 1000 and users["user7"] == "name 7"
        assert len(jobs) == 99 and jobs.peek() == b"job 1"
        users.check()
        jobs.check()
        print(f"structures: PHashMap of {len(users)} and PQueue of {len(jobs)} reopened "
              "and checked")


def replicated_section(directory: Path, writes: int, mode: str) -> None:
    from blizzard.cluster.config import local_cluster
    from blizzard.cluster.ports import port_block
    from blizzard.cluster.replicator import RaftReplicator
    from blizzard.structures import PHashMap

    config = local_cluster(3, directory / "cluster", base_port=port_block(6),
                           pool_size="32M", log_pool_size="32M", durability=mode)
    nodes = {i: RaftReplicator(config, i) for i in (1, 2, 3)}
    try:
        leader = nodes[1].wait_for_leader()
        follower = next(i for i in nodes if i != leader)
        m = PHashMap(nodes[follower].pool, "users", replicator=nodes[follower])
        started = time.perf_counter()
        for i in range(writes):
            m[b"key%06d" % i] = b"value %d" % i
        per_put = (time.perf_counter() - started) / writes
        print(f"replicated: {writes} synchronous puts through follower {follower} "
              f"(forwarded to leader {leader}): {per_put * 1e6:,.0f} µs each")
        nodes[leader].stop()
        survivor = next(i for i in nodes if i != leader)
        deadline = time.monotonic() + 10
        while nodes[survivor].status()["leader"] in (0, leader):
            if time.monotonic() > deadline:
                raise SystemExit("no new leader after stopping the old one")
            time.sleep(0.01)
        new_leader = nodes[survivor].status()["leader"]
        print(f"replicated: stopped leader {leader}; node {new_leader} took over")
        m = PHashMap(nodes[survivor].pool, "users", replicator=nodes[survivor])
        for i in range(writes, writes + 100):
            m[b"key%06d" % i] = b"value %d" % i
        nodes[leader] = RaftReplicator(config, leader)
        target = nodes[survivor].status()["commit"]
        while nodes[leader].status()["applied"] < target:
            if time.monotonic() > deadline + 10:
                raise SystemExit("the restarted node did not catch up")
            time.sleep(0.01)
        contents = []
        for _, rep in sorted(nodes.items()):
            rep.read_barrier()
            contents.append(dict(PHashMap(rep.pool, "users", replicator=rep).items()))
            rep.pool.check()
        assert len(contents[0]) == writes + 100 and contents[0] == contents[1] == contents[2]
        print(f"replicated: node {leader} restarted from its pool files and caught up; "
              f"all 3 replicas hold the same {len(contents[0])} keys")
        status = nodes[new_leader].status()
        print(f"replicated: leader {new_leader} term {status['term']} commit {status['commit']} "
              f"match {status.get('match')}")
    finally:
        for rep in nodes.values():
            rep.stop()


def run(*, records: int = 10_000, writes: int = 500, mode: str = "pmem",
        directory: str | None = None, keep: bool = False) -> int:
    work = Path(directory) if directory else Path(tempfile.mkdtemp(
        prefix="blizzard-demo-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    work.mkdir(parents=True, exist_ok=True)
    try:
        pool_section(work, records, mode)
        structures_section(work, mode)
        replicated_section(work, writes, mode)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print("demo: all checks passed")
    return 0
