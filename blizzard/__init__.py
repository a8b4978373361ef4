"""Blizzard: persistent, replicated data structures.

The layers, bottom up: :mod:`blizzard.pmem` (media, pool, allocator,
transactions), :mod:`blizzard.replication` (the replicator seam, Raft),
:mod:`blizzard.structures` (the user-facing data structures).
"""

from blizzard.exceptions import BlizzardError, Empty

__version__ = "0.1.0"

__all__ = ["BlizzardError", "Empty", "__version__"]
