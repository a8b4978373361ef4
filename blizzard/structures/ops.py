"""Op records: every mutating call on a structure, as compact versioned bytes.

An Op is what the replicator ships and the state machine applies; a
structure never mutates itself. Format version 1 (little-endian)::

    offset | size | field
    0      | 1    | version (1)
    1      | 1    | opcode (OpCode)
    2      | 1    | n: length of the structure name (0..48)
    3      | 1    | reserved, 0
    4      | 4    | a: length of the arguments
    8      | n    | structure name, UTF-8
    8 + n  | a    | arguments: every field but the last is a u32 length
                    followed by its bytes; the last field takes the rest

A record is exactly ``8 + n + a`` bytes long, so truncation and trailing
garbage are both detected. The number of argument fields is fixed per
opcode (``ARITY``). Decoding is the exact inverse of encoding.

Typed Python (C types and the opcodes as C constants in ``ops.pxd``).
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

import cython

from blizzard.exceptions import (
    InvalidArgumentError,
    InvalidNameError,
    OpDecodeError,
    OpVersionError,
)

if cython.compiled:
    from cython.cimports.blizzard.pmem._mem import store_u32, u32_of
    from cython.cimports.cpython.bytes import PyBytes_FromStringAndSize
    from cython.cimports.libc.string import memcpy
else:
    from blizzard.pmem._mem import u32_of

if not cython.compiled:  # the compiled build has these as C constants (ops.pxd)
    OP_VERSION = 1
    HEAD_SIZE = 8
HEAD = struct.Struct("<BBBxI")
U32 = struct.Struct("<I")
NAME_BYTES_MAX = 48
ARGS_BYTES_MAX = (1 << 32) - 1
assert HEAD.size == HEAD_SIZE == 8


class OpCode(enum.IntEnum):
    """Which operation; the high nibble says which kind of structure."""

    CREATE = 0x01  # args: kind, key codec, value codec
    DROP = 0x02  # args: none
    MAP_PUT = 0x10  # args: key, value
    MAP_DELETE = 0x11  # args: key; result: True if the key was there
    MAP_POP = 0x12  # args: key; result: the old value or None
    MAP_CLEAR = 0x13  # args: none
    QUEUE_PUT = 0x20  # args: value
    QUEUE_GET = 0x21  # args: none; result: the value or None when empty
    QUEUE_CLEAR = 0x22  # args: none
    # ordered maps (PBPlusTree, PSkipList): one group, the structure's name picks the core
    ORD_PUT = 0x30  # args: key, value
    ORD_DELETE = 0x31  # args: key; result: True if the key was there
    ORD_POP = 0x32  # args: key; result: the old value or None
    ORD_CLEAR = 0x33  # args: none
    ORD_POPITEM = 0x34  # args: index (i64 LE); result: (key, value), or an IndexError
    ORD_INIT = 0x3F  # args: parameters (u64 LE); only on a fresh, never-written structure


#: The opcodes as plain ints, for hot code (C constants in the compiled build: ops.pxd).
if not cython.compiled:
    CREATE, DROP = int(OpCode.CREATE), int(OpCode.DROP)
    MAP_PUT, MAP_DELETE = int(OpCode.MAP_PUT), int(OpCode.MAP_DELETE)
    MAP_POP, MAP_CLEAR = int(OpCode.MAP_POP), int(OpCode.MAP_CLEAR)
    QUEUE_PUT, QUEUE_GET, QUEUE_CLEAR = (
        int(OpCode.QUEUE_PUT), int(OpCode.QUEUE_GET), int(OpCode.QUEUE_CLEAR))
    ORD_PUT, ORD_DELETE, ORD_POP = int(OpCode.ORD_PUT), int(OpCode.ORD_DELETE), int(OpCode.ORD_POP)
    ORD_CLEAR, ORD_POPITEM, ORD_INIT = (
        int(OpCode.ORD_CLEAR), int(OpCode.ORD_POPITEM), int(OpCode.ORD_INIT))
assert list(OpCode) == [
    CREATE, DROP, MAP_PUT, MAP_DELETE, MAP_POP, MAP_CLEAR, QUEUE_PUT, QUEUE_GET, QUEUE_CLEAR,
    ORD_PUT, ORD_DELETE, ORD_POP, ORD_CLEAR, ORD_POPITEM, ORD_INIT]

#: Number of argument fields per opcode.
ARITY: dict[int, int] = {
    OpCode.CREATE: 3, OpCode.DROP: 0,
    OpCode.MAP_PUT: 2, OpCode.MAP_DELETE: 1, OpCode.MAP_POP: 1, OpCode.MAP_CLEAR: 0,
    OpCode.QUEUE_PUT: 1, OpCode.QUEUE_GET: 0, OpCode.QUEUE_CLEAR: 0,
    OpCode.ORD_PUT: 2, OpCode.ORD_DELETE: 1, OpCode.ORD_POP: 1, OpCode.ORD_CLEAR: 0,
    OpCode.ORD_POPITEM: 1, OpCode.ORD_INIT: 1,
}


class Op(NamedTuple):
    """A decoded Op; ``repr`` is valid Python, so failing tests replay."""

    name: str
    code: OpCode
    args: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        return f"Op({self.name!r}, OpCode.{self.code.name}, {self.args!r})"


def name_bytes(name: str) -> bytes:
    """The UTF-8 name, validated (1..48 bytes, no NUL) -- the pool's root-name rule."""
    if not isinstance(name, str):
        raise TypeError(f"structure names are str, got {type(name).__name__}")
    raw = name.encode("utf-8")
    if len(raw) > NAME_BYTES_MAX or b"\0" in raw:
        raise InvalidNameError(
            f"structure name {name!r} must be at most {NAME_BYTES_MAX} UTF-8 bytes, no NUL")
    return raw


