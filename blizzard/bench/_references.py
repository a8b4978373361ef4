"""Reference rows of ``blizzard bench report``: other replicated stores, same load shape.

* ``pysyncobj`` -- PySyncObj 0.3.x, 3 ``SyncObj`` processes holding a
  ``ReplDict`` on loopback with its defaults (:mod:`._pysyncobj_node`),
  puts of 16-byte keys with each value size and each number of requests in
  flight of the sweep, for the sweep's run length. It counts no bytes on
  the wire, so those columns stay empty.
* ``etcd`` -- measured only where an ``etcd`` server binary and a Python
  client for it are installed; otherwise skipped with the reason.

Reference points are keyed like the sweep's (``hashmap/pysyncobj/3/...``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from blizzard.bench import _report
from blizzard.bench.cluster import (
    NodeProcess,
    _kill_all,
    _wait,
    free_port_block,
    pysyncobj_version,
)
from blizzard.exceptions import BenchmarkError

STRUCTURE = "hashmap"  # both references are key-value maps


def run(name: str, workdir: Path, sweep, sink, run_id: str, progress: _report.Progress,
        say) -> None:
    """Measure reference ``name`` over the sweep's value sizes and windows."""
    from blizzard.bench import report

    replicas = report.REFERENCE_REPLICAS
    todo = [(v, w) for v in sweep.values for w in sweep.in_flight
            if report.point_key(STRUCTURE, name, replicas, v, w) not in sink.document["points"]]
    if not todo:
        return
    reason = unavailable(name)
    if reason is None:
        try:
            (_pysyncobj if name == "pysyncobj" else _etcd)(workdir, sweep, sink, run_id,
                                                           progress, todo)
            return
        except BenchmarkError as exc:
            reason, status = str(exc).splitlines()[0][:500], "failed"
            say(f"{name}: FAILED: {reason}")
    else:
        status = "skipped"
        say(f"{name}: skipped: {reason}")
    for value, in_flight in todo:
        key = report.point_key(STRUCTURE, name, replicas, value, in_flight)
        sink.document["points"][key] = {
            "key": key, "structure": STRUCTURE, "backend": name, "replicas": replicas,
            "value_bytes": value, "in_flight": in_flight, "status": status, "note": reason,
            "run": run_id, "samples": []}
    sink.save()


def unavailable(name: str) -> str | None:
    """Why reference ``name`` cannot run here, or None."""
    if name == "pysyncobj":
        if pysyncobj_version() is None:
            return "pysyncobj is not installed (pip install pysyncobj, or the bench extra)"
        return None
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    return None


def _pysyncobj(workdir: Path, sweep, sink, run_id: str, progress, todo) -> None:
    from blizzard.bench import report

    replicas = report.REFERENCE_REPLICAS
    progress.step(f"pysyncobj, {replicas} replicas: starting")
    nodes: list[NodeProcess] = []
    base = free_port_block(replicas)
    addresses = [f"127.0.0.1:{base + i}" for i in range(replicas)]
    try:
        for i, address in enumerate(addresses):
            peers = [a for a in addresses if a != address]
            nodes.append(NodeProcess(f"pysyncobj node {i + 1}", [
                "-m", "blizzard.bench._pysyncobj_node", "default", address, *peers],
                workdir / f"pysyncobj-node{i + 1}.log"))

        def leader() -> NodeProcess | None:
            status = [n.call("status")["status"] for n in nodes]
            leads = [n for n, s in zip(nodes, status, strict=True) if s["is_leader"]]
            if len(leads) == 1 and all(s["ready"] and s["leader"] for s in status):
                return leads[0]
            return None

        _measure_all("pysyncobj", lambda: _wait(leader, report.START_TIMEOUT_S,
                                                 "a ready PySyncObj leader"),
                     nodes, sweep, sink, run_id, progress, todo,
                     f"pysyncobj {pysyncobj_version()}, defaults, ReplDict")
    finally:
        _kill_all(nodes)


def _measure_all(name: str, leader, processes: list, sweep, sink, run_id: str, progress,
                 todo, note: str) -> None:
    """Every (value, in flight) point of reference ``name``; the load from ``leader()``."""
    from blizzard.bench import report

    replicas = report.REFERENCE_REPLICAS
    run_no = 0
    for value, in_flight in todo:
        samples = []
        for r in range(sweep.repeats):
            progress.step(f"{name}, {replicas} replicas: {value} B, {in_flight} in flight "
                          f"({r + 1}/{sweep.repeats})")
            lead = leader()
            order = [lead, *(n for n in processes if n is not lead)]
            samples.append(_measure(order, f"r{run_no}", value, in_flight, sweep))
            run_no += 1
        key = report.point_key(STRUCTURE, name, replicas, value, in_flight)
        sink.add({"key": key, "structure": STRUCTURE, "backend": name, "replicas": replicas,
                  "value_bytes": value, "in_flight": in_flight, "status": "ok", "run": run_id,
                  "note": note, **report.summarize(samples), "samples": samples})


