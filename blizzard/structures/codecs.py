"""Codecs: how keys and values become the bytes a structure stores.

A codec is chosen when a structure is created and its name is stored in the
pool, so reopening needs no arguments. ``ordered`` codecs promise that the
byte order of encodings equals the natural order of the values: ordered
structures (B+tree, skiplist) need that for their keys.

Every codec gives back exactly what it was given, or refuses it at write time
with :class:`~blizzard.exceptions.EncodeError` (a TypeError) or
:class:`~blizzard.exceptions.EncodeRangeError` (an OverflowError): it never
changes a type silently.

=========  ========  ==========================================================
name       ordered   what round-trips exactly
=========  ========  ==========================================================
bytes      yes       bytes (bytearray and memoryview are accepted as keys and
                     stored as their bytes; they come back as bytes)
str        yes       str: UTF-8 (surrogatepass), byte order == code point order
int        yes       int of up to 126 bytes of magnitude (not bool)
tuple      yes       None, int, bytes, str and tuples of them, mixed in one
                     map; types order None < int < bytes < str < tuple, and
                     bool is stored as the int it equals (True comes back as 1)
msgpack    no        None, bool, int in [-2**63, 2**64), float, str, bytes,
                     list, tuple, and dict whose keys are any of these but
                     list and dict -- exact types only (no subclasses, no
                     bytearray: they would come back as their base type)
hashable   no        for PHashMap keys of mixed types, as dict allows: None,
                     bool, int, float, str, bytes and tuples of them. Keys
                     equal in Python are one key, as in a dict, and come back
                     in one canonical form: True and 1.0 come back as 1
pickle     no        whatever :mod:`pickle` round-trips (protocol 5). Only for
                     data you trust: unpickling runs code, so in a replicated
                     cluster any node (or anyone who can write to a pool or
                     reach an unauthenticated port) could run code in yours
=========  ========  ==========================================================
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import msgpack

from blizzard.exceptions import DecodeError, EncodeError, EncodeRangeError, UnknownCodecError

INT_BYTES_MAX = 126  # the prefix byte stays within 0x01..0xFE
CODEC_NAME_BYTES_MAX = 16
PICKLE_PROTOCOL = 5  # fixed, so every replica stores the same bytes for an Op


class Codec:
    """A named pair of ``encode(obj) -> bytes`` / ``decode(bytes) -> obj``.

    ``encode`` raises :class:`EncodeError` (a TypeError naming the codec) for
    an object it does not store exactly. Codecs are plain objects holding two
    functions, so hot paths bind ``codec.encode`` once.
    """

    __slots__ = ("decode", "encode", "name", "ordered")

    def __init__(self, name: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any],
                 *, ordered: bool) -> None:
        assert len(name.encode()) <= CODEC_NAME_BYTES_MAX
        self.name = name
        self.encode = encode
        self.decode = decode
        self.ordered = ordered

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


def _refuse(codec: str, obj: Any, takes: str) -> EncodeError:
    return EncodeError(
        f"the {codec} codec takes {takes}, got {type(obj).__name__}: {obj!r:.60}")


# -- bytes, str, int -------------------------------------------------------------------


def _encode_bytes(obj: Any) -> bytes:
    if type(obj) is bytes:
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    raise _refuse("bytes", obj, "bytes-like objects")


def _decode_bytes(raw: bytes) -> bytes:
    return raw


def _encode_str(obj: Any) -> bytes:
    if type(obj) is not str and not isinstance(obj, str):
        raise _refuse("str", obj, "str")
    return obj.encode("utf-8", "surrogatepass")


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _encode_int(obj: Any) -> bytes:
    if type(obj) is not int and (not isinstance(obj, int) or isinstance(obj, bool)):
        raise _refuse("int", obj, "int (not bool)")
    return _int_bytes(obj)


def _int_bytes(obj: int) -> bytes:
    """1 prefix byte (0x80 + n for n magnitude bytes >= 0, 0x7F - n for
    negatives) + the big-endian magnitude (complemented for negatives)."""
    if obj >= 0:
        n = (obj.bit_length() + 7) >> 3
        if n > INT_BYTES_MAX:
            raise EncodeRangeError(
                f"ordered int codecs hold at most {INT_BYTES_MAX} bytes of magnitude")
        return (0x80 + n).to_bytes(1, "big") + obj.to_bytes(n, "big")
    m = -obj - 1  # -1 -> 0, so the encodings of negatives are dense too
    n = (m.bit_length() + 7) >> 3
    if n > INT_BYTES_MAX:
        raise EncodeRangeError(
            f"ordered int codecs hold at most {INT_BYTES_MAX} bytes of magnitude")
    # Complementing the magnitude makes bigger magnitudes sort first.
    return (0x7F - n).to_bytes(1, "big") + ((1 << (8 * n)) - 1 - m).to_bytes(n, "big")


def _int_length(raw: bytes, pos: int) -> int:
    """Bytes taken by the int encoded at ``raw[pos]`` (prefix included)."""
    if pos >= len(raw):
        raise DecodeError(f"int encoding {raw!r:.40} is truncated")
    prefix = raw[pos]
    n = prefix - 0x80 if prefix >= 0x80 else 0x7F - prefix
    if not 0 <= n <= INT_BYTES_MAX or pos + 1 + n > len(raw):
        raise DecodeError(f"int encoding {raw!r:.40} has a bad length")
    return 1 + n


def _decode_int(raw: bytes) -> int:
    if _int_length(raw, 0) != len(raw):
        raise DecodeError(f"int encoding {raw!r:.40} has a bad length")
    prefix = raw[0]
    body = raw[1:]
    if prefix >= 0x80:
        return int.from_bytes(body, "big")
    n = 0x7F - prefix
    return -((1 << (8 * n)) - 1 - int.from_bytes(body, "big")) - 1


# -- tuple: ordered keys of mixed types ----------------------------------------------
#
# Each element is a tag byte and a body: None 0x02; int 0x10 + the int
# encoding above (self-delimiting); bytes 0x20 and str 0x30 + the bytes with
# each NUL escaped as 00 FF, then a 00 terminator; a nested tuple 0x40 + its
# elements + a 00 terminator. Terminators sort below every tag and escapes
# above, so a prefix sorts first and byte order is element-wise order.

_T_NONE, _T_INT, _T_BYTES, _T_STR, _T_TUPLE, _T_END = 0x02, 0x10, 0x20, 0x30, 0x40, 0x00
_TUPLE_TAKES = "None, int, bytes, str or tuples of them"


def _tuple_element(obj: Any, out: bytearray) -> None:
    t = type(obj)
    if t is str:
        out.append(_T_STR)
        out += obj.encode("utf-8", "surrogatepass").replace(b"\0", b"\0\xff")
        out.append(_T_END)
    elif t is int or t is bool:
        out.append(_T_INT)
        out += _int_bytes(int(obj))
    elif t is bytes:
        out.append(_T_BYTES)
        out += obj.replace(b"\0", b"\0\xff")
        out.append(_T_END)
    elif obj is None:
        out.append(_T_NONE)
    elif t is tuple:
        out.append(_T_TUPLE)
        for item in obj:
            _tuple_element(item, out)
        out.append(_T_END)
    else:
        raise _refuse("tuple", obj, _TUPLE_TAKES)


def _encode_tuple(obj: Any) -> bytes:
    out = bytearray()
    _tuple_element(obj, out)
    return bytes(out)


def _tuple_escaped(raw: bytes, pos: int) -> tuple[bytes, int]:
    """The unescaped bytes starting at ``pos``, and the position after their terminator."""
    parts = []
    while True:
        end = raw.find(b"\0", pos)
        if end < 0:
            raise DecodeError(f"tuple encoding {raw!r:.40} is truncated")
        parts.append(raw[pos:end])
        if end + 1 < len(raw) and raw[end + 1] == 0xFF:
            parts.append(b"\0")
            pos = end + 2
        else:
            return b"".join(parts), end + 1


def _tuple_decode_at(raw: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(raw):
        raise DecodeError(f"tuple encoding {raw!r:.40} is truncated")
    tag = raw[pos]
    pos += 1
    if tag == _T_STR:
        body, pos = _tuple_escaped(raw, pos)
        return body.decode("utf-8", "surrogatepass"), pos
    if tag == _T_INT:
        n = _int_length(raw, pos)
        return _decode_int(raw[pos:pos + n]), pos + n
    if tag == _T_BYTES:
        return _tuple_escaped(raw, pos)
    if tag == _T_NONE:
        return None, pos
    if tag == _T_TUPLE:
        items = []
        while pos < len(raw) and raw[pos] != _T_END:
            item, pos = _tuple_decode_at(raw, pos)
            items.append(item)
        if pos >= len(raw):
            raise DecodeError(f"tuple encoding {raw!r:.40} is truncated")
        return tuple(items), pos + 1
    raise DecodeError(f"tuple encoding {raw!r:.40} has an unknown tag {tag:#04x}")


def _decode_tuple(raw: bytes) -> Any:
    obj, end = _tuple_decode_at(bytes(raw), 0)
    if end != len(raw):
        raise DecodeError(f"tuple encoding {raw!r:.40} has trailing bytes")
    return obj


# -- msgpack: values -------------------------------------------------------------------
#
# strict_types makes msgpack hand tuples and every subclass to ``default``
# instead of converting them; tuples become ext type 1 (their items packed as
# an array), everything else that default sees is refused. bytearray and
# memoryview are packed as bytes even so, hence the walk that refuses them.

_EXT_TUPLE = 1
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_MSGPACK_TAKES = ("None, bool, int, float, str, bytes, list, tuple or dict "
                  "(exact types: no subclasses, no bytearray)")
_INT_MIN, _INT_END = -(1 << 63), 1 << 64


def _msgpack_default(obj: Any) -> Any:
    if type(obj) is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _packb(list(obj)))
    if type(obj) is int:
        raise EncodeRangeError(
            f"the msgpack codec holds ints in [-2**63, 2**64), got {obj!s:.60}")
    raise _refuse("msgpack", obj, _MSGPACK_TAKES)


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_msgpack_default)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpackb(data))
    raise DecodeError(f"msgpack ext type {code} is not one this codec writes")


def _unpackb(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    except (ValueError, msgpack.UnpackException) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"not a msgpack record: {exc}") from None


def _refuse_buffers(obj: Any) -> None:
    """Raise for a bytearray or memoryview anywhere inside ``obj``."""
    stack = [obj]
    while stack:
        item = stack.pop()
        t = type(item)
        if t in _SCALARS:
            continue
        if t is list or t is tuple:
            stack.extend(item)
        elif t is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif t is bytearray or t is memoryview:
            raise _refuse("msgpack", item, _MSGPACK_TAKES)


def _encode_msgpack(obj: Any) -> bytes:
    if type(obj) not in _SCALARS:
        _refuse_buffers(obj)
    return _packb(obj)


# -- hashable: PHashMap keys of mixed types ----------------------------------------------


def _canonical_key(obj: Any) -> Any:
    """The one form of a key among those equal to it in Python (1, 1.0, True)."""
    t = type(obj)
    if t is str or t is bytes or t is int or obj is None:
        return obj
    if t is bool:
        return int(obj)
    if t is float:
        return int(obj) if obj.is_integer() and _INT_MIN <= obj < _INT_END else obj
    if t is tuple:
        return tuple(_canonical_key(item) for item in obj)
    raise _refuse("hashable", obj, "None, bool, int, float, str, bytes or tuples of them")


def _encode_hashable(obj: Any) -> bytes:
    return _packb(_canonical_key(obj))


# -- pickle ------------------------------------------------------------------------------


def _encode_pickle(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise EncodeError(f"the pickle codec cannot encode {type(obj).__name__}: {exc}") from None


def _decode_pickle(raw: bytes) -> Any:
    return pickle.loads(raw)


BYTES = Codec("bytes", _encode_bytes, _decode_bytes, ordered=True)
STR = Codec("str", _encode_str, _decode_str, ordered=True)
INT = Codec("int", _encode_int, _decode_int, ordered=True)
TUPLE = Codec("tuple", _encode_tuple, _decode_tuple, ordered=True)
MSGPACK = Codec("msgpack", _encode_msgpack, _unpackb, ordered=False)
HASHABLE = Codec("hashable", _encode_hashable, _unpackb, ordered=False)
PICKLE = Codec("pickle", _encode_pickle, _decode_pickle, ordered=False)
CODECS = {c.name: c for c in (BYTES, STR, INT, TUPLE, MSGPACK, HASHABLE, PICKLE)}
_BY_TYPE = {bytes: BYTES, str: STR, int: INT, tuple: TUPLE}

CodecLike = Codec | str | type | None


def get_codec(spec: CodecLike) -> Codec:
    """The codec for a name (``"str"``), a type (``str``, ``int``, ``bytes``,
    ``tuple``) or a Codec. ``None`` means bytes."""
    if spec is None:
        return BYTES
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, type):
        found = _BY_TYPE.get(spec)
        if found is None:
            raise UnknownCodecError(f"no codec for type {spec.__name__}; "
                             f"types with one: {', '.join(t.__name__ for t in _BY_TYPE)}")
        return found
    if not isinstance(spec, str):
        raise TypeError(f"a codec is a name, a type or a Codec, got {spec!r}")
    found = CODECS.get(spec)
    if found is None:
        raise UnknownCodecError(f"unknown codec {spec!r}; known: {', '.join(CODECS)}")
    return found
