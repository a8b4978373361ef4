"""examples/one_app.py runs unchanged under every backend; its config file alone
chooses: a local pool, three processes that are the nodes of an embedded Raft
cluster, and a client of three ``blizzard serve`` processes."""

from __future__ import annotations

import contextlib
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

import pytest
import tomli_w

from blizzard.cluster import config as configmod
from blizzard.cluster.ports import port_block

APP = Path(__file__).resolve().parents[2] / "examples" / "one_app.py"
TIMEOUT_S = 120


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="blizzard-test-one-app-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _app(*args: str) -> subprocess.Popen:
    # faulthandler: a process that hangs is aborted by _exit_status, and prints where
    # each of its threads was
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, str(APP), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env=env)


def _expect_run(output: str, who: str, backend: str) -> None:
    assert f"{who}: backend {backend}, role " in output, output
    assert f"{who}: releases of 2026: [20261123, 20261201]" in output, output
    assert f"{who}: structures ['jobs', 'names', 'releases', 'users']" in output, output
    assert f"{who}: next job 'build for " in output, output


def test_local(data_dir):
    path = data_dir / "app.toml"
    path.write_text(tomli_w.dumps({"data_dir": str(data_dir / "data"), "pool_size": "16M",
                                   "replication": {"backend": "local"}}))
    for visit in (1, 2):  # the second run finds the first one's data
        app = _app(str(path))
        out, _ = app.communicate(timeout=TIMEOUT_S)
        assert app.returncode == 0, out
        _expect_run(out, "app", "local")
        assert f"app: app visited {visit} time(s)" in out
        assert f"app: next job 'build for app', {visit} queued" in out
        assert "app: closed" in out


class _Lines:
    """A process's output lines, read on a thread so waiting can time out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, marker: str, timeout: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {timeout} s:\n"
                                     + "".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {marker!r}:\n"
                                     + "".join(self.lines))
            self.lines.append(line)
        return "".join(self.lines)

    def exit_status(self, timeout: float = TIMEOUT_S) -> int:
        """The process's exit status; a process still running after ``timeout`` is
        aborted, and the failure shows its threads' stacks."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(TIMEOUT_S)
            with contextlib.suppress(AssertionError):
                self.until("never printed", timeout=5)
            raise AssertionError(f"still running {timeout} s after SIGTERM:\n"
                                 + "".join(self.lines)) from None


def _cluster_toml(data_dir: Path, backend: str) -> Path:
    config = configmod.local_cluster(3, data_dir / "data", base_port=port_block(6),
                                     pool_size="16M", log_pool_size="16M",
                                     replication={"backend": backend},
                                     raft={"tick_ms": 10, "election_ticks": 10})
    path = data_dir / "cluster.toml"
    path.write_text(configmod.dump(config))
    return path


def test_embedded_raft_in_three_processes(data_dir):
    path = _cluster_toml(data_dir, "raft")
    apps = {node: _app(str(path), str(node)) for node in (1, 2, 3)}
    try:
        lines = {node: _Lines(app) for node, app in apps.items()}
        for node, out in lines.items():
            text = out.until(f"node{node}: serving the other nodes")
            _expect_run(text, f"node{node}", "raft")
            assert f"node{node}: node{node} visited 1 time(s)" in text
        roles = {node: next(line for line in out.lines if "role" in line).split()[-1]
                 for node, out in lines.items()}
        assert sorted(roles.values()).count("leader") <= 1, roles
        for app in apps.values():
            app.send_signal(signal.SIGTERM)
        for node in apps:
            assert lines[node].exit_status() == 0, "".join(lines[node].lines)
            assert f"node{node}: closed" in lines[node].until("closed")
    finally:
        for app in apps.values():
            if app.poll() is None:
                app.kill()
                app.wait()


def test_remote_client_of_three_servers(data_dir):
    path = _cluster_toml(data_dir, "raft")
    blizzard = [sys.executable, "-m", "blizzard"]
    up = subprocess.run([*blizzard, "cluster", "up", "--config", str(path)],
                        capture_output=True, text=True, timeout=TIMEOUT_S)
    try:
        assert up.returncode == 0, up.stderr
        config = configmod.load(path)
        client = data_dir / "client.toml"
        client.write_text(tomli_w.dumps({
            "replication": {"backend": "remote"},
            "nodes": [{"id": n.id, "client": f"{n.client[0]}:{n.client[1]}"}
                      for n in config.nodes]}))
        for visit in (1, 2):
            app = _app(str(client))
            out, _ = app.communicate(timeout=TIMEOUT_S)
            assert app.returncode == 0, out
            _expect_run(out, "app", "remote")
            assert f"app: app visited {visit} time(s)" in out
            assert "app: backend remote, role client" in out
    finally:
        down = subprocess.run([*blizzard, "cluster", "down", "--config", str(path),
                               "--grace", "5"], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        assert down.returncode == 0, down.stderr
        assert not os.path.exists(data_dir / "data" / "pids.json")
