"""Blizzard: persistent, replicated data structures.

``blizzard.open(config)`` returns a :class:`~blizzard.cluster.store.Store`
whose backend (local, Raft, ...) the configuration chooses. The layers,
bottom up: :mod:`blizzard.pmem` (media, pool, allocator, transactions),
:mod:`blizzard.replication` (the replicator seam, Raft, transports),
:mod:`blizzard.structures` (the user-facing data structures),
:mod:`blizzard.cluster` (configuration, the Store, servers, the remote client).
"""

from __future__ import annotations

from blizzard import _compiled

_compiled.choose()  # before any compiled module is imported: see blizzard._compiled

import os  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from blizzard.exceptions import BlizzardError, ConfigError, Empty  # noqa: E402

if TYPE_CHECKING:
    from blizzard.cluster.client import Client
    from blizzard.cluster.store import Store

__version__ = "0.1.0"

__all__ = ["BlizzardError", "ConfigError", "Empty", "__version__", "open"]


def open(config: dict[str, Any] | str | os.PathLike[str], *,
         node: int | None = None) -> Store | Client:
    """The structures of ``config`` (a TOML file's path, or a dict of its tables):
    a :class:`~blizzard.cluster.store.Store`, or with ``backend = "remote"`` the
    remote client, which offers the same methods; see
    :func:`blizzard.cluster.store.open`.

    Imported on first call, so ``import blizzard`` stays light.
    """
    from blizzard.cluster.store import open as open_store

    return open_store(config, node=node)
