"""Every example program runs and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hashmap_basics_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "hashmap_basics.py")],
                         capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "wrote 1 user(s) and 2 job(s); last applied Op: 7" in out.stdout
    assert "grace: {'born': 1906, 'langs': ['COBOL']}" in out.stdout
    assert "ada still there? False" in out.stdout
    assert out.stdout.count("job:") == 2
