"""Every error blizzard/pmem raises on purpose: each is triggered, is the
specific class, and its message names the file or the problem."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from zlib import crc32

import pytest

from blizzard.exceptions import (
    InvalidSizeError,
    NotAPoolError,
    PmemUnavailableError,
    PoolClosedError,
    PoolCorruptError,
    PoolExistsError,
    PoolFullError,
    PoolLayoutError,
    PoolLockedError,
    PoolNotFoundError,
    PoolTruncatedError,
    PoolVersionError,
    TransactionError,
)
from blizzard.pmem import CHUNK_SIZE, CrashSimMedia, DramMedia, FileMedia, Pool, _libpmem
from blizzard.pmem import _layout as L
from blizzard.pmem._alloc import ALLOC_SIZE_MAX

REPO = Path(__file__).resolve().parents[2]
POOL_SIZE = 2 << 20


def _make_pool(path: Path, *, layout: str = "errors") -> None:
    with Pool.create(path, POOL_SIZE, layout=layout) as pool, pool.transaction() as tx:
        off = tx.alloc(100)
        pool.buf[off:off + 5] = b"hello"
        tx.set_root("r", off)


def _patch(path: Path, offset: int, data: bytes, *, fix_crc: bool = False) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        if fix_crc:
            f.seek(0)
            header = bytearray(f.read(L.HEADER_USED))
            header[L.CRC_OFFSET:L.CRC_OFFSET + 4] = bytes(4)
            f.seek(L.CRC_OFFSET)
            f.write(crc32(header).to_bytes(4, "little"))


# --- files that are not (usable) pools ---------------------------------------------


def test_missing_file_is_pool_not_found(shm_dir):
    """Opening a path where nothing exists names the path."""
    path = shm_dir / "missing.pool"
    with pytest.raises(PoolNotFoundError, match="no such pool file") as info:
        Pool.open(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert not path.exists()


def test_directory_is_pool_not_found(shm_dir):
    """Opening a directory says it is a directory."""
    with pytest.raises(PoolNotFoundError, match="is a directory"):
        Pool.open(shm_dir)


def test_create_over_existing_file_is_refused_and_file_untouched(shm_dir):
    """Pool.create never clobbers an existing file, pool or not."""
    path = shm_dir / "exists"
    path.write_bytes(b"precious data")
    with pytest.raises(PoolExistsError, match="file exists") as info:
        Pool.create(path, POOL_SIZE)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"precious data"
    pool_path = shm_dir / "p.pool"
    _make_pool(pool_path)
    before = pool_path.read_bytes()
    with pytest.raises(PoolExistsError):
        Pool.create(pool_path, POOL_SIZE)
    assert pool_path.read_bytes() == before


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "too small"),
    (b"hello, world", "too small"),
    (b"\x7fELF" + bytes(8188), "bad magic"),
    (bytes(range(256)) * 64, "bad magic"),
])
def test_foreign_file_is_not_a_pool(shm_dir, content, fragment):
    """Empty, small and foreign files are NotAPoolError, and are left unchanged."""
    path = shm_dir / "foreign"
    path.write_bytes(content)
    with pytest.raises(NotAPoolError, match=fragment) as info:
        Pool.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def test_wrong_layout(shm_dir):
    """A pool opened for another layout names both layouts."""
    path = shm_dir / "p.pool"
    _make_pool(path, layout="queue")
    with pytest.raises(PoolLayoutError, match=r"'queue'.*'hashmap'") as info:
        Pool.open(path, layout="hashmap")
    assert str(path) in str(info.value)
    with Pool.open(path, layout="queue") as pool:  # the failed open released the lock
        pool.check()


@pytest.mark.parametrize("fix_crc", [False, True])
def test_unsupported_version(shm_dir, fix_crc):
    """A flipped version field is a PoolVersionError, whether or not the CRC still matches."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    _patch(path, 8, struct.pack("<I", L.FORMAT_VERSION + 1), fix_crc=fix_crc)
    with pytest.raises(PoolVersionError, match=f"version {L.FORMAT_VERSION + 1}") as info:
        Pool.open(path)
    assert str(path) in str(info.value)


