"""Builds the optional native parts.

* the undo log's C hot path (``optional=True``: without a compiler the
  install still succeeds and the pure-Python undo log -- same format, same
  behaviour -- is used);
* the DPDK transport's cffi module, where ``pkg-config libdpdk`` finds
  Debian's DPDK (``dpdk``, ``libdpdk-dev``); elsewhere it is left out and
  choosing ``dpdk`` as the transport names the missing packages.
"""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup


def dpdk_extensions() -> list:
    path = Path(__file__).parent / "blizzard/replication/transport/dpdk/_build.py"
    spec = importlib.util.spec_from_file_location("_blizzard_dpdk_build", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    ffi = build.builder()
    if ffi is None:
        print("blizzard: pkg-config libdpdk failed; building without the DPDK transport")
        return []
    extension = ffi.distutils_extension(tmpdir="build/cffi")
    extension.optional = True
    return [extension]


setup(
    ext_modules=[
        Extension(
            "blizzard.pmem._undolog_c",
            sources=["blizzard/pmem/_undolog.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        *dpdk_extensions(),
    ]
)
