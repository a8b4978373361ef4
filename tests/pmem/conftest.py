"""Fixtures shared by the pmem tests: scratch directories on tmpfs and on disk."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def shm_dir():
    """A fresh directory under /dev/shm (tmpfs: emulated persistent memory)."""
    path = Path(tempfile.mkdtemp(prefix="blizzard-test-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["shm", "disk"])
def any_dir(request, shm_dir, tmp_path):
    """Both kinds of directory a pool file may live in: tmpfs and ext4."""
    return shm_dir if request.param == "shm" else tmp_path
