"""The declared dependencies are the imported ones.

A third-party module that the library imports must be a runtime dependency;
the benchmarks (``blizzard bench``, part of the command) import runtime
dependencies and the ``bench`` extra's references; the tests import those and
the ``test`` extra; and a runtime dependency that nothing in the package
imports should not be installed on every user's machine.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Imported where present, installed by hand or by the system (documented where imported).
NOT_DECLARED = {
    "nvm",  # pynvm: a benchmark column, needs Debian's libpmemobj-dev (pyproject's comment)
    "test",  # CPython's own test package (mapping-protocol suites), from the system's python
}


def _distributions(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def _imported(paths: list[Path]) -> set[str]:
    """Distributions of the third-party modules imported by ``paths``."""
    owners = metadata.packages_distributions()
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("blizzard", "tests") \
                        or top in NOT_DECLARED:
                    continue
                assert top in owners, f"{path}: imports {top}, which no installed package provides"
                found.update(d.lower().replace("_", "-") for d in owners[top])
    return found


def test_declared_dependencies_match_the_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _distributions(project["dependencies"])
    extras = {k: _distributions(v) for k, v in project["optional-dependencies"].items()}
    package = [p for p in (ROOT / "blizzard").rglob("*.py") if "bench" not in p.parts]
    bench = list((ROOT / "blizzard" / "bench").rglob("*.py"))
    tests = list((ROOT / "tests").rglob("*.py")) + list((ROOT / "examples").rglob("*.py"))

    library, benchmarks = _imported(package), _imported(bench)
    assert library <= runtime, f"imported but not dependencies: {sorted(library - runtime)}"
    unused = runtime - library - benchmarks
    assert not unused, f"dependencies nothing in the package imports: {sorted(unused)}"
    assert benchmarks <= runtime | extras["bench"], sorted(benchmarks - runtime - extras["bench"])
    assert _imported(tests) <= runtime | extras["test"] | extras["bench"]
    assert "sortedcontainers" not in runtime  # the tests' model and a benchmark reference


def test_msgpack_is_required_not_optional():
    """codecs.py imports msgpack at module level; nothing says it is optional."""
    text = (ROOT / "blizzard" / "structures" / "codecs.py").read_text()
    assert re.search(r"^import msgpack$", text, re.M)
    assert "optional" not in text.lower()