def _measure(order: list[NodeProcess], prefix: str, value: int, in_flight: int,
             sweep) -> dict[str, Any]:
    from blizzard.bench.report import timed_run

    sample = timed_run(order, f"load {sweep.ops_max} {in_flight} {prefix} 15 {value} "
                              f"{sweep.seconds}")
    sample.update(dict.fromkeys(("bytes_per_op", "messages_per_op", "round_trips_per_op",
                                 "flushes_per_op", "fences_per_op")))
    return sample


# -- etcd ---------------------------------------------------------------------------------


class EtcdMember:
    """One ``etcd`` server process on loopback, its data under the run's directory."""

    def __init__(self, name: str, directory: Path, client: int, peer: int,
                 cluster: str) -> None:
        self.name = name
        self.client = ("127.0.0.1", client)
        self._log = open(directory / f"{name}.log", "wb")  # noqa: SIM115 -- closed in kill()
        url = "http://127.0.0.1:"
        self.proc = subprocess.Popen(
            [shutil.which("etcd") or "etcd", "--name", name, "--data-dir",
             str(directory / name), "--listen-client-urls", f"{url}{client}",
             "--advertise-client-urls", f"{url}{client}", "--listen-peer-urls", f"{url}{peer}",
             "--initial-advertise-peer-urls", f"{url}{peer}", "--initial-cluster", cluster,
             "--initial-cluster-token", "blizzard-report", "--initial-cluster-state", "new",
             "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)
        self.pid = self.proc.pid

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection(*self.client, timeout=5)
        try:
            conn.request(method, path, body)
            return json.loads(conn.getresponse().read() or b"{}")
        finally:
            conn.close()

    def leader(self) -> bool | None:
        """Whether this member leads (None: it does not answer yet)."""
        if self.proc.poll() is not None:
            raise BenchmarkError(f"etcd member {self.name} exited ({self.proc.returncode})")
        try:
            status = self._call("POST", "/v3/maintenance/status", b"{}")
        except (OSError, ValueError, http.client.HTTPException):
            return None
        member, leader = status.get("header", {}).get("member_id"), status.get("leader")
        return None if member is None or leader in (None, "0") else member == leader

    def cpu_seconds(self) -> float:
        return _report.process_cpu_seconds(self.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


def _etcd(workdir: Path, sweep, sink, run_id: str, progress, todo) -> None:
    from blizzard.bench import report

    replicas = report.REFERENCE_REPLICAS
    progress.step(f"etcd, {replicas} replicas: starting")
    base = free_port_block(2 * replicas)
    names = [f"m{i + 1}" for i in range(replicas)]
    cluster = ",".join(f"{n}=http://127.0.0.1:{base + replicas + i}"
                       for i, n in enumerate(names))
    directory = workdir / "etcd"
    directory.mkdir()
    members: list[EtcdMember] = []
    client: list[NodeProcess] = []
    try:
        for i, name in enumerate(names):
            members.append(EtcdMember(name, directory, base + i, base + replicas + i, cluster))

        def leader() -> EtcdMember | None:
            views = [m.leader() for m in members]
            return members[views.index(True)] if views.count(True) == 1 and None not in views \
                else None

        lead = _wait(leader, report.START_TIMEOUT_S, "an etcd leader")
        host, port = lead.client
        client.append(NodeProcess("etcd client", ["-m", "blizzard.bench._etcd_node",
                                                  f"{host}:{port}"],
                                  directory / "client.log"))
        version = subprocess.run([shutil.which("etcd") or "etcd", "--version"],
                                 capture_output=True, text=True).stdout.split("\n")[0]
        # the client process runs the load; every member's CPU counts after its own
        _measure_all("etcd", lambda: client[0], members, sweep, sink, run_id, progress, todo,
                     f"{version.strip()}, data on tmpfs, a Python client through the v3 JSON "
                     f"gateway, talking to the leader ({lead.name})")
    finally:
        _kill_all(client)
        for m in members:
            m.kill()
