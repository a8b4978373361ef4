"""The compiled and the interpreted Raft core behave the same, frame for frame.

The core, its log, progress tracking, quorum maths and in-memory storage are
typed Python compiled by Cython; ``BLIZZARD_PURE=1`` runs the same sources
interpreted. Nodes of both builds talk to each other in a real cluster, so
the same seeded run must send the same messages (compared as their wire
frames, which each node decodes before stepping), persist the same hard
states and commit the same entries, and the simulator must reach the same
result. The interpreted side runs in a child
process (``python -m tests.replication.raft.test_builds SEED`` prints it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from blizzard import _compiled
from blizzard.replication.raft.core import Config, Raft
from blizzard.replication.raft.messages import ConfState, decode, encode
from blizzard.replication.raft.sim import Simulator
from blizzard.replication.raft.storage import MemoryStorage

ROOT = Path(__file__).resolve().parents[3]
CHILD_TIMEOUT_S = 600
ROUNDS = 300


def cluster_digest(seed: int) -> str:
    """SHA-256 over every frame sent, hard state persisted and entry committed
    while a 3-node cluster elects a leader and commits seeded batches, with
    followers compacting their logs and a follower restarted from its storage."""
    rng = random.Random(seed)
    ids = (1, 2, 3)
    storages = {i: MemoryStorage(ConfState(ids)) for i in ids}

    def start(node_id: int) -> Raft:
        config = Config(id=node_id, entries_per_msg_max=rng.choice((4, 64)),
                        inflight_max=rng.choice((1, 8)), uncommitted_bytes_max=4096)
        return Raft(config, storages[node_id], random.Random(seed * 10 + node_id))

    cores = {i: start(i) for i in ids}
    digest = hashlib.sha256()
    cores[1].campaign()
    for round_ in range(ROUNDS):
        leader = next((c for c in cores.values() if c.role.name == "LEADER"), None)
        if leader is not None and round_ % 3 != 2:
            batch = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 20))]
            try:
                leader.propose_batch(batch)
            except Exception as error:  # dropped proposals are part of the record
                digest.update(type(error).__name__.encode())
        if round_ % 7 == 0:
            for core in cores.values():
                core.tick()
        outbox = []
        for node_id, core in cores.items():
            if not core.has_ready():
                continue
            ready = core.ready()
            storage = storages[node_id]
            if ready.hard_state is not None:
                storage.set_hard_state(ready.hard_state)
                digest.update(repr(ready.hard_state).encode())
            if ready.snapshot is not None:
                storage.apply_snapshot(ready.snapshot)
                digest.update(repr(ready.snapshot.meta).encode())
            if ready.entries:
                storage.append(ready.entries)
            for entry in ready.committed_entries:
                digest.update(repr(entry).encode())
            outbox.extend(ready.messages)
            core.advance(ready)
        for message in outbox:
            frame = encode(message)
            digest.update(frame)
            if rng.random() < 0.05:
                continue  # lost
            received = decode(frame)
            assert received == message
            cores[received.target].step(received)
        if round_ % 50 == 49:
            for core in cores.values():
                index = core.log.applied - 8
                if index > core.log.storage.first_index():
                    core.compact(index, b"state %d" % index)
        if round_ == ROUNDS // 2:
            cores[3] = start(3)  # a crash: only what it persisted survives
    return digest.hexdigest()


def fingerprint(seed: int) -> dict[str, str]:
    return {
        "cluster": cluster_digest(seed),
        "simulator": repr(Simulator(seed, steps=600).run()),
    }


def interpreted_fingerprint(seed: int) -> dict[str, str]:
    env = dict(os.environ, BLIZZARD_PURE="1")
    done = subprocess.run(
        [sys.executable, "-m", "tests.replication.raft.test_builds", str(seed)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not _compiled.compiled(), reason=f"interpreted: {_compiled.reason}")
@pytest.mark.parametrize("seed", range(3))
def test_compiled_and_interpreted_cores_send_the_same_frames(seed):
    assert fingerprint(seed) == interpreted_fingerprint(seed), (
        f"replay: BLIZZARD_PURE=1 python -m tests.replication.raft.test_builds {seed}")


if __name__ == "__main__":
    print(json.dumps(fingerprint(int(sys.argv[1]))))
