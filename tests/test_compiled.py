"""Which build runs: compiled modules only when all are built from the current sources."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys

import pytest

from blizzard import _compiled
from blizzard.cli import main

ROOT = _compiled._ROOT


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A package tree holding every compiled module's .py and .pxd, no extensions yet."""
    monkeypatch.delenv(_compiled.ENV_PURE, raising=False)
    monkeypatch.delenv(_compiled.ENV_PURE_OLD, raising=False)
    monkeypatch.setattr(_compiled, "_ROOT", tmp_path)
    for module in _compiled.MODULES:
        base = tmp_path.joinpath(*module.split("."))
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".py").write_text(f"# {module}\n")
        base.with_suffix(".pxd").write_text(f"# types of {module}\n")
    return tmp_path


def _build(root, modules) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in modules:
        base = root.joinpath(*module.split("."))
        base.with_name(base.name + suffix).write_bytes(b"")
    record = {"sources": {m: _compiled.source_hash(m, root) for m in _compiled.MODULES}}
    (root / "blizzard" / _compiled.RECORD).write_text(json.dumps(record))


def test_nothing_built_runs_interpreted(fake_tree):
    assert _compiled._why_interpreted().startswith("no compiled modules")


def test_a_partial_build_runs_interpreted(fake_tree):
    _build(fake_tree, _compiled.MODULES[:-1])
    assert _compiled._why_interpreted() == f"not built: {_compiled.MODULES[-1]}"


def test_a_current_build_runs_compiled(fake_tree):
    _build(fake_tree, _compiled.MODULES)
    assert _compiled._why_interpreted() is None


def test_an_edited_source_makes_the_build_stale(fake_tree):
    """A .pxd (or .py) changed after the build: no old extension runs with new code."""
    _build(fake_tree, _compiled.MODULES)
    module = _compiled.MODULES[1]
    fake_tree.joinpath(*module.split(".")).with_suffix(".pxd").write_text("# edited\n")
    assert _compiled._why_interpreted() == f"sources changed since the build: {module}"


def test_an_edited_interface_makes_its_cimporters_stale(fake_tree):
    """An extension holds the C layout of the classes it cimports: one built against
    an older .pxd of another module -- directly or through a third -- is stale too,
    as is one whose .py cimports a .pxd-only module that changed."""
    first, middle, last, other = (_compiled.MODULES[i] for i in (1, 3, 6, 8))
    path = {m: fake_tree.joinpath(*m.split(".")) for m in (first, middle, last, other)}
    path[middle].with_suffix(".pxd").write_text(f"from {first} cimport UndoLog\n")
    path[last].with_suffix(".pxd").write_text(f"from {middle} cimport Transaction\n")
    path[other].with_suffix(".py").write_text(
        "if cython.compiled:\n    from cython.cimports.blizzard.pmem._zlib import crc32\n")
    zlib_pxd = fake_tree / "blizzard" / "pmem" / "_zlib.pxd"
    zlib_pxd.write_text("cdef extern ...\n")
    _build(fake_tree, _compiled.MODULES)
    assert _compiled._why_interpreted() is None

    path[first].with_suffix(".pxd").write_text("# edited\n")
    assert _compiled._why_interpreted() == (
        f"sources changed since the build: {first}, {middle}, {last}")
    _build(fake_tree, _compiled.MODULES)
    path[first].with_suffix(".py").write_text("# edited: its cimporters are not stale\n")
    assert _compiled._why_interpreted() == f"sources changed since the build: {first}"
    _build(fake_tree, _compiled.MODULES)
    zlib_pxd.write_text("cdef extern, edited\n")
    assert _compiled._why_interpreted() == f"sources changed since the build: {other}"


def test_the_switch_wins(fake_tree, monkeypatch):
    _build(fake_tree, _compiled.MODULES)
    monkeypatch.setenv(_compiled.ENV_PURE, "1")
    assert _compiled._why_interpreted() == "BLIZZARD_PURE=1"
    monkeypatch.delenv(_compiled.ENV_PURE)
    monkeypatch.setenv(_compiled.ENV_PURE_OLD, "1")
    assert _compiled._why_interpreted() == "BLIZZARD_PURE_PYTHON=1"


def _child(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=120, check=True)
    return done.stdout.strip()


def test_pure_loads_every_module_from_its_source():
    code = ("import importlib, blizzard._compiled as c\n"
            "print(all(importlib.import_module(m).__file__.endswith('.py') for m in c.MODULES))\n"
            "print(c.describe())")
    assert _child(code, BLIZZARD_PURE="1").split("\n") == ["True", "interpreted (BLIZZARD_PURE=1)"]


def test_version_names_the_build(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("blizzard ")
    assert _compiled.describe() in out
