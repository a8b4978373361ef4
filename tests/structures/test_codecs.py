"""Codecs: exact round trips, order preservation, clear refusals."""

from __future__ import annotations

import collections
import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.exceptions import BlizzardError, DecodeError, EncodeError, EncodeRangeError
from blizzard.structures.codecs import (
    BYTES,
    HASHABLE,
    INT,
    MSGPACK,
    PICKLE,
    STR,
    TUPLE,
    get_codec,
)

big_ints = st.integers(min_value=-(1 << 300), max_value=1 << 300)


@given(big_ints, big_ints)
def test_int_codec_round_trips_and_preserves_order(a, b):
    assert INT.decode(INT.encode(a)) == a
    assert (INT.encode(a) < INT.encode(b)) == (a < b)


@given(st.text(), st.text())
def test_str_codec_round_trips_and_preserves_order(a, b):
    assert STR.decode(STR.encode(a)) == a
    assert (STR.encode(a) < STR.encode(b)) == (a < b)


def test_surrogates_survive():
    assert STR.decode(STR.encode("\ud800x")) == "\ud800x"


def test_wrong_types_raise_useful_type_errors():
    with pytest.raises(TypeError, match="int codec takes int"):
        INT.encode("3")
    with pytest.raises(TypeError, match="not bool"):
        INT.encode(True)
    with pytest.raises(TypeError, match="str codec takes str"):
        STR.encode(b"x")
    with pytest.raises(TypeError, match="bytes codec takes bytes-like"):
        BYTES.encode(3)
    assert BYTES.encode(bytearray(b"ab")) == b"ab"


def test_lookup_by_name_type_and_instance():
    assert get_codec(None) is BYTES
    assert get_codec(str) is STR and get_codec("int") is INT and get_codec(INT) is INT
    assert get_codec(tuple) is TUPLE and get_codec("hashable") is HASHABLE
    with pytest.raises(ValueError, match="unknown codec 'json'; known: bytes, str, int"):
        get_codec("json")
    with pytest.raises(ValueError, match="no codec for type float"):
        get_codec(float)


def test_msgpack_codec():
    codec = get_codec("msgpack")
    value = {"a": [1, 2.5, None, b"x"], "b": {"c": True}}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(EncodeError, match="msgpack codec takes None, bool, int"):
        codec.encode(object())


# --- values come back as they went in, or are refused at write time ---------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
                    st.floats(allow_nan=False), st.text(), st.binary())
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.tuples(inner),
                         max_leaves=8)
msgpack_values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(hashables, inner, max_size=4)),
    max_leaves=16)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (True != 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
                and all(same(a[k], b[k]) for k in a))
    return a == b


@given(msgpack_values)
def test_msgpack_round_trips_exactly(value):
    """Tuples stay tuples, bytes stay bytes, bools stay bools, nested too."""
    assert same(MSGPACK.decode(MSGPACK.encode(value)), value)


@pytest.mark.parametrize("value", [
    bytearray(b"x"), [1, memoryview(b"x")], {"a": {1, 2}}, collections.OrderedDict(a=1),
    enum.IntEnum("E", "A").A, frozenset(), object(), {"k": [bytearray()]}])
def test_msgpack_refuses_what_it_would_change(value):
    with pytest.raises(EncodeError, match="msgpack codec takes") as info:
        MSGPACK.encode(value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, BlizzardError)


def test_msgpack_refuses_ints_out_of_range():
    for value in (1 << 64, -(1 << 63) - 1, [0, 1 << 70]):
        with pytest.raises(EncodeRangeError, match=r"\[-2\*\*63, 2\*\*64\)"):
            MSGPACK.encode(value)
    with pytest.raises(OverflowError):
        MSGPACK.encode(1 << 64)


def test_msgpack_decode_errors_are_clear():
    with pytest.raises(DecodeError, match="not a msgpack record"):
        MSGPACK.decode(b"\xc1")
    with pytest.raises(DecodeError, match="ext type 9"):
        MSGPACK.decode(b"\xd4\x09\x00")


tuple_keys = st.recursive(
    st.one_of(st.none(), st.integers(-(1 << 80), 1 << 80), st.binary(max_size=6),
              st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=8)


def order_key(value):
    """The order the tuple codec promises: None < int < bytes < str < tuple,
    element-wise within tuples (Python cannot compare across types itself)."""
    if value is None:
        return (0,)
    if isinstance(value, int):
        return (1, value)
    if isinstance(value, bytes):
        return (2, value)
    if isinstance(value, str):
        return (3, value.encode("utf-8", "surrogatepass"))
    return (4, tuple(order_key(item) for item in value))


@given(tuple_keys, tuple_keys)
def test_tuple_codec_round_trips_and_preserves_order(a, b):
    ea, eb = TUPLE.encode(a), TUPLE.encode(b)
    assert same(TUPLE.decode(ea), a) and same(TUPLE.decode(eb), b)
    assert (ea < eb) == (order_key(a) < order_key(b))
    assert (ea == eb) == same(a, b)


def test_tuple_codec_refuses_and_canonicalises():
    assert TUPLE.decode(TUPLE.encode((True, "a"))) == (1, "a")  # bool is the int it equals
    for bad in (1.5, [1], (1, 2.0), {"a": 1}):
        with pytest.raises(EncodeError, match="tuple codec takes None, int, bytes, str"):
            TUPLE.encode(bad)
    for raw in (b"", b"\x30abc", b"\x40\x10\x81", b"\x99", b"\x02\x02"):
        with pytest.raises(DecodeError):
            TUPLE.decode(raw)


@given(hashables)
def test_hashable_codec_equal_keys_encode_equal(key):
    """Keys equal in Python are one key (as in a dict); what comes back equals the key."""
    assert HASHABLE.decode(HASHABLE.encode(key)) == key
    assert HASHABLE.encode(True) == HASHABLE.encode(1) == HASHABLE.encode(1.0)
    assert HASHABLE.encode((0.0, False)) == HASHABLE.encode((0, -0.0))
    assert type(HASHABLE.decode(HASHABLE.encode(2.0))) is int


def test_hashable_codec_refuses_what_a_dict_key_cannot_be_or_it_cannot_store():
    for bad in ([1], {"a": 1}, (1, [2]), frozenset({1}), object()):
        with pytest.raises(EncodeError, match="hashable codec takes"):
            HASHABLE.encode(bad)


def test_pickle_codec_round_trips_what_pickle_does():
    value = {"a": {1, 2}, "b": collections.OrderedDict(x=bytearray(b"y")), "c": (1.5, None)}
    assert PICKLE.decode(PICKLE.encode(value)) == value
    assert PICKLE.encode(value)[:2] == b"\x80\x05"  # protocol 5, the same on every replica
    with pytest.raises(EncodeError, match="pickle codec cannot encode"):
        PICKLE.encode(lambda: None)