def encode(op: Op) -> bytes:
    """The record for ``op``; raises ValueError for a wrong number of fields."""
    raw = name_bytes(op.name)
    code = OpCode(op.code)
    args = op.args
    if len(args) != ARITY[code]:
        raise ValueError(f"{code.name} takes {ARITY[code]} argument fields, got {len(args)}")
    parts = []
    for i, field in enumerate(args):
        if not isinstance(field, bytes | bytearray | memoryview):
            raise TypeError(f"Op arguments are bytes, got {type(field).__name__}")
        if i < len(args) - 1:
            parts.append(U32.pack(len(field)))
        parts.append(bytes(field))
    body = b"".join(parts)
    if len(body) > ARGS_BYTES_MAX:
        raise InvalidArgumentError(f"Op arguments of {len(body)} bytes exceed {ARGS_BYTES_MAX}")
    return HEAD.pack(OP_VERSION, code, len(raw), len(body)) + raw + body


def decode_head(record: bytes) -> tuple[int, int, int]:
    """``(opcode, name_end, args_start)`` after validating version and length."""
    size = len(record)
    if size < HEAD_SIZE:
        raise OpDecodeError(f"Op record truncated: {size} bytes, the header alone is {HEAD_SIZE}")
    version, code, n, a = HEAD.unpack_from(record, 0)
    if version != OP_VERSION:
        raise OpVersionError(
            f"Op record version {version}; this release reads version {OP_VERSION}")
    if HEAD_SIZE + n + a != size:
        what = "truncated" if HEAD_SIZE + n + a > size else "has trailing bytes"
        raise OpDecodeError(f"Op record {what}: {size} bytes, header says {HEAD_SIZE + n + a}")
    return code, HEAD_SIZE + n, HEAD_SIZE + n


def split_args(record: bytes | memoryview, start: int, count: int) -> list[bytes]:
    """The ``count`` argument fields of ``record`` from ``start``."""
    fields = []
    size = len(record)
    pos = start
    for _ in range(count - 1):
        if pos + 4 > size:
            raise OpDecodeError("Op record truncated inside an argument length")
        (n,) = U32.unpack_from(record, pos)
        pos += 4
        if pos + n > size:
            raise OpDecodeError(f"Op argument of {n} bytes runs past the record's end")
        fields.append(bytes(record[pos:pos + n]))
        pos += n
    if count:
        fields.append(bytes(record[pos:]))
    elif pos != size:
        raise OpDecodeError("Op record has arguments its opcode does not take")
    return fields


