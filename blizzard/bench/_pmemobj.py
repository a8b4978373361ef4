"""The reference for ``bench pool``: the same operations through PMDK's libpmemobj.

Driven with cffi in ABI mode (``ffi.dlopen``, no compiler), exactly as
Blizzard drives libpmem, so both sides pay the same Python-to-C call cost and
the ratio measures the transaction machinery, not the binding technique.

libpmemobj aborts the whole process on misuse (say, a commit after a failed
add), so the parent never loads it: :class:`ReferenceProcess` runs
:class:`Reference` in a child (``python -m blizzard.bench._pmemobj --serve``)
and talks to it in JSON lines over a pipe. The child times its own loops, so
the pipe is outside every measurement, and the parent can interleave the
reference's repeats with its own.

``PMEM_IS_PMEM_FORCE=1`` is set before the library is loaded: without it
libpmemobj persists with ``msync`` on a non-DAX file; with it, it flushes
cache lines through libpmem like Blizzard's ``pmem`` mode does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter_ns, thread_time_ns
from typing import Any

from blizzard.exceptions import PmemobjUnavailableError

LIBRARY_NAME = "libpmemobj.so.1"
API_MAJOR = 2  # PMEMOBJ_MAJOR_VERSION of the 1.x releases, for pmemobj_check_version
FORCE_ENV = {"PMEM_IS_PMEM_FORCE": "1"}

# From libpmemobj/base.h and tx_base.h (PMDK 1.12). PMEMoid is returned and
# passed by value; addresses for *_direct go as uintptr_t (see _libpmem).
_CDEF = """
typedef struct pmemobjpool PMEMobjpool;
typedef struct pmemoid { uint64_t pool_uuid_lo; uint64_t off; } PMEMoid;

PMEMobjpool *pmemobj_create(const char *path, const char *layout, size_t poolsize,
                            unsigned int mode);
void pmemobj_close(PMEMobjpool *pop);
PMEMoid pmemobj_root(PMEMobjpool *pop, size_t size);
void *pmemobj_direct(PMEMoid oid);
const char *pmemobj_errormsg(void);
const char *pmemobj_check_version(unsigned major_required, unsigned minor_required);
void pmemobj_free(PMEMoid *oidp);

int pmemobj_tx_begin(PMEMobjpool *pop, void *env, ...);
int pmemobj_tx_add_range(PMEMoid oid, uint64_t off, size_t size);
int pmemobj_tx_add_range_direct(uintptr_t ptr, size_t size);
PMEMoid pmemobj_tx_alloc(size_t size, uint64_t type_num);
void pmemobj_tx_commit(void);
int pmemobj_tx_end(void);
void pmemobj_tx_abort(int errnum);
void pmemobj_tx_process(void);
int pmemobj_tx_stage(void);
"""

TX_STAGE_NONE = 0
TX_STAGE_WORK = 1
ECANCELED = 125

ROOT_SIZE = 512
LAYOUT = b"blizzard-bench"


def load() -> tuple[Any, Any]:
    """``(ffi, lib)``, after forcing libpmem's pmem detection (see module doc)."""
    os.environ.update(FORCE_ENV)  # read by libpmem when libpmemobj loads it
    try:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(LIBRARY_NAME)
    except (ImportError, OSError) as exc:
        raise PmemobjUnavailableError(
            f"{LIBRARY_NAME} could not be loaded ({exc}); install Debian's libpmemobj1") from exc
    return ffi, lib


