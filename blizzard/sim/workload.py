"""Simulated clients: requests on all four structures, retried until answered.

Each client owns one session (a random client id) and has at most one
request outstanding, as a lane of the Raft replicator does. A write is an
Op in a session envelope, submitted to a replica's node; if no answer comes
within ``retry_ticks`` (the replica crashed, the leader changed, a message
was lost), or the node says no leader is known, the *same envelope* is
submitted again, possibly to another replica -- the session table applies
it at most once. A read is a ReadIndex round on the client's replica and
then a local read of one key; a read that gets no answer is abandoned (it
constrains nothing).

The first client's first requests create the structures; until they are
applied, Ops on them fail deterministically ("does not exist"), which is a
result like any other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from blizzard.exceptions import StaleRequestError
from blizzard.replication.sessions import wrap
from blizzard.sim.checks import (
    BPTREE_TAG,
    MAP_TAG,
    QUEUE_TAG,
    SKIPLIST_TAG,
    Request,
    SafetyViolation,
    result_key,
    same_answer,
)
from blizzard.sim.replica import Replica
from blizzard.structures import ops
from blizzard.structures.ops import Op, OpCode

#: (name, kind tag) of the structures every run uses.
STRUCTURES = (("m", MAP_TAG), ("q", QUEUE_TAG), ("t", BPTREE_TAG), ("s", SKIPLIST_TAG))
KEYS_MAX = 6  # per structure: few keys, so requests collide
LARGE_VALUE_BYTES = 5000  # above every core's inline limit: values in blocks of their own
READ_TIMEOUT_TICKS = 200


class Client:
    __slots__ = ("id", "pending", "replica", "retry_at", "seq", "setup")

    def __init__(self, client_id: int, replica: int) -> None:
        self.id = client_id
        self.seq = 0
        self.replica = replica
        self.pending: Request | None = None
        self.retry_at = 0
        self.setup: list[bytes] = []


class Workload:
    """The clients, their requests, and the history of what they saw."""

    def __init__(self, rng: random.Random, replicas: dict[int, Replica], *, clients: int,
                 retry_ticks: int, large_values: float) -> None:
        self.rng = rng
        self.replicas = replicas
        self.retry_ticks = retry_ticks
        self.large_values = large_values
        ids = sorted(replicas)
        self.clients = [Client(rng.getrandbits(64) | 1, rng.choice(ids)) for _ in range(clients)]
        self.clients[0].setup = [ops.encode(Op(name, OpCode.CREATE, (tag, b"bytes", b"bytes")))
                                 for name, tag in STRUCTURES]
        self.requests: list[Request] = []
        self._time = 0  # orders invocations and responses: the history's clock
        self.now = 0
        self.acknowledged = 0
        self.reads_served = 0
        self.retries = 0

    def _tick(self) -> int:
        self._time += 1
        return self._time

    # -- each step ------------------------------------------------------------------------

    def step(self, now: int, request_rate: float, read_share: float) -> None:
        self.now = now
        for client in self.clients:
            request = client.pending
            if request is None:
                if client.setup or self.rng.random() < request_rate:
                    self._start(client, read_share)
            elif request.op is None:
                if now >= client.retry_at:  # an unanswered read: give up
                    client.pending = None
            elif now >= client.retry_at:
                self.retries += 1
                client.replica = self._live_replica(client.replica)
                self._submit(client, request)

    def idle(self) -> bool:
        return all(client.pending is None for client in self.clients)

    def _live_replica(self, preferred: int) -> int:
        if self.replicas[preferred].up and self.rng.random() < 0.5:
            return preferred
        live = [i for i, r in sorted(self.replicas.items()) if r.up]
        return self.rng.choice(live) if live else preferred

    def _start(self, client: Client, read_share: float) -> None:
        rng = self.rng
        if client.setup:
            op = client.setup.pop(0)
            client.seq += 1
            request = Request(client.id, client.seq, op, self._tick())
        else:
            name, tag = rng.choice(STRUCTURES)
            if tag != QUEUE_TAG and rng.random() < read_share:
                self._read(client, name, b"k%d" % rng.randrange(KEYS_MAX))
                return
            client.seq += 1
            request = self._write(client, name, tag)
        self.requests.append(request)
        client.pending = request
        self._submit(client, request)

    def _write(self, client: Client, name: str, tag: bytes) -> Request:
        rng = self.rng
        value = b"%x.%d" % (client.id, client.seq)
        if rng.random() < self.large_values:
            value += b"." * (LARGE_VALUE_BYTES - len(value))
        request = Request(client.id, client.seq, None, self._tick(), structure=name)
        if tag == QUEUE_TAG:
            if rng.random() < 0.5:
                request.op = ops.encode(Op(name, OpCode.QUEUE_PUT, (value,)))
            else:
                request.op = ops.encode(Op(name, OpCode.QUEUE_GET))
            return request
        key = b"k%d" % rng.randrange(KEYS_MAX)
        ordered = tag != MAP_TAG
        put, delete, pop = ((OpCode.ORD_PUT, OpCode.ORD_DELETE, OpCode.ORD_POP) if ordered
                            else (OpCode.MAP_PUT, OpCode.MAP_DELETE, OpCode.MAP_POP))
        draw = rng.random()
        request.key = key
        if draw < 0.7:
            request.op = ops.encode(Op(name, put, (key, value)))
            request.written = value
        elif draw < 0.85:
            request.op = ops.encode(Op(name, delete, (key,)))
        else:
            request.op = ops.encode(Op(name, pop, (key,)))
        return request

    def _submit(self, client: Client, request: Request) -> None:
        client.retry_at = self.now + self.retry_ticks
        replica = self.replicas[client.replica]
        if not replica.up:
            return
        envelope = wrap(client.id, request.seq, request.op)
        replica.node.submit(envelope, self._settled(client, request))

    def _settled(self, client: Client, request: Request) -> Callable:
        def settled(key, result, error) -> None:
            if request.ret != math.inf:  # answered already, by an earlier attempt
                # a late duplicate, applied after the client moved on, is
                # answered StaleRequestError: the client ignores it (its lane did)
                if (error is None and not isinstance(result, StaleRequestError)
                        and not same_answer(result, request.result)):
                    raise SafetyViolation(
                        "inconsistent answers", f"request {request.seq} of client "
                        f"{client.id:#x} got {result_key(request.result)!r}, then "
                        f"{result_key(result)!r}")
                return
            if error is not None:
                client.retry_at = min(client.retry_at, self.now + 2)  # no leader: retry soon
                return
            request.ret = self._tick()
            request.result = result
            self.acknowledged += 1
            if client.pending is request:
                client.pending = None
        return settled

    def _read(self, client: Client, name: str, key: bytes) -> None:
        replica = self.replicas[client.replica]
        if not replica.up:
            client.replica = self._live_replica(client.replica)
            return
        request = Request(client.id, 0, None, self._tick(), structure=name, key=key)
        self.requests.append(request)
        client.pending = request
        client.retry_at = self.now + READ_TIMEOUT_TICKS
        node = replica.node

        def done(error: BaseException | None) -> None:
            if client.pending is not request:
                return  # abandoned
            client.pending = None
            if error is not None or replica.node is not node:
                return
            core = replica.registry.core(name)
            value = core.get(key) if core is not None else None
            request.read_value = None if value is None else bytes(value)
            request.ret = self._tick()
            self.reads_served += 1

        node.read(done)
