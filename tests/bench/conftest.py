"""Fixtures shared by the benchmark tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def shm_dir():
    """A private directory under /dev/shm (pools there are in DRAM), removed after
    the test, so a benchmark's own cleanup can be checked exactly."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    d = Path(tempfile.mkdtemp(prefix="blizzard-bench-test-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)
