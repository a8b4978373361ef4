"""The plots of ``blizzard bench report`` (matplotlib, written as PNG files).

Each plot reads the points of the report's JSON document (``points``: key
-> point, see :mod:`blizzard.bench.report`) and nothing else, so the figures
always show the numbers of the tables. Points flagged busy are drawn hollow.

* ``throughput-latency.png`` -- ops/s against p50 latency, one line per
  backend through its in-flight counts, one panel per structure;
* ``wire-bytes.png`` -- bytes on the wire per operation, logical (Raft)
  against physical, per structure and value size;
* ``replication-cost.png`` -- replicated/local throughput against replicas,
  per backend, one panel per structure;
* ``cpu.png`` -- CPU µs per operation, by process (the load's process, then
  the others), per backend and structure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTS = ("throughput-latency", "wire-bytes", "replication-cost", "cpu")
DPI = 110


def _ok(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in document["points"].values() if p.get("status") == "ok" and p.get("rate")]


def view(document: dict[str, Any]) -> dict[str, int | None]:
    """The slice most plots and the headline show: 3 replicas (or the most
    common), the smallest value, the largest number of requests in flight."""
    points = _ok(document)
    replicas = sorted({p["replicas"] for p in points if p["backend"] != "local"})
    values = sorted({p["value_bytes"] for p in points})
    flights = sorted({p["in_flight"] for p in points})
    return {"replicas": 3 if 3 in replicas else (replicas[-1] if replicas else None),
            "value": values[0] if values else None,
            "in_flight": flights[-1] if flights else None}


def write(document: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write every plot that has data into ``directory``; name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, draw in (("throughput-latency", _throughput_latency),
                       ("wire-bytes", _wire_bytes), ("replication-cost", _replication_cost),
                       ("cpu", _cpu)):
        fig = draw(plt, document)
        path = directory / f"{name}.png"
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        out[name] = path
    return out


def _structures(points: list[dict[str, Any]]) -> list[str]:
    from blizzard.bench.report import STRUCTURES

    return [s for s in STRUCTURES if any(p["structure"] == s for p in points)]


def _backends(points: list[dict[str, Any]]) -> list[str]:
    from blizzard.bench.report import BACKENDS, REFERENCES

    order = [*BACKENDS, *REFERENCES]
    return [b for b in order if any(p["backend"] == b for p in points)]


def _panels(plt, n: int, title: str):
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False,
                             constrained_layout=True)
    fig.suptitle(title)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _throughput_latency(plt, document):
    v = view(document)
    points = [p for p in _ok(document) if p["value_bytes"] == v["value"] and p.get("p50_us")
              and (p["backend"] == "local" or p["replicas"] == v["replicas"])]
    structures = _structures(points)
    if not structures:
        return None
    fig, axes = _panels(plt, len(structures),
                        f"throughput against median latency ({v['value']} B values, "
                        f"{v['replicas']} replicas; points: requests in flight)")
    for ax, structure in zip(axes, structures, strict=True):
        for backend in _backends(points):
            line = sorted((p for p in points if p["structure"] == structure
                           and p["backend"] == backend), key=lambda p: p["in_flight"])
            if not line:
                continue
            xs = [p["p50_us"] / 1000 for p in line]
            ys = [p["rate"] for p in line]
            (drawn,) = ax.plot(xs, ys, "-", label=backend)
            for p, x, y in zip(line, xs, ys, strict=True):
                ax.plot([x], [y], "o", color=drawn.get_color(),
                        fillstyle="none" if p.get("busy") else "full")
                ax.annotate(str(p["in_flight"]), (x, y), textcoords="offset points",
                            xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(structure)
        ax.set_xlabel("p50 latency (ms)")
        ax.set_ylabel("ops/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _wire_bytes(plt, document):
    v = view(document)
    points = [p for p in _ok(document) if p["backend"] in ("raft-tcp", "raft-dpdk",
                                                           "physical-tcp", "physical-dpdk")
              and p["replicas"] == v["replicas"] and p["in_flight"] == v["in_flight"]
              and p.get("bytes_per_op") is not None]
    structures = _structures(points)
    if not structures:
        return None
    values = sorted({p["value_bytes"] for p in points})
    backends = _backends(points)
    groups = [(s, val) for s in structures for val in values]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) + 2), 4.5), constrained_layout=True)
    width = 0.8 / max(len(backends), 1)
    for i, backend in enumerate(backends):
        heights = []
        for s, val in groups:
            hit = [p for p in points if p["structure"] == s and p["value_bytes"] == val
                   and p["backend"] == backend]
            heights.append(hit[0]["bytes_per_op"] if hit else 0)
        xs = [g + (i - (len(backends) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, heights, width, label=backend)
    ax.set_xticks(range(len(groups)), [f"{s}\n{val} B" for s, val in groups], fontsize=8)
    ax.set_ylabel("bytes on the wire per operation")
    ax.set_title(f"bytes on the wire per operation, logical (raft) against physical "
                 f"({v['replicas']} replicas, {v['in_flight']} in flight)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _replication_cost(plt, document):
    v = view(document)
    points = [p for p in _ok(document) if p["value_bytes"] == v["value"]
              and p["in_flight"] == v["in_flight"]]
    local = {p["structure"]: p["rate"] for p in points if p["backend"] == "local"}
    structures = [s for s in _structures(points) if s in local]
    replicated = [b for b in _backends(points) if b not in ("local", "pysyncobj", "etcd")]
    if not structures or not replicated:
        return None
    fig, axes = _panels(plt, len(structures),
                        f"replicated / local throughput against replicas ({v['value']} B "
                        f"values, {v['in_flight']} in flight, same run)")
    for ax, structure in zip(axes, structures, strict=True):
        for backend in replicated:
            line = sorted((p for p in points if p["structure"] == structure
                           and p["backend"] == backend), key=lambda p: p["replicas"])
            if line:
                ax.plot([p["replicas"] for p in line],
                        [p["rate"] / local[structure] for p in line], "o-", label=backend)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(sorted({p["replicas"] for p in points if p["backend"] in replicated}))
        ax.set_title(structure)
        ax.set_xlabel("replicas")
        ax.set_ylabel("replicated / local ops/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _cpu(plt, document):
    v = view(document)
    points = [p for p in _ok(document) if p["value_bytes"] == v["value"]
              and p["in_flight"] == v["in_flight"] and p.get("cpu_by_process")
              and (p["backend"] == "local" or p["replicas"] == v["replicas"])]
    structures = _structures(points)
    if not structures:
        return None
    backends = _backends(points)
    fig, axes = _panels(plt, len(structures),
                        f"CPU µs per operation by process ({v['value']} B values, "
                        f"{v['replicas']} replicas, {v['in_flight']} in flight)")
    for ax, structure in zip(axes, structures, strict=True):
        row = {p["backend"]: p for p in points if p["structure"] == structure}
        names = [b for b in backends if b in row]
        depth = max(len(row[b]["cpu_by_process"]) for b in names)
        bottoms = [0.0] * len(names)
        for i in range(depth):
            heights = [(row[b]["cpu_by_process"][i] or 0) if i < len(row[b]["cpu_by_process"])
                       else 0 for b in names]
            ax.bar(range(len(names)), heights, bottom=bottoms,
                   label="load's process" if i == 0 else f"process {i + 1}")
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20)
        ax.set_title(structure)
        ax.set_ylabel("CPU µs per operation")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=6)
    return fig
