"""The codec: exact round trips, and a clear error for every bad frame."""

from __future__ import annotations

import copy
import gc
import pickle
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard import _compiled
from blizzard.exceptions import BlizzardError
from blizzard.replication.raft import messages as m
from blizzard.replication.raft.messages import MessageDecodeError, decode, encode

u64 = st.integers(0, m.U64_MAX)
small = st.integers(0, 1 << 20)
blob = st.binary(max_size=64)
nodes = st.lists(u64, max_size=5).map(tuple)

entries = st.lists(
    st.builds(m.Entry, small, small, st.sampled_from(m.EntryType), blob), max_size=6
).map(tuple)
snapshots = st.builds(
    m.Snapshot, st.builds(m.SnapshotMeta, u64, u64, st.builds(m.ConfState, nodes, nodes)), blob
)


messages = st.one_of(
    st.builds(m.MsgApp, u64, u64, u64, u64, u64, entries, u64),
    st.builds(m.MsgAppResp, u64, u64, u64, u64, st.booleans(), u64, u64),
    st.builds(m.MsgVote, u64, u64, u64, u64, u64, st.booleans()),
    st.builds(m.MsgPreVote, u64, u64, u64, u64, u64, st.booleans()),
    st.builds(m.MsgVoteResp, u64, u64, u64, st.booleans()),
    st.builds(m.MsgPreVoteResp, u64, u64, u64, st.booleans()),
    st.builds(m.MsgHeartbeat, u64, u64, u64, u64, blob),
    st.builds(m.MsgHeartbeatResp, u64, u64, u64, blob),
    st.builds(m.MsgSnap, u64, u64, u64, snapshots),
    st.builds(m.MsgTimeoutNow, u64, u64, u64),
    st.builds(m.MsgReadIndex, u64, u64, u64, blob),
    st.builds(m.MsgReadIndexResp, u64, u64, u64, u64, blob),
    st.builds(m.MsgProp, u64, u64, u64, entries),
)


@given(messages)
def test_round_trip(msg):
    """decode(encode(m)) == m, and encoding the result gives the same bytes."""
    frame = encode(msg)
    back = decode(frame)
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == frame


@given(messages, st.data())
def test_every_truncation_is_rejected(msg, data):
    """A frame cut anywhere before its end raises MessageDecodeError."""
    frame = encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(MessageDecodeError):
        decode(frame[:cut])


@given(messages, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_rejected(msg, extra):
    with pytest.raises(MessageDecodeError, match="trailing"):
        decode(encode(msg) + extra)


def _unread(msg) -> list[int]:
    """The positions of ``msg``'s frame that decode does not read: each
    record's CRC field and the pad after its data."""
    if type(msg) is m.MsgApp:
        pos = m.APP_HEAD_BYTES
    elif type(msg) is m.MsgProp:
        pos = 26 + 4  # the header, then the entry count
    else:
        return []
    out = []
    for entry in msg.entries:
        out.extend(range(pos, pos + 4))
        stop = pos + m.RECORD_HEADER_BYTES + len(entry.data)
        padded = stop + (-len(entry.data) & 7)
        out.extend(range(stop, padded))
        pos = padded
    return out


def _same_but_unread(frame: bytes, msg) -> None:
    """``frame`` decoded into ``msg``: encoding ``msg`` gives the same bytes
    but where decode reads nothing (zeros there)."""
    again = bytearray(encode(msg))
    assert len(again) == len(frame)
    frame = bytearray(frame)
    for position in _unread(msg):
        assert again[position] == 0
        frame[position] = 0
    assert again == frame


@given(st.binary(max_size=200))
def test_random_bytes_decode_exactly_or_raise(frame):
    """Whatever decode accepts re-encodes to the very same bytes (but for the
    records' CRC fields and pads, which encode zeroes)."""
    try:
        msg = decode(frame)
    except MessageDecodeError:
        return
    _same_but_unread(frame, msg)


@given(messages, st.data())
def test_crc_fields_and_pads_are_not_read(msg, data):
    """A leader sends records as its log holds them (its chain CRCs, pads it
    never wrote): the message decodes the same whatever those bytes hold."""
    frame = bytearray(encode(msg))
    for position in _unread(msg):
        frame[position] = data.draw(st.integers(0, 255))
    assert decode(bytes(frame)) == msg


@given(messages, st.data())
def test_corrupted_frames_decode_exactly_or_raise(msg, data):
    frame = bytearray(encode(msg))
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] = data.draw(st.integers(0, 255))
    try:
        back = decode(bytes(frame))
    except MessageDecodeError:
        return
    _same_but_unread(bytes(frame), back)


