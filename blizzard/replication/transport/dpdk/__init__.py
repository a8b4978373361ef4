"""The DPDK transport: Raft messages over user-space, poll-mode links.

``DpdkTransport`` (``transport``) carries messages over ``net_memif`` links
between node processes, or ``net_af_packet`` on named interfaces; the
native helper (``_bzdpdk.c``, built by ``_build.py`` through cffi against
Debian's DPDK) does the per-frame work. ``options`` parses the
``[transport]`` settings, ``eal`` starts DPDK once per process, ``frames``
describes the frame format, ``reassembly`` puts fragments back together and
``polling`` makes the asyncio loop poll the links.

Nothing here loads DPDK at import: a missing native module is reported when
a transport is built, as a ``DpdkUnavailableError`` naming the packages.
"""

from blizzard.replication.transport.dpdk.native import available
from blizzard.replication.transport.dpdk.options import DpdkOptions
from blizzard.replication.transport.dpdk.transport import DpdkTransport

__all__ = ["DpdkOptions", "DpdkTransport", "available"]
