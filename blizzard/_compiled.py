"""Which hot modules run compiled, and the switch that forces the interpreted path.

The hot paths (undo log, transactions, allocator, structure cores, Op
records, the registry's apply loop, Raft messages...) are typed Python: a
``.py`` that runs as it is, and beside it a ``.pxd`` that gives Cython the C
types of its classes, fields and functions. Where a C compiler was present
at install time, ``setup.py`` compiled each module of :data:`MODULES` into an
extension that Python imports instead of the ``.py``; elsewhere the very same
``.py`` runs interpreted. Both builds are tested to write byte-identical pools.

The path in use is all or nothing, decided once, when ``blizzard`` is
imported, before any of these modules is:

* ``BLIZZARD_PURE=1`` (or the older ``BLIZZARD_PURE_PYTHON=1``) forces the
  interpreted path;
* the compiled path needs every module of :data:`MODULES` built *from the
  current sources*: the build records a hash of each ``.py`` + ``.pxd``, with
  the ``.pxd`` of every module it cimports (``_compiled.json``), so an edited
  source whose extension was not rebuilt is noticed, and everything runs
  interpreted (with a warning saying how to rebuild) rather than half old
  code.

This module imports nothing from ``blizzard``: ``setup.py`` reads
:data:`MODULES` from it before the package is built.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import warnings
from pathlib import Path

#: The compiled modules, in import order (a module's .pxd may cimport the ones before it).
MODULES: tuple[str, ...] = (
    "blizzard.pmem._mem",
    "blizzard.pmem._undolog",
    "blizzard.pmem._alloc",
    "blizzard.pmem._tx",
    "blizzard.structures.ops",
    "blizzard.structures._corebase",
    "blizzard.structures._hashcore",
    "blizzard.structures._queuecore",
    "blizzard.structures._bptreecore",
    "blizzard.structures._keyindex",
    "blizzard.structures._skiplistcore",
    "blizzard.structures.registry",
    "blizzard.structures._mapping",
    "blizzard.structures.queue",
    "blizzard.replication.local",
    "blizzard.replication.raft.messages",
    "blizzard.replication.raft.quorum",
    "blizzard.replication.raft.progress",
    "blizzard.replication.raft.raftlog",
    "blizzard.replication.raft.storage",
    "blizzard.replication.raft.pmem_storage",
    "blizzard.replication.raft.core",
    "blizzard.replication.sessions",
    "blizzard.replication._settle",
    "blizzard.replication.node",
    "blizzard.cluster.replicator",
)

ENV_PURE = "BLIZZARD_PURE"
ENV_PURE_OLD = "BLIZZARD_PURE_PYTHON"
RECORD = "_compiled.json"
_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the package

#: Why the interpreted path is in use; None when the compiled one is.
reason: str | None = None


_PXD_CIMPORT = re.compile(rb"^[ \t]*from[ \t]+(blizzard[\w.]*)[ \t]+cimport\b", re.M)
_PY_CIMPORT = re.compile(rb"^[ \t]*from[ \t]+cython\.cimports\.(blizzard[\w.]*)[ \t]+import\b",
                         re.M)


def _read(base: Path, suffix: str) -> bytes:
    path = base.with_suffix(suffix)
    return path.read_bytes() if path.exists() else b""


def source_hash(module: str, root: Path | None = None) -> str:
    """SHA-256 of what a module's extension was built from: its ``.py`` and ``.pxd``,
    and the ``.pxd`` of every module it cimports, directly or through those: an
    extension compiled against an older ``.pxd`` of another module (a changed class
    layout, say) is stale too."""
    root = root or _ROOT
    base = root.joinpath(*module.split("."))
    own = (_read(base, ".py"), _read(base, ".pxd"))
    digest = hashlib.sha256()
    for text in own:
        digest.update(text)
    seen = {module}
    todo = [*_PY_CIMPORT.findall(own[0]), *_PXD_CIMPORT.findall(own[1])]
    interfaces = {}
    while todo:
        name = todo.pop().decode()
        if name not in seen:
            seen.add(name)
            pxd = _read(root.joinpath(*name.split(".")), ".pxd")
            interfaces[name] = pxd
            todo.extend(_PXD_CIMPORT.findall(pxd))
    for name in sorted(interfaces):
        digest.update(name.encode() + b"\0" + interfaces[name])
    return digest.hexdigest()


def _extension_of(module: str) -> Path | None:
    base = _ROOT.joinpath(*module.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = base.with_name(base.name + suffix)
        if path.exists():
            return path
    return None


def _why_interpreted() -> str | None:
    if os.environ.get(ENV_PURE) or os.environ.get(ENV_PURE_OLD):
        name = ENV_PURE if os.environ.get(ENV_PURE) else ENV_PURE_OLD
        return f"{name}=1"
    missing = [m for m in MODULES if _extension_of(m) is None]
    if len(missing) == len(MODULES):
        return "no compiled modules (built without a C compiler or Cython)"
    if missing:
        return f"not built: {', '.join(missing)}"
    try:
        built = json.loads((_ROOT / "blizzard" / RECORD).read_text())["sources"]
    except (OSError, ValueError, KeyError):
        return f"no build record ({RECORD})"
    stale = [m for m in MODULES if built.get(m) != source_hash(m)]
    if stale:
        return f"sources changed since the build: {', '.join(stale)}"
    return None


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` of the compiled modules, skipping their extensions."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in MODULES:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path or ():
            candidate = os.path.join(entry, leaf)
            if os.path.exists(candidate):
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


def choose() -> None:
    """Decide the path (once, at ``import blizzard``); force the interpreted one if needed."""
    global reason
    if any(isinstance(f, _SourceOnly) for f in sys.meta_path):
        return
    reason = _why_interpreted()
    if reason is None:
        return
    if reason.startswith(("not built", "sources changed", "no build record")):
        warnings.warn(
            f"blizzard runs interpreted ({reason}); rebuild with "
            "`pip install -e .` (or set BLIZZARD_PURE=1 to silence this)",
            RuntimeWarning,
            stacklevel=3,
        )
    sys.meta_path.insert(0, _SourceOnly())


def compiled() -> bool:
    """Whether the compiled modules are in use."""
    return reason is None


def describe() -> str:
    """One line for ``blizzard --version`` and ``pool info``."""
    if reason is None:
        return f"compiled ({len(MODULES)} modules built by Cython)"
    return f"interpreted ({reason})"


if __name__ == "__main__":  # `python blizzard/_compiled.py`: exit 0 when the build is current
    why = _why_interpreted()
    print(f"interpreted ({why})" if why else f"compiled: all {len(MODULES)} modules current")
    sys.exit(1 if why else 0)