def decode(record: bytes) -> Op:
    """The Op in ``record``; :class:`OpDecodeError` if it is not a valid v1 record."""
    record = bytes(record)
    code, name_end, args_start = decode_head(record)
    try:
        opcode = OpCode(code)
    except ValueError:
        raise OpDecodeError(f"unknown opcode {code:#x}") from None
    try:
        name = record[HEAD_SIZE:name_end].decode("utf-8")
    except UnicodeDecodeError:
        raise OpDecodeError("Op structure name is not UTF-8") from None
    if len(record[HEAD_SIZE:name_end]) > NAME_BYTES_MAX:
        raise OpDecodeError(f"Op structure name longer than {NAME_BYTES_MAX} bytes")
    return Op(name, opcode, tuple(split_args(record, args_start, ARITY[opcode])))


class Encoder:
    """One structure's Op records, built without intermediate objects.

    ``two(MAP_PUT, key, value)``, ``one(code, field)`` and ``zero(code)``
    return the same bytes as ``encode(Op(name, code, fields))``, for the
    opcodes whose fields are bytes (codecs' output).
    """

    def __init__(self, name: str) -> None:
        self._name = name_bytes(name)

    def two(self, code: int, first: bytes, rest: bytes) -> bytes:
        """A two-field Op (MAP_PUT)."""
        return record(code, self._name, first, rest)

    def one(self, code: int, field: bytes) -> bytes:
        """A one-field Op (MAP_DELETE, MAP_POP, QUEUE_PUT)."""
        return record(code, self._name, None, field)

    def zero(self, code: int) -> bytes:
        """An Op without arguments (QUEUE_GET, clears, DROP)."""
        return record(code, self._name, None, b"")


def record(code: int, name: bytes, first: bytes | None, rest: bytes) -> bytes:
    """The record ``[head | name | u32 len(first) | first | rest]`` (no ``first``: one
    field, or none when ``rest`` is empty); ``name`` is valid (see :func:`name_bytes`).

    The compiled build writes the fields straight into one new bytes object.
    """
    if type(rest) is not bytes:
        rest = bytes(rest)
    if first is not None and type(first) is not bytes:
        first = bytes(first)
    n = len(name)
    args = len(rest) if first is None else 4 + len(first) + len(rest)
    if args > ARGS_BYTES_MAX:
        raise InvalidArgumentError(f"Op arguments of {args} bytes exceed {ARGS_BYTES_MAX}")
    if cython.compiled:
        out = PyBytes_FromStringAndSize(cython.NULL, HEAD_SIZE + n + args)
        p = cython.cast(cython.p_uchar, out)
        p[0], p[1], p[2], p[3] = OP_VERSION, code, n, 0
        store_u32(p + 4, args)
        memcpy(p + HEAD_SIZE, cython.cast(cython.p_char, name), n)
        at = HEAD_SIZE + n
        if first is not None:
            store_u32(p + at, len(first))
            memcpy(p + at + 4, cython.cast(cython.p_char, first), len(first))
            at += 4 + len(first)
        memcpy(p + at, cython.cast(cython.p_char, rest), len(rest))
        return out
    head = HEAD.pack(OP_VERSION, code, n, args) + name
    if first is None:
        return head + rest
    return head + U32.pack(len(first)) + first + rest


def key_bounds(record: bytes, start: int, what: str, key_bytes_max: int) -> tuple[int, int]:
    """Where the key of a key + value record starts and ends (the value is the
    rest), validated before anything is touched: clear ``OpDecodeError``s."""
    size = len(record)
    if start + 4 > size:
        raise OpDecodeError(f"{what} truncated inside its key length")
    klen = u32_of(record, start)
    ks = start + 4
    if ks + klen > size:
        raise OpDecodeError(f"{what} key runs past the record's end")
    if klen > key_bytes_max:
        raise OpDecodeError(f"{what} key of {klen} bytes exceeds {key_bytes_max}")
    return ks, ks + klen
