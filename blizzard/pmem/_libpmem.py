"""cffi bindings (ABI mode) to Debian's libpmem1: no compiler needed.

The flush functions are declared with ``uintptr_t`` addresses instead of
``const void *``: the calling convention is the same on every ABI Debian
supports, and passing a plain int saves creating a cdata pointer per call,
which is most of a flush's cost from Python.
"""

from __future__ import annotations

from typing import Any

from blizzard.exceptions import PmemUnavailableError

_CDEF = """
void pmem_flush(uintptr_t addr, size_t len);
void pmem_drain(void);
void pmem_persist(uintptr_t addr, size_t len);
int pmem_is_pmem(uintptr_t addr, size_t len);
int pmem_has_hw_drain(void);
const char *pmem_errormsg(void);
const char *pmem_check_version(unsigned major_required, unsigned minor_required);
"""

_LIBRARY_NAME = "libpmem.so.1"

_loaded: tuple[Any, Any] | None = None
_load_error: str | None = None


def load() -> tuple[Any, Any]:
    """Return ``(ffi, lib)`` for libpmem, loading it once.

    Raises :class:`PmemUnavailableError` with the reason and the fix when the
    library (Debian package ``libpmem1``) or cffi is missing.
    """
    global _loaded, _load_error
    if _loaded is not None:
        return _loaded
    if _load_error is not None:
        raise PmemUnavailableError(_load_error)
    try:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(_LIBRARY_NAME)
    except (ImportError, OSError) as exc:
        _load_error = (
            f"durability mode 'pmem' needs libpmem ({_LIBRARY_NAME}), which could not be "
            f"loaded: {exc}. Install Debian's libpmem1 (apt-get install libpmem1) "
            "or use mode='msync'."
        )
        raise PmemUnavailableError(_load_error) from exc
    _loaded = (ffi, lib)
    return _loaded


def available() -> bool:
    """True when libpmem can be loaded."""
    try:
        load()
    except PmemUnavailableError:
        return False
    return True
