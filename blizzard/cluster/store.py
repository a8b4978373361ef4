"""The Store: one configuration file chooses the backend; the code stays the same.

::

    import blizzard

    with blizzard.open("app.toml") as store:          # [replication] backend = "local"
        users = store.hashmap("users", key_codec=str, value_codec="msgpack")
        users["ada"] = {"born": 1815}

    with blizzard.open("cluster.toml", node=1) as store:   # backend = "raft": node 1
        store.queue("jobs").put(b"build")   # returns once a quorum committed it

:func:`open` reads ``[replication] backend`` and builds the backend through
its registered factory (:mod:`blizzard.cluster.backends`), which in turn
builds ``[transport] kind`` through the transport registry: a new backend or
transport adds a factory, not a branch here. With ``backend = "remote"`` it
returns :func:`blizzard.client.connect`'s client, which offers the same
methods over the network.

Structures are handed out by name (opened, or created on first use with the
codecs given); ``store.pool`` is the pool itself, for raw use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blizzard.cluster import config as configmod
from blizzard.cluster.backends import BACKENDS, REMOTE, Backend
from blizzard.cluster.config import ClusterConfig
from blizzard.exceptions import ConfigError, ReplicatorStoppedError
from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures import KIND_OF_TAG, PBPlusTree, PHashMap, PQueue, PSkipList
from blizzard.structures.codecs import CodecLike
from blizzard.structures.registry import registry_for

if TYPE_CHECKING:
    from blizzard.cluster.client import Client

ConfigLike = ClusterConfig | Mapping[str, Any] | str | os.PathLike[str]


def load_config(config: ConfigLike) -> ClusterConfig:
    """A validated config from a TOML path, a dict of its tables, or a config."""
    if isinstance(config, ClusterConfig):
        return config
    if isinstance(config, Mapping):
        return configmod.parse(dict(config))
    if isinstance(config, str | os.PathLike):
        return configmod.load(config)
    raise ConfigError(f"config: expected a TOML file's path or a dict, "
                      f"got {type(config).__name__}")


def open(config: ConfigLike, *, node: int | None = None) -> Store | Client:
    """The structures of ``config``: a :class:`Store`, or a remote client's.

    ``config`` is a TOML file's path or a dict of the same tables. ``node``
    is this process's node id for backends that run a cluster node here
    (``raft``); the ``local`` and ``remote`` backends take none. Errors in
    the configuration, or a backend or transport not available here, raise
    :class:`~blizzard.exceptions.ConfigError` naming the field.
    """
    config = load_config(config)
    name = config.replication.backend
    if name == REMOTE:
        if node is not None:
            raise ConfigError(f"node: a {REMOTE} client is not a node (got node={node})")
        from blizzard.cluster.client import connect

        return connect(config)
    backend = BACKENDS.get(name)(config, node)
    return Store(config, backend, node=node)


class Store:
    """The structures of one backend, in this process; see the module docstring.

    A context manager: leaving it (or :meth:`close`) stops the backend
    (a Raft node leaves the cluster) and closes its pools.
    """

    def __init__(self, config: ClusterConfig, backend: Backend, *, node: int | None = None
                 ) -> None:
        self.config = config
        self.node = node
        self.backend = config.replication.backend
        self._backend = backend
        self._closed = False

    # -- structures -------------------------------------------------------------------

    def hashmap(self, name: str, *, key_codec: CodecLike = None, value_codec: CodecLike = None,
                linearizable: bool | None = None) -> PHashMap:
        """The :class:`~blizzard.structures.PHashMap` ``name``, created if missing."""
        return PHashMap(self.pool, name, key_codec=key_codec, value_codec=value_codec,
                        replicator=self.replicator, linearizable=linearizable)

    def queue(self, name: str, *, value_codec: CodecLike = None,
              linearizable: bool | None = None) -> PQueue:
        """The :class:`~blizzard.structures.PQueue` ``name``, created if missing."""
        return PQueue(self.pool, name, value_codec=value_codec, replicator=self.replicator,
                      linearizable=linearizable)

    def bptree(self, name: str, *, key_codec: CodecLike = None, value_codec: CodecLike = None,
               fanout: int | None = None, linearizable: bool | None = None) -> PBPlusTree:
        """The :class:`~blizzard.structures.PBPlusTree` ``name``, created if missing."""
        return PBPlusTree(self.pool, name, key_codec=key_codec, value_codec=value_codec,
                          fanout=fanout, replicator=self.replicator, linearizable=linearizable)

    def skiplist(self, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, seed: int | None = None,
                 linearizable: bool | None = None) -> PSkipList:
        """The :class:`~blizzard.structures.PSkipList` ``name``, created if missing."""
        return PSkipList(self.pool, name, key_codec=key_codec, value_codec=value_codec,
                         seed=seed, replicator=self.replicator, linearizable=linearizable)

    def names(self) -> dict[str, str]:
        """Every structure in the store: name -> kind (``hashmap``, ``queue``...)."""
        registry = registry_for(self.pool)
        tags = {name: tag for name in registry.names()
                if (tag := registry.kind(name)) is not None}
        return {name: KIND_OF_TAG.get(tag, tag.decode()) for name, tag in tags.items()}

    def drop(self, name: str) -> None:
        """Remove structure ``name`` and free its memory (an Op: it replicates).
        KeyError if there is none."""
        registry_for(self.pool).drop(name, self.replicator)

    def check(self) -> None:
        """Verify the pool and every structure in it (O(size))."""
        replicator = self.replicator
        lock = getattr(replicator, "read_lock", None)
        if lock is None:
            registry_for(self.pool).check()
        else:
            with lock:
                registry_for(self.pool).check()

    # -- membership (backends with members: raft) -----------------------------------------

    def members(self) -> dict[str, Any]:
        """``{"voters": [...], "learners": [...], "leader": id}`` as this node sees them."""
        return self._membership().members()

    def add_node(self, node_id: int, raft: tuple[str, int], client: tuple[str, int] | None = None,
                 ) -> dict[str, Any]:
        """Add a running node to the cluster: a learner, then a voter once caught up.
        On the leader (elsewhere :class:`~blizzard.exceptions.NotLeaderError`)."""
        return self._membership().add_node(node_id, raft, client)

    def remove_node(self, node_id: int) -> dict[str, Any]:
        """Remove a node (running or dead) from the cluster; on the leader."""
        return self._membership().remove_node(node_id)

    def transfer_leader(self, node_id: int) -> dict[str, Any]:
        """Hand leadership to voter ``node_id``; on the leader."""
        return self._membership().transfer_leader(node_id)

    def _membership(self):
        replicator = self.replicator
        if not hasattr(replicator, "add_node"):
            raise ConfigError(f"replication.backend: the {self.backend} backend has no "
                              "members to change")
        return replicator

    # -- the backend ---------------------------------------------------------------------

    @property
    def pool(self) -> Pool:
        """The pool the structures live in (raw use: transactions, roots)."""
        if self._closed:
            raise ReplicatorStoppedError("the store is closed")
        return self._backend.pool

    @property
    def replicator(self) -> Replicator:
        """Where the structures' Ops go (the pool's local replicator for ``local``)."""
        replicator = self._backend.replicator
        return replicator if replicator is not None else registry_for(self.pool).replicator

    @property
    def transport(self) -> str | None:
        return self._backend.transport

    def status(self) -> dict[str, Any]:
        """This process's view: ``backend``, ``transport``, ``node``, ``role``,
        ``term``, ``leader``, ``commit``, ``applied`` and ``counters``."""
        status: dict[str, Any] = {"backend": self.backend, "transport": self.transport,
                                  "node": self.node}
        if self._closed:
            status.update(role="closed", term=None, leader=None, commit=None, applied=None,
                          counters={})
            return status
        reported = self._backend.status()
        for key in ("role", "term", "leader", "commit", "applied"):
            status[key] = reported.get(key)
        status["counters"] = dict(reported.get("counters", {}))
        for key, value in reported.items():
            status.setdefault(key, value)
        return status

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the backend and close its pools (idempotent)."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" node {self.node}" if self.node is not None else ""
        state = " closed" if self._closed else ""
        return f"<Store {self.backend}{where} of {self.config.cluster_id!r}{state}>"
