"""Builds ``blizzard.replication.transport.dpdk._dpdk`` (cffi, API mode).

API mode because DPDK's fast path is static inline (``rte_eth_rx_burst``,
``rte_eth_tx_burst``, the mbuf helpers): only a compiled module can call
it. Compiler and linker flags come from ``pkg-config libdpdk`` (Debian's
``libdpdk-dev``); without it :func:`builder` returns None and the install
goes on without the DPDK transport.

``setup.py`` loads this file by path (the package itself is not importable
while it is being built), so it imports nothing from Blizzard.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "blizzard.replication.transport.dpdk._dpdk"
HEADER = HERE / "_bzdpdk.h"
SOURCES = [HERE / "_bzdpdk.c", HERE / "_bzgate.c"]


def pkg_config(*args: str) -> list[str] | None:
    """``pkg-config ARGS libdpdk`` split into words, or None if it fails."""
    if shutil.which("pkg-config") is None:
        return None
    done = subprocess.run(["pkg-config", *args, "libdpdk"], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return shlex.split(done.stdout)


def builder():
    """The cffi builder, or None where libdpdk's development files are missing."""
    cflags = pkg_config("--cflags")
    libs = pkg_config("--libs")
    if cflags is None or libs is None:
        return None
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(HEADER.read_text())
    include_dirs = [str(HERE)] + [f[2:] for f in cflags if f.startswith("-I")]
    ffi.set_source(
        MODULE,
        '#include "_bzdpdk.h"\n',
        sources=[str(source.relative_to(Path.cwd())) if source.is_relative_to(Path.cwd())
                 else str(source) for source in SOURCES],
        include_dirs=include_dirs,
        extra_compile_args=["-O2", *(f for f in cflags if not f.startswith("-I"))],
        # rte_vdev_init/uninit live in the vdev bus driver, which
        # pkg-config does not list (drivers are plugins).
        libraries=[*(f[2:] for f in libs if f.startswith("-l")), "rte_bus_vdev"],
        extra_link_args=[f for f in libs if not f.startswith("-l")],
    )
    return ffi


if __name__ == "__main__":  # python _build.py: build in place (development)
    ffi = builder()
    if ffi is None:
        raise SystemExit("pkg-config libdpdk failed: install Debian's dpdk and libdpdk-dev")
    ffi.compile(tmpdir=str(HERE.parents[3]), verbose=True)