def test_truncated_inside_the_header(shm_dir):
    """A pool cut inside its 4 KiB header is PoolTruncatedError, not NotAPoolError."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    os.truncate(path, 2000)
    with pytest.raises(PoolTruncatedError, match="inside the header") as info:
        Pool.open(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [L.HEADER_SIZE, POOL_SIZE // 2, POOL_SIZE - 4096])
def test_truncated_body(shm_dir, keep):
    """A pool cut anywhere in its body names both sizes."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    os.truncate(path, keep)
    with pytest.raises(PoolTruncatedError, match=f"{keep} bytes, but the pool is {POOL_SIZE}"):
        Pool.open(path)


@pytest.mark.parametrize("offset", [12, 16, 20, 32, 40, 88, 104, 110, 136, L.HEADER_USED - 1])
def test_header_checksum_mismatch(shm_dir, offset):
    """Any flipped byte in the checksummed header (after magic and version) is PoolCorruptError."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x5A]))
    with pytest.raises(PoolCorruptError, match="checksum mismatch") as info:
        Pool.open(path)
    assert str(path) in str(info.value)


def test_inconsistent_header_with_valid_checksum(shm_dir):
    """Region offsets that disagree with the size are caught even when the CRC is right."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    _patch(path, 88, struct.pack("<Q", 10_000), fix_crc=True)  # nchunks
    with pytest.raises(PoolCorruptError, match="inconsistent"):
        Pool.open(path)


def test_corrupt_chunk_table(shm_dir):
    """A chunk header of an unknown kind is PoolCorruptError at open."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    with Pool.open(path) as pool:
        table_off = pool._table_off
    _patch(path, table_off, struct.pack("<Q", L.chunk_word(9, 1)))
    with pytest.raises(PoolCorruptError, match="unknown chunk kind 9"):
        Pool.open(path)


# --- locking -------------------------------------------------------------------------


def test_locked_in_this_process(shm_dir):
    """A second open in the same process is refused; the first handle keeps its lock."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    with Pool.open(path) as pool:
        for _ in range(2):  # the failed opener's close must not drop the holder's lock
            with pytest.raises(PoolLockedError, match="already open") as info:
                Pool.open(path)
            assert str(path) in str(info.value)
        pool.check()
    with Pool.open(path) as pool:  # close released it
        pool.check()


_TRY_OPEN = """
import sys
from blizzard.exceptions import PoolLockedError
from blizzard.pmem import Pool
try:
    Pool.open(sys.argv[1]).close()
except PoolLockedError as exc:
    print("LOCKED", exc)
    sys.exit(3)
print("OPENED")
"""


