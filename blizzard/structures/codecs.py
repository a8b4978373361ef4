"""Codecs: how keys and values become the bytes a structure stores.

A codec is chosen when a structure is created and its name is stored in the
pool, so reopening needs no arguments. ``ordered`` codecs promise that the
byte order of encodings equals the natural order of the values (bytes, str,
int): ordered structures (B+tree, skiplist) need that for their keys.

=========  ========  ===================================================
name       ordered   encoding
=========  ========  ===================================================
bytes      yes       the bytes themselves (bytes-like accepted)
str        yes       UTF-8 (surrogatepass): byte order == code point order
int        yes       1 prefix byte (0x80 + n for n magnitude bytes >= 0,
                     0x7F - n for negatives) + big-endian magnitude
                     (complemented for negatives)
msgpack    no        msgpack (optional dependency ``msgpack``)
=========  ========  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

INT_BYTES_MAX = 126  # the prefix byte stays within 0x01..0xFE
CODEC_NAME_BYTES_MAX = 16


class Codec:
    """A named pair of ``encode(obj) -> bytes`` / ``decode(bytes) -> obj``.

    ``encode`` raises TypeError (naming the codec) for an object of the wrong
    type. Codecs are plain objects holding two functions, so hot paths bind
    ``codec.encode`` once.
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


def _encode_bytes(obj: Any) -> bytes:
    if type(obj) is bytes:
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    raise TypeError(
        f"the bytes codec takes bytes-like objects, got {type(obj).__name__}: {obj!r:.60}")


def _decode_bytes(raw: bytes) -> bytes:
    return raw


def _encode_str(obj: Any) -> bytes:
    if type(obj) is not str and not isinstance(obj, str):
        raise TypeError(
            f"the str codec takes str, got {type(obj).__name__}: {obj!r:.60}")
    return obj.encode("utf-8", "surrogatepass")


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _encode_int(obj: Any) -> bytes:
    if type(obj) is not int and (not isinstance(obj, int) or isinstance(obj, bool)):
        raise TypeError(
            f"the int codec takes int (not bool), got {type(obj).__name__}: {obj!r:.60}")
    if obj >= 0:
        n = (obj.bit_length() + 7) >> 3
        if n > INT_BYTES_MAX:
            raise OverflowError(f"the int codec holds at most {INT_BYTES_MAX} bytes of magnitude")
        return (0x80 + n).to_bytes(1, "big") + obj.to_bytes(n, "big")
    m = -obj - 1  # -1 -> 0, so the encodings of negatives are dense too
    n = (m.bit_length() + 7) >> 3
    if n > INT_BYTES_MAX:
        raise OverflowError(f"the int codec holds at most {INT_BYTES_MAX} bytes of magnitude")
    # Complementing the magnitude makes bigger magnitudes sort first.
    return (0x7F - n).to_bytes(1, "big") + ((1 << (8 * n)) - 1 - m).to_bytes(n, "big")


def _decode_int(raw: bytes) -> int:
    prefix = raw[0]
    body = raw[1:]
    if prefix >= 0x80:
        if len(body) != prefix - 0x80:
            raise ValueError(f"int encoding {raw!r:.40} has a bad length")
        return int.from_bytes(body, "big")
    n = 0x7F - prefix
    if len(body) != n:
        raise ValueError(f"int encoding {raw!r:.40} has a bad length")
    return -((1 << (8 * n)) - 1 - int.from_bytes(body, "big")) - 1


def _msgpack_codec() -> Codec:
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the msgpack codec needs the 'msgpack' package (pip install msgpack)") from exc
    packb = msgpack.packb
    unpackb = msgpack.unpackb

    def encode(obj: Any) -> bytes:
        try:
            return packb(obj, use_bin_type=True)
        except TypeError as exc:
            raise TypeError(
                f"the msgpack codec cannot encode {type(obj).__name__}: {exc}") from None

    def decode(raw: bytes) -> Any:
        return unpackb(raw, raw=False, strict_map_key=False)

    return Codec("msgpack", encode, decode, ordered=False)


BYTES = Codec("bytes", _encode_bytes, _decode_bytes, ordered=True)
STR = Codec("str", _encode_str, _decode_str, ordered=True)
INT = Codec("int", _encode_int, _decode_int, ordered=True)
_BUILTIN = {c.name: c for c in (BYTES, STR, INT)}
_cache: dict[str, Codec] = {}

CodecLike = Codec | str | type | None


def get_codec(spec: CodecLike) -> Codec:
    """The codec for a name (``"str"``), a type (``str``, ``int``, ``bytes``) or a Codec.

    ``None`` means bytes.
    """
    if spec is None:
        return BYTES
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, type):
        spec = {bytes: "bytes", str: "str", int: "int"}.get(spec, spec.__name__)
    if not isinstance(spec, str):
        raise TypeError(f"a codec is a name, a type or a Codec, got {spec!r}")
    found = _BUILTIN.get(spec) or _cache.get(spec)
    if found is not None:
        return found
    if spec == "msgpack":
        codec = _cache[spec] = _msgpack_codec()
        return codec
    raise ValueError(f"unknown codec {spec!r}; known: bytes, str, int, msgpack")
