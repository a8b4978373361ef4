"""``blizzard bench report`` on a tiny sweep: JSON, Markdown and plots, and they agree.

A harness check on real processes (a Raft cluster, a physical primary with its
backups, PySyncObj), not a speed test: runs of 0.2 s.
"""

from __future__ import annotations

import json
import shutil

import pytest

from blizzard.bench import _cluster_node, report
from blizzard.pmem import _libpmem

pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")

PNG = b"\x89PNG\r\n\x1a\n"


def _tables(markdown: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after ``heading``, as header -> cell."""
    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    rows = [line for line in lines[lines.index(next(x for x in lines if x.startswith("|"))):]]
    rows = rows[:next((i for i, x in enumerate(rows) if not x.startswith("|")), len(rows))]
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    header, body = cells[0], cells[2:]
    return [dict(zip(header, r, strict=True)) for r in body]


def _number(cell: str) -> float | None:
    return None if cell == "-" else float(cell.replace(",", "").rstrip("x%"))


def _close(cell: str, value: float | None, digits: int) -> bool:
    """The cell is ``value`` printed with ``digits`` decimals (or both are missing)."""
    got = _number(cell)
    if got is None or value is None:
        return got is None and value is None
    return abs(got - value) <= 0.5 * 10 ** -digits + 1e-9


def test_quick_report_writes_consistent_json_markdown_and_plots(shm_dir):
    out = shm_dir / "docs"
    readme = shm_dir / "README.md"
    from blizzard.bench._report_doc import README_BEGIN, README_END

    readme.write_text(f"# app\n\n{README_BEGIN}\nold\n{README_END}\n\nmore\n")
    argv = ["--quick", "--structures", "hashmap,queue", "--backends",
            "local,raft-tcp,physical-tcp,raft-dpdk,physical-dpdk", "--values", "64",
            "--in-flight", "1,16", "--seconds", "0.2", "--references", "pysyncobj,etcd",
            "--out", str(out), "--readme", str(readme), "--dir", str(shm_dir), "--quiet"]
    assert report.main(argv) in (0, 1)  # 1: an expected ratio missed, which is a result

    doc = json.loads((out / "report.json").read_text())
    points = doc["points"]
    physical = report.unavailable("physical-tcp")  # None where the backend is registered
    for backend, replicas in (("local", 1), ("raft-tcp", 3), ("physical-tcp", 3)):
        for structure in ("hashmap", "queue"):
            for flight in (1, 16):
                p = points[report.point_key(structure, backend, replicas, 64, flight)]
                if backend == "physical-tcp" and physical is not None:
                    assert p["status"] == "skipped" and p["note"] == physical
                    continue
                assert p["status"] == "ok", p.get("note")
                assert p["rate"] > 0 and p["p50_us"] > 0 and len(p["samples"]) == 1
                assert p["failed"] == 0
                assert len(p["cpu_by_process"]) == replicas
                assert p["bytes_per_op"] == 0 if backend == "local" else p["bytes_per_op"] > 0
                assert p["samples"][0]["load_before"] and p["samples"][0]["load_after"]
    for flight in (1, 16):
        ref = points[report.point_key("hashmap", "pysyncobj", 3, 64, flight)]
        assert ref["status"] in ("ok", "skipped"), ref.get("note")
        etcd = points[report.point_key("hashmap", "etcd", 3, 64, flight)]
        if shutil.which("etcd") is None:
            assert etcd["status"] == "skipped" and "not installed" in etcd["note"]
        else:  # the client process, then 3 members
            assert etcd["status"] == "ok" and etcd["rate"] > 0, etcd.get("note")
            assert len(etcd["cpu_by_process"]) == 4 and etcd["failed"] == 0
    for backend in ("raft-dpdk", "physical-dpdk"):  # DPDK is installed: figures
        p = points[report.point_key("hashmap", backend, 3, 64, 16)]
        assert p["status"] == "ok" or (backend == "raft-dpdk" and p["note"]), p
        assert backend == "raft-dpdk" or p["bytes_per_op"] > 0, p
    assert len(doc["load"]["start"]) == 3 and doc["versions"]["blizzard"]

    md = (out / "report.md").read_text()
    assert doc["command"] in md and doc["machine"]["cpu"] in md and doc["started"] in md
    for structure in ("hashmap", "queue"):
        rows = _tables(md, f"### {structure}")
        shown = [r for r in rows]
        expected = [p for p in points.values()
                    if p["structure"] == structure and p["status"] == "ok"]
        assert len(shown) == len(expected)
        for row in shown:
            key = report.point_key(structure, row["backend"], int(row["replicas"]),
                                   int(row["value B"]), int(row["in flight"]))
            p = points[key]
            assert _close(row["ops/s"], p["rate"], 0), (row, p["rate"])
            assert _close(row["p50 ms"], p["p50_us"] and p["p50_us"] / 1000, 2)
            assert _close(row["p99 ms"], p["p99_us"] and p["p99_us"] / 1000, 2)
            assert _close(row["cpu µs/op"], p["cpu_us_per_op"], 0)
            assert _close(row["B/op wire"], p["bytes_per_op"], 0)
            assert _close(row["round trips/op"], p["round_trips_per_op"], 2)
            assert row["load"] == ("busy" if p["busy"] else "quiet")
    headline = _tables(md, "## Headline")
    assert [h["structure"] for h in headline] == ["hashmap", "queue"]
    for h in headline if physical is None else ():
        lo = points[report.point_key(h["structure"], "raft-tcp", 3, 64, 16)]
        ph = points[report.point_key(h["structure"], "physical-tcp", 3, 64, 16)]
        assert _close(h["logical ops/s"], lo["rate"], 0)
        assert _close(h["physical ops/s"], ph["rate"], 0)
        assert _close(h["logical B/op wire"], lo["bytes_per_op"], 0)
        assert _close(h["physical / logical B/op"], ph["bytes_per_op"] / lo["bytes_per_op"], 2)
        assert _close(h["logical / physical ops/s"], lo["rate"] / ph["rate"], 2)

    for name in ("throughput-latency", "wire-bytes", "replication-cost", "cpu"):
        png = out / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
        assert f"(report/{name}.png)" in md

    text = readme.read_text()
    assert text.startswith("# app\n\n") and text.endswith("\n\nmore\n") and "old" not in text
    assert "| hashmap" in text and "(docs/report/wire-bytes.png)" in text

    # --resume: kept points are not measured again; a missing one is
    gone = report.point_key("queue", "local", 1, 64, 16)
    kept = points[report.point_key("hashmap", "raft-tcp", 3, 64, 1)]
    del doc["points"][gone]
    (out / "report.json").write_text(json.dumps(doc))
    assert report.main([*argv, "--resume", "--references", "none"]) in (0, 1)
    again = json.loads((out / "report.json").read_text())
    assert again["points"][gone]["status"] == "ok"
    assert again["points"][gone]["run"] != kept["run"]
    assert again["points"][kept["key"]] == kept
    assert len(again["runs"]) == 2


def test_windowed_caps_time_records_latency_and_drains():
    pending: list = []

    def start(i, done):
        pending.append(done)  # completed only when drained

    def drain():
        while pending:
            pending.pop()(None)

    samples: list[int] = []
    result = _cluster_node.windowed(100, 8, start, 5.0, latencies=samples, drain=drain)
    assert result["ops"] == 100 and result["unanswered"] == 0 and len(samples) == 100
    assert min(samples) >= 0

    def inline(i, done):
        done(None)

    capped = _cluster_node.windowed(10**9, 4, inline, 5.0, max_seconds=0.05)
    assert 0 < capped["ops"] < 10**9 and capped["not_issued"] == 0


def test_account_per_op():
    before = [{"bytes_sent": 100, "messages_sent": 1, "round_trips": 0, "flushes": 5,
               "fences": 2}, {"bytes_sent": 0, "messages_sent": 0}]
    after = [{"bytes_sent": 1100, "messages_sent": 11, "round_trips": 10, "flushes": 45,
              "fences": 22}, {"bytes_sent": 130, "messages_sent": 10}]
    got = report.account("physical", before, after, 10, 2)
    assert got == {"bytes_per_op": 113.0, "messages_per_op": 2.0, "round_trips_per_op": 1.0,
                   "flushes_per_op": 4.0, "fences_per_op": 2.0}
    raft = report.account("raft", [{"transport_bytes_sent": 0, "transport_frames_sent": 0}] * 3,
                          [{"transport_bytes_sent": 300, "transport_frames_sent": 20}] * 3,
                          10, 3)
    assert raft["bytes_per_op"] == 90.0 and raft["round_trips_per_op"] == 1.0
    assert raft["flushes_per_op"] is None
    assert report.account("local", [{}], [{}], 5, 1)["bytes_per_op"] == 0.0


def test_summary_gives_median_and_spread():
    samples = [{"rate": r, "p50_us": 10.0 * r, "cpu_by_process": [1.0 * r, 2.0],
                "failed": 0, "others_cores": o} for r, o in ((100, 0.1), (300, 0.9), (200, 0))]
    s = report.summarize(samples)
    assert s["rate"] == 200 and s["rate_min"] == 100 and s["rate_max"] == 300
    assert s["spread"] == 1.0 and s["p50_us"] == 2000 and s["cpu_by_process"] == [200, 2.0]
    assert s["busy"] and s["others_cores"] == 0.9


def test_bad_arguments_are_refused(capsys):
    for argv, text in ((["--backends", "nope"], "--backends: unknown 'nope'"),
                       (["--replicas", "0"], "--replicas: positive"),
                       (["--values", "x"], "--values: comma-separated")):
        with pytest.raises(SystemExit):
            report.main(argv)
        assert text in capsys.readouterr().err
