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

import shutil
from pathlib import Path
from typing import Any

from blizzard.bench import _report
from blizzard.bench.cluster import (
    NodeProcess,
    RunError,
    _kill_all,
    _wait,
    free_port_block,
    pysyncobj_version,
)

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
    if reason is None and name == "pysyncobj":
        try:
            _pysyncobj(workdir, sweep, sink, run_id, progress, todo)
            return
        except RunError as exc:
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
    return ("an etcd server is installed, but this benchmark has no etcd load generator "
            "yet (it needs a Python etcd v3 client)")


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

        run_no = 0
        for value, in_flight in todo:
            samples = []
            for r in range(sweep.repeats):
                progress.step(f"pysyncobj, {replicas} replicas: {value} B, {in_flight} in "
                              f"flight ({r + 1}/{sweep.repeats})")
                lead = _wait(leader, report.START_TIMEOUT_S, "a ready PySyncObj leader")
                order = [lead, *(n for n in nodes if n is not lead)]
                samples.append(_measure(order, f"r{run_no}", value, in_flight, sweep))
                run_no += 1
            key = report.point_key(STRUCTURE, "pysyncobj", replicas, value, in_flight)
            sink.add({"key": key, "structure": STRUCTURE, "backend": "pysyncobj",
                      "replicas": replicas, "value_bytes": value, "in_flight": in_flight,
                      "status": "ok", "run": run_id,
                      "note": f"pysyncobj {pysyncobj_version()}, defaults, ReplDict",
                      **report.summarize(samples), "samples": samples})
    finally:
        _kill_all(nodes)


def _measure(order: list[NodeProcess], prefix: str, value: int, in_flight: int,
             sweep) -> dict[str, Any]:
    from blizzard.bench.report import timed_run

    sample = timed_run(order, f"load {sweep.ops_max} {in_flight} {prefix} 15 {value} "
                              f"{sweep.seconds}")
    sample.update(dict.fromkeys(("bytes_per_op", "messages_per_op", "round_trips_per_op",
                                 "flushes_per_op", "fences_per_op")))
    return sample
