"""The DPDK transport: Raft messages over user-space, poll-mode links.

``DpdkTransport`` (``transport``) carries messages over ``net_memif`` links
between node processes, or ``net_af_packet`` on named interfaces; the
native helper (``_bzdpdk.c``, built by ``_build.py`` through cffi against
Debian's DPDK) does the per-frame work. ``options`` parses the
``[transport]`` settings, ``eal`` starts DPDK once per process, ``frames``
describes the frame format, ``reassembly`` puts fragments back together and
``polling`` makes the asyncio loop poll the links.

Importing this registers the ``dpdk`` transport (``[transport] kind =
"dpdk"``). Nothing here loads DPDK at import: a missing native module is
reported when a transport is built, as a ``ConfigError`` naming the packages.
"""

from __future__ import annotations

from blizzard.exceptions import ConfigError, DpdkUnavailableError
from blizzard.replication.transport.dpdk.native import available
from blizzard.replication.transport.dpdk.options import DpdkOptions, parse
from blizzard.replication.transport.dpdk.transport import DpdkTransport
from blizzard.replication.transport.registry import TRANSPORTS, TransportSpec

__all__ = ["DpdkOptions", "DpdkTransport", "available"]


def _build(spec: TransportSpec) -> DpdkTransport:
    """The ``dpdk`` transport factory: options from ``[transport]``, files under
    ``data_dir/dpdk`` (see :mod:`.options`)."""
    if spec.tls is not None:
        raise ConfigError("tls: the dpdk transport does not encrypt (memif links are shared "
                          "memory between processes of one machine; af_packet links a private "
                          "segment): remove [tls], or use kind = \"tcp\"")
    options = parse(spec.options, spec.node_id, base_dir=spec.base_dir)
    strangers = sorted(set(options.af_packet) - set(spec.peers))
    if strangers:
        raise ConfigError(f"transport.nodes.{spec.node_id}.af_packet: no node {strangers[0]} "
                          f"in the cluster")
    try:
        return DpdkTransport(spec.node_id, spec.peers, run_dir=spec.data_dir,
                             cluster_id=spec.cluster_id, options=options, seed=spec.seed)
    except DpdkUnavailableError as exc:
        raise ConfigError(f"transport.kind: the transport 'dpdk' is not available here: "
                          f"{exc}") from exc


TRANSPORTS.register("dpdk", _build)
