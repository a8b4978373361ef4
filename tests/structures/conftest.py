"""Fixtures for structure tests: pool files under /dev/shm (fast, real mmap)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


def shm_tempdir() -> Path:
    """A fresh directory on tmpfs if there is one, else in the default temp dir."""
    base = SHM if SHM.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="blizzard-test-", dir=base))


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = shm_tempdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
