"""Every program in examples/ runs and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "pool_basics.py": "counter = 1000",
    "hashmap_basics.py": "job: send mail",
    "cluster_client.py": "users: 100 entries, ada born 1815",
}


#: Examples with a test of their own (which runs them), by the file of that test.
RUN_ELSEWHERE = {"one_app.py": "test_one_app.py"}


def test_every_example_has_an_expectation():
    """Exactly: an example without an expectation would never run, and an
    expectation without its example would be a test of nothing."""
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED) | set(RUN_ELSEWHERE)
    for example, test in RUN_ELSEWHERE.items():
        assert example in (Path(__file__).parent / test).read_text(), (example, test)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert EXPECTED[name] in result.stdout
