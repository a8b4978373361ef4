"""The client protocol: frame round trips, and a real server (a one-node
``blizzard serve`` process) refusing bad frames with a clear log line while it
keeps serving."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from blizzard.cluster import protocol as proto
from blizzard.cluster.protocol import (
    Kind,
    NoSuchStructureError,
    ReadKind,
    Request,
    Response,
    Status,
)
from blizzard.exceptions import OpDecodeError
from blizzard.replication.sessions import StaleRequestError
from blizzard.structures import ops
from blizzard.structures.ops import OpCode
from tests.cluster.test_processes import ProcessCluster

# -- encoding, no server ---------------------------------------------------------------------


def _body(frame: bytes) -> bytes:
    (n,) = proto.FRAME.unpack_from(frame, 0)
    assert len(frame) == 4 + n
    return frame[4:]


def test_request_and_response_round_trip():
    request = Request(Kind.SUBMIT, 7, 0xDEADBEEF, 42, b"op bytes", proto.STALE)
    assert proto.decode_request(_body(proto.encode_request(request))) == request
    for status in Status:
        response = Response(2**64 - 1, status, b"\x00payload", 3)
        assert proto.decode_response(_body(proto.encode_response(response))) == response


def test_payload_round_trips():
    for value in (None, True, False, 0, -5, 2**70, b"", b"\xffbytes", "text"):
        assert proto.decode_value(proto.encode_value(value)) == value
    error = proto.decode_value(proto.encode_value(OpDecodeError("bad op")))
    assert isinstance(error, OpDecodeError) and str(error) == "bad op"
    fields = [b"", b"a", b"x" * 1000]
    assert proto.decode_page(proto.encode_page(proto.END, fields)) == (proto.END, fields)
    read = proto.decode_read(proto.read_payload(ReadKind.QUEUE_SCAN, "jobs",
                                                proto.page_args(3, 100)))
    assert read == (ReadKind.QUEUE_SCAN, "jobs", proto.page_args(3, 100))
    assert proto.decode_page_args(read.args) == (3, 100)
    for scan in (proto.ScanArgs(True, None, 7), proto.ScanArgs(False, b"", 1, b"a", b"",
                                                               False, True, True)):
        assert proto.decode_scan_args(proto.scan_args(scan)) == scan
    assert proto.decode_index_args(proto.index_args(-3)) == -3
    assert proto.decode_not_ready(proto.encode_not_ready(3, "no leader")) == (3, "no leader")
    assert proto.decode_error(proto.encode_error(ValueError("x"))) == ("ValueError", "x")


@pytest.mark.parametrize(("body", "message"), [
    (b"", "header alone"),
    (b"\x01\x01\x00", "header alone"),
    (struct.pack("<BBBxQQQ", 9, 1, 0, 1, 1, 1), "version 9"),
    (struct.pack("<BBBxQQQ", proto.VERSION, 99, 0, 1, 1, 1), "unknown request kind 99"),
])
def test_malformed_requests_are_refused(body, message):
    with pytest.raises(proto.ProtocolError, match=message):
        proto.decode_request(body)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "truncated before its kind"),
    (b"\x63\x00", "unknown read kind"),
    (b"\x01\x09abc", "truncated inside the structure name"),
    (b"\x08\x01a\x00", "cursor u64 and a limit u32"),
    (b"\x01\x02\xff\xfe", "not UTF-8"),
])
def test_malformed_reads_are_refused(payload, message):
    with pytest.raises(proto.ProtocolError, match=message):
        proto.decode_read(payload)


@pytest.mark.parametrize(("args", "message"), [
    (b"\x01", "flags u8 and a limit u32"),
    (b"\x02\x01\x00\x00\x00\x05\x00", "truncated inside a field length"),
    (b"\x02\x01\x00\x00\x00\x05\x00\x00\x00ab", "field runs past the payload"),
    (b"\x00\x01\x00\x00\x00x", "trailing bytes"),
])
def test_malformed_scans_are_refused(args, message):
    with pytest.raises(proto.ProtocolError, match=message):
        proto.decode_scan_args(args)


def test_malformed_pages_are_refused():
    page = proto.encode_page(5, [b"abc"])
    for bad in (page[:5], page[:-1], page + b"x"):
        with pytest.raises(proto.ProtocolError):
            proto.decode_page(bad)


# -- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node():
    cluster = ProcessCluster(1)
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.close()


class Raw:
    """A bare socket speaking frames, to send what a real client never would."""

    def __init__(self, node: ProcessCluster) -> None:
        self.sock = socket.create_connection(node.config.node(1).client, timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Response | None:
        """The next response, or None once the server closed the connection."""
        while True:
            if len(self.buf) >= 4:
                (n,) = proto.FRAME.unpack_from(self.buf, 0)
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return proto.decode_response(body)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def call(self, request: Request) -> Response:
        self.send(proto.encode_request(request))
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def _log_says(node: ProcessCluster, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in node.log(1):
        assert time.monotonic() < deadline, f"the node's log never said {text!r}"
        time.sleep(0.02)


def _still_serves(node: ProcessCluster) -> None:
    raw = Raw(node)
    try:
        response = raw.call(Request(Kind.STATUS, 99))
        assert response.status == Status.OK and response.request_id == 99
        assert proto.decode_json(response.payload)["role"] == "leader"
    finally:
        raw.close()


def test_a_malformed_request_gets_an_error_and_the_connection_goes_on(node):
    raw = Raw(node)
    try:
        raw.send(proto.frame(struct.pack("<BBBxQQQ", proto.VERSION, 77, 0, 1234, 1, 1)))
        response = raw.recv()
        assert response.request_id == 1234 and response.status == Status.ERROR
        assert proto.decode_error(response.payload) == ("ProtocolError",
                                                        "unknown request kind 77")
        raw.send(proto.frame(b"\x01"))  # too short to carry even a request id
        response = raw.recv()
        assert response.request_id == 0 and response.status == Status.ERROR
        assert raw.call(Request(Kind.STATUS, 5)).status == Status.OK  # same connection
    finally:
        raw.close()
    _log_says(node, "malformed request from 127.0.0.1:")
    _log_says(node, "unknown request kind 77")


def test_an_oversized_frame_closes_the_connection_with_a_log_line(node):
    raw = Raw(node)
    try:
        raw.send(proto.FRAME.pack(proto.FRAME_BYTES_MAX + 1) + b"\x01" * 100)
        response = raw.recv()
        assert response.status == Status.ERROR
        assert "exceeds the limit" in proto.decode_error(response.payload)[1]
        assert raw.recv() is None  # closed
    finally:
        raw.close()
    _log_says(node, f"frame of {proto.FRAME_BYTES_MAX + 1} bytes exceeds the limit")
    _still_serves(node)


def test_a_truncated_frame_is_logged_and_the_server_keeps_serving(node):
    raw = Raw(node)
    raw.send(proto.FRAME.pack(100) + b"\x01" * 10)
    raw.close()
    _log_says(node, "closed the connection mid-frame (10 of 100 bytes)")
    raw = Raw(node)
    raw.send(b"\x05\x00")
    raw.close()
    _log_says(node, "inside a frame's length prefix")
    _still_serves(node)


def test_bad_submits_and_reads_are_answered_with_errors(node):
    raw = Raw(node)
    try:
        response = raw.call(Request(Kind.SUBMIT, 1, 77, 1, b"not an op"))
        assert response.status == Status.ERROR
        assert proto.decode_error(response.payload)[0] in ("OpDecodeError", "OpVersionError")
        response = raw.call(Request(Kind.SUBMIT, 2, 0, 0, ops.encode(
            ops.Op("q", OpCode.QUEUE_CLEAR))))
        assert response.status == Status.ERROR
        assert "client id" in proto.decode_error(response.payload)[1]
        response = raw.call(Request(Kind.READ, 3, payload=proto.read_payload(
            ReadKind.GET, "nothing-here", b"k")))
        assert response.status == Status.ERROR
        assert proto.decode_error(response.payload)[0] == "NoSuchStructureError"
    finally:
        raw.close()
    with node.client() as client, pytest.raises(NoSuchStructureError, match="nothing-here"):
        client.hashmap("nothing-here", create=False)[b"k"]


def test_a_retried_request_is_applied_once(node):
    """The same (client id, seq) twice pops the queue once, and a retry of an older
    seq is refused as stale."""
    with node.client() as client:
        jobs = client.queue("retry-q")
        jobs.put(b"first")
        jobs.put(b"second")
    pop = ops.encode(ops.Op("retry-q", OpCode.QUEUE_GET))
    raw = Raw(node)
    try:
        results = [raw.call(Request(Kind.SUBMIT, rid, 555, 1, pop)) for rid in (10, 11)]
        assert [proto.decode_value(r.payload) for r in results] == [b"first", b"first"]
        assert proto.decode_value(raw.call(Request(Kind.SUBMIT, 12, 555, 2, pop)).payload) \
            == b"second"
        stale = proto.decode_value(raw.call(Request(Kind.SUBMIT, 13, 555, 1, pop)).payload)
        assert isinstance(stale, StaleRequestError)
    finally:
        raw.close()
    with node.client() as client:
        assert len(client.queue("retry-q")) == 0


def test_pipelined_requests_are_all_answered(node):
    """Many requests sent before any response is read; responses pair by request id."""
    raw = Raw(node)
    try:
        create = ops.encode(ops.Op("pipe", OpCode.CREATE, (b"phashmap", b"bytes", b"bytes")))
        assert raw.call(Request(Kind.SUBMIT, 1, 900, 1, create)).status == Status.OK
        encoder = ops.Encoder("pipe")
        frames = [proto.encode_request(Request(Kind.SUBMIT, 100 + i, 1000 + i, 1,
                                               encoder.two(OpCode.MAP_PUT, b"k%d" % i, b"v")))
                  for i in range(200)]
        frames.append(proto.encode_request(Request(Kind.STATUS, 999)))
        raw.send(b"".join(frames))
        answered = {raw.recv().request_id for _ in frames}
        assert answered == {100 + i for i in range(200)} | {999}
    finally:
        raw.close()
    with node.client() as client:
        pipe = client.hashmap("pipe")
        assert len(pipe) == 200
        pipe.update({b"u%d" % i: b"w" for i in range(300)})
        assert len(pipe) == 500 and pipe[b"u299"] == b"w"
        assert sorted(pipe) == sorted([b"k%d" % i for i in range(200)]
                                      + [b"u%d" % i for i in range(300)])
        assert client.check() is True


def test_the_map_and_queue_proxies(node):
    with node.client() as client:
        users = client.hashmap("users", key_codec=str, value_codec=int)
        users["ada"] = 1815
        users["alan"] = 1912
        assert users["ada"] == 1815 and users.get("bob") is None and "alan" in users
        assert len(users) == 2 and sorted(users) == ["ada", "alan"]
        assert sorted(users.items()) == [("ada", 1815), ("alan", 1912)]
        del users["ada"]
        with pytest.raises(KeyError):
            del users["ada"]
        assert users.pop("alan") == 1912 and users.pop("alan", None) is None
        jobs = client.queue("jobs", value_codec=str)
        jobs.put("a")
        jobs.put_many(["b"])
        assert jobs.peek() == "a" and len(jobs) == 2 and list(jobs) == ["a", "b"]
        assert jobs.get() == "a" and jobs.get_nowait() == "b"
        from blizzard.exceptions import Empty

        with pytest.raises(Empty):
            jobs.get(block=False)
        with pytest.raises(Empty):
            jobs.get(timeout=0.05)
        again = client.hashmap("users")  # reopening needs no codecs
        again["grace"] = 1906
        assert again["grace"] == 1906 and again.key_codec.name == "str"
        assert client.info("users") == {"kind": "phashmap", "key_codec": "str",
                                        "value_codec": "int", "count": 1}
        assert client.queue("jobs").value_codec.name == "str"
        names = client.names()
        assert names["users"] == "hashmap" and names["jobs"] == "queue"
        from blizzard.exceptions import StructureKindError

        with pytest.raises(StructureKindError):
            client.queue("users")


def test_scans_page_through_everything_and_big_requests_are_refused(node):
    with node.client() as client:
        queue = client.queue("paged-q")
        queue.put_many([])
        for i in range(7):
            queue.put(b"%d" % i)
        for limit in (1, 2, 3, 100):
            got, start = [], None
            while True:
                seq, values = queue.page(start, limit)
                if not values:
                    break
                got += values
                start = seq + len(values)
            assert got == [b"%d" % i for i in range(7)]
        m = client.hashmap("paged-m")
        m.update({b"k%d" % i: b"v%d" % i for i in range(50)})
        for limit in (1, 7, 1000):
            keys, page = [], m.page(limit=limit, values=False)
            while page:
                keys += page
                page = m.page(page[-1], limit, values=False)
            assert sorted(keys) == sorted(b"k%d" % i for i in range(50))
        with pytest.raises(ValueError, match="frame limit"):
            m[b"big"] = b"x" * proto.FRAME_BYTES_MAX
        assert len(m) == 50
        m.update([(b"dup", b"1"), (b"dup", b"2")])  # the last value wins, as sequentially
        assert m[b"dup"] == b"2" and len(m) == 51