def test_unknown_version_kind_and_bad_fields():
    good = encode(m.MsgVoteResp(1, 2, 3, True))
    with pytest.raises(MessageDecodeError, match="version"):
        decode(b"\x09" + good[1:])
    with pytest.raises(MessageDecodeError, match="kind"):
        decode(good[:1] + b"\xff" + good[2:])
    with pytest.raises(MessageDecodeError, match="boolean"):
        decode(good[:-1] + b"\x02")
    entry = encode(m.MsgProp(1, 2, 0, (m.Entry(1, 1, m.EntryType.NORMAL, b"x"),)))
    position = len(entry) - 8 - 8  # the entry's type byte (then 7 zero bytes, 1 + 7 of data)
    with pytest.raises(MessageDecodeError, match="entry type"):
        decode(entry[:position] + b"\x07" + entry[position + 1 :])
    with pytest.raises(MessageDecodeError, match="entry type"):  # a non-zero pad in the header
        decode(entry[:position + 3] + b"\x01" + entry[position + 4 :])
    crc = len(entry) - 8 - 32  # the record's CRC field: not read, nor the data's pad
    assert decode(entry[:crc] + b"\x01" + entry[crc + 1 :]) == decode(entry)
    assert decode(entry[:-1] + b"\x01") == decode(entry)
    with pytest.raises(MessageDecodeError, match="expected bytes"):
        decode("not bytes")  # type: ignore[arg-type]


@given(st.builds(m.MsgApp, u64, u64, u64, u64, u64, entries, u64))
def test_an_append_head_is_the_start_of_its_frame(msg):
    """encode_app_head(msg) + the records is the frame: what a leader sends
    from its log."""
    frame = encode(msg)
    head = m.encode_app_head(msg)
    assert len(head) == m.APP_HEAD_BYTES and frame.startswith(head)
    assert m.decode_app_head(head) == (msg.source, msg.target, msg.term, msg.log_term,
                                       msg.index, msg.commit, len(msg.entries))


def test_huge_counts_do_not_allocate():
    """An entry count far beyond the frame's length is rejected up front."""
    frame = struct.pack("<BBQQQ", m.VERSION, 12, 1, 2, 0) + struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(MessageDecodeError, match="truncated"):
        decode(frame)


def test_error_is_catchable_as_value_error():
    assert issubclass(MessageDecodeError, ValueError)
    assert issubclass(MessageDecodeError, BlizzardError)


def test_conf_change_round_trip_and_errors():
    change = m.ConfChange(m.ConfChangeType.ADD_LEARNER, 7)
    assert m.ConfChange.decode(change.encode()) == change
    with_context = m.ConfChange(m.ConfChangeType.ADD_LEARNER, 7, b'{"raft": "h:1"}')
    assert m.ConfChange.decode(with_context.encode()) == with_context
    with pytest.raises(MessageDecodeError):
        m.ConfChange.decode(b"\x09" + b"\x00" * 8)
    with pytest.raises(MessageDecodeError):
        m.ConfChange.decode(b"\x00")


def _made_of_atoms(entry: m.Entry) -> bool:
    return type(entry) is m.Entry and all(type(field) in (int, bytes) for field in entry)


def test_entries_built_on_the_hot_paths_hold_ints_and_are_untracked_when_compiled():
    """Entries hold their type as a plain int, so they hold no object the
    garbage collector must visit; the compiled build tells it so at once (it
    would never untrack a tuple subclass by itself), the interpreted one
    cannot."""
    compiled = _compiled.compiled()
    built = [m.untracked_entry(3, 9, m.EntryType.CONF_CHANGE.value, b"change")]
    built += m.untracked_entries(3, 10, m.EntryType.NORMAL.value, [b"a", b"", b"c" * 300])
    frame = encode(m.MsgApp(1, 2, 3, 3, 8, tuple(built), 8))
    decoded = decode(frame).entries
    for entry in [*built, *decoded]:
        assert _made_of_atoms(entry), entry
        assert gc.is_tracked(entry) is not compiled, entry
    assert [tuple(e) for e in built] == [
        (3, 9, 1, b"change"), (3, 10, 0, b"a"), (3, 11, 0, b""), (3, 12, 0, b"c" * 300)]
    assert decoded == tuple(built)
    assert built[0] == m.Entry(3, 9, m.EntryType.CONF_CHANGE, b"change")
    assert hash(built[1]) == hash(m.Entry(3, 10, 0, b"a"))
    assert built[0].type == m.EntryType.CONF_CHANGE
    assert repr(built[2]) == "Entry(term=3, index=11, type=0, data=b'')"
    assert encode(m.MsgApp(1, 2, 3, 3, 8, decoded, 8)) == frame


