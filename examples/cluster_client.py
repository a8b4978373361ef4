"""A three-node cluster on this machine, used from another process through the client.

Run: python examples/cluster_client.py

It runs ``blizzard cluster up`` (three ``blizzard serve`` processes, data in a
temporary directory under /dev/shm), writes and reads a map and a queue
through :func:`blizzard.client.connect`, prints the nodes' status, and stops
the cluster with ``blizzard cluster down``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile

from blizzard.client import connect


def blizzard(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "blizzard", *args], capture_output=True,
                            text=True, check=False)
    if result.returncode:
        raise SystemExit(f"blizzard {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def free_ports(n: int) -> int:
    """A base port with ``n`` free ports from it (the nodes' Raft and client ports),
    below Linux's ephemeral range so no outgoing connection takes one meanwhile."""
    while True:
        base = random.randrange(20_000, 32_000)
        socks = []
        try:
            for port in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def main() -> None:
    data = tempfile.mkdtemp(prefix="blizzard-example-", dir="/dev/shm")
    config = f"{data}/cluster.toml"
    try:
        print(blizzard("cluster", "up", "--nodes", "3", "--dir", data,
                       "--base-port", str(free_ports(6)), "--pool-size", "16M"), end="")
        with connect(config) as client:  # any node will do; the client fails over
            users = client.hashmap("users", key_codec=str, value_codec=int)
            users["ada"] = 1815
            users.update({f"user{i}": i for i in range(100)})  # pipelined writes
            del users["user0"]
            print(f"users: {len(users)} entries, ada born {users['ada']}")

            jobs = client.queue("jobs", value_codec=str)
            for name in ("build", "test", "ship"):
                jobs.put(name)
            print(f"jobs: took {jobs.get()!r}, next {jobs.peek()!r}, {len(jobs)} left")

            for node, status in sorted(client.node_statuses().items()):
                print(f"node {node}: {status['role']}, applied {status['applied']}")
        print(blizzard("cluster", "down", "--config", config), end="")
    finally:
        subprocess.run([sys.executable, "-m", "blizzard", "cluster", "down", "--config", config,
                        "--grace", "0"], capture_output=True, check=False)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
