"""``blizzard bench layers``: where the CPU of one PHashMap put goes, layer by layer.

A put passes down the layers of the library: the codecs encode the key and
the value, the map face builds the Op record and hands it to the
replicator, the registry decodes the record and dispatches it in a pool
transaction, the hash map core writes its entry (undo-logging what it
overwrites), and the transaction's commit flushes and fences. Each layer is
measured by running the same puts (``--ops`` fresh 16-character ``str`` keys,
64-byte ``bytes`` values, into an empty map) from one layer's entry point
down, and subtracting the measurement of the layer below:

* ``codec``: the key and value codecs alone;
* ``Op record``: building the record from encoded bytes alone;
* ``face``: ``m[key] = value`` minus codec, Op record and the replicator's submit;
* ``replicator``: the LocalReplicator's ``submit`` minus the registry's ``apply_one``;
* ``registry``: ``apply_one`` minus a transaction holding the core's ``put``;
* ``transaction``: an empty transaction's begin and commit;
* ``structure``: the core's ``put`` in a transaction, minus the empty transaction;
* ``flush``: ``apply_one`` on a pool in ``pmem`` mode minus the same on a pool
  in ``none`` mode (libpmem's cache-line flushes and fences).

A replica applies the same puts as committed Raft entries, in batches (one
transaction each), each Op in its session envelope. A second table gives,
per entry, in batches of ``APPLY_BATCH`` on a pool in ``pmem`` mode:

* ``registry``: the registry's ``apply`` of the bare Op records;
* ``session table``: the :class:`~blizzard.replication.sessions.SessionStateMachine`'s
  ``apply`` of the enveloped entries (one client per request in flight, as
  the cluster's requesters have) minus the registry's;
* ``replica apply``: the two together, what a follower's state machine costs
  per entry.

The layers below the face run on pools in ``none`` mode, so their figures
exclude flushing, which has its own row. Each figure is the least CPU time
per put over ``--repeats`` runs (this thread's CPU time, the steadier figure
on a shared machine); a difference of two such figures can come out slightly
negative when a layer costs less than the noise.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from blizzard import _compiled
from blizzard._argparse import ArgumentParser
from blizzard.bench import _report
from blizzard.bench._report import command_line, table
from blizzard.pmem import Pool
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.structures import PHashMap
from blizzard.structures.registry import registry_for

VALUE_BYTES = 64
#: The layers from the top of the put path to the bottom, as reported.
LAYERS = ("codec", "Op record", "face", "replicator", "registry", "transaction",
          "structure", "flush")
#: The rows of the replica's apply, as reported.
APPLY_ROWS = ("registry", "session table", "replica apply")
APPLY_BATCH = 32  # entries per batch (one pool transaction)
APPLY_CLIENTS = 2000  # sessions, one per request in flight (bench cluster's window)


def _keys(n: int, run: int) -> list[str]:
    return [f"{run:02d}-{i:013d}" for i in range(n)]


def _cpu_per_op(fn: Callable[[], None], ops: int) -> float:
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) / ops


class _Pools:
    """A pool per durability mode, each with one fresh map per measurement."""

    def __init__(self, workdir: Path, ops: int) -> None:
        size = ((64 << 20) + ops * 600 * 8 + 4095) // 4096 * 4096  # room for every run's map
        self.pools = {mode: Pool.create(workdir / f"{mode}.pool", size, mode=mode)
                      for mode in ("pmem", "none")}
        self._made = 0
        self._sessions: SessionStateMachine | None = None

    def sessions(self) -> SessionStateMachine:
        """A session table over the ``pmem`` pool's registry (made once)."""
        if self._sessions is None:
            pool = self.pools["pmem"]
            self._sessions = SessionStateMachine(registry_for(pool), pool)
        return self._sessions

    def fresh_map(self, mode: str) -> PHashMap:
        self._made += 1
        return PHashMap(self.pools[mode], f"m{self._made}", key_codec="str")

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def measure(pools: _Pools, ops: int, run: int) -> dict[str, float]:
    """CPU seconds per put from each entry point (one run of every measurement)."""
    keys = _keys(ops, run)
    value = b"v" * VALUE_BYTES
    out: dict[str, float] = {}

    m = pools.fresh_map("pmem")
    kenc, venc, two, code = m._kenc, m._venc, m._put_op, type(m)._put_code
    out["codec"] = _cpu_per_op(lambda: [(kenc(k), venc(value)) for k in keys], ops)
    encoded = [kenc(k) for k in keys]
    out["op"] = _cpu_per_op(lambda: [two(code, kb, value) for kb in encoded], ops)
    out["put"] = _cpu_per_op(lambda: [m.__setitem__(k, value) for k in keys], ops)

    def records(target: PHashMap) -> list[bytes]:
        build = target._put_op
        return [build(code, kb, value) for kb in encoded]

    m = pools.fresh_map("pmem")
    submit, ops_of = m._replicator.submit, records(m)
    out["submit"] = _cpu_per_op(lambda: [submit(op) for op in ops_of], ops)

    def applies(mode: str) -> Callable[[], None]:
        m = pools.fresh_map(mode)
        registry = registry_for(pools.pools[mode])
        apply_one, ops_of, first = registry.apply_one, records(m), registry.last_applied + 1
        return lambda: [apply_one(first + i, op) for i, op in enumerate(ops_of)]

    for mode in ("pmem", "none"):
        out[f"apply_one {mode}"] = _cpu_per_op(applies(mode), ops)

    m = pools.fresh_map("none")
    pool, core = pools.pools["none"], m._core
    transaction = pool.transaction

    def core_puts() -> None:
        for kb in encoded:
            with transaction() as tx:
                core.put(tx, kb, value)

    def empty_transactions() -> None:
        for _ in encoded:
            with transaction():
                pass

    out["tx put"] = _cpu_per_op(core_puts, ops)
    out["tx"] = _cpu_per_op(empty_transactions, ops)

    def replica_applies(enveloped: bool) -> Callable[[], None]:
        m = pools.fresh_map("pmem")
        machine = pools.sessions() if enveloped else registry_for(pools.pools["pmem"])
        entries = records(m)
        if enveloped:  # fresh clients each run: every request is new to the table
            clients = [(run + 1) << 32 | c for c in range(APPLY_CLIENTS)]
            entries = [wrap(clients[i % APPLY_CLIENTS], i // APPLY_CLIENTS + 1, op)
                       for i, op in enumerate(entries)]
        first = machine.last_applied + 1
        batches = [[(first + i, entries[i]) for i in range(at, min(at + APPLY_BATCH, ops))]
                   for at in range(0, ops, APPLY_BATCH)]
        apply = machine.apply
        return lambda: [apply(batch) for batch in batches]

    out["registry batches"] = _cpu_per_op(replica_applies(False), ops)
    out["session batches"] = _cpu_per_op(replica_applies(True), ops)
    return out


def layers(best: dict[str, float]) -> dict[str, float]:
    """µs per put of each layer, from the least CPU time of each entry point."""
    us = {name: seconds * 1e6 for name, seconds in best.items()}
    return {
        "codec": us["codec"],
        "Op record": us["op"],
        "face": us["put"] - us["codec"] - us["op"] - us["submit"],
        "replicator": us["submit"] - us["apply_one pmem"],
        "registry": us["apply_one none"] - us["tx put"],
        "transaction": us["tx"],
        "structure": us["tx put"] - us["tx"],
        "flush": us["apply_one pmem"] - us["apply_one none"],
        "total": us["put"],
    }


def apply_rows(best: dict[str, float]) -> dict[str, float]:
    """µs per entry of a replica's apply, from the least CPU time of each entry point."""
    registry = best["registry batches"] * 1e6
    sessions = best["session batches"] * 1e6
    return {"registry": registry, "session table": sessions - registry,
            "replica apply": sessions}


def run(ops: int, repeats: int, directory: str | None,
        progress: _report.Progress | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """``(layers in µs per put, least CPU seconds per put of each entry point)``."""
    workdir = Path(tempfile.mkdtemp(prefix="blizzard-bench-layers-", dir=directory))
    best: dict[str, float] = {}
    try:
        pools = _Pools(workdir, ops * repeats)
        try:
            for r in range(repeats):
                if progress is not None:
                    progress.step(f"run {r + 1} of {repeats}")
                for name, seconds in measure(pools, ops, r).items():
                    best[name] = min(best.get(name, seconds), seconds)
        finally:
            pools.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return layers(best), best


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="blizzard bench layers", description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=100_000, help="puts per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of every measurement; the least CPU time is reported")
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the pool files go (default /dev/shm)")
    _report.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.ops < 1 or args.repeats < 1:
        parser.error("--ops and --repeats must be at least 1")
    launcher = "python -m blizzard.bench.layers" if argv is None else "blizzard bench layers"
    build = "interpreted" if _compiled.reason else "compiled"
    record = _report.Run("layers", command_line(launcher, list(argv if argv is not None
                                                               else sys.argv[1:])),
                         {"ops": args.ops, "repeats": args.repeats, "dir": args.dir,
                          "build": build, "why_interpreted": _compiled.reason})
    with _report.Progress(args.repeats, quiet=args.quiet) as progress:
        per_layer, best = run(args.ops, args.repeats, args.dir, progress)
    record.end()
    total = per_layer["total"]
    rows = [[name, f"{per_layer[name]:.2f}", f"{100 * per_layer[name] / total:.0f}%"]
            for name in LAYERS]
    rows.append(["total (m[key] = value)", f"{total:.2f}", "100%"])
    applying = apply_rows(best)
    apply_table = [[name, f"{applying[name]:.2f}"] for name in APPLY_ROWS]
    notes = [f"build: {build}" + (f" ({_compiled.reason})" if _compiled.reason else ""),
             "cpu µs/op: least CPU time per put over the runs; layers are differences "
             "of entry points (see the module's docstring), so a small one can be noise",
             f"a replica's apply: committed puts in batches of {APPLY_BATCH}, one transaction "
             f"each, {APPLY_CLIENTS} clients' session envelopes; cpu µs/op per entry"]
    _report.print_report(
        record, [table(["layer", "cpu µs/op", "share"], rows),
                 table(["a replica's apply", "cpu µs/op"], apply_table)],
        title=f"blizzard bench layers: {args.ops:,} puts of str keys and {VALUE_BYTES}-byte "
              "values into an empty PHashMap", notes=notes)
    _report.write_json(args.json, record.record(
        results={"layers_us": per_layer, "apply_us": applying, "entry_points_s": best},
        notes=notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
