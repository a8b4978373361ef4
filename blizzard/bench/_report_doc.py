"""The Markdown of ``blizzard bench report``: docs/report.md and the README's section.

Everything here is made from the report's JSON document alone, through the
formatters below, so a table cell is always the JSON's number printed one
way (a test reads the tables back and compares).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from blizzard.bench import _report
from blizzard.bench._plots import view

README_BEGIN = "<!-- report:begin (written by `blizzard bench report`) -->"
README_END = "<!-- report:end -->"
README_PLOT = "wire-bytes"
#: The expected shape of the result (measured, not assumed): logical Raft
#: ships at most a fifth of physical's bytes per op, and at 3 replicas
#: sustains at least twice its throughput.
EXPECTED_BYTES_RATIO = 5.0
EXPECTED_RATE_RATIO = 2.0
LOGICAL, PHYSICAL = "raft-tcp", "physical-tcp"

FULL_HEADER = ["backend", "replicas", "value B", "in flight", "ops/s", "spread", "p50 ms",
               "p99 ms", "cpu µs/op", "cpu µs/op by process", "B/op wire", "msgs/op",
               "round trips/op", "flushes/op", "fences/op", "failed", "load"]
HEADLINE_HEADER = ["structure", "value B", "logical ops/s", "physical ops/s",
                   "logical / physical ops/s", "logical B/op wire", "physical B/op wire",
                   "physical / logical B/op"]


# -- formatters: the one way each number is printed -------------------------------------------


def num(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def by_process(xs: list[float | None] | None) -> str:
    return " + ".join(num(x) for x in xs) if xs else "-"


# -- selections ------------------------------------------------------------------------------


def points(document: dict[str, Any], **where: Any) -> list[dict[str, Any]]:
    return [p for p in document["points"].values()
            if all(p.get(k) == v for k, v in where.items())]


def _one(document, **where) -> dict[str, Any] | None:
    hits = [p for p in points(document, **where) if p.get("status") == "ok" and p.get("rate")]
    return hits[0] if hits else None


def headline(document: dict[str, Any], logical: str = LOGICAL,
             physical: str = PHYSICAL) -> list[dict[str, Any]]:
    """Per structure and value size: logical against physical at the view's
    replicas and in-flight count (:func:`blizzard.bench._plots.view`)."""
    from blizzard.bench.report import STRUCTURES

    v = view(document)
    rows = []
    values = sorted({p["value_bytes"] for p in document["points"].values()})
    for structure in STRUCTURES:
        for value in values:
            common = {"structure": structure, "value_bytes": value, "replicas": v["replicas"],
                      "in_flight": v["in_flight"]}
            lo, ph = _one(document, backend=logical, **common), \
                _one(document, backend=physical, **common)
            if lo is None and ph is None:
                continue
            rows.append({
                "structure": structure, "value_bytes": value, "logical": lo, "physical": ph,
                "rate_ratio": lo["rate"] / ph["rate"] if lo and ph else None,
                "bytes_ratio": (ph["bytes_per_op"] / lo["bytes_per_op"]
                                if lo and ph and lo.get("bytes_per_op")
                                and ph.get("bytes_per_op") is not None else None)})
    return rows


def headline_table(document: dict[str, Any], *, markdown: bool = False) -> str:
    """The headline as a table (text, or Markdown); a sentence if nothing pairs up."""
    if not headline(document):
        return f"(no {LOGICAL} or {PHYSICAL} point measured: no headline)"
    rows = [[h["structure"], h["value_bytes"],
             num(h["logical"] and h["logical"]["rate"]),
             num(h["physical"] and h["physical"]["rate"]), ratio(h["rate_ratio"]),
             num(h["logical"] and h["logical"].get("bytes_per_op")),
             num(h["physical"] and h["physical"].get("bytes_per_op")), ratio(h["bytes_ratio"])]
            for h in headline(document)]
    v = view(document)
    return _report.table(HEADLINE_HEADER, rows, "<" + ">" * 7, markdown=markdown,
                         title=None if markdown else
                         f"logical ({LOGICAL}) against physical ({PHYSICAL}): "
                         f"{v['replicas']} replicas, {v['in_flight']} in flight")


def targets(document: dict[str, Any]) -> list[str]:
    """The expected shape, per structure and value size, met or MISSED."""
    lines = []
    v = view(document)
    for h in headline(document):
        what = f"{h['structure']} {h['value_bytes']} B"
        if h["bytes_ratio"] is not None:
            ok = h["bytes_ratio"] >= EXPECTED_BYTES_RATIO
            lines.append(f"{what}: physical / logical bytes per op {h['bytes_ratio']:.2f}x "
                         f"(expected >= {EXPECTED_BYTES_RATIO:g}x: {'met' if ok else 'MISSED'})")
        if h["rate_ratio"] is not None and v["replicas"] == 3:
            ok = h["rate_ratio"] >= EXPECTED_RATE_RATIO
            lines.append(f"{what}: logical / physical throughput at 3 replicas "
                         f"{h['rate_ratio']:.2f}x (expected >= {EXPECTED_RATE_RATIO:g}x: "
                         f"{'met' if ok else 'MISSED'})")
    return lines


def skipped_lines(document: dict[str, Any]) -> list[str]:
    """One line per backend that did not run, saying why."""
    seen: dict[str, str] = {}
    for p in document["points"].values():
        if p.get("status") in ("skipped", "failed") and p["backend"] not in seen:
            seen[p["backend"]] = f"{p['backend']}: {p['status']}: {p.get('note', '')}"
    return list(seen.values())


def full_rows(document: dict[str, Any], structure: str) -> list[list[str]]:
    """Every point of ``structure``, in sweep order, as the full table's cells."""
    from blizzard.bench.report import BACKENDS, REFERENCES

    order = {b: i for i, b in enumerate([*BACKENDS, *REFERENCES])}
    chosen = sorted((p for p in points(document, structure=structure) if p["status"] == "ok"),
                    key=lambda p: (order.get(p["backend"], 99), p["replicas"],
                                   p["value_bytes"], p["in_flight"]))
    return [[p["backend"], p["replicas"], p["value_bytes"], p["in_flight"], num(p["rate"]),
             pct(p.get("spread")), ms(p.get("p50_us")), ms(p.get("p99_us")),
             num(p.get("cpu_us_per_op")), by_process(p.get("cpu_by_process")),
             num(p.get("bytes_per_op")), num(p.get("messages_per_op"), ".2f"),
             num(p.get("round_trips_per_op"), ".2f"), num(p.get("flushes_per_op"), ".1f"),
             num(p.get("fences_per_op"), ".1f"), p.get("failed", 0),
             "busy" if p.get("busy") else "quiet"] for p in chosen]


