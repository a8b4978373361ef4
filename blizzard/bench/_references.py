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
    reason = _unavailable(name)
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


def _unavailable(name: str) -> str | None:
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
    import time

    before = [n.cpu_seconds() for n in order]
    ticks0, load0, own0 = _report.cpu_ticks(), _report.load_average(), time.process_time()
    wall0 = time.monotonic()
    reply = order[0].call(f"load {sweep.ops_max} {in_flight} {prefix} 15 {value} "
                          f"{sweep.seconds}")
    wall = time.monotonic() - wall0
    after = [n.cpu_seconds() for n in order]
    ticks1, load1, own1 = _report.cpu_ticks(), _report.load_average(), time.process_time()
    ops = reply["ops"]
    by_process = [round((a - b) * 1e6 / ops, 1) if ops else None
                  for a, b in zip(after, before, strict=True)]
    others = None
    if ticks0 and ticks1 and wall > 0:
        ours = sum(after) - sum(before) + own1 - own0
        others = round(max((ticks1[0] - ticks0[0]) - ours, 0.0) / wall, 2)
    return {"ops": ops, "seconds": reply["seconds"],
            "failed": reply["failed"] + reply["unanswered"],
            "rate": ops / reply["seconds"] if ops else None,
            "p50_us": reply["latency"].get("p50_us"), "p99_us": reply["latency"].get("p99_us"),
            "mean_us": reply["latency"].get("mean_us"), "cpu_by_process": by_process,
            "cpu_us_per_op": round(sum(by_process), 1) if ops else None,
            "load_before": load0, "load_after": load1, "others_cores": others,
            "errors": reply["errors"][:2], "bytes_per_op": None, "messages_per_op": None,
            "round_trips_per_op": None, "flushes_per_op": None, "fences_per_op": None}
