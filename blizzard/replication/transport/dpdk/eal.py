"""DPDK's Environment Abstraction Layer: started once per process.

``rte_eal_init`` can run only once in a process, so the first DPDK
transport started in a process sets it up from its options (cores, memory,
file prefix, log level) and every later one shares it. Devices are not EAL
arguments here: each transport attaches its own (``rte_vdev_init``) when it
starts and detaches them when it stops, so a transport can be stopped and
started again in the same process.

The arguments that work on a machine without hugepages, NICs or vfio::

    --no-huge --no-pci --no-shconf -m <memory_mb> --no-telemetry -l <lcores>
    --file-prefix=<unique> --log-level=<level>

``--no-shconf``: no multi-process runtime files, so a killed node leaves
nothing behind under /var/run/dpdk (memif complains once per device that
it cannot register its multi-process callback: harmless, and silenced with
the rest of memif's error lines, which a client retrying a server that is
not up yet would otherwise print every retry; the transport logs link
changes itself).

``rte_eal_init`` pins the calling thread to its main lcore. Several nodes
share the cores of a small machine, so unless ``pin`` is set the thread's
previous CPU affinity is put back and the scheduler places it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from blizzard.exceptions import DpdkUnavailableError
from blizzard.replication.transport.dpdk import native
from blizzard.replication.transport.dpdk.options import DpdkOptions

log = logging.getLogger("blizzard.transport.dpdk")

_lock = threading.Lock()

#: DPDK's control path -- creating pools, attaching, starting, stopping and
#: detaching devices -- is not safe from several threads at once (memif's
#: sockets and EAL's interrupt thread are shared by every device of the
#: process); every such call holds this lock. Several nodes in one process
#: (tests, embedded use) each run their own loop thread.
control = threading.RLock()
_started: tuple[str, ...] | None = None
_failed: str | None = None


def arguments(options: DpdkOptions, node_id: int, run_dir: Path) -> list[str]:
    """The EAL command line for node ``node_id`` (``argv[0]`` included)."""
    return ["blizzard", "--no-huge", "--no-pci", "--no-shconf", "-m", str(options.memory_mb),
            "--no-telemetry", "-l", options.lcores_for(node_id),
            f"--file-prefix={options.file_prefix_for(node_id, run_dir)}",
            f"--log-level={options.log_level}", "--log-level=pmd.net.memif:critical",
            *options.eal_args]


def start(options: DpdkOptions, node_id: int, run_dir: Path) -> tuple[str, ...]:
    """Start the EAL if this process has not yet; returns the arguments it runs with.

    A second call (another transport in the same process) shares the running
    EAL whatever its options. :class:`DpdkUnavailableError` if it fails.
    """
    global _started, _failed
    with _lock:
        if _started is not None:
            return _started
        if _failed is not None:
            raise DpdkUnavailableError(_failed)
        ffi, lib = native.load()
        args = arguments(options, node_id, run_dir)
        keep = [ffi.new("char[]", a.encode()) for a in args]
        affinity = os.sched_getaffinity(0)
        result = lib.bz_eal_init(len(keep), ffi.new("char *[]", keep))
        if not options.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)
        if result < 0:
            _failed = (f"DPDK's EAL did not start ({ffi.string(lib.bz_strerror(result)).decode()})"
                       f" with: {' '.join(args[1:])}")
            raise DpdkUnavailableError(_failed)
        _started = tuple(args)
        log.info("EAL started: %s", " ".join(args[1:]))
        gated = lib.bz_gate_install()
        if gated <= 0:
            why = (ffi.string(lib.bz_strerror(gated)).decode() if gated < 0
                   else "its reference to munmap was not found")
            log.warning("memif links are not held back from unmapping under a burst (%s): "
                        "a peer leaving may crash this process", why)
        return _started


def started() -> tuple[str, ...] | None:
    """The running EAL's arguments, or None."""
    return _started
