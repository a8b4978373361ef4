"""The harness every benchmark shares: tables, progress, the run's record, --check."""

from __future__ import annotations

import io
import json

import pytest

from blizzard.bench import _report, cluster, ordered, pool, raft_core, replication, structures


def test_table_aligns_columns():
    text = _report.table(["a", "bb"], [["xxx", 1], ["y", 22222]])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "bb"]
    assert set(lines[1].strip()) == {"─"}
    assert lines[2].endswith("    1") and lines[3].endswith("22222")
    assert lines[2].index("xxx") == lines[3].index("y")  # left column, left-aligned
    with pytest.raises(ValueError, match="one cell per header column"):
        _report.table(["a"], [[1, 2]])


def test_table_prints_text_as_given():
    """Brackets are not markup, None is a dash, long rows are not wrapped."""
    text = _report.table(["system", "ops/s"], [["[bold]x[/bold]", None], ["y" * 300, 1]])
    assert "[bold]x[/bold]" in text and " -" in text.splitlines()[2]
    assert len(text.splitlines()) == 4


def test_markdown_table_is_a_markdown_table():
    text = _report.table(["system", "ops/s"], [["a", "1,000"]], markdown=True)
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["system", "ops/s"]
    assert set(lines[1]) <= {"|", "-"}
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["a", "1,000"]


def test_shared_columns_keep_one_order():
    with pytest.raises(ValueError, match="out of order"):
        _report.table(["p50 ms", "ops/s"], [])
    _report.table(["system", "anything of its own", "ops/s", "p50 ms"], [])  # accepted
    for header in (pool.HEADER, cluster.HEADER, structures.HEADER, ordered.HEADER,
                   raft_core.HEADER, replication.HEADER):
        _report.check_header(header)
        assert "ops/s" in header or "insert ops/s" in header


def test_progress_off_a_terminal_prints_a_line_per_step():
    out = io.StringIO()
    with _report.Progress(3, out) as progress:
        progress.step("first")
        progress.step("second", units=2)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/3] first (") and lines[1].startswith("[3/3] second (")
    assert "left" in lines[1]
    assert progress.done == 3
    quiet = io.StringIO()
    with _report.Progress(1, quiet, quiet=True) as progress:
        progress.step("x")
    assert quiet.getvalue() == ""


def test_run_records_machine_load_command_and_versions():
    run = _report.Run("demo", "blizzard bench demo --x 1", {"x": 1})
    run.end()
    doc = run.record(results=[1])
    assert doc["benchmark"] == "demo" and doc["command"] == "blizzard bench demo --x 1"
    assert len(doc["load"]["start"]) == 3 and len(doc["load"]["end"]) == 3
    assert doc["versions"]["blizzard"] and doc["versions"]["rich"]
    assert doc["machine"]["cores"] >= 1 and doc["results"] == [1] and doc["params"] == {"x": 1}
    out = io.StringIO()
    _report.print_report(run, ["BODY"], title="TITLE", targets=["x: MISSED"], notes=["n"],
                         file=out)
    text = out.getvalue()
    for part in ("TITLE", "load average (1 min):", "command: blizzard bench demo", "BODY",
                 "x: MISSED", "notes:"):
        assert part in text
    assert _report.exit_status(True, ["a: met", "b: MISSED"]) == 1
    assert _report.exit_status(False, ["b: MISSED"]) == 0
    assert _report.exit_status(True, ["a: met"]) == 0


def test_busy_means_more_load_than_half_the_cores():
    assert _report.busy([3.0, 0, 0], 2) and not _report.busy([0.9, 5, 5], 2)
    assert not _report.busy(None, 2)


def test_cpu_ticks_count_up():
    first = _report.cpu_ticks()
    assert first is not None and 0 <= first[0] <= first[1]


def test_raft_core_main_writes_json_and_checks(tmp_path, capsys):
    out = tmp_path / "raft.json"
    status = raft_core.main(["--entries", "2000", "--runs", "2", "--quiet", "--check",
                             "--json", str(out)])
    data = json.loads(out.read_text())
    assert len(data["results"]["cpu"]["rates"]) == 2
    assert status == (1 if "MISSED" in data["verdict"][0] else 0)
    printed = capsys.readouterr()
    assert "CPU time" in printed.out and printed.err == ""
