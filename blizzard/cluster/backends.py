"""Replication backends by name: ``[replication] backend = "..."`` picks a factory here.

A backend gives a :class:`~blizzard.cluster.store.Store` the pool its
structures live in and the replicator their Ops go through. A backend module
registers a factory when it is imported::

    from blizzard.cluster.backends import BACKENDS

    class MyBackend:                       # implements Backend (below)
        def __init__(self, config: ClusterConfig, node: int | None) -> None: ...

    BACKENDS.register("mine", MyBackend)

and adds one line to :data:`BUILTIN` (name -> module), so the name can be
asked for before anything imported the module. The factory is called as
``factory(config, node)``: the whole validated
:class:`~blizzard.cluster.config.ClusterConfig` (its own options are
``config.replication.options``, the ``[replication]`` table without
``backend``; the transport, if it uses one, is built with
``build_transport(transport_spec(config, node))``) and the ``node`` passed
to :func:`blizzard.open` (None if none was). It raises
:class:`~blizzard.exceptions.ConfigError` naming the field for anything it
cannot use, and must leave no file open when it fails.

``remote`` is listed with the backends but is not built here: with it,
:func:`blizzard.open` connects to the servers as a client
(:func:`blizzard.client.connect`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from blizzard._factories import Factories
from blizzard.cluster import exposure
from blizzard.cluster.config import ClusterConfig
from blizzard.cluster.replicator import RaftReplicator
from blizzard.exceptions import ConfigError
from blizzard.pmem import Pool
from blizzard.replication.base import Replicator
from blizzard.structures.registry import registry_for

#: The name that makes :func:`blizzard.open` a client of remote servers.
REMOTE = "remote"

#: The backends this package ships: name -> the module that registers it.
BUILTIN = {
    "local": __name__,
    "raft": __name__,
    REMOTE: __name__,
    "physical": "blizzard.cluster.physical",
}

DATA_POOL = "data.pool"
DATA_LAYOUT = "blizzard.data"


class Backend(Protocol):
    """What a backend factory returns; the Store calls nothing else.

    ``pool`` holds the structures; ``replicator`` takes their Ops (None: the
    pool's own :class:`~blizzard.replication.local.LocalReplicator`);
    ``transport`` is the transport kind it replicates over (None if it sends
    nothing). ``status()`` returns this process's view with the keys
    ``role``, ``term``, ``leader``, ``commit``, ``applied`` (None where they
    mean nothing for the backend) and ``counters`` (a flat dict of numbers
    the backend chooses). ``close()`` stops replicating and closes every
    pool it opened; it is called once.
    """

    pool: Pool
    replicator: Replicator | None
    transport: str | None

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


BackendFactory = Callable[[ClusterConfig, "int | None"], Backend]

#: The table ``[replication] backend`` is looked up in.
BACKENDS: Factories[BackendFactory] = Factories("replication backend", "replication.backend",
                                                BUILTIN)


def check_options(config: ClusterConfig, known: tuple[str, ...] = ()) -> None:
    """Refuse ``[replication]`` keys the chosen backend does not read."""
    for key in config.replication.options:
        if key not in known:
            listing = ", ".join(known) if known else "none besides backend"
            raise ConfigError(f"replication.{key}: unknown setting for the "
                              f"{config.replication.backend} backend (known: {listing})")


def open_pool(path, size: int, *, layout: str, durability: str) -> Pool:
    """The pool at ``path``, created with ``size`` bytes if it does not exist."""
    if path.exists():
        return Pool.open(path, layout=layout, mode=durability)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Pool.create(path, size, layout=layout, mode=durability)


class LocalBackend:
    """``local``: no copies. The pool is ``data_dir/data.pool`` (``pool_size``,
    ``durability``); every Op is applied at once in this process."""

    transport = None
    replicator = None

    def __init__(self, config: ClusterConfig, node: int | None) -> None:
        if node is not None:
            raise ConfigError(f"node: the local backend has no nodes (got node={node}); "
                              "set [replication] backend = \"raft\" to run a cluster node")
        check_options(config)
        self.pool = open_pool(config.data_dir / DATA_POOL, config.pool_size,
                              layout=DATA_LAYOUT, durability=config.durability)
        self._registry = registry_for(self.pool)

    def status(self) -> dict[str, Any]:
        applied = self._registry.last_applied
        return {"role": "local", "term": None, "leader": None, "commit": applied,
                "applied": applied,
                "counters": {"submitted": self._registry.replicator.submitted}}

    def close(self) -> None:
        self.pool.close()


def per_op(counters: dict[str, Any], ops: int) -> dict[str, float]:
    """``<name>_per_op`` for the wire and flush counters present (0 before any op)."""
    keys = ("bytes_sent", "messages_sent", "round_trips", "flushes", "fences",
            "backup_flushes", "backup_fences")
    return {f"{k}_per_op": (counters[k] / ops if ops else 0.0) for k in keys if k in counters}


class RaftBackend:
    """``raft``: this process is node ``node`` of the cluster in ``[[nodes]]``
    (:class:`~blizzard.cluster.replicator.RaftReplicator`); its pools are in
    ``data_dir/node<id>/``.

    Option ``count_flushes = true`` puts both pools on a
    :class:`~blizzard.pmem.counting.CountingMedia`, so ``status()`` counts
    flushes and fences too (a Python call per flush: for measuring)."""

    def __init__(self, config: ClusterConfig, node: int | None) -> None:
        check_options(config, ("count_flushes",))
        count = config.replication.options.get("count_flushes", False)
        if not isinstance(count, bool):
            raise ConfigError(f"replication.count_flushes: expected true or false, got {count!r}")
        config.require_nodes("the raft backend")
        if node is None:
            ids = ", ".join(str(n.id) for n in config.nodes)
            raise ConfigError(
                f"node: the raft backend runs a cluster node in this process: pass node=<id> "
                f"(one of {ids}); a process that is not a node uses the cluster as a client "
                f"([replication] backend = \"{REMOTE}\", or blizzard.client.connect)")
        config.node(node)
        exposure.check(config, node, ("raft",))
        self._media: list = []
        self.replicator = RaftReplicator(config, node,
                                         media_wrapper=self._counting if count else None)
        self.pool = self.replicator.pool
        self.transport = config.transport.kind

    def _counting(self, media):
        from blizzard.pmem.counting import CountingMedia

        counted = CountingMedia(media)
        self._media.append(counted)
        return counted

    def status(self) -> dict[str, Any]:
        rep = self.replicator
        status = rep.status()
        counters: dict[str, Any] = {"submitted": rep.submitted}
        for key in ("log_entries", "first_index", "last_index", "ops_per_s", "bad_frames",
                    "received_in_place"):
            if key in status:
                counters[key] = status[key]
        counters.update({f"transport_{k}": v
                         for k, v in attrs.asdict(rep.transport.stats).items()})
        counters.update({f"copied_{stage}": n for stage, n in status.get("copies", {}).items()})
        counters.update(ops=rep.state_machine.last_applied,
                        bytes_sent=rep.transport.stats.bytes_sent,
                        messages_sent=rep.transport.stats.frames_sent)
        if self._media:
            counters.update(flushes=sum(m.flushes for m in self._media),
                            fences=sum(m.fences for m in self._media))
        counters.update(per_op(counters, counters["ops"]))
        result = {"role": status.get("role"), "term": status.get("term"),
                  "leader": status.get("leader"), "commit": status.get("commit"),
                  "applied": status.get("applied"), "counters": counters}
        if "match" in status:
            result["match"] = status["match"]
        return result

    def close(self) -> None:
        self.replicator.stop()


def _remote(config: ClusterConfig, node: int | None) -> Backend:
    raise ConfigError(f"replication.backend: {REMOTE!r} is not built in this process: "
                      "blizzard.open() connects to the servers instead")


BACKENDS.register("local", LocalBackend)
BACKENDS.register("raft", RaftBackend)
BACKENDS.register(REMOTE, _remote)
