"""Builds the native parts: the hot modules, compiled by Cython (typed Python:
a .py plus its .pxd), and the DPDK transport's cffi module.

Every extension is optional: without a C compiler the install still
succeeds and the same ``.py`` files run interpreted (``blizzard._compiled``
notices the missing extensions and uses none of them). The build records,
for each extension it built, a hash of the sources it was built from
(``blizzard/_compiled.json``), so an extension left over from older sources
is never mixed with newer code.

The DPDK transport's cffi module is built where ``pkg-config libdpdk`` finds
Debian's DPDK (``dpdk``, ``libdpdk-dev``); elsewhere it is left out and
choosing ``dpdk`` as the transport names the missing packages.
"""

import importlib.util
import json
import runpy
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
_compiled = runpy.run_path(str(HERE / "blizzard" / "_compiled.py"))
MODULES = _compiled["MODULES"]
RECORD = Path("blizzard") / _compiled["RECORD"]

# Python semantics are kept wherever they could differ from C's: negative
# indexes, IndexError on a bad index (a view's index is one compare: a stray
# offset raises instead of corrupting memory; so does a view used after its
# pool closed), division and modulo of
# negative numbers, overflow checks when a Python int becomes a C integer.
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,  # the .py's annotations are Python's; C types are in the .pxd
    "embedsignature": True,
}


class RecordingBuildExt(build_ext):
    """build_ext that records the source hash of every extension it built."""

    def run(self) -> None:
        self._hashes = {name: _compiled["source_hash"](name, HERE) for name in MODULES}
        self._built: dict[str, str] = {}
        for path in {HERE / RECORD, Path(self.build_lib) / RECORD}:
            path.unlink(missing_ok=True)  # a failed build must not look current
        super().run()
        record = json.dumps({"sources": dict(sorted(self._built.items()))}, indent=1) + "\n"
        targets = [HERE / RECORD]
        if not self.inplace:
            targets.append(Path(self.build_lib) / RECORD)
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(record)

    def build_extension(self, ext) -> None:
        super().build_extension(ext)  # raises (and is skipped: optional) when it fails
        if ext.name in self._hashes:  # (not the DPDK module: it is not a compiled .py)
            self._built[ext.name] = self._hashes[ext.name]


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython: everything runs interpreted
        return []
    # zlib: the undo log's CRC-32 (the same function Python's zlib module calls)
    exts = [
        Extension(name, [name.replace(".", "/") + ".py"], libraries=["z"],
                  extra_compile_args=["-O2"], optional=True)
        for name in MODULES
    ]
    return cythonize(exts, compiler_directives=DIRECTIVES, build_dir="build/cython", quiet=True)


def dpdk_extensions() -> list:
    path = HERE / "blizzard/replication/transport/dpdk/_build.py"
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


setup(ext_modules=[*extensions(), *dpdk_extensions()], cmdclass={"build_ext": RecordingBuildExt})