class Reference:
    """A libpmemobj pool and the benchmark's two operations on it (in-process).

    Use through :class:`ReferenceProcess` unless you are sure of every call:
    a wrong one aborts the process.
    """

    def __init__(self, path: str, size: int) -> None:
        ffi, lib = self.ffi, self.lib = load()
        self.path = path
        pop = lib.pmemobj_create(path.encode(), LAYOUT, size, 0o600)
        if pop == ffi.NULL:
            raise RuntimeError(f"pmemobj_create({path!r}): {self._errormsg()}")
        self.pop = pop
        try:
            root = lib.pmemobj_root(pop, ROOT_SIZE)
            if not root.off:
                raise RuntimeError(f"pmemobj_root: {self._errormsg()}")
            self.base = int(ffi.cast("uintptr_t", pop))
            # pmemobj_direct is pop + off for an object of this pool; the loops
            # use the offset directly, as the C inline version does.
            if int(ffi.cast("uintptr_t", lib.pmemobj_direct(root))) != self.base + root.off:
                raise RuntimeError("pmemobj_direct(root) is not pool base + offset")
            self.uuid_lo = root.pool_uuid_lo
            self.buf = memoryview(ffi.buffer(ffi.cast("char *", pop), size))
            self.a = (root.off + 63) & ~63  # two 16-byte ranges in different cache lines
            self.b = self.a + 128
            self._allocated: list[int] = []
        except BaseException:
            lib.pmemobj_close(pop)
            raise

    def _errormsg(self) -> str:
        msg = self.lib.pmemobj_errormsg()
        return self.ffi.string(msg).decode(errors="replace") if msg != self.ffi.NULL else "?"

    def _fail(self, what: str) -> None:
        """End a failed transaction properly (anything else aborts), then raise."""
        lib = self.lib
        msg = self._errormsg()
        stage = lib.pmemobj_tx_stage()
        if stage == TX_STAGE_WORK:
            lib.pmemobj_tx_abort(ECANCELED)
            stage = lib.pmemobj_tx_stage()
        if stage != TX_STAGE_NONE:
            lib.pmemobj_tx_end()
        raise RuntimeError(f"{what} failed: {msg}")

    def run(self, op: str, n: int) -> tuple[int, int]:
        """Run ``n`` transactions of ``op``; returns (wall, thread CPU) nanoseconds."""
        if op == "add":
            return self._run_add(n)
        if op == "alloc":
            return self._run_alloc(n)
        raise ValueError(f"unknown op {op!r}")

    def _run_add(self, n: int) -> tuple[int, int]:
        lib, NULL = self.lib, self.ffi.NULL
        begin, add = lib.pmemobj_tx_begin, lib.pmemobj_tx_add_range_direct
        commit, end = lib.pmemobj_tx_commit, lib.pmemobj_tx_end
        pop, buf = self.pop, self.buf
        a, b = self.a, self.b
        pa, pb = self.base + a, self.base + b
        a_end, b_end = a + 16, b + 16
        data = DATA16
        t0, c0 = perf_counter_ns(), thread_time_ns()
        for _ in range(n):
            # the second NULL is the variadic list's TX_PARAM_NONE (0)
            if begin(pop, NULL, NULL):
                self._fail("pmemobj_tx_begin")
            if add(pa, 16):
                self._fail("pmemobj_tx_add_range_direct")
            buf[a:a_end] = data
            if add(pb, 16):
                self._fail("pmemobj_tx_add_range_direct")
            buf[b:b_end] = data
            commit()
            if end():
                self._fail("pmemobj_tx_end")
        return perf_counter_ns() - t0, thread_time_ns() - c0

    def _run_alloc(self, n: int) -> tuple[int, int]:
        lib, NULL = self.lib, self.ffi.NULL
        begin, alloc = lib.pmemobj_tx_begin, lib.pmemobj_tx_alloc
        commit, end = lib.pmemobj_tx_commit, lib.pmemobj_tx_end
        pop, buf = self.pop, self.buf
        data = DATA64
        allocated = self._allocated
        keep = allocated.append
        t0, c0 = perf_counter_ns(), thread_time_ns()
        for _ in range(n):
            if begin(pop, NULL, NULL):
                self._fail("pmemobj_tx_begin")
            off = alloc(64, 0).off
            if not off:
                self._fail("pmemobj_tx_alloc")
            buf[off:off + 64] = data
            commit()
            if end():
                self._fail("pmemobj_tx_end")
            keep(off)
        return perf_counter_ns() - t0, thread_time_ns() - c0

    def reset(self) -> None:
        """Free what the alloc op allocated (untimed), so repeats start alike."""
        oidp = self.ffi.new("PMEMoid *")
        free = self.lib.pmemobj_free
        for off in self._allocated:
            oidp.pool_uuid_lo = self.uuid_lo
            oidp.off = off
            free(oidp)
        self._allocated.clear()

    def close(self) -> None:
        if self.pop is not None:
            self.buf.release()
            self.lib.pmemobj_close(self.pop)
            self.pop = None


