"""Persistent memory: media, pools, allocation and undo-log transactions."""

from blizzard.pmem._directory import Root
from blizzard.pmem._layout import CHUNK_SIZE, POOL_SIZE_MIN, SMALL_MAX
from blizzard.pmem._tx import Transaction
from blizzard.pmem.crashsim import CrashSimMedia, all_or_nothing, random_chooser
from blizzard.pmem.media import (
    LINE_SIZE,
    DramMedia,
    FileMedia,
    Media,
    MediaWrapper,
    RecordingMedia,
)
from blizzard.pmem.pool import Pool, PoolStats

__all__ = [
    "CHUNK_SIZE",
    "LINE_SIZE",
    "POOL_SIZE_MIN",
    "SMALL_MAX",
    "CrashSimMedia",
    "DramMedia",
    "FileMedia",
    "Media",
    "MediaWrapper",
    "Pool",
    "PoolStats",
    "RecordingMedia",
    "Root",
    "Transaction",
    "all_or_nothing",
    "random_chooser",
]