def ratio_rows(document: dict[str, Any]) -> list[list[str]]:
    """Replicated / local throughput, per structure, backend and replicas (same run)."""
    from blizzard.bench.report import BACKENDS, STRUCTURES

    order = {b: i for i, b in enumerate(BACKENDS)}
    v = view(document)
    rows = []
    for structure in STRUCTURES:
        local = _one(document, structure=structure, backend="local",
                     value_bytes=v["value"], in_flight=v["in_flight"])
        if local is None:
            continue
        for p in sorted(points(document, structure=structure, value_bytes=v["value"],
                               in_flight=v["in_flight"]),
                        key=lambda p: (order.get(p["backend"], 99), p["replicas"])):
            if p["backend"] in ("local", "pysyncobj", "etcd") or p["status"] != "ok" \
                    or not p.get("rate"):
                continue
            same = "yes" if p["run"] == local["run"] else "no (resumed)"
            rows.append([structure, p["backend"], p["replicas"], num(p["rate"]),
                         num(local["rate"]), ratio(p["rate"] / local["rate"]), same])
    return rows


# -- the documents ---------------------------------------------------------------------------


def _machine_lines(document: dict[str, Any]) -> list[str]:
    m = document["machine"]
    load = document["load"]
    runs = document.get("runs", [])
    lines = [f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['python']}, {m['os']}",
             f"- **Date:** {document['started']}"
             + ("; resumed: " + ", ".join(f"{r['started']} ({r.get('points', '?')} points, "
                                          f"`{r['command']}`)" for r in runs)
                if len(runs) > 1 else ""),
             f"- **Command:** `{document['command']}`",
             f"- **Load average (1, 5, 15 min):** {load['start']} at start, {load['end']} "
             f"at end; {document.get('seconds')} s",
             "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in
                                            document.get("versions", {}).items())]
    busy = [p for p in document["points"].values() if p.get("busy")]
    total = sum(1 for p in document["points"].values() if p.get("status") == "ok")
    if load.get("busy") or busy:
        lines.append(f"- **Measured under load:** {len(busy)} of {total} points had other "
                     f"processes using more than half a core meanwhile (column `load`); the "
                     "machine's load average was above half its cores. Absolute rates and "
                     "latencies are depressed and noisy; ratios between systems measured in "
                     "the same run, bytes, messages and round trips per op, and CPU per op "
                     "are the figures to read. Re-run the command on a quiet machine.")
    return lines


