"""A cluster's structures from another process: the local faces over the network.

``RemoteHashMap`` *is* a :class:`~blizzard.structures.PHashMap` (and so on
for the queue and the ordered maps): the same class, with the same methods,
codecs and exceptions, bound to a network core instead of a pool. Each
structure face reads through a *core* and writes through a *replicator*;
here the core turns every read into a READ request (a linearizable one,
unless ``linearizable=False``: the node passes a read barrier first) and the
replicator turns every write into a SUBMIT of the same Op record the local
face would apply.

Scans go page by page, each page one request, resumed from the *data*
(the last key returned, a queue's sequence number), never from a position
in the layout: a scan that spans writes, or moves to another node after a
leader change, still returns what stayed present throughout exactly once.
A scan is not a snapshot: each page is linearizable on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from blizzard.cluster import protocol as proto
from blizzard.cluster.protocol import ReadKind, ScanArgs
from blizzard.exceptions import CodecMismatchError, NoSuchStructureError, StructureKindError
from blizzard.replication.base import Replicator
from blizzard.structures import KIND_OF_TAG, PBPlusTree, PHashMap, PQueue, PSkipList, ops
from blizzard.structures.codecs import CODECS, CodecLike, get_codec
from blizzard.structures.ops import OpCode

if TYPE_CHECKING:
    from blizzard.cluster.client import Client

PAGE_ITEMS = 1000


class RemoteReplicator(Replicator):
    """Writes of remote faces: every Op is a SUBMIT through the client (which
    retries it, with the same session, on another node if need be)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def submit(self, op: bytes) -> Any:
        return self.client.submit(op)

    def submit_many(self, records: list[bytes]) -> list[Any]:
        return self.client.submit_many(records)

    def stats(self) -> dict[str, Any]:
        return {"backend": "remote"}


# -- cores: the read side, as requests -------------------------------------------------


class _Core:
    """Reads of one remote structure; the names are those of the local cores."""

    def __init__(self, client: Client, name: str, info: dict[str, Any], stale: bool) -> None:
        self.client = client
        self.name = name
        self.key_codec = info["key_codec"]
        self.value_codec = info["value_codec"]
        self.stale = stale

    def _value(self, read: ReadKind, args: bytes = b"") -> Any:
        return self.client.read_value(read, self.name, args, stale=self.stale)

    def _page(self, read: ReadKind, args: bytes) -> tuple[int, list[bytes]]:
        return proto.decode_page(self.client.read(read, self.name, args, stale=self.stale))

    @property
    def count(self) -> int:
        return self._value(ReadKind.LEN)

    def check(self) -> None:
        """Check the whole pool of the node answering (every structure in it)."""
        self.client.check(stale=self.stale)


class _MapCore(_Core):
    def get(self, kb: bytes) -> bytes | None:
        return self._value(ReadKind.GET, kb)

    def _scan(self, scan: ScanArgs) -> tuple[bool, list[tuple[bytes, bytes | None]]]:
        """``(done, rows)`` of one SCAN request."""
        cursor, fields = self._page(ReadKind.SCAN, proto.scan_args(scan))
        if scan.values:
            rows = list(zip(fields[::2], fields[1::2], strict=True))
        else:
            rows = [(key, None) for key in fields]
        return cursor == proto.END, rows

    def _scan_all(self, scan: ScanArgs) -> Iterator[tuple[bytes, bytes | None]]:
        while True:
            done, rows = self._scan(scan)
            yield from rows
            if done or not rows:
                return
            scan = scan._replace(after=rows[-1][0])

    def scan_after(self, after: bytes | None, limit: int, values: bool = True
                   ) -> list[tuple[bytes, bytes | None]]:
        return self._scan(ScanArgs(values, after, limit))[1]

    def keys_raw(self) -> Iterator[bytes]:
        for key, _ in self._scan_all(ScanArgs(False, None, PAGE_ITEMS)):
            yield key

    def items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        return self._scan_all(ScanArgs(True, None, PAGE_ITEMS))