def test_untracked_entries_own_their_fields_exactly_once():
    """Building and dropping entries (and collecting) leaves every field's
    reference count as it was: no field leaked, none freed early."""
    data = b"payload whose references are counted"
    term = 1 << 40  # not a cached small int
    before = sys.getrefcount(data), sys.getrefcount(term)
    for _ in range(3):
        entries = m.untracked_entries(term, 1, 0, [data] * 100)
        entries.append(m.untracked_entry(term, 1 << 50, 1, data))
        assert sys.getrefcount(data) == before[0] + 101
        gc.collect()
        assert all(entry.data is data and entry.term == term for entry in entries)
        del entries
        gc.collect()
        assert (sys.getrefcount(data), sys.getrefcount(term)) == before


# The records built every round: the same values in both builds.
RECORDS = [
    (m.HardState, (4, 2, 9)),
    (m.MsgApp, (1, 2, 3, 3, 8, (m.Entry(3, 9, 0, b"x"),), 8)),
    (m.MsgAppResp, (2, 1, 3, 9, True, 5, 2)),
    (m.MsgHeartbeat, (1, 2, 3, 8, b"ctx")),
    (m.MsgHeartbeatResp, (2, 1, 3, b"ctx")),
    (m.MsgProp, (2, 1, 0, (m.Entry(0, 0, 0, b"p"),))),
]


@pytest.mark.interpreted
@pytest.mark.parametrize(("cls", "values"), RECORDS, ids=lambda r: getattr(r, "__name__", ""))
def test_records_are_values_by_their_fields(cls, values):
    """Built positionally or by keyword, a record equals and hashes like any
    other with the same fields, differs when one field does, and never
    equals a record of another kind or a tuple."""
    names = cls.__match_args__
    assert len(names) == len(values)
    record = cls(*values)
    assert [getattr(record, name) for name in names] == list(values)
    same = cls(**dict(zip(names, values, strict=True)))
    assert (record == same, record != same) == (True, False)  # both operators
    assert hash(record) == hash(same)
    for position, name in enumerate(names):
        changed = list(values)
        changed[position] = b"other" if isinstance(values[position], (bytes, tuple)) else 77
        other = cls(*changed)
        assert (record == other, record != other) == (False, True), name
    assert record != values and record != tuple(values)
    for other_cls, other_values in RECORDS:
        if other_cls is not cls:
            assert record != other_cls(*other_values)
    assert len({record, same}) == 1


@pytest.mark.interpreted
@pytest.mark.parametrize(("cls", "values"), RECORDS, ids=lambda r: getattr(r, "__name__", ""))
def test_records_refuse_assignment(cls, values):
    """Assigning, deleting or adding an attribute raises; the record is unchanged."""
    record = cls(*values)
    for name in (*cls.__match_args__, "unknown"):
        with pytest.raises(AttributeError):
            setattr(record, name, 1)
        with pytest.raises(AttributeError):
            delattr(record, name)
    assert record == cls(*values)


@pytest.mark.interpreted
@pytest.mark.parametrize(("cls", "values"), RECORDS, ids=lambda r: getattr(r, "__name__", ""))
def test_records_repr_pickle_and_copy(cls, values):
    """The repr names every field and evaluates back to an equal record;
    pickling and copying give equal records of the same class."""
    record = cls(*values)
    text = repr(record)
    fields = ", ".join(f"{name}={value!r}" for name, value in zip(cls.__match_args__, values,
                                                                    strict=True))
    assert text == f"{cls.__name__}({fields})"
    assert eval(text, vars(m)) == record
    for back in (pickle.loads(pickle.dumps(record)), copy.copy(record), copy.deepcopy(record)):
        assert back == record and type(back) is cls


@pytest.mark.interpreted
def test_record_defaults_are_the_documented_ones():
    assert m.HardState() == m.HardState(0, m.NONE, 0)
    assert m.MsgAppResp(1, 2, 3, 4) == m.MsgAppResp(1, 2, 3, 4, False, 0, 0)
    assert m.MsgHeartbeat(1, 2, 3, 4) == m.MsgHeartbeat(1, 2, 3, 4, b"")
    assert m.MsgHeartbeatResp(1, 2, 3) == m.MsgHeartbeatResp(1, 2, 3, b"")
    with pytest.raises(TypeError):
        m.MsgApp(1, 2, 3)


@pytest.mark.interpreted
def test_records_are_extension_types_untracked_by_the_collector_when_compiled():
    """Compiled, a record is a C struct the collector never visits (it holds
    ints, bytes and entries); interpreted, a slotted class without a dict."""
    compiled = _compiled.compiled()
    for cls, values in RECORDS:
        record = cls(*values)
        assert not hasattr(record, "__dict__")
        assert gc.is_tracked(record) is not compiled, cls
        assert (type(cls.__init__).__name__ == "wrapper_descriptor") is compiled, cls