def write(document: dict[str, Any], path: Path, plots: dict[str, Path]) -> None:
    """docs/report.md: headline, plots, every point, ratios, method."""
    from blizzard.bench.report import STRUCTURES

    v = view(document)
    out = ["# Logical against physical replication: the measured study", "",
           "Regenerate with `blizzard bench report` (`--quick` for a short sweep, "
           "`--resume` to finish an interrupted one); every number below is in "
           "`report.json` beside this file, with every run it is the median of.", "",
           *_machine_lines(document), ""]
    skipped = skipped_lines(document)
    if skipped:
        out += ["Not measured here:", "", *(f"- {line}" for line in skipped), ""]
    out += ["## Headline", "",
            f"Logical (`{LOGICAL}`: Raft, the Op shipped once per follower and applied by "
            f"each) against physical (`{PHYSICAL}`: the primary's flushed cache lines "
            f"mirrored to each backup), {v['replicas']} replicas, {v['in_flight']} requests "
            "in flight, medians of the runs:", "",
            headline_table(document, markdown=True), ""]
    verdict = targets(document)
    if verdict:
        out += ["Against the expected shape (logical ships at most a fifth of physical's "
                "bytes, and sustains at least twice its throughput at 3 replicas):", "",
                *(f"- {line}" for line in verdict), ""]
    rel = {name: os.path.relpath(p, path.parent) for name, p in plots.items()}
    captions = {"throughput-latency": "Throughput against p50 latency, per backend",
                "wire-bytes": "Bytes on the wire per operation, logical against physical",
                "replication-cost": "Replicated / local throughput against replicas",
                "cpu": "CPU µs per operation, by process"}
    if rel:
        out += ["## Plots", ""]
        for name, target in rel.items():
            out += [f"![{captions[name]}]({target})", ""]
    ratios = ratio_rows(document)
    if ratios:
        out += ["## Replicated / local throughput", "",
                f"{v['value']} B values, {v['in_flight']} in flight; `same run` says whether "
                "both figures come from one run of the command.", "",
                _report.table(["structure", "backend", "replicas", "ops/s", "local ops/s",
                               "replicated / local", "same run"], ratios, "<<>>>><",
                              markdown=True), ""]
    out += ["## Every point", "",
            "Medians of the runs; `spread` is (max - min) / median of their ops/s; "
            "`load` is `busy` when other processes used more than half a core during a run "
            "of the point.", ""]
    for structure in STRUCTURES:
        rows = full_rows(document, structure)
        if rows:
            out += [f"### {structure}", "", _report.table(FULL_HEADER, rows, "<" + ">" * 16,
                                                         markdown=True), ""]
    out += ["## Method", "", *(f"- {line}" for line in METHOD),
            *(f"- `{line.split(':', 1)[0]}`:{line.split(':', 1)[1]}"
              for line in _report.legend(FULL_HEADER)), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


METHOD = [
    "Each backend and replica count is one cluster of processes on this machine "
    "(loopback TCP or DPDK memif), pools on /dev/shm in `pmem` mode (cache-line flushes "
    "and fences through libpmem). The load runs inside the process holding the primary or "
    "the Raft leader, through the replicator, as the structures' faces send their Ops.",
    "Per structure and value size a warm-up fills a key space; each run then overwrites "
    "those keys for at most the run length with the given requests in flight (the queue "
    "alternates puts and gets, so it keeps its length): a steady state.",
    "Physical backends ship every fence's flushed ranges to every backup; with the default "
    "`pipelined` fence mode Ops apply back to back and each is acknowledged once its last "
    "fence is acknowledged by every backup (in flight: at most that many Ops unacknowledged).",
    "B/op wire sums what every process sent: Raft frames both ways; physical fence messages "
    "to every backup plus their acknowledgements (counted by frame size). Flushes and "
    "fences are counted by the physical mirror; Raft nodes count none unless "
    "`count_flushes` is set (a Python call per flush), so its cells are empty.",
    "PySyncObj: 3 processes, its defaults (batched AppendEntries every 100 ms, in-memory "
    "journal), a ReplDict, the load in the leader's process; it counts no bytes.",
    "etcd (where installed): 3 members on loopback, data on /dev/shm, and a Python client "
    "process (one keep-alive HTTP connection per request in flight) putting through etcd's "
    "v3 JSON gateway to the leader; the client's CPU is the first of `cpu µs/op by process`.",
    "CPU time is read from /proc in clock ticks (10 ms): a short run's per-process figures "
    "are coarse; the sums over longer runs are not.",
]


def update_readme(document: dict[str, Any], readme: Path, report: Path,
                  plots: dict[str, Path]) -> bool:
    """Rewrite the README's report section (between the markers); False if it has none."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    base = readme.parent
    plot = plots.get(README_PLOT)
    load = document["load"]
    v = view(document)
    section = [README_BEGIN, "",
               f"Logical (`{LOGICAL}`) against physical (`{PHYSICAL}`) replication, "
               f"{v['replicas']} replicas, {v['in_flight']} requests in flight, medians; "
               f"measured {document['started']} by `{document['command']}` on "
               f"{document['machine']['cores']} cores (load average {load['start'][0]} at "
               f"start, {load['end'][0]} at end"
               + ("; measured under load: read the ratios" if load.get("busy") else "")
               + f"). The full report: [{os.path.relpath(report, base)}]"
               f"({os.path.relpath(report, base)}).", "",
               headline_table(document, markdown=True), ""]
    if plot is not None:
        section += [f"![Bytes on the wire per operation, logical against physical]"
                    f"({os.path.relpath(plot, base)})", ""]
    section.append(README_END)
    readme.write_text(head + "\n".join(section) + tail)
    return True