class _OrderedCore(_MapCore):
    def __init__(self, client: Client, name: str, info: dict[str, Any], stale: bool) -> None:
        super().__init__(client, name, info, stale)
        self.fanout = info.get("fanout")

    def items_range(self, lo: bytes | None, hi: bytes | None, lo_incl: bool, hi_incl: bool,
                    reverse: bool, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        return self._scan_all(ScanArgs(values, None, PAGE_ITEMS, lo, hi, lo_incl, hi_incl,
                                       reverse))

    def item_at(self, index: int) -> tuple[bytes, bytes]:
        key, value = self._page(ReadKind.PEEKITEM, proto.index_args(index))[1]
        return key, value

    def rank(self, kb: bytes, right: bool) -> int:
        return self._value(ReadKind.BISECT, bytes((int(right),)) + kb)

    def index_of(self, kb: bytes) -> int:
        """Position of ``kb``, or ValueError -- one request, so never torn by a write."""
        return self._value(ReadKind.INDEX, kb)


class _QueueCore(_Core):
    def peek(self) -> bytes | None:
        return self._value(ReadKind.PEEK)

    def page(self, start: int | None, limit: int) -> tuple[int, list[bytes]]:
        args = proto.page_args(proto.END if start is None else start, limit)
        return self._page(ReadKind.QUEUE_SCAN, args)

    def values(self) -> Iterator[bytes]:
        start = None
        while True:
            seq, values = self.page(start, PAGE_ITEMS)
            if not values:
                return
            yield from values
            start = seq + len(values)


# -- opening -------------------------------------------------------------------------------


def _open(client: Client, name: str, tag: bytes, key_codec: CodecLike,
          value_codec: CodecLike, create: bool, stale: bool) -> dict[str, Any]:
    """The structure's INFO, creating it (one SUBMIT) if it is missing and
    ``create``; the same errors as opening it locally."""
    kc = None if key_codec is None else get_codec(key_codec).name
    vc = None if value_codec is None else get_codec(value_codec).name
    ops.name_bytes(name)  # a bad name is refused here, as locally
    try:
        info = client.info(name, stale=stale)
    except NoSuchStructureError:
        if not create:
            raise
        client.submit(ops.encode(ops.Op(name, OpCode.CREATE, (
            tag, (kc or "bytes").encode(), (vc or "bytes").encode()))))
        info = client.info(name, stale=False)
    if info["kind"] != tag.decode():
        have = KIND_OF_TAG.get(info["kind"].encode(), info["kind"])
        raise StructureKindError(f"{name!r} is a {have}, not a {KIND_OF_TAG[tag]}")
    for what, asked, key in (("key", kc, "key_codec"), ("value", vc, "value_codec")):
        if asked is not None and asked != info[key]:
            raise CodecMismatchError(
                f"{name!r} was created with {what} codec {info[key]!r}, not {asked!r}")
    return info


class _Remote:
    """What every remote face adds to its local class."""

    client: Client

    def stats(self) -> dict[str, int]:
        return {"count": len(self)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self.client!r}>"


class RemoteHashMap(_Remote, PHashMap):
    """A cluster's :class:`~blizzard.structures.PHashMap`: the same methods,
    each read one request (a scan one per page), each write one SUBMIT."""

    def __init__(self, client: Client, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, linearizable: bool | None = None,
                 create: bool = True) -> None:
        stale = linearizable is False
        info = _open(client, name, PHashMap.tag, key_codec, value_codec, create, stale)
        self.client = client
        self.pool = None
        self._bind(name, _MapCore(client, name, info, stale), client.replicator, False, False)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Put many pairs, pipelined (see :meth:`Client.submit_many`).

        Pipelined writes may apply in any order, so a key given twice is sent
        once, with its last value (what a sequential update would leave).
        """
        pairs = other.items() if hasattr(other, "items") else other
        kenc, venc, two = self._kenc, self._venc, self._encoder.two
        last = {kenc(k): v for k, v in itertools.chain(pairs, kwargs.items())}
        _raise_first(self.client.submit_many(
            [two(OpCode.MAP_PUT, kb, venc(v)) for kb, v in last.items()]))


class _RemoteOrdered(_Remote):
    def __init__(self, client: Client, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, linearizable: bool | None = None,
                 create: bool = True, param: int | None = None) -> None:
        if key_codec is not None and not get_codec(key_codec).ordered:
            ordered = ", ".join(name for name, c in CODECS.items() if c.ordered)
            raise ValueError(f"a {self._kind} needs an ordered key codec ({ordered}), "
                             f"not {get_codec(key_codec).name!r}")
        stale = linearizable is False
        try:
            info = _open(client, name, self.tag, key_codec, value_codec, False, stale)
            created = False
        except NoSuchStructureError:
            if not create:
                raise
            info = _open(client, name, self.tag, key_codec, value_codec, True, stale)
            created = True
        self.client = client
        self.pool = None
        self._bind(name, _OrderedCore(client, name, info, stale), client.replicator, False,
                   False)
        if param is not None and (created or info.get("fanout", param) != param):
            # as locally: a parameter is an Op of its own, accepted before the first write
            self._submit(self._encoder.one(OpCode.ORD_INIT, param.to_bytes(8, "little")))
            if "fanout" in info:
                self._core.fanout = param

    def index(self, key: Any) -> int:
        """Position of ``key`` in key order (ValueError if absent); one request."""
        return self._core.index_of(self._kenc(key))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Put many pairs, pipelined; a key given twice is sent once, with its last value."""
        pairs = other.items() if hasattr(other, "items") else other
        kenc, venc, two = self._kenc, self._venc, self._encoder.two
        last = {kenc(k): v for k, v in itertools.chain(pairs, kwargs.items())}
        _raise_first(self.client.submit_many(
            [two(OpCode.ORD_PUT, kb, venc(v)) for kb, v in last.items()]))


class RemoteBPlusTree(_RemoteOrdered, PBPlusTree):
    """A cluster's :class:`~blizzard.structures.PBPlusTree`: the same methods
    (``irange``, ``bisect_*``, ``peekitem``, ``popitem``, ``index``...)."""

    def __init__(self, client: Client, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, fanout: int | None = None,
                 linearizable: bool | None = None, create: bool = True) -> None:
        _RemoteOrdered.__init__(self, client, name, key_codec=key_codec,
                                value_codec=value_codec, linearizable=linearizable,
                                create=create, param=fanout)


class RemoteSkipList(_RemoteOrdered, PSkipList):
    """A cluster's :class:`~blizzard.structures.PSkipList`: the same methods."""

    def __init__(self, client: Client, name: str, *, key_codec: CodecLike = None,
                 value_codec: CodecLike = None, seed: int | None = None,
                 linearizable: bool | None = None, create: bool = True) -> None:
        _RemoteOrdered.__init__(self, client, name, key_codec=key_codec,
                                value_codec=value_codec, linearizable=linearizable,
                                create=create, param=seed)



class RemoteQueue(_Remote, PQueue):
    """A cluster's :class:`~blizzard.structures.PQueue`: put/get/peek/len/iteration."""

    def __init__(self, client: Client, name: str, *, value_codec: CodecLike = None,
                 linearizable: bool | None = None, create: bool = True) -> None:
        stale = linearizable is False
        info = _open(client, name, PQueue.tag, None, value_codec, create, stale)
        self.client = client
        self.pool = None
        self._bind(name, _QueueCore(client, name, info, stale), client.replicator, False,
                   False)

    def put_many(self, items: Iterable[Any]) -> None:
        """Append many items, pipelined: their order in the queue is not guaranteed."""
        one, enc = self._encoder.one, self._venc
        _raise_first(self.client.submit_many([one(OpCode.QUEUE_PUT, enc(i)) for i in items]))


def _raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result
