"""The Raft log in persistent memory: entries, hard state and snapshot in a pool.

``PmemStorage`` implements the core's ``Storage`` protocol plus the driver's
writes. The hot path, ``save(hard_state, entries)``, costs **one fence**:

1. entry records are written at the log's end and flushed;
2. the 8-byte ``last_index`` word is stored and flushed;
3. the hard state goes to the older of two checksummed slots, flushed;
4. one drain.

A crash before the drain may leave any subset of those lines durable, so
recovery trusts nothing it cannot verify: records carry a CRC-32 and must
follow each other index by index up to ``last_index`` (a torn tail is cut
off -- it was never acknowledged, the fence had not returned); of the two
hard-state slots the valid one with the higher sequence number wins; and a
recovered commit index is clamped to the recovered log (the core only
applies entries that an earlier fence made durable, so nothing applied is
lost). Rarer changes -- truncating a conflicting suffix, linking a new
segment, compaction, installing a snapshot -- go through pool transactions,
and truncation is persisted before anything overwrites the suffix, so a
crash can never splice old entries after new ones.

Layout (format 1). The root block, named by the caller (default
``"raft.log"``)::

    offset | size | field
    0      | 8    | magic b"BLZRLOG1"
    8      | 8    | last_index (the index of the last durable entry)
    16     | 8    | first segment (pool offset, 0 = none)
    24     | 8    | snapshot block (pool offset, 0 = none)
    64     | 64   | hard-state slot A
    128    | 64   | hard-state slot B

    hard-state slot: seq u64 | term u64 | vote u64 | commit u64 | crc32 u32

Segment (a pool block of ``segment_bytes``)::

    0      | 8    | first index stored in this segment
    8      | 8    | next segment (0 = none)
    16     | 8    | capacity in bytes
    24     | 4    | CRC of the record before the first one (the chain's seed)
    64     | ...  | records

    record: crc32 u32 | len u32 | term u64 | index u64 | type u8 | pad 7 | data,
            padded to 8 bytes. The CRC covers everything after itself and is
            seeded with the previous record's CRC, so the records form a chain:
            a stale record left behind by a truncation never verifies after a
            new one, even at the same position with the same index. Once a
            segment is followed by one whose first index is i, entries >= i
            live there: the rest of the segment is stale.

Snapshot block: index u64 | term u64 | nvoters u32 | nlearners u32 | ids u64...
| data length u64 | data.

Receiving in place (the log is the network buffer). A MsgApp carries its
entries in this record layout (:mod:`~blizzard.replication.raft.messages`),
so a follower whose log ends exactly where the entries begin can have its
transport receive them straight into the free space after its last record:

1. :meth:`PmemStorage.tail_region` hands out a writable view of the free
   space after the last record, or after the records received before and
   not yet persisted (a leader pipelines its appends); when the segment
   lacks room, the next one is linked for them first. None when the entries
   cannot go there: the log does not end at the entry before them, or has
   no record yet;
2. :meth:`PmemStorage.received_entries` checks the records where they lie,
   builds the entries the core steps (their data cut from the records: the
   one copy left between the socket and the structures) and stamps each
   record with its chain CRC **inverted**: until the node accepts them
   nothing there verifies, even if a crash made ``last_index`` cover them,
   so a rejected or stale leader's entries are never recovered;
3. when the driver persists entries that are these very objects, ``save``
   rights their CRCs, flushes the region once, stores ``last_index`` and
   fences: one flush + one fence per batch, nothing copied into the log.

Sending from the log. A leader's MsgApp carries entries its log already
holds (the driver persists before it sends), so the frame's records need not
be encoded again: :meth:`PmemStorage.record_views` hands out read-only views
of them as they lie -- one view per segment the run of records crosses --
and the transport sends the frame's fixed part and those views with one
``sendmsg``. The records go out with the leader's chain CRCs and whatever
its pads hold; the receiver reads neither (see
:mod:`~blizzard.replication.raft.messages`). The views are valid only until
the log next changes (a truncation, a compaction freeing segments, a
snapshot, the pool closing): the caller releases them before it returns to
anything that could change the log, and a transport that cannot send them
at once copies what is left.

Any other write (an ordinary append, a truncation, a snapshot) gives up
every region not yet persisted, and unlinks a segment linked for them;
entries received into a region given up raise
:class:`~blizzard.exceptions.ReceiveRegionLostError` (the frame is dropped),
and entries already taken from one are written by the ordinary path. A crash
leaves records that never verify and, at worst, a linked segment holding
none, which opening frees as it frees any such segment.

Typed Python: ``pmem_storage.pxd`` makes the log and its receive regions
extension types (the driver saves into the log, and a follower receives into
it, on every round), so their fields are read from the object and the write
path's steps call each other in C. Being an extension type, ``PmemStorage``
takes no attribute it does not declare; subclass it to change a method.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise
from operator import is_
from zlib import crc32

from blizzard.exceptions import (
    BlizzardError,
    LogCorruptError,
    ReceiveRegionLostError,
    SnapshotOutOfDateError,
)
from blizzard.pmem import Pool
from blizzard.pmem._mem import set_u32s
from blizzard.replication.raft import messages
from blizzard.replication.raft.messages import (
    ENTRY_TYPE_COUNT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
    untracked_entry,
)
from blizzard.replication.raft.storage import EntryListReads

__all__ = ["PmemStorage"]

MAGIC = b"BLZRLOG1"
ROOT_TAG = b"raftlog"
ROOT_SIZE = 192
_ROOT = struct.Struct("<8sQQQ")
_LAST_INDEX_OFF = 8
_SLOT = struct.Struct("<QQQQI")
_SLOT_OFFS = (64, 128)
_SEGMENT = struct.Struct("<QQQI")
SEGMENT_HEADER_SIZE = 64
RECORD = struct.Struct("<IIQQB7x")
RECORD_HEADER_SIZE = RECORD.size
SEGMENT_BYTES_DEFAULT = 4 << 20
assert RECORD_HEADER_SIZE == 32 == messages.RECORD_HEADER_BYTES  # the wire's layout


class _Reservation:
    """A tail region handed out for entries received in place: ``view`` until
    its records are parsed, then their entries, positions and chain CRCs."""

    __slots__ = ("crcs", "end", "entries", "first", "fresh", "positions", "prev", "seg",
                 "start", "term_before", "view")

    def __init__(self, first: int, seg: int, start: int, view: memoryview, prev: int,
                 term_before: int, fresh: bool) -> None:
        self.first = first  # index of the first entry expected there
        self.seg = seg  # the segment it lies in
        self.fresh = fresh  # that segment was linked for it, and holds no entry yet
        self.start = start  # pool offset of the region
        self.view: memoryview | None = view
        self.prev = prev  # the chain's CRC before the region
        self.term_before = term_before  # the term of the entry before the region
        self.end = start  # pool offset after the last record, once parsed
        self.entries: list[Entry] = []
        self.positions: list[int] = []
        self.crcs: list[int] = []


class PmemStorage(EntryListReads):
    """A Raft ``Storage`` whose stable state lives in a pmem pool.

    Entries are also kept as Python objects (the core reads them often);
    the persistent copy is authoritative and rebuilds them on open.
    """

    def __init__(self, pool: Pool, name: str = "raft.log", *,
                 segment_bytes: int = SEGMENT_BYTES_DEFAULT,
                 conf_state: ConfState | None = None) -> None:
        self._pool = pool
        self._buf = pool.buf
        self._media = pool.media
        self._segment_bytes = segment_bytes
        self._copies: dict[str, int] | None = None  # see count_copies
        self._reserved: _Reservation | None = None  # a region handed out, see tail_region
        self._pending: list[_Reservation] = []  # regions parsed, not yet accepted
        root = pool.root(name)
        if root is None:
            self._root = self._create(name, conf_state or ConfState())
        else:
            if root.tag != ROOT_TAG:
                raise LogCorruptError(f"root {name!r} holds {root.tag!r}, not a Raft log")
            self._root = root.off
        self._load()

    # -- opening -------------------------------------------------------------------------

    def _create(self, name: str, conf_state: ConfState) -> int:
        pool = self._pool
        with pool.transaction() as tx:
            root = tx.alloc(ROOT_SIZE, zero=True)
            _ROOT.pack_into(self._buf, root, MAGIC, 0, 0, 0)
            snap = self._write_snapshot_block(tx, Snapshot(SnapshotMeta(0, 0, conf_state), b""))
            _ROOT.pack_into(self._buf, root, MAGIC, 0, 0, snap)
            tx.set_root(name, root, ROOT_TAG)
        return root

    def _load(self) -> None:
        buf = self._buf
        magic, last_index, first_seg, snap_off = _ROOT.unpack_from(buf, self._root)
        if magic != MAGIC:
            raise LogCorruptError(f"Raft log root has magic {magic!r}")
        self._snapshot = self._read_snapshot_block(snap_off)
        self._hard_state, self._slot_seq, self._next_slot = self._read_hard_state()
        offset = self._snapshot.meta.index
        entries: list[Entry] = [Entry(self._snapshot.meta.term, offset)]
        positions: list[int] = [0]
        segments: list[int] = []
        seg_first: list[int] = []
        # Walk the chain of records up to last_index; stop at the first record
        # that does not verify (a torn tail, never acknowledged).
        seg = first_seg
        index = prev = None
        while seg:
            first, nxt, capacity, seed = _SEGMENT.unpack_from(buf, seg)
            if index is None:
                index, prev = first, seed
            elif first != index or seed != prev:
                break
            segments.append(seg)
            seg_first.append(first)
            stop = _SEGMENT.unpack_from(buf, nxt)[0] if nxt else last_index + 1
            pos, end = seg + SEGMENT_HEADER_SIZE, seg + capacity
            while index < stop and index <= last_index:
                if pos + RECORD_HEADER_SIZE > end:
                    break
                crc, n, term, rec_index, kind = RECORD.unpack_from(buf, pos)
                body_end = pos + RECORD_HEADER_SIZE + n
                if (rec_index != index or body_end > end or kind >= ENTRY_TYPE_COUNT
                        or crc != crc32(buf[pos + 4:body_end], prev)):
                    break
                if index > offset:
                    entries.append(untracked_entry(term, index, kind,
                                                   bytes(buf[pos + RECORD_HEADER_SIZE:body_end])))
                    positions.append(pos)
                prev = crc
                index += 1
                pos = (body_end + 7) & ~7
            if index != stop or index > last_index:
                break
            seg = nxt
        if len(entries) > 1 and entries[1].index != offset + 1:
            raise LogCorruptError(f"Raft log starts at {entries[1].index}, snapshot at {offset}")
        self._entries, self._positions = entries, positions
        self._segments, self._seg_first = segments, seg_first
        durable_last = entries[-1].index
        if durable_last != last_index:
            # Records past the verified end were never acknowledged: cut them.
            self._store_last_index(durable_last)
            self._media.drain()
        self._drop_unknown_segments()
        self._drop_segments_after(durable_last)
        if self._hard_state.commit > durable_last:
            hs = self._hard_state
            self._hard_state = HardState(hs.term, hs.vote, durable_last)
        for a, b in pairwise(entries[1:]):
            if b.term < a.term:
                raise LogCorruptError(f"Raft log terms decrease at index {b.index}")

    def _drop_unknown_segments(self) -> None:
        """Unlink and free segments chained after the last one the walk accepted.

        An append that needed a new segment links it in a committed pool
        transaction, then writes its records, fenced later: a crash in between
        leaves a linked segment whose records never became durable. Left
        linked, it would claim the indexes that later appends write into the
        segment before it, and the next open would stop reading there.
        """
        buf = self._buf
        link = self._segments[-1] + 8 if self._segments else self._root + 16
        seg = int.from_bytes(buf[link:link + 8], "little")
        if not seg:
            return
        with self._pool.transaction() as tx:
            tx.write(link, bytes(8))
            seen = set()
            while seg and seg not in seen:
                seen.add(seg)
                nxt = _SEGMENT.unpack_from(buf, seg)[1]
                tx.free(seg)
                seg = nxt

    def _read_hard_state(self) -> tuple[HardState, int, int]:
        best = None
        for slot, off in enumerate(_SLOT_OFFS):
            pos = self._root + off
            seq, term, vote, commit, crc = _SLOT.unpack_from(self._buf, pos)
            valid = seq and crc == crc32(self._buf[pos:pos + _SLOT.size - 4])
            if valid and (best is None or seq > best[0]):
                best = (seq, HardState(term, vote, commit), slot)
        if best is None:
            return HardState(), 0, 0
        seq, hard_state, slot = best
        return hard_state, seq, 1 - slot

    def check(self) -> None:
        """Verify the persistent log against what this object serves; raise
        :class:`LogCorruptError` on any difference.

        Walks the segment chain and every record (CRC chain, indexes, terms,
        data), the last-index word, the hard state and the snapshot block.
        Cost: O(log bytes).
        """
        buf = self._buf
        magic, last_index, first_seg, snap_off = _ROOT.unpack_from(buf, self._root)
        if magic != MAGIC:
            raise LogCorruptError(f"Raft log root has magic {magic!r}")
        entries = self._entries
        if last_index != entries[-1].index:
            raise LogCorruptError(f"last_index word {last_index}, log ends at {entries[-1].index}")
        if self._read_snapshot_block(snap_off) != self._snapshot:
            raise LogCorruptError("the snapshot block differs from the snapshot served")
        if entries[0] != Entry(self._snapshot.meta.term, self._snapshot.meta.index):
            raise LogCorruptError("the log does not start at its snapshot")
        hard_state = self._read_hard_state()[0]
        if (hard_state.term, hard_state.vote) != (self._hard_state.term, self._hard_state.vote) \
                or hard_state.commit < self._hard_state.commit:
            raise LogCorruptError(f"hard state {hard_state} on the pool, {self._hard_state} served")
        segments = []
        seg = first_seg
        while seg:
            if len(segments) > len(self._segments):
                raise LogCorruptError("the segment chain is longer than the segments known")
            segments.append(seg)
            seg = _SEGMENT.unpack_from(buf, seg)[1]
        if segments != self._segments:
            raise LogCorruptError(f"segment chain {segments}, known {self._segments}")
        for n, seg in enumerate(segments):
            if _SEGMENT.unpack_from(buf, seg)[0] != self._seg_first[n]:
                raise LogCorruptError(f"segment {seg} starts at an unexpected index")
        prev = None
        for entry, pos in zip(entries[1:], self._positions[1:], strict=True):
            seg_at = bisect_right(self._seg_first, entry.index) - 1
            seg = self._segments[seg_at]
            if pos == seg + SEGMENT_HEADER_SIZE:
                prev = _SEGMENT.unpack_from(buf, seg)[3]
            crc, n, term, index, kind = RECORD.unpack_from(buf, pos)
            body = pos + RECORD_HEADER_SIZE
            data = bytes(buf[body:body + n])
            if (index, term, kind, data) != (entry.index, entry.term, entry.type, entry.data):
                raise LogCorruptError(f"record of entry {entry.index} differs from the entry")
            if prev is not None and crc != crc32(buf[pos + 4:body + n], prev):
                raise LogCorruptError(f"record of entry {entry.index} breaks the CRC chain")
            prev = crc
        for a, b in pairwise(entries[1:]):
            if b.index != a.index + 1 or b.term < a.term:
                raise LogCorruptError(f"entries {a.index} -> {b.index} out of order")

    def count_copies(self, copies) -> None:
        """Add the entry bytes this log copies into its records to ``copies``
        (a :class:`~blizzard.replication.copies.Copies`), stage ``entries_to_log``."""
        self._copies = copies.counts

    # -- sending from the log (see the module docstring) ----------------------------------

    def record_views(self, entries: Sequence[Entry]) -> list[memoryview] | None:
        """Read-only views of the records of ``entries`` (a run of this log's
        entries, as a leader's MsgApp carries them) where they lie: one view
        per segment the run crosses. None when they are not all this log's
        durable entries (compacted away, not yet written, or another log's).

        The views stay valid only until the log next changes: release them
        before anything may truncate, compact or close it.
        """
        if not entries:
            return None
        log = self._entries
        offset = log[0].index
        first = entries[0].index
        last = first + len(entries) - 1
        if first <= offset or last > log[-1].index:
            return None
        at = first - offset
        # the same objects (or, after a restart, the same index and term: the
        # same entries, by log matching) at both ends of the run
        head, tail = log[at], log[last - offset]
        if entries[-1].index != last:
            return None
        if head is not entries[0] and head.term != entries[0].term:
            return None
        if tail is not entries[-1] and tail.term != entries[-1].term:
            return None
        buf = self._buf
        positions = self._positions
        seg_first = self._seg_first
        k = bisect_right(seg_first, first) - 1
        views = []
        index = first
        while index <= last:
            stop = last
            if k + 1 < len(seg_first) and seg_first[k + 1] <= last:
                stop = seg_first[k + 1] - 1  # the segment's last record of the run
            end = positions[stop - offset]
            end = (end + RECORD_HEADER_SIZE + len(log[stop - offset].data) + 7) & ~7
            views.append(buf[positions[index - offset]:end].toreadonly())
            index = stop + 1
            k += 1
        return views

    # -- receiving in place (see the module docstring) ------------------------------------

    def tail_region(self, first_index: int, log_term: int, nbytes: int) -> memoryview | None:
        """A writable view of the ``nbytes`` after the last record -- after the
        records received in place and not yet accepted, if any -- for the
        records of entries ``first_index``... that follow an entry of term
        ``log_term``; None when they cannot go there. Replaces any earlier
        region whose records were not parsed."""
        self._drop_unparsed()
        pending = self._pending
        if pending:
            last = pending[-1]
            before, seg, pos, prev = last.entries[-1], last.seg, last.end, last.crcs[-1]
        elif len(self._entries) > 1:
            before, seg = self._entries[-1], self._segments[-1]
            pos, prev = self._end_position()
        else:
            return None  # no record yet: the ordinary append places the first
        if (first_index != before.index + 1 or before.term != log_term
                or nbytes <= 0 or nbytes & 7):
            return None
        fresh = pos + nbytes > seg + _SEGMENT.unpack_from(self._buf, seg)[2]
        if fresh:  # link the next segment now: the records land at its start
            seg = self._new_segment(first_index, nbytes, prev)
            pos = seg + SEGMENT_HEADER_SIZE
        view = self._buf[pos:pos + nbytes]
        self._reserved = _Reservation(first_index, seg, pos, view, prev, before.term, fresh)
        return view

    def received_entries(self, region: memoryview, count: int) -> list[Entry]:
        """The ``count`` entries received into ``region`` (from :meth:`tail_region`).

        Raises ``MessageDecodeError`` when the records are malformed or do not
        follow the log index by index, and :class:`ReceiveRegionLostError` when
        the region is no longer reserved; either way the region is given up.
        """
        res = self._reserved
        if res is None or res.view is not region:
            raise ReceiveRegionLostError("the log changed while the entries were received")
        try:
            self._take_records(res, region, count)
        except BaseException:
            self._drop_reservations()
            raise
        self._reserved = None
        res.view = None
        region.release()  # no view of the mapping outlives the receive
        self._pending.append(res)
        return res.entries

    def _take_records(self, res: _Reservation, region: memoryview, count: int) -> None:
        res.entries, res.positions, res.crcs, res.end = messages.take_records(
            region, count, res.first, res.term_before, res.prev, res.start)

    def _drop_unparsed(self) -> None:
        """Give up the region handed out last, if its records were not parsed.
        Its view is released: a transport still receiving into it finds that
        out before its next read and drops the frame (nothing lands here after)."""
        res = self._reserved
        if res is not None:
            self._reserved = None
            if res.view is not None:
                res.view.release()
                res.view = None
            if res.fresh:
                self._unlink_last_segment()

    def _drop_reservations(self) -> None:
        """Whatever is written next may overwrite the free tail: give up every
        region not taken, and the segments linked for them."""
        self._drop_unparsed()
        pending, self._pending = self._pending, []
        for res in reversed(pending):
            if res.fresh:
                self._unlink_last_segment()

    def _unlink_last_segment(self) -> None:
        """Unlink and free the last segment, which holds no entry (one pool transaction)."""
        seg = self._segments.pop()
        self._seg_first.pop()
        with self._pool.transaction() as tx:
            link = self._segments[-1] + 8 if self._segments else self._root + 16
            tx.write(link, bytes(8))
            tx.free(seg)

    def _take_received(self, new: Sequence[Entry]) -> int:
        """Make the leading entries of ``new`` that were received in place part
        of the log (flushed, not fenced); how many they were. Regions received
        after those stay reserved only if every earlier one was taken whole."""
        pending = self._pending
        count = 0
        whole = 0  # regions taken whole
        for res in pending:
            if count == len(new):
                break  # the regions after these stay reserved, in order
            received = res.entries
            i = len(received)
            if len(new) - count >= i and all(map(is_, new[count:count + i], received)):
                count += i  # the usual case: the core saves the region's entries whole
            else:
                i = 0
                while i < len(received) and count < len(new) and new[count] is received[i]:
                    i += 1
                    count += 1
            if i:
                self._accept(res, i)
            if i < len(received):  # not what the log takes next: its space goes
                self._drop_reservations()
                return count
            whole += 1
        del pending[:whole]
        return count

    def _accept(self, res: _Reservation, count: int) -> None:
        """The first ``count`` records of ``res`` join the log: their CRCs
        righted, one flush."""
        res.fresh = False  # its segment holds entries now
        positions = res.positions
        set_u32s(self._buf, positions, res.crcs, count)
        last = positions[count - 1]
        end = (last + RECORD_HEADER_SIZE + len(res.entries[count - 1].data) + 7) & ~7
        self._media.flush(res.start, end - res.start)
        self._entries.extend(res.entries[:count])
        self._positions.extend(positions[:count])

    # -- Storage protocol (reads) ---------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes: the driver's persist step ------------------------------------------------

    def save(self, hard_state: HardState | None = None, entries: Sequence[Entry] = ()) -> None:
        """Make ``entries`` (appended, replacing any conflicting suffix) and
        ``hard_state`` durable together: one fence in the common case."""
        written = bool(entries) and self._append(entries)
        if hard_state is not None and hard_state != self._hard_state:
            self._write_hard_state(hard_state)
            written = True
        if written:
            self._media.drain()

    def set_hard_state(self, hard_state: HardState) -> None:
        self.save(hard_state)

    def append(self, entries: Sequence[Entry]) -> None:
        self.save(None, entries)

    def _append(self, new: Sequence[Entry]) -> bool:
        """Write records and last_index, flushed but not fenced.

        Returns whether anything was written.
        """
        entries = self._entries
        offset = entries[0].index
        first = new[0].index
        if first + len(new) - 1 <= offset:
            return False  # covered by the snapshot: nothing to do
        if first <= offset:
            new = new[offset + 1 - first:]
            first = offset + 1
        keep = first - offset
        if keep > len(entries):
            raise BlizzardError(f"Raft log gap: appending {first} after {self.last_index()}")
        # Entries we already hold (same index and term, hence the same entry)
        # are skipped: truncating them would put acknowledged entries at risk.
        skip = 0
        while (skip < len(new) and keep + skip < len(entries)
               and entries[keep + skip].term == new[skip].term):
            skip += 1
        if skip:
            new = new[skip:]
            if not new:
                return False
            keep += skip
            first += skip
        if self._pending:
            # entries received in place are taken where they lie (module docstring)
            taken = self._take_received(new) if keep == len(entries) else 0
            if taken:
                new = new[taken:]
                if not new:
                    self._store_last_index(entries[-1].index)
                    return True
                keep += taken
                first += taken
        self._drop_reservations()  # whatever follows overwrites the tail
        if keep < len(entries):
            self._truncate(first - 1)
        buf = self._buf
        flush = self._media.flush
        seg = self._segments[-1] if self._segments else 0
        limit = seg + _SEGMENT.unpack_from(buf, seg)[2] if seg else 0
        pos, prev = self._end_position()
        run_start = pos
        done = 0
        while True:  # records up to the segment's end, then the next segment
            written, pos, prev = messages.write_records(buf, new, done, pos, limit, prev,
                                                        self._positions)
            entries.extend(new[done:written])
            if pos > run_start:
                flush(run_start, pos - run_start)
            if written == len(new):
                break
            need = RECORD_HEADER_SIZE + len(new[written].data)
            seg = self._new_segment(new[written].index, need, prev)
            limit = seg + _SEGMENT.unpack_from(buf, seg)[2]
            pos = run_start = seg + SEGMENT_HEADER_SIZE
            done = written
        self._store_last_index(entries[-1].index)
        if self._copies is not None:
            self._copies["entries_to_log"] += sum([len(entry.data) for entry in new])
        return True

    def _end_position(self) -> tuple[int, int]:
        """Where the next record goes (0: in a new segment), and the chain's CRC."""
        if len(self._entries) > 1:
            pos = self._positions[-1]
            crc, n = RECORD.unpack_from(self._buf, pos)[:2]
            return (pos + RECORD_HEADER_SIZE + n + 7) & ~7, crc
        assert not self._segments, "segments without entries"
        return 0, 0

    def _store_last_index(self, index: int) -> None:
        off = self._root + _LAST_INDEX_OFF
        self._buf[off:off + 8] = index.to_bytes(8, "little")
        self._media.flush(off, 8)

    def _new_segment(self, first_index: int, need: int, prev_crc: int) -> int:
        """Allocate and link a segment (one pool transaction)."""
        size = max(self._segment_bytes, SEGMENT_HEADER_SIZE + need + 8)
        buf = self._buf
        with self._pool.transaction() as tx:
            seg = tx.alloc(size)
            _SEGMENT.pack_into(buf, seg, first_index, 0, size, prev_crc)
            # recycled memory must not look like a first record
            buf[seg + SEGMENT_HEADER_SIZE:seg + SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE] = bytes(
                RECORD_HEADER_SIZE)
            link = self._segments[-1] + 8 if self._segments else self._root + 16
            tx.write(link, seg.to_bytes(8, "little"))
        self._segments.append(seg)
        self._seg_first.append(first_index)
        return seg

    def _truncate(self, last: int) -> None:
        """Forget entries after ``last`` durably, before anything overwrites them."""
        self._drop_reservations()
        offset = self._entries[0].index
        # The first record cut off is made unverifiable in the same fence, or
        # it would still chain after ``last`` if its replacement never landed.
        pos = self._positions[last - offset + 1]
        crc = int.from_bytes(self._buf[pos:pos + 4], "little")
        self._buf[pos:pos + 4] = (crc ^ 0xFFFFFFFF).to_bytes(4, "little")
        self._media.flush(pos, 4)
        del self._entries[last - offset + 1:]
        del self._positions[last - offset + 1:]
        self._store_last_index(last)
        self._media.drain()
        self._drop_segments_after(last)

    def _drop_segments_after(self, last: int) -> None:
        """Unlink and free segments holding no entry at or before ``last``.

        Keeps the invariant: no segments iff no entries after the snapshot.
        """
        keep = bisect_right(self._seg_first, last) if last > self._entries[0].index else 0
        if keep == len(self._segments):
            return
        with self._pool.transaction() as tx:
            link = self._segments[keep - 1] + 8 if keep else self._root + 16
            tx.write(link, bytes(8))
            for seg in self._segments[keep:]:
                tx.free(seg)
        del self._segments[keep:]
        del self._seg_first[keep:]

    def _write_hard_state(self, hs: HardState) -> None:
        seq = self._slot_seq + 1
        pos = self._root + _SLOT_OFFS[self._next_slot]
        body = struct.pack("<QQQQ", seq, hs.term, hs.vote, hs.commit)
        _SLOT.pack_into(self._buf, pos, seq, hs.term, hs.vote, hs.commit, crc32(body))
        self._media.flush(pos, _SLOT.size)
        self._slot_seq = seq
        self._next_slot = 1 - self._next_slot
        self._hard_state = hs

    # -- snapshots ------------------------------------------------------------------------

    def compact(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` and free the segments it makes unnecessary.

        One pool transaction: the new snapshot block, the new first segment,
        and the frees commit together.
        """
        meta = snapshot.meta
        offset = self._entries[0].index
        if meta.index <= offset:
            return
        self._drop_reservations()  # the segments they lie in may go
        if meta.index > self.last_index():
            raise BlizzardError(
                f"compacting to {meta.index} past the log's end {self.last_index()}")
        if self.term(meta.index) != meta.term:
            raise BlizzardError(f"snapshot term {meta.term} != log term at {meta.index}")
        if meta.index < self.last_index():
            drop = bisect_right(self._seg_first, meta.index + 1) - 1  # segment of the first kept
        else:
            drop = len(self._segments)
        with self._pool.transaction() as tx:
            self._replace_snapshot_block(tx, snapshot)
            if drop:
                head = self._segments[drop] if drop < len(self._segments) else 0
                tx.write(self._root + 16, head.to_bytes(8, "little"))
                for seg in self._segments[:drop]:
                    tx.free(seg)
        del self._segments[:drop]
        del self._seg_first[:drop]
        cut = meta.index - offset
        self._entries = [Entry(meta.term, meta.index), *self._entries[cut + 1:]]
        self._positions = [0, *self._positions[cut + 1:]]
        self._snapshot = snapshot

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot`` (a follower catching up)."""
        self._drop_reservations()
        meta = snapshot.meta
        if meta.index < self._snapshot.meta.index:
            raise SnapshotOutOfDateError(meta.index)
        with self._pool.transaction() as tx:
            self._replace_snapshot_block(tx, snapshot)
            tx.write(self._root + 16, bytes(8))
            tx.write(self._root + _LAST_INDEX_OFF, meta.index.to_bytes(8, "little"))
            for seg in self._segments:
                tx.free(seg)
        self._segments, self._seg_first = [], []
        self._entries = [Entry(meta.term, meta.index)]
        self._positions = [0]
        self._snapshot = snapshot

    def _replace_snapshot_block(self, tx, snapshot: Snapshot) -> None:
        old = _ROOT.unpack_from(self._buf, self._root)[3]
        new = self._write_snapshot_block(tx, snapshot)
        tx.write(self._root + 24, new.to_bytes(8, "little"))
        if old:
            tx.free(old)

    def _write_snapshot_block(self, tx, snapshot: Snapshot) -> int:
        meta = snapshot.meta
        cs = meta.conf_state
        ids = cs.voters + cs.learners
        head = struct.pack(f"<QQII{len(ids)}QQ", meta.index, meta.term, len(cs.voters),
                           len(cs.learners), *ids, len(snapshot.data))
        block = tx.alloc(len(head) + len(snapshot.data))
        self._buf[block:block + len(head)] = head
        self._buf[block + len(head):block + len(head) + len(snapshot.data)] = snapshot.data
        return block

    def _read_snapshot_block(self, off: int) -> Snapshot:
        if not off:
            return Snapshot()
        buf = self._buf
        index, term, nv, nl = struct.unpack_from("<QQII", buf, off)
        ids = struct.unpack_from(f"<{nv + nl}Q", buf, off + 24)
        pos = off + 24 + 8 * (nv + nl)
        (n,) = struct.unpack_from("<Q", buf, pos)
        data = bytes(buf[pos + 8:pos + 8 + n])
        conf_state = ConfState(tuple(ids[:nv]), tuple(ids[nv:]))
        return Snapshot(SnapshotMeta(index, term, conf_state), data)