DATA16 = bytes(range(16))
DATA64 = bytes(range(64))


# -- the child process ---------------------------------------------------------------


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(path: str, size: int) -> int:
    """Child side: create the pool, answer requests, remove the pool file."""
    try:
        try:
            ref = Reference(path, size)
        except PmemobjUnavailableError as exc:
            _send({"unavailable": str(exc)})
            return 0
        except Exception as exc:
            _send({"error": f"{type(exc).__name__}: {exc}"})
            return 1
        try:
            ffi, lib = ref.ffi, ref.lib
            problem = lib.pmemobj_check_version(API_MAJOR, 0)
            _send({"ready": True, "pid": os.getpid(),
                   "version_problem": None if problem == ffi.NULL else ffi.string(problem).decode(),
                   "env": {k: os.environ.get(k) for k in FORCE_ENV}})
            for line in sys.stdin:
                req = json.loads(line)
                cmd = req.get("cmd")
                try:
                    if cmd == "run":
                        wall, cpu = ref.run(req["op"], int(req["n"]))
                        _send({"ns": wall, "cpu_ns": cpu})
                    elif cmd == "reset":
                        ref.reset()
                        _send({"ok": True})
                    elif cmd == "close":
                        break
                    else:
                        _send({"error": f"unknown command {cmd!r}"})
                except Exception as exc:
                    _send({"error": f"{type(exc).__name__}: {exc}"})
                    return 1
        finally:
            ref.close()
        return 0
    finally:
        Path(path).unlink(missing_ok=True)


class ReferenceProcess:
    """Parent side: a :class:`Reference` in a child process.

    Raises :class:`PmemobjUnavailableError` from the constructor when the child cannot
    load libpmemobj, and RuntimeError (with the child's stderr) if the child
    dies -- libpmemobj's abort() then costs a skipped column, not the run.
    """

    def __init__(self, path: str, size: int, *, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout
        # a file, not a pipe: nobody reads stderr until the child has died
        self._stderr = tempfile.TemporaryFile(  # noqa: SIM115 -- closed in close()
            mode="w+", encoding="utf-8", errors="replace")
        env = dict(os.environ, **FORCE_ENV)
        # the child must import this package even when it is not installed
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blizzard.bench._pmemobj", "--serve", path, str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, env=env)
        try:
            hello = self._recv()
            if "unavailable" in hello:
                raise PmemobjUnavailableError(hello["unavailable"])
            self.info = hello
        except BaseException:
            self.close()
            raise

    def _recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            try:
                code = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                code = None
            self._stderr.seek(0)
            err = self._stderr.read().strip()
            raise RuntimeError(f"libpmemobj child exited (status {code}): {err or 'no output'}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"libpmemobj child: {reply['error']}")
        return reply

    def _call(self, **req) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _recv reports why the child is gone
        return self._recv()

    def run(self, op: str, n: int) -> tuple[int, int]:
        reply = self._call(cmd="run", op=op, n=n)
        return int(reply["ns"]), int(reply["cpu_ns"])

    def reset(self) -> None:
        self._call(cmd="reset")

    def close(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()
        Path(self.path).unlink(missing_ok=True)  # in case the child died


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("PATH", "SIZE"), required=True,
                        help="create a pool at PATH and answer JSON-line requests on stdin")
    args = parser.parse_args(argv)
    return serve(args.serve[0], int(args.serve[1]))


if __name__ == "__main__":
    sys.exit(main())
