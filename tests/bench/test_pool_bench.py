"""The pool benchmark runs, reports sane figures and leaves no pool files behind.

Small runs only: these check the harness, not the speed.
"""

from __future__ import annotations

import ctypes
import json

import pytest

from blizzard.bench import _pmemobj, pool
from blizzard.pmem import _libpmem


def _pmemobj_loadable() -> bool:
    try:
        ctypes.CDLL(_pmemobj.LIBRARY_NAME)
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")


def test_run_small(shm_dir):
    results = pool.run(ops=2000, repeats=2, warmup=500, directory=shm_dir, count_ops=500)
    by = {(r.op, r.subject): r for r in results}
    assert {op for op, _ in by} == {"add", "alloc"}
    have_ref = _pmemobj_loadable()
    for (op, subject), r in by.items():
        if subject == pool.REFERENCE and not have_ref:
            assert not r.rates and "skipped" in r.note
            continue
        assert len(r.rates) == 2, (op, subject, r.note)
        assert all(x > 0 for x in r.rates)
        assert r.min <= r.median <= r.max
        if have_ref:
            assert r.ratio is not None and r.ratio > 0
    ref = by["add", pool.REFERENCE]
    if have_ref:
        assert ref.ratio == pytest.approx(1.0)
    for op in pool.OPS:
        ours = by[op, "blizzard-pmem"]
        assert ours.fences_per_tx >= 1 and ours.flush_calls_per_tx >= 1
        assert ours.lines_per_tx >= ours.flush_calls_per_tx
    assert list(shm_dir.iterdir()) == []  # every pool file removed
    text = pool.format_results(results)
    assert "blizzard FileMedia pmem" in text and "flush/line/fence" in text
    assert [t.split(":")[0] for t in pool.targets(results)] == [pool.OP_LABELS[op]
                                                                for op in pool.OPS]


def test_main_writes_json(shm_dir, capsys):
    out = shm_dir / "results.json"
    argv = ["--ops", "300", "--repeats", "1", "--warmup", "0", "--quiet", "--dir", str(shm_dir),
            "--subjects", "blizzard-pmem,blizzard-dram", "--json", str(out)]
    assert pool.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1
    assert {(r["op"], r["subject"]) for r in data["results"]} == {
        (op, s) for op in pool.OPS for s in ("blizzard-pmem", "blizzard-dram")}
    assert "--ops 300" in data["command"]
    printed = capsys.readouterr().out
    assert "ops/s" in printed and "no libpmemobj figure" in printed
    assert data["load"]["start"] and data["load"]["end"] and "python" in data["versions"]
    out.unlink()
    assert list(shm_dir.iterdir()) == []


@pytest.mark.skipif(not _pmemobj_loadable(), reason="libpmemobj1 not installed")
def test_reference_failure_is_reported_not_fatal(shm_dir):
    path = shm_dir / "too-small.pool"
    with pytest.raises(RuntimeError, match="pmemobj_create"):
        _pmemobj.ReferenceProcess(str(path), 1 << 20)  # below libpmemobj's 8 MiB minimum
    assert not path.exists()
