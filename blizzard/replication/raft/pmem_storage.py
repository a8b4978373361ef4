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
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise
from zlib import crc32

from blizzard.exceptions import BlizzardError, LogCorruptError, SnapshotOutOfDateError
from blizzard.pmem import Pool
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
_RECORD_FIELDS = struct.Struct("<IQQB7x")  # what the CRC covers, before the data
SEGMENT_BYTES_DEFAULT = 4 << 20
assert RECORD_HEADER_SIZE == 32


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
        if keep < len(entries):
            self._truncate(first - 1)
        buf = self._buf
        flush = self._media.flush
        seg = self._segments[-1] if self._segments else 0
        pos, prev = self._end_position()
        run_start = pos
        for entry in new:
            data = entry.data
            n = len(data)
            need = RECORD_HEADER_SIZE + n
            if not seg or pos + need > seg + _SEGMENT.unpack_from(buf, seg)[2]:
                if seg and pos > run_start:
                    flush(run_start, pos - run_start)
                seg = self._new_segment(entry.index, need, prev)
                pos = run_start = seg + SEGMENT_HEADER_SIZE
            fields = _RECORD_FIELDS.pack(n, entry.term, entry.index, entry.type)
            body = pos + RECORD_HEADER_SIZE
            buf[pos + 4:body] = fields
            buf[body:body + n] = data
            prev = crc32(data, crc32(fields, prev))
            buf[pos:pos + 4] = prev.to_bytes(4, "little")
            entries.append(entry)
            self._positions.append(pos)
            pos = (body + n + 7) & ~7
        if pos > run_start:
            flush(run_start, pos - run_start)
        self._store_last_index(entries[-1].index)
        if self._copies is not None:
            self._copies["entries_to_log"] += sum(len(entry.data) for entry in new)
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
