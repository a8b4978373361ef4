"""A follower over TCP receives its leader's entries straight into its Raft log.

A real node (RaftNode, TcpTransport, a pool file for its log, a session
table over a registry) follows a "leader" played by this test over real
loopback sockets: the test dials it as node 1 and writes AppendEntries
frames; the node answers on the connection it dials back. Entries that
follow its log are received into the log's free tail: nothing is copied on
their way in but the one cut of each entry's data from its record, and the
map copies each put's arguments once. Frames that do not match (another
term's log, a gap) are rejected and leave nothing behind. The interpreted
build must do the very same (answers, log, counters): compared against a
``BLIZZARD_PURE=1`` child running this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from blizzard import _compiled
from blizzard.cluster.ports import port_block
from blizzard.pmem import Pool
from blizzard.replication.node import RaftNode
from blizzard.replication.raft import messages as m
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import ENVELOPE, SessionStateMachine, wrap
from blizzard.replication.transport import tcp
from blizzard.structures import ops, registry_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30
VALUE = b"v" * 1024
_LEN = struct.Struct("<I")


def _put(seq: int) -> bytes:
    return wrap(7, seq, ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (b"k%03d" % seq, VALUE))))


def _entries(first: int, datas: list[bytes], term: int = 1) -> tuple[m.Entry, ...]:
    return tuple(m.Entry(term, first + i, 0, d) for i, d in enumerate(datas))


async def _read_frame(reader: asyncio.StreamReader) -> m.Message:
    (n,) = _LEN.unpack(await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S))
    return m.decode(await asyncio.wait_for(reader.readexactly(n), TIMEOUT_S))


class _Leaders:
    """Nodes 1 and 3 played by the test: the node dials each to answer; what it
    says to node ``n`` arrives in ``answers[n]``."""

    def __init__(self, peers: dict) -> None:
        self.peers = peers
        self.answers = {n: asyncio.Queue() for n in peers if n != 2}
        self.servers: list = []

    async def start(self) -> None:
        for n, queue in self.answers.items():
            self.servers.append(await asyncio.start_server(self._accepter(queue), *self.peers[n]))

    @staticmethod
    def _accepter(queue: asyncio.Queue):
        async def accept(reader, writer):
            hello = await reader.readexactly(tcp._HELLO.size)
            await reader.readexactly(tcp._HELLO.unpack(hello)[3])
            writer.write(b"\0")
            try:
                while True:
                    await queue.put(await _read_frame(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
        return accept

    async def dial(self, source: int) -> asyncio.StreamWriter:
        """A connection to node 2 that says it comes from ``source``."""
        reader, writer = await asyncio.open_connection(*self.peers[2])
        writer.write(tcp._HELLO.pack(tcp.MAGIC, tcp.VERSION, source, len(b"blizzard"))
                     + b"blizzard")
        assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S) == b"\0"
        return writer

    def close(self) -> None:
        for server in self.servers:
            server.close()


@contextlib.asynccontextmanager
async def _follower(path: Path):
    """Node 2 -- RaftNode, TcpTransport, a pool for its log and one for its
    map -- following nodes 1 and 3, which the test plays (:class:`_Leaders`)."""
    base = port_block(3)
    peers = {1: ("127.0.0.1", base), 2: ("127.0.0.1", base + 1), 3: ("127.0.0.1", base + 2)}
    leaders = _Leaders(peers)
    await leaders.start()
    data = Pool.create(path / "data.pool", 16 << 20, mode="pmem")
    log_pool = Pool.create(path / "log.pool", 16 << 20, mode="pmem")
    node = RaftNode(2, storage=PmemStorage(log_pool, conf_state=m.ConfState((1, 2, 3))),
                    state_machine=SessionStateMachine(registry_for(data), data),
                    transport=tcp.TcpTransport(2, peers, seed=2), tick_s=0.01,
                    election_tick=100_000, seed=2)
    await node.start()
    try:
        yield node, leaders
    finally:
        await node.stop()
        leaders.close()
        data.close()
        log_pool.close()


def _create() -> bytes:
    return wrap(7, 1, ops.encode(ops.Op("m", ops.OpCode.CREATE,
                                        (b"phashmap", b"bytes", b"bytes"))))


def _framed(msg: m.Message) -> bytes:
    frame = m.encode(msg)
    return _LEN.pack(len(frame)) + frame


async def _follow(path: Path) -> dict:
    out = {"answers": [], "copies": []}
    async with _follower(path) as (node, leaders):
        writer = await leaders.dial(1)

        async def send(msg: m.MsgApp) -> m.MsgAppResp:
            writer.write(_framed(msg))
            answer = await asyncio.wait_for(leaders.answers[1].get(), TIMEOUT_S)
            out["answers"].append(repr(answer))
            return answer

        def copies() -> dict:
            status = node.status()
            return {**status["copies"], "in_place": status["received_in_place"],
                    "applied": status["applied"], "last": status["last_index"]}

        # the log's first records go through the ordinary append (no segment yet)
        answer = await send(m.MsgApp(1, 2, 1, 0, 0, _entries(1, [b"", _create()]), 0))
        assert (answer.index, answer.reject) == (2, False)
        out["copies"].append(copies())
        puts = [_put(seq) for seq in range(2, 12)]
        answer = await send(m.MsgApp(1, 2, 1, 1, 2, _entries(3, puts[:4]), 2))
        assert (answer.index, answer.reject) == (6, False)
        answer = await send(m.MsgApp(1, 2, 1, 1, 6, _entries(7, puts[4:]), 12))
        assert (answer.index, answer.reject) == (12, False)
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while node.applied < 12:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        out["copies"].append(copies())
        # another term's log at index 12, and a gap: both rejected, nothing kept
        answer = await send(m.MsgApp(1, 2, 1, 5, 12, _entries(13, [_put(20)], 5), 12))
        assert answer.reject
        answer = await send(m.MsgApp(1, 2, 1, 1, 14, _entries(15, [_put(21)]), 12))
        assert answer.reject
        out["copies"].append(copies())
        writer.close()
        out["entries"] = [repr(e) for e in node.storage.entries(1, 13)]
    with Pool.open(path / "log.pool", mode="pmem") as pool:
        reopened = PmemStorage(pool)
        reopened.check()
        out["reopened"] = [repr(e) for e in reopened.entries(1, reopened.last_index() + 1)]
    return out


def follow(path: Path) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_follow(path))


def test_a_follower_receives_entries_into_its_log_and_copies_them_once(tmp_path):
    out = follow(tmp_path)
    first, applied, rejected = out["copies"]
    assert first["last"] == 2 and applied["last"] == 12 and applied["applied"] == 12
    assert applied["in_place"] - first["in_place"] == 10  # every put landed in the log
    delta = {stage: applied[stage] - first[stage] for stage in (
        "socket_to_buffer", "frame_to_entries", "entries_to_log", "log_to_apply",
        "apply_to_structure")}
    entry_bytes = sum(len(_put(seq)) for seq in range(2, 12))
    arguments = 10 * (4 + 4 + len(VALUE))  # key length u32 + key + value
    assert delta == {"socket_to_buffer": 0, "frame_to_entries": entry_bytes,
                     "entries_to_log": 0, "log_to_apply": 0,
                     "apply_to_structure": arguments}, delta
    assert entry_bytes == 10 * (ENVELOPE.size + 8 + 1 + arguments // 10)
    # the rejected frames were read as bytes (no region offered), and left nothing
    assert rejected["last"] == 12 and rejected["in_place"] == applied["in_place"]
    assert rejected["entries_to_log"] == applied["entries_to_log"]
    assert out["reopened"] == out["entries"] and len(out["entries"]) == 12


async def _lose_region_mid_receive(path: Path) -> dict:
    errors: list = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    async with _follower(path) as (node, leaders):
        old = await leaders.dial(1)
        old.write(_framed(m.MsgApp(1, 2, 1, 0, 0, _entries(1, [b"", _create()]), 0)))
        assert not (await asyncio.wait_for(leaders.answers[1].get(), TIMEOUT_S)).reject
        # node 1's next frame stops half way through its records...
        frame = _framed(m.MsgApp(1, 2, 1, 1, 2, _entries(3, [_put(2), _put(3)]), 2))
        cut = 4 + m.APP_HEAD_BYTES + 100
        old.write(frame[:cut])
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while node.storage._reserved is None:  # received into the log's tail, so far
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        # ...when node 3, leading term 2, appends there: the log gives up the region
        new = await leaders.dial(3)
        new.write(_framed(m.MsgApp(3, 2, 2, 1, 2, _entries(3, [_put(30)], 2), 2)))
        answer = await asyncio.wait_for(leaders.answers[3].get(), TIMEOUT_S)
        assert (answer.index, answer.reject) == (3, False)
        received = node.transport.stats.frames_received
        # the rest of node 1's frame arrives and goes nowhere; the connection lives on
        old.write(frame[cut:] + _framed(m.MsgHeartbeat(1, 2, 1, 2)))
        while node.transport.stats.frames_received < received + 2:
            assert asyncio.get_running_loop().time() < deadline, node.transport.status()
            await asyncio.sleep(0.01)
        new.write(_framed(m.MsgApp(3, 2, 2, 2, 3, _entries(4, [_put(31)], 2), 4)))
        answer = await asyncio.wait_for(leaders.answers[3].get(), TIMEOUT_S)
        assert (answer.index, answer.reject) == (4, False)
        while node.applied < 4:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        entries = [repr(e) for e in node.storage.entries(1, 5)]
        status = node.transport.status()
        node.storage.check()
        old.close()
        new.close()
    assert not errors, errors
    return {"entries": entries, "regions_lost": status["regions_lost"]}


def test_a_region_given_up_mid_receive_costs_its_frame_not_the_connection(tmp_path):
    """The log gives up a region its transport is still filling (another leader
    appended, say): the rest of that frame is read and dropped, the frames after
    it are handled, and nothing lands where the log now holds other entries."""
    out = asyncio.run(_lose_region_mid_receive(tmp_path))
    assert out["regions_lost"] == 1
    assert out["entries"] == [repr(e) for e in (
        m.Entry(1, 1, 0, b""), m.Entry(1, 2, 0, _create()),
        m.Entry(2, 3, 0, _put(30)), m.Entry(2, 4, 0, _put(31)))]


@pytest.mark.skipif(not _compiled.compiled(), reason=f"interpreted: {_compiled.reason}")
def test_the_interpreted_follower_does_the_same(tmp_path):
    compiled = follow(tmp_path / "compiled")
    child = tmp_path / "interpreted"
    done = subprocess.run(
        [sys.executable, "-m", "tests.replication.test_receive_into_log", str(child)],
        cwd=ROOT, env=dict(os.environ, BLIZZARD_PURE="1"), capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == compiled


def test_the_entry_cut_probe_compiles_and_times_both_cuts(tmp_path):
    """scripts/entry_cut_probe.py, the measurement behind keeping that one cut
    (docs/benchmarks.md): both ways of handing out an entry's data run, compiled,
    for both record sizes."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "entry_cut_probe.py"), "--calls", "20",
         "--repeats", "1"], cwd=tmp_path, env=dict(os.environ, HOME=str(tmp_path)),
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split(" B ")[0] for line in lines] == ["114", "1074"], done.stdout
    assert all("bytes copied out" in line and "memoryview slices" in line for line in lines)


if __name__ == "__main__":
    print(json.dumps(follow(Path(sys.argv[1]))))
