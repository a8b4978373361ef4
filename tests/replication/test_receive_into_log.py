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


async def _follow(path: Path) -> dict:
    base = port_block(2)
    peers = {1: ("127.0.0.1", base), 2: ("127.0.0.1", base + 1)}
    answers: asyncio.Queue = asyncio.Queue()

    async def accept(reader, writer):  # node 2 dials "node 1" to answer
        hello = await reader.readexactly(tcp._HELLO.size)
        await reader.readexactly(tcp._HELLO.unpack(hello)[3])
        writer.write(b"\0")
        try:
            while True:
                await answers.put(await _read_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(accept, *peers[1])
    data = Pool.create(path / "data.pool", 16 << 20, mode="pmem")
    log_pool = Pool.create(path / "log.pool", 16 << 20, mode="pmem")
    node = RaftNode(2, storage=PmemStorage(log_pool, conf_state=m.ConfState((1, 2, 3))),
                    state_machine=SessionStateMachine(registry_for(data), data),
                    transport=tcp.TcpTransport(2, peers, seed=2), tick_s=0.01,
                    election_tick=100_000, seed=2)
    await node.start()
    out = {"answers": [], "copies": []}
    try:
        reader, writer = await asyncio.open_connection(*peers[2])
        writer.write(tcp._HELLO.pack(tcp.MAGIC, tcp.VERSION, 1, len(b"blizzard")) + b"blizzard")
        assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S) == b"\0"

        async def send(msg: m.MsgApp) -> m.MsgAppResp:
            frame = m.encode(msg)
            writer.write(_LEN.pack(len(frame)) + frame)
            answer = await asyncio.wait_for(answers.get(), TIMEOUT_S)
            out["answers"].append(repr(answer))
            return answer

        def copies() -> dict:
            status = node.status()
            return {**status["copies"], "in_place": status["received_in_place"],
                    "applied": status["applied"], "last": status["last_index"]}

        create = wrap(7, 1, ops.encode(ops.Op("m", ops.OpCode.CREATE,
                                              (b"phashmap", b"bytes", b"bytes"))))
        # the log's first records go through the ordinary append (no segment yet)
        answer = await send(m.MsgApp(1, 2, 1, 0, 0, _entries(1, [b"", create]), 0))
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
    finally:
        await node.stop()
        server.close()
        data.close()
        log_pool.close()
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


if __name__ == "__main__":
    print(json.dumps(follow(Path(sys.argv[1]))))