def _try_open_in_child(path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _TRY_OPEN, str(path)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_locked_from_another_process(shm_dir):
    """A pool open here cannot be opened by another process until it is closed."""
    path = shm_dir / "p.pool"
    _make_pool(path)
    with Pool.open(path):
        child = _try_open_in_child(path)
        assert child.returncode == 3, child.stderr
        assert f"LOCKED {path}: pool is already open" in child.stdout
    child = _try_open_in_child(path)
    assert child.returncode == 0, child.stderr
    assert "OPENED" in child.stdout


# --- full pools ------------------------------------------------------------------------


def test_pool_full_rolls_back_and_pool_stays_usable():
    """PoolFullError rolls the whole transaction back; the pool stays usable."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        tx.alloc(64)  # so a run of 64-byte blocks exists before the heap is full
    blocks = []
    with pytest.raises(PoolFullError, match="pool full: cannot allocate") as info:
        while True:
            with pool.transaction() as tx:
                off = tx.alloc(CHUNK_SIZE * 3)
                pool.buf[off:off + 4] = len(blocks).to_bytes(4, "little")
            blocks.append(off)
    assert "rolled back" in str(info.value)
    assert blocks, "nothing fitted at all"
    pool.check()
    before_stats = pool.stats()
    first = blocks[0]
    with pytest.raises(PoolFullError), pool.transaction() as tx:
        tx.write(first, b"XXXX")
        small = tx.alloc(64)
        pool.buf[small:small + 4] = b"tiny"
        tx.alloc(pool.stats().largest_free_extent + CHUNK_SIZE)
    pool.check()
    assert pool.stats() == before_stats
    assert pool.read(first, 4) == (0).to_bytes(4, "little")
    assert not pool.is_allocated(small)
    with pool.transaction() as tx:  # still usable: small blocks and a freed extent
        tx.free(blocks[-1])
    with pool.transaction() as tx:
        again = tx.alloc(CHUNK_SIZE * 3)
        tx.write(first, b"used")
    assert again == blocks[-1]
    assert pool.read(first, 4) == b"used"
    pool.check()


def test_directory_grows_past_its_fixed_table():
    """Roots beyond the fixed table's 128 go to linked extension tables, which
    survive reopening, aborts and deletes; names stay unique."""
    media = DramMedia(POOL_SIZE)
    pool = Pool.create(media)
    with pool.transaction() as tx:
        off = tx.alloc(16)
        for i in range(L.DIR_ENTRIES):
            tx.set_root(f"root-{i}", off)
    used = pool.stats().used
    with pytest.raises(RuntimeError), pool.transaction() as tx:
        tx.set_root("rolled-back", off)  # grows the directory, then rolls back
        raise RuntimeError
    assert pool.stats().used == used and len(pool.roots()) == L.DIR_ENTRIES
    with pool.transaction() as tx:
        for i in range(L.DIR_ENTRIES, 300):
            tx.set_root(f"root-{i}", off, b"t")
    pool.check()
    for reopen in (False, True):
        if reopen:
            pool = Pool.open(DramMedia.from_bytes(bytes(media.buf)))
        assert len(pool.roots()) == 300 and pool.stats().roots == 300
        assert sorted(pool.roots()) == sorted(f"root-{i}" for i in range(300))
        assert pool.root("root-127").off == off and pool.root("root-299").tag == b"t"
        pool.check()
    with pool.transaction() as tx:
        for i in range(0, 300, 2):
            tx.delete_root(f"root-{i}")
        tx.set_root("root-1", off, b"again")  # rebinding keeps one entry
    assert len(pool.roots()) == 150 and pool.root("root-1").tag == b"again"
    pool.check()


def test_directory_growth_that_does_not_fit_is_pool_full():
    """With no room left for an extension table, the new root is PoolFullError
    and the transaction rolls back; the roots already there are kept."""
    pool = Pool.create(DramMedia(L.POOL_SIZE_MIN))
    with pool.transaction() as tx:
        off = tx.alloc(16)
        for i in range(L.DIR_ENTRIES):
            tx.set_root(f"root-{i}", off)
    while True:  # fill the heap with blocks the size of an extension table
        try:
            with pool.transaction() as tx:
                tx.alloc(4096)
        except PoolFullError:
            break
    with pytest.raises(PoolFullError), pool.transaction() as tx:
        tx.set_root("one-too-many", off)
    assert len(pool.roots()) == L.DIR_ENTRIES
    pool.check()


# --- bad sizes -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 4096, L.POOL_SIZE_MIN - 4096, L.POOL_SIZE_MIN + 100])
def test_bad_pool_size(shm_dir, size):
    """A pool below the minimum or not a multiple of 4096 is refused, and no file is left."""
    path = shm_dir / "p.pool"
    with pytest.raises(InvalidSizeError, match="pool size must be"):
        Pool.create(path, size)
    assert not path.exists()


def test_bad_pool_size_in_media():
    """Pool.create in a Media checks the size against the Media and the minimum."""
    with pytest.raises(InvalidSizeError, match="exceeds the media"):
        Pool.create(DramMedia(POOL_SIZE), POOL_SIZE * 2)
    with pytest.raises(InvalidSizeError, match="pool size must be"):
        Pool.create(DramMedia(512 * 1024))
    with pytest.raises(InvalidSizeError, match="needs a size"):
        Pool.create("/dev/shm/never-created.pool")


@pytest.mark.parametrize("log_size", [0, 1000, 4097])
def test_bad_log_size(log_size):
    """log_size must be a positive multiple of 4096."""
    with pytest.raises(InvalidSizeError, match="log_size"):
        Pool.create(DramMedia(POOL_SIZE), log_size=log_size)


def test_log_size_larger_than_pool(shm_dir):
    """A log that leaves no heap is InvalidSizeError (regression: bug 3), and no file is left."""
    with pytest.raises(InvalidSizeError, match="no room for a heap"):
        Pool.create(DramMedia(L.POOL_SIZE_MIN), log_size=L.POOL_SIZE_MIN)
    path = shm_dir / "p.pool"
    with pytest.raises(InvalidSizeError, match="no room for a heap"):
        Pool.create(path, L.POOL_SIZE_MIN, log_size=L.POOL_SIZE_MIN - 8192)
    assert not path.exists()


def test_bad_media_sizes():
    """Media sizes must be positive multiples of the page (or 4 KiB block) size."""
    for size in (0, -4096, 1000):
        with pytest.raises(InvalidSizeError):
            DramMedia(size)
        with pytest.raises(InvalidSizeError):
            CrashSimMedia(size)
    with pytest.raises(InvalidSizeError, match="image is 4 bytes"):
        CrashSimMedia(4096, image=b"abcd")


@pytest.mark.parametrize("size", [0, -1, ALLOC_SIZE_MAX + 1])
def test_bad_alloc_size(size):
    """Allocations of no bytes, negative bytes or more than the maximum are refused."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    before = pool.stats()
    with pytest.raises(InvalidSizeError, match="allocation"), pool.transaction() as tx:
        tx.alloc(size)
    assert pool.stats() == before
    pool.check()


def test_alloc_larger_than_pool_is_pool_full():
    """A legal size that cannot fit is PoolFullError, not InvalidSizeError."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pytest.raises(PoolFullError, match=f"cannot allocate {POOL_SIZE} bytes"), \
            pool.transaction() as tx:
        tx.alloc(POOL_SIZE)
    pool.check()


# --- roots -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "tag", "error", "fragment"), [
    ("", b"", ValueError, "1 to 48"),
    ("x" * 49, b"", ValueError, "1 to 48"),
    ("é" * 25, b"", ValueError, "1 to 48"),  # 50 UTF-8 bytes
    ("a\0b", b"", ValueError, "without NUL"),
    (b"bytes", b"", TypeError, "root names are str"),
    (7, b"", TypeError, "root names are str"),
    ("ok", b"123456789", ValueError, "at most 8 bytes"),
    ("ok", b"a\0", ValueError, "without NUL"),
    ("ok", "str-tag", ValueError, "root tag"),
])
def test_bad_root_names_and_tags(name, tag, error, fragment):
    """Bad root names and tags are refused and the directory is unchanged."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(16)
    with pytest.raises(error, match=fragment), pool.transaction() as tx:
        tx.set_root(name, off, tag)
    assert pool.roots() == {}
    pool.check()


def test_root_limits_accepted():
    """Names of exactly 48 UTF-8 bytes and 8-byte tags are accepted and survive reopen."""
    media = DramMedia(POOL_SIZE)
    pool = Pool.create(media)
    name = "é" * 24
    with pool.transaction() as tx:
        off = tx.alloc(16)
        tx.set_root(name, off, b"12345678")
    image = bytes(media.buf)
    pool.close()
    pool = Pool.open(DramMedia.from_bytes(image))
    assert pool.root(name) == (off, b"12345678")


def test_root_misuse():
    """A root must point at an allocated block; deleting an unknown root is KeyError."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(16)
    with pytest.raises(TransactionError, match="not an allocated block"), \
            pool.transaction() as tx:
        tx.set_root("r", off + 16)
    with pytest.raises(KeyError, match="nope"), pool.transaction() as tx:
        tx.delete_root("nope")
    pool.check()


@pytest.mark.parametrize("tag", [b"t\0", b"\0", b"a\0b"])
def test_root_tag_with_nul_is_refused(tag):
    """Tags with NUL bytes are refused, since the directory strips NUL padding
    (regression: bug 4, such tags changed after a reload)."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(16)
    with pytest.raises(ValueError, match="without NUL"), pool.transaction() as tx:
        tx.set_root("r", off, tag)
    assert pool.root("r") is None


# --- transaction misuse ---------------------------------------------------------------


def test_outside_a_transaction():
    """add / alloc / free outside a transaction are TransactionError."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    tx = pool.transaction()
    with pytest.raises(TransactionError, match=r"add\(\) outside"):
        tx.add(pool.size - 8, 8)
    with pytest.raises(TransactionError, match=r"alloc\(\) outside"):
        tx.alloc(8)
    with pytest.raises(TransactionError, match=r"free\(\) outside"):
        tx.free(pool.size - 64)


@pytest.mark.parametrize(("off", "n"), [(0, 8), (L.HEADER_SIZE, 8), (-8, 8), ("end", 8),
                                        ("empty", 0), ("empty", -8)])
def test_add_outside_the_data_area(off, n):
    """The header, the log, anything past the end and empty ranges cannot be added."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    if off == "end":
        off = pool.size - 4
    if off == "empty":
        off = pool.size - 64
    with pytest.raises(TransactionError, match="outside the pool's data area"), \
            pool.transaction() as tx:
        tx.add(off, n)
    pool.check()


def test_double_free_of_small_block():
    """Freeing a run block twice, in one transaction or two, is TransactionError."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(40)
    with pytest.raises(TransactionError, match="double free"), pool.transaction() as tx:
        tx.free(off)
        tx.free(off)
    assert pool.is_allocated(off)  # the transaction rolled back
    with pool.transaction() as tx:
        tx.free(off)
    with pytest.raises(TransactionError, match="not an allocated block"), \
            pool.transaction() as tx:
        tx.free(off)
    pool.check()


def test_double_free_of_extent_across_transactions():
    """Freeing an extent again after the free committed is TransactionError."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(100_000)
    with pool.transaction() as tx:
        tx.free(off)
    with pytest.raises(TransactionError, match="not an allocated block"), \
            pool.transaction() as tx:
        tx.free(off)
    pool.check()


def test_double_free_of_extent_in_one_transaction():
    """Freeing the same extent twice in one transaction is TransactionError (regression: bug 1)."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(100_000)
    try:
        with pytest.raises(TransactionError), pool.transaction() as tx:
            tx.free(off)
            tx.free(off)
    finally:
        pool.check()


def test_root_to_extent_freed_in_same_transaction():
    """A root cannot be bound to a block this transaction already freed (regression: bug 2)."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(100_000)
    try:
        with pytest.raises(TransactionError), pool.transaction() as tx:
            tx.free(off)
            tx.set_root("dangling", off)
    finally:
        pool.check()


def test_free_of_non_block_offsets():
    """Offsets inside a block, in metadata or in free chunks are not blocks."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        small = tx.alloc(100)
        big = tx.alloc(100_000)
    run_base = small - (small - pool._heap_off) % CHUNK_SIZE
    assert run_base < small
    cases = [
        (small + 8, "not the start of a block"),
        (run_base, "not the start of a block"),  # the run's bitmap
        (big + CHUNK_SIZE, "not the start of a block"),
        (pool._heap_off - 64, "not an allocated block"),
        (pool.size - 64, "not an allocated block"),
        (0, "not an allocated block"),
        (pool.size + CHUNK_SIZE, "not an allocated block"),
    ]
    for off, fragment in cases:
        with pytest.raises(TransactionError, match=fragment), pool.transaction() as tx:
            tx.free(off)
    assert pool.is_allocated(small) and pool.is_allocated(big)
    pool.check()


# --- closed pools -------------------------------------------------------------------------


def test_closed_pool_refuses_transactions_and_check(shm_dir):
    """After close(), transaction() and check() are PoolClosedError; close is idempotent."""
    pool = Pool.create(shm_dir / "p.pool", POOL_SIZE)
    tx = pool.transaction()
    pool.close()
    pool.close()
    assert pool.closed
    with pytest.raises(PoolClosedError, match="closed"):
        pool.transaction()
    with pytest.raises(PoolClosedError, match="closed"), tx:
        pass
    with pytest.raises(PoolClosedError, match="closed"):
        pool.check()


def test_close_inside_a_transaction_is_refused():
    """close() inside a transaction is PoolClosedError and the pool stays open."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(16)
        with pytest.raises(PoolClosedError, match="inside a transaction"):
            pool.close()
    assert not pool.closed and pool.is_allocated(off)
    pool.check()


@pytest.mark.parametrize("call", ["read", "usable_size", "is_allocated", "root", "roots", "stats"])
def test_closed_pool_refuses_reads(call):
    """Reading a closed pool is PoolClosedError, never stale data or a raw memoryview
    error (regression: bug 5)."""
    pool = Pool.create(DramMedia(POOL_SIZE))
    with pool.transaction() as tx:
        off = tx.alloc(16)
        tx.set_root("r", off)
    pool.close()
    args = {"read": (off, 4), "usable_size": (off,), "is_allocated": (off,), "root": ("r",),
            "roots": (), "stats": ()}[call]
    with pytest.raises(PoolClosedError, match="closed"):
        getattr(pool, call)(*args)


# --- libpmem missing ------------------------------------------------------------------------


@pytest.fixture
def no_libpmem(monkeypatch):
    """Make libpmem unloadable for this test; the real state is restored afterwards."""
    monkeypatch.setattr(_libpmem, "_LIBRARY_NAME", "libpmem-does-not-exist.so.99")
    monkeypatch.setattr(_libpmem, "_loaded", None)
    monkeypatch.setattr(_libpmem, "_load_error", None)


def test_pmem_unavailable(no_libpmem, shm_dir):
    """Mode 'pmem' without libpmem is PmemUnavailableError naming the fix; no file is created."""
    path = shm_dir / "p.pool"
    with pytest.raises(PmemUnavailableError, match=r"libpmem-does-not-exist\.so\.99") as info:
        Pool.create(path, POOL_SIZE)
    assert "libpmem1" in str(info.value) and "msync" in str(info.value)
    assert isinstance(info.value, OSError)
    assert not path.exists()
    assert not _libpmem.available()
    with pytest.raises(PmemUnavailableError):  # the cached error is raised again
        FileMedia(path, create_size=POOL_SIZE)
    with Pool.create(path, POOL_SIZE, mode="msync") as pool:  # other modes still work
        pool.check()


def test_pmem_available_after_restore():
    """The real libpmem loads (the fixture above restored the module state)."""
    assert _libpmem.available()


def test_bad_durability_mode(shm_dir):
    """An unknown durability mode is ValueError naming the modes."""
    with pytest.raises(ValueError, match="durability mode must be one of"):
        FileMedia(shm_dir / "x", mode="fsync", create_size=4096)
    assert not (shm_dir / "x").exists()


def test_bad_layout_name():
    """Layout names must be 1 to 32 UTF-8 bytes."""
    for layout in ("", "x" * 33):
        with pytest.raises(ValueError, match="layout name"):
            Pool.create(DramMedia(POOL_SIZE), layout=layout)
