"""Media: FileMedia writes through to its file in every mode, DramMedia,
the MediaWrapper/RecordingMedia hook sees every flush and fence of the
transaction protocol, and CrashSimMedia offers exactly the states a crash may
leave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.pmem import (
    LINE_SIZE,
    CrashSimMedia,
    DramMedia,
    FileMedia,
    MediaWrapper,
    Pool,
    RecordingMedia,
    all_or_nothing,
    random_chooser,
)
from blizzard.pmem.media import PAGE_SIZE

MODES = ("pmem", "msync", "none")


# --- FileMedia -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_file_media_writes_through(any_dir, mode):
    """Stores through the mapping are in the file (read with open()) after persist, in
    every mode."""
    path = any_dir / f"m-{mode}"
    media = FileMedia(path, mode=mode, create_size=4 * PAGE_SIZE)
    assert media.size == 4 * PAGE_SIZE and mode in media.durability
    chunks = {0: b"first bytes", PAGE_SIZE - 3: b"straddles a page", 3 * PAGE_SIZE + 100: b"last"}
    for off, data in chunks.items():
        media.buf[off:off + len(data)] = data
    media.flush(0, 16)
    media.flush(PAGE_SIZE - 3, 16)
    media.drain()
    media.persist(3 * PAGE_SIZE + 100, 4)
    with open(path, "rb") as f:
        on_file = f.read()
    assert len(on_file) == 4 * PAGE_SIZE
    for off, data in chunks.items():
        assert on_file[off:off + len(data)] == data
    media.close()
    media.close()  # idempotent
    assert media.closed
    again = FileMedia(path, mode=mode)  # reopen: the size comes from the file
    assert again.size == 4 * PAGE_SIZE
    assert bytes(again.buf[:11]) == b"first bytes"
    again.close()


def test_file_media_msync_close_drains(tmp_path):
    """In msync mode, close() msyncs whatever was flushed but not yet drained."""
    path = tmp_path / "m"
    media = FileMedia(path, mode="msync", create_size=PAGE_SIZE)
    media.buf[:5] = b"abcde"
    media.flush(0, 5)
    media.close()
    assert path.read_bytes()[:5] == b"abcde"


def test_file_media_msync_persist_drains_earlier_flushes(tmp_path):
    """persist() is flush + drain: it also makes earlier flushes durable (white-box:
    nothing is left pending; regression: bug 6)."""
    media = FileMedia(tmp_path / "m", mode="msync", create_size=4 * PAGE_SIZE)
    try:
        media.buf[0:4] = b"AAAA"
        media.flush(0, 4)
        media.buf[3 * PAGE_SIZE:3 * PAGE_SIZE + 4] = b"BBBB"
        media.persist(3 * PAGE_SIZE, 4)
        assert media._pending == []
    finally:
        media.close()


def test_file_media_empty_file(shm_dir):
    """An empty existing file maps as a zero-sized media (the pool then says it is not a pool)."""
    path = shm_dir / "empty"
    path.write_bytes(b"")
    media = FileMedia(path, mode="pmem")
    assert media.size == 0 and len(media.buf) == 0
    media.close()


# --- DramMedia ---------------------------------------------------------------------------


def test_dram_media():
    """DramMedia is a zeroed buffer whose flushes are no-ops; from_bytes copies an image."""
    media = DramMedia(2 * PAGE_SIZE)
    assert bytes(media.buf) == bytes(2 * PAGE_SIZE)
    media.buf[10:13] = b"abc"
    media.flush(0, 64)
    media.drain()
    media.persist(0, 64)
    image = bytes(media.buf)
    copy = DramMedia.from_bytes(image)
    assert bytes(copy.buf) == image
    copy.buf[10:13] = b"xyz"
    assert bytes(media.buf[10:13]) == b"abc"
    media.close()
    media.close()
    assert media.closed and not copy.closed
    copy.close()


# --- the observation hook ---------------------------------------------------------------


def _recording_pool(inner):
    events: list[tuple] = []
    media = RecordingMedia(inner, on_flush=lambda off, n: events.append(("flush", off, n)),
                           on_drain=lambda: events.append(("drain",)))
    pool = Pool.create(media, 2 << 20, log_size=4096)
    return pool, media, events


def _inner_media(kind, shm_dir):
    if kind == "dram":
        return DramMedia(2 << 20)
    if kind == "crashsim":
        return CrashSimMedia(2 << 20)
    return FileMedia(shm_dir / "rec.pool", mode="pmem", create_size=2 << 20)


@pytest.mark.parametrize("kind", ["dram", "crashsim", "file"])
def test_two_add_transaction_fences(kind, shm_dir):
    """A 2-add transaction is what _tx.py promises: one fence per add, one for
    the commit (touched ranges flushed first), one to retire: 4 drains, 5 flushes."""
    pool, media, events = _recording_pool(_inner_media(kind, shm_dir))
    with pool.transaction() as tx:
        a = tx.alloc(100_000)
        b = tx.alloc(100_000)
    events.clear()
    media.flushes = media.drains = media.flushed_bytes = 0
    inner_fences = getattr(media.inner, "fences", None)
    with pool.transaction() as tx:
        tx.add(a, 8)
        pool.buf[a:a + 8] = b"AAAAAAAA"
        tx.add(b + 1000, 100)
        pool.buf[b + 1000:b + 1100] = b"B" * 100
    assert media.drains == 4
    assert media.flushes == 5
    kinds = [e[0] for e in events]
    assert kinds == ["flush", "drain", "flush", "drain",  # one persisted entry per add
                     "flush", "flush", "drain",  # the touched ranges, one fence
                     "flush", "drain"]  # the txid word
    log_lo, log_hi = pool._log_off, pool._log_off + pool._log_size
    assert log_lo < events[0][1] and events[0][1] + events[0][2] <= log_hi
    assert events[0][2] == 24 + 8 and events[2][2] == 24 + 100
    assert events[4][1:] == (a, 8)
    assert events[5][1:] == (b + 1000, 100)
    assert events[7][1:] == (pool._log_off, 8)  # the txid word retires the log
    assert media.flushed_bytes == sum(e[2] for e in events if e[0] == "flush")
    if inner_fences is not None:
        assert media.inner.fences - inner_fences == 4
    assert pool.read(a, 8) == b"AAAAAAAA"
    pool.check()
    pool.close()


def test_adjacent_ranges_are_flushed_once():
    """Touched ranges in the same or the next cache line are merged into one commit flush."""
    pool, _media, events = _recording_pool(DramMedia(2 << 20))
    with pool.transaction() as tx:
        a = tx.alloc(100_000)
    events.clear()
    with pool.transaction() as tx:
        tx.write(a + 64, b"y" * 8)
        tx.write(a, b"x" * 8)
    flushes = [e for e in events if e[0] == "flush"]
    assert flushes[2][1:] == (a, 72)
    assert len(flushes) == 4
    assert events.count(("drain",)) == 4


def test_empty_transaction_issues_no_fence():
    """A transaction that touches nothing flushes nothing and never fences."""
    pool, _media, events = _recording_pool(DramMedia(2 << 20))
    events.clear()
    with pool.transaction():
        pass
    assert events == []


def test_media_wrapper_delegates(shm_dir):
    """A bare MediaWrapper passes everything through; a pool on it round-trips."""
    inner = FileMedia(shm_dir / "w.pool", mode="pmem", create_size=2 << 20)
    wrapped = MediaWrapper(inner)
    assert wrapped.size == inner.size and wrapped.durability == inner.durability
    assert "FileMedia" in repr(wrapped)
    with Pool.create(wrapped) as pool, pool.transaction() as tx:
        off = tx.alloc(10)
        tx.write(off, b"0123456789")
        tx.set_root("w", off)
    assert inner.closed
    with Pool.open(shm_dir / "w.pool") as pool:
        assert pool.read(pool.root("w").off, 10) == b"0123456789"


# --- CrashSimMedia ------------------------------------------------------------------------


def _store(media, line, byte):
    media.buf[line * LINE_SIZE:(line + 1) * LINE_SIZE] = bytes([byte]) * LINE_SIZE


def _line(image, line):
    return image[line * LINE_SIZE:(line + 1) * LINE_SIZE]


def test_crashsim_unflushed_line_may_or_may_not_survive():
    """A stored, never-flushed line is unsettled: a crash keeps the old or the new contents."""
    media = CrashSimMedia(8192)
    _store(media, 3, 0xAA)
    assert media.unsettled_lines() == [3]
    assert _line(media.crash_image(all_or_nothing(False)), 3) == bytes(LINE_SIZE)
    assert _line(media.crash_image(all_or_nothing(True)), 3) == b"\xaa" * LINE_SIZE
    assert media.durable_image() == bytes(8192)


def test_crashsim_flushed_and_drained_always_survives():
    """After flush + drain a line is durable: settled, and in every crash image."""
    media = CrashSimMedia(8192)
    _store(media, 5, 0x11)
    media.persist(5 * LINE_SIZE + 10, 1)  # any byte of the line flushes the whole line
    assert media.unsettled_lines() == []
    for choose in (all_or_nothing(False), all_or_nothing(True), random_chooser(1)):
        assert _line(media.crash_image(choose), 5) == b"\x11" * LINE_SIZE
    assert media.fences == 1 and media.flushes == 1


def test_crashsim_flushed_not_drained_has_three_options():
    """A line flushed, then stored to again, before a fence may hold old, flushed or
    newest contents."""
    media = CrashSimMedia(8192)
    _store(media, 0, 1)
    media.flush(0, 8)
    _store(media, 0, 2)
    seen = []
    media.crash_image(lambda line, n: seen.append((line, n)) or 0)
    assert seen == [(0, 3)]
    got = [_line(media.crash_image(lambda line, n, k=k: k), 0)[0] for k in range(3)]
    assert got == [0, 1, 2]
    media.drain()  # the flushed snapshot becomes durable, the newer store stays dirty
    assert _line(media.durable_image(), 0) == bytes([1]) * LINE_SIZE
    assert media.unsettled_lines() == [0]
    with pytest.raises(ValueError, match="picked option 2 of 2"):
        media.crash_image(lambda line, n: 2)


def test_crashsim_fence_hook_sees_the_state_before_the_fence():
    """fence_hook runs inside drain() before pending lines become durable."""
    media = CrashSimMedia(8192)
    images = []
    media.fence_hook = lambda m: images.append(m.crash_image(all_or_nothing(False)))
    _store(media, 1, 7)
    media.flush(LINE_SIZE, LINE_SIZE)
    media.drain()
    assert images == [bytes(8192)]
    assert _line(media.durable_image(), 1) == bytes([7]) * LINE_SIZE
    assert media.fences == 1


def test_crashsim_from_image():
    """from_image gives a media whose durable and live contents both equal the image."""
    image = bytes(range(256)) * 16
    media = CrashSimMedia.from_image(image)
    assert media.durable_image() == image and bytes(media.buf) == image
    assert media.unsettled_lines() == []


def test_random_chooser_is_seeded():
    """The same seed picks the same lines."""
    media = CrashSimMedia(16384)
    for line in range(0, 256, 3):
        _store(media, line, line)
    assert media.crash_image(random_chooser(42)) == media.crash_image(random_chooser(42))
    assert media.crash_image(random_chooser(42)) != media.crash_image(random_chooser(43))


_LINES = 16
_op = st.one_of(
    st.tuples(st.just("store"), st.integers(0, _LINES * LINE_SIZE - 8),
              st.binary(min_size=1, max_size=80)),
    st.tuples(st.just("flush"), st.integers(0, _LINES * LINE_SIZE - 1), st.integers(1, 200)),
    st.tuples(st.just("drain")),
)


@given(ops=st.lists(_op, max_size=40), seed=st.integers(0, 2**32 - 1))
def test_crashsim_images_are_states_a_crash_may_leave(ops, seed):
    """Against a model of each line's history: every crash image line is a value the
    line held since it was last durable (lines never tear), choosing 0 everywhere
    gives the durable image, choosing the last option gives the live contents, and
    all_or_nothing(False) equals durable_image()."""
    size = 4096
    media = CrashSimMedia(size)
    current = bytearray(size)
    durable = [bytes(LINE_SIZE)] * (size // LINE_SIZE)
    history = [{bytes(LINE_SIZE)} for _ in durable]  # values since the last durable point
    snap: dict[int, bytes] = {}
    since_snap: dict[int, set[bytes]] = {}
    for op in ops:
        if op[0] == "store":
            _, off, data = op
            data = data[:size - off]
            media.buf[off:off + len(data)] = data
            current[off:off + len(data)] = data
            for line in range(off // LINE_SIZE, (off + len(data) - 1) // LINE_SIZE + 1):
                value = bytes(_line(current, line))
                history[line].add(value)
                if line in snap:
                    since_snap[line].add(value)
        elif op[0] == "flush":
            _, off, n = op
            n = min(n, size - off)
            media.flush(off, n)
            for line in range(off // LINE_SIZE, (off + n - 1) // LINE_SIZE + 1):
                snap[line] = bytes(_line(current, line))
                since_snap[line] = {snap[line]}
        else:
            media.drain()
            for line, value in snap.items():
                durable[line] = value
                history[line] = since_snap[line] | {value}
            snap.clear()
            since_snap.clear()
    assert media.durable_image() == b"".join(durable)
    assert media.crash_image(all_or_nothing(False)) == media.durable_image()
    assert media.crash_image(all_or_nothing(True)) == bytes(current)
    image = media.crash_image(random_chooser(seed))
    for line in range(size // LINE_SIZE):
        assert _line(image, line) in history[line], line
    unsettled = set(media.unsettled_lines())
    for line in range(size // LINE_SIZE):
        if line not in unsettled:
            assert _line(current, line) == durable[line]
