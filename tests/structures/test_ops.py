"""Op records: exact round trips, clear errors for bad records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.exceptions import OpDecodeError, OpVersionError
from blizzard.structures import ops
from blizzard.structures.ops import ARITY, Encoder, Op, OpCode

names = st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=12).filter(
    lambda s: len(s.encode()) <= ops.NAME_BYTES_MAX)


@st.composite
def op_strategy(draw) -> Op:
    code = draw(st.sampled_from(list(OpCode)))
    args = tuple(draw(st.lists(st.binary(max_size=40), min_size=ARITY[code],
                               max_size=ARITY[code])))
    return Op(draw(names), code, args)


@given(op_strategy())
def test_encode_decode_are_inverses(op):
    """decode(encode(op)) == op and encode(decode(record)) == record."""
    record = ops.encode(op)
    assert ops.decode(record) == op
    assert ops.encode(ops.decode(record)) == record
    assert eval(repr(op), {"Op": Op, "OpCode": OpCode}) == op  # replayable repr


@given(op_strategy(), st.data())
def test_every_truncation_is_refused(op, data):
    """Any proper prefix of a record, and any record with bytes appended, is an error."""
    record = ops.encode(op)
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(OpDecodeError, match="truncated"):
        ops.decode(record[:cut])
    with pytest.raises(OpDecodeError, match="trailing"):
        ops.decode(record + b"x")


def test_unknown_version_and_opcode():
    record = bytearray(ops.encode(Op("m", OpCode.MAP_DELETE, (b"k",))))
    record[0] = 9
    with pytest.raises(OpVersionError, match="version 9"):
        ops.decode(bytes(record))
    record[0] = ops.OP_VERSION
    record[1] = 0xEE
    with pytest.raises(OpDecodeError, match="unknown opcode"):
        ops.decode(bytes(record))
    assert issubclass(OpDecodeError, ValueError)


def test_wrong_arity_is_refused():
    with pytest.raises(ValueError, match="takes 2"):
        ops.encode(Op("m", OpCode.MAP_PUT, (b"k",)))


@given(names.filter(bool), st.binary(max_size=30), st.binary(max_size=30))
def test_encoder_matches_encode(name, a, b):
    """The hot-path Encoder builds byte-identical records."""
    enc = Encoder(name)
    assert enc.two(OpCode.MAP_PUT, a, b) == ops.encode(Op(name, OpCode.MAP_PUT, (a, b)))
    assert enc.one(OpCode.QUEUE_PUT, a) == ops.encode(Op(name, OpCode.QUEUE_PUT, (a,)))
    assert enc.zero(OpCode.QUEUE_GET) == ops.encode(Op(name, OpCode.QUEUE_GET))
