"""A persistent hash map and queue in a pool file: write, reopen, read back.

Run: python examples/hashmap_basics.py [pool-path]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from blizzard import Empty
from blizzard.pmem import Pool
from blizzard.structures import PHashMap, PQueue, registry_for


def main(path: Path) -> None:
    # Create a 16 MiB pool; "pmem" mode flushes cache lines (durable on DAX pmem,
    # and against process kills anywhere).
    with Pool.create(path, 16 << 20, mode="pmem") as pool:
        users = PHashMap(pool, "users", key_codec=str, value_codec="msgpack")
        users["ada"] = {"born": 1815, "langs": ["analytical engine"]}
        users["grace"] = {"born": 1906, "langs": ["COBOL"]}
        del users["ada"]
        jobs = PQueue(pool, "jobs", value_codec=str)
        jobs.put("index users")
        jobs.put("send mail")
        print("wrote", len(users), "user(s) and", len(jobs), "job(s);",
              "last applied Op:", registry_for(pool).last_applied)

    # Reopen: codecs come from the pool, no arguments needed.
    with Pool.open(path) as pool:
        users = PHashMap(pool, "users")
        jobs = PQueue(pool, "jobs")
        print("grace:", users["grace"])
        print("ada still there?", "ada" in users)
        while True:
            try:
                print("job:", jobs.get_nowait())  # get() would wait for the next put
            except Empty:
                break
        users.check()
        jobs.check()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(dir=shm) as d:
            main(Path(d) / "example.pool")
