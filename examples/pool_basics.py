"""A pool, a transaction, a crash-safe update, a reopen.

Run: python examples/pool_basics.py [PATH]
"""

from __future__ import annotations

import os
import sys
import tempfile

from blizzard.pmem import Pool


def main(path: str) -> None:
    with Pool.create(path, 8 << 20, layout="example") as pool:
        with pool.transaction() as tx:  # all or nothing, even across a crash
            counter = tx.alloc(8, zero=True)
            tx.set_root("counter", counter, b"u64")
        for _ in range(1000):
            with pool.transaction() as tx:
                value = int.from_bytes(pool.read(counter, 8), "little")
                tx.write(counter, (value + 1).to_bytes(8, "little"))  # undo-logged store

    with Pool.open(path, layout="example") as pool:  # recovery runs first
        counter = pool.root("counter").off
        print("counter =", int.from_bytes(pool.read(counter, 8), "little"))
        print(pool.stats())


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
        f"blizzard-example-{os.getpid()}.pool")
    try:
        main(target)
    finally:
        if len(sys.argv) <= 1 and os.path.exists(target):
            os.unlink(target)
