"""The compiled DPDK helper (``_dpdk``, cffi API mode), loaded on demand.

Importing Blizzard never loads DPDK: the module is imported the first time
a DPDK transport is built, and its absence is reported as a
:class:`~blizzard.exceptions.DpdkUnavailableError` naming the packages that
provide it, never as a bare ``ImportError`` from deep inside.
"""

from __future__ import annotations

from typing import Any

from blizzard.exceptions import DpdkUnavailableError

PACKAGES = ("dpdk", "libdpdk-dev")
MISSING = (
    "the DPDK transport needs Debian's {packages} at install time (its native module "
    "is compiled against `pkg-config libdpdk`): apt-get install {packages}, then "
    "reinstall Blizzard (`make test`, or pip install -e .). The tcp transport works "
    "without them. ({why})"
)

_loaded: tuple[Any, Any] | None = None


def load() -> tuple[Any, Any]:
    """``(ffi, lib)`` of the helper; :class:`DpdkUnavailableError` if it is missing."""
    global _loaded
    if _loaded is None:
        try:
            from blizzard.replication.transport.dpdk import _dpdk
        except ImportError as exc:
            raise DpdkUnavailableError(
                MISSING.format(packages=" and ".join(PACKAGES), why=exc)) from exc
        _loaded = (_dpdk.ffi, _dpdk.lib)
    return _loaded


def available() -> bool:
    """True when the helper is built and loads (the EAL is not started)."""
    try:
        load()
    except DpdkUnavailableError:
        return False
    return True
