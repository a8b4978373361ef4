"""Codecs: round trips, order preservation, helpful TypeErrors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.structures.codecs import BYTES, INT, STR, get_codec

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
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("pickle")


def test_msgpack_codec():
    pytest.importorskip("msgpack")
    codec = get_codec("msgpack")
    value = {"a": [1, 2.5, None, b"x"], "b": {"c": True}}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(TypeError, match="msgpack codec cannot encode"):
        codec.encode(object())
