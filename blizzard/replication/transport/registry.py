"""Transports by name: ``[transport] kind = "tcp"`` picks a factory here.

A transport module registers a factory when it is imported::

    from blizzard.replication.transport.registry import TRANSPORTS, TransportSpec

    def build(spec: TransportSpec) -> MyTransport: ...
    TRANSPORTS.register("mine", build)

and adds one line to :data:`BUILTIN` (name -> module) so the name can be
asked for before anything imported the module. The factory gets a
:class:`TransportSpec` -- plain values, no configuration object: this layer
knows nothing of the cluster's TOML -- and returns an object implementing
:class:`~blizzard.replication.transport.base.Transport`. It validates its own
options (the ``[transport]`` table's keys other than ``kind``) and raises
:class:`~blizzard.exceptions.ConfigError` naming ``transport.<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from blizzard._factories import Factories
from blizzard.exceptions import ConfigError
from blizzard.replication.transport.base import Transport

#: The transports this package ships: name -> the module that registers it.
BUILTIN = {
    "tcp": "blizzard.replication.transport.tcp",
    "dpdk": "blizzard.replication.transport.dpdk",
}


@attrs.frozen
class TlsFiles:
    """PEM files for mutual TLS between the nodes (``[tls]`` of the config)."""

    ca: Path
    cert: Path
    key: Path


@attrs.frozen
class TransportSpec:
    """Everything a transport factory is given, for node ``node_id``.

    ``kind`` is the name it was built under; ``peers`` maps every node id
    of the cluster, this one included, to its replication address
    (``nodes[i].raft``); ``options`` is the ``[transport]`` table without
    ``kind``, as written; relative paths in it are relative to ``base_dir``
    (the config file's directory). ``data_dir``
    is the cluster's data directory (node N keeps its files in
    ``data_dir/nodeN``): a place for sockets or other per-node files.
    """

    kind: str
    node_id: int
    peers: Mapping[int, tuple[str, int]]
    cluster_id: str = "blizzard"
    options: Mapping[str, Any] = attrs.field(factory=dict)
    base_dir: Path = Path(".")
    data_dir: Path = Path(".")
    tls: TlsFiles | None = None
    seed: int | None = None

    def check_options(self, known: Iterable[str]) -> None:
        """Refuse any option not in ``known`` (a typo must not pass silently)."""
        known = set(known)
        for key in self.options:
            if key not in known:
                listing = ", ".join(sorted(known)) if known else "none"
                raise ConfigError(f"transport.{key}: unknown setting for the "
                                  f"{self.kind} transport (known: {listing})")


TransportFactory = Callable[[TransportSpec], Transport]

#: The table ``[transport] kind`` is looked up in.
TRANSPORTS: Factories[TransportFactory] = Factories("transport", "transport.kind", BUILTIN)


def build_transport(spec: TransportSpec) -> Transport:
    """A new transport of ``spec.kind``; :class:`ConfigError` naming the
    available kinds if it is unknown or not available here."""
    return TRANSPORTS.get(spec.kind)(spec)
