"""Transports in processes of their own (one EAL per process for DPDK), for the
suite that runs the same tests over TCP and DPDK."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import pytest

from blizzard.cluster.ports import port_block
from blizzard.replication.transport.dpdk import native

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 60.0
KINDS = ("tcp", "dpdk")


def requires_dpdk() -> None:
    """DPDK is part of the installation (``make test`` installs it): its absence
    is a failure to report, not a reason to skip."""
    native.load()


class HostProcess:
    """A child running :mod:`tests.replication.transport.host`."""

    def __init__(self, spec: dict[str, Any], log_path: Path, netns: str | None = None) -> None:
        self.spec = spec
        self.node = spec["node"]
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 -- closed in close()
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "tests.replication.transport.host", json.dumps(spec)]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env, cwd=ROOT,
                                     start_new_session=True)
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._reply(START_TIMEOUT_S, "start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _reply(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node {self.node}: no answer to {what!r}\n{self.log()[-3000:]}"
                                 ) from None
        if line is None:
            self.proc.wait(10)
            raise AssertionError(f"node {self.node} exited ({self.proc.returncode}) during "
                                 f"{what!r}:\n{self.log()[-3000:]}")
        return json.loads(line)

    def call(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self._reply(REPLY_TIMEOUT_S, command)
        assert reply.get("ok"), f"node {self.node}: {command!r}: {reply.get('error')}"
        return reply

    def inbox(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.call("inbox")["inbox"].items()}

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class HostCluster:
    """``n`` transports of one kind, one process each, sharing a run directory."""

    def __init__(self, kind: str, n: int = 3, *, options: dict[str, Any] | None = None,
                 netns: dict[int, str] | None = None,
                 node_options: dict[int, dict[str, Any]] | None = None) -> None:
        if kind == "dpdk":
            requires_dpdk()
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="blizzard-transport-", dir="/dev/shm"))
        self.ids = list(range(1, n + 1))
        base = port_block(n)
        self.specs = {
            i: {"kind": kind, "node": i, "nodes": self.ids, "run_dir": str(self.dir),
                "cluster_id": f"transport-test-{self.dir.name}",
                "addresses": {str(j): ["127.0.0.1", base + j - 1] for j in self.ids},
                "options": {**(options or {}), **(node_options or {}).get(i, {})}}
            for i in self.ids}
        self.netns = netns or {}
        self.hosts: dict[int, HostProcess] = {}

    def start(self, node: int) -> HostProcess:
        restarts = sum(1 for _ in self.dir.glob(f"node{node}*.log"))
        host = HostProcess(self.specs[node], self.dir / f"node{node}.{restarts}.log",
                           self.netns.get(node))
        self.hosts[node] = host
        return host

    def start_all(self) -> HostCluster:
        for node in self.ids:
            self.start(node)
        return self

    def wait_links(self, nodes=None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes or list(self.hosts):
            while not all((links := self.hosts[node].call("links")["links"]).values()):
                assert time.monotonic() < deadline, f"node {node}: links {links}\n" + "".join(
                    f"-- node {other}'s log:\n{host.log()[-2000:]}\n"
                    for other, host in self.hosts.items())  # a link has two ends
                time.sleep(0.05)

    def wait_inbox(self, node: int, predicate, timeout: float = 30.0) -> dict[int, dict]:
        deadline = time.monotonic() + timeout
        while True:
            inbox = self.hosts[node].inbox()
            if predicate(inbox):
                return inbox
            assert time.monotonic() < deadline, f"node {node}: inbox {inbox}"
            time.sleep(0.05)

    def kill(self, node: int) -> None:
        self.hosts.pop(node).kill()

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
        self.hosts.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param
