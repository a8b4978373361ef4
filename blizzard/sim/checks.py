"""What the simulator checks, apart from the machinery it checks.

As the run goes, every replica's state machine reports to one
:class:`AppliedLog`:

* each *fresh* Op its registry applied (``index -> (client, seq, op,
  result)``): two replicas that apply index i must apply the same Op with
  the same result (state machine safety, deterministic apply);
* a digest of its logical state (structures, sessions) each time it
  reaches an applied index: replicas at the same index must agree.

At the end, :func:`check_run` replays the applied Ops on a plain Python
model and checks:

* exactly once: no (client, seq) was applied fresh twice;
* the structures behave: the model gives every Op the result recorded;
* clients saw the truth: an acknowledged request's result is the one
  recorded where it was applied;
* real time: a write acknowledged before another was invoked was applied
  before it;
* reads: the key-value history (writes, ReadIndex reads) is linearizable
  (:func:`~blizzard.replication.linearizability.check_history`);
* nothing acknowledged is lost: every replica ends equal to the model.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from blizzard.exceptions import SafetyViolation
from blizzard.replication.linearizability import GET, PUT, Operation, check_history
from blizzard.replication.sessions import ENVELOPE, SessionStateMachine
from blizzard.structures import _bptreecore, _hashcore, _queuecore, _skiplistcore, ops
from blizzard.structures.ops import OpCode

MAP_TAG = _hashcore.TAG
QUEUE_TAG = _queuecore.TAG
BPTREE_TAG = _bptreecore.TAG
SKIPLIST_TAG = _skiplistcore.TAG
ORDERED_TAGS = (BPTREE_TAG, SKIPLIST_TAG)


def result_key(result: Any) -> Any:
    """A comparable form of an Op's result (exceptions by type and arguments)."""
    if isinstance(result, BaseException):
        return ("error", type(result).__name__, result.args)
    if isinstance(result, memoryview | bytearray):
        return bytes(result)
    return result


def same_answer(a: Any, b: Any) -> bool:
    """Whether two answers to one request agree (errors: by type and arguments
    compared by type only; ``b`` may be a result key already)."""
    a, b = result_key(a), b if isinstance(b, tuple) else result_key(b)
    if _is_error(a):
        return _is_error(b, a[1])
    return a == b


def state_digest(registry, sessions: SessionStateMachine) -> bytes:
    """A digest of the logical state: every structure's contents (maps sorted:
    their layout may differ between replicas, e.g. after a snapshot install)
    and the session table."""
    digest = hashlib.blake2b(digest_size=16)

    def field(raw: bytes) -> None:
        digest.update(len(raw).to_bytes(4, "little"))
        digest.update(raw)

    for name in registry.names():
        core = registry.core(name)
        for raw in (name.encode(), core.tag, core.key_codec.encode(), core.value_codec.encode()):
            field(raw)
        items = list(core.dump())
        if core.tag == MAP_TAG:
            items.sort()
        digest.update(len(items).to_bytes(8, "little"))
        for item in items:
            for raw in item:
                field(bytes(raw))
    for client, seq, kind, data in sorted(sessions.sessions()):
        digest.update(ENVELOPE.pack(kind, client, seq))
        field(data)
    return digest.digest()


class AppliedLog:
    """What every replica applied, checked for agreement as it is reported."""

    def __init__(self) -> None:
        #: index -> (client, seq, op, result key) of the Op applied fresh there
        self.fresh: dict[int, tuple[int, int, bytes, Any]] = {}
        self.digests: dict[int, bytes] = {}
        self.applied_max = 0

    def op(self, node_id: int, index: int, client: int, seq: int, op: bytes,
           result: Any) -> None:
        record = (client, seq, op, result_key(result))
        known = self.fresh.setdefault(index, record)
        if known != record:
            raise SafetyViolation(
                "state machine safety",
                f"node {node_id} applied {record} at index {index}, another node {known}")

    def state(self, node_id: int, index: int, digest: bytes) -> None:
        self.applied_max = max(self.applied_max, index)
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise SafetyViolation(
                "replica divergence", f"node {node_id}'s state at index {index} differs")


class _RecordingRegistry:
    """The registry, reporting the fresh Ops the session table hands it."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.pending: list[tuple[int, bytes, Any]] = []

    @property
    def last_applied(self) -> int:
        return self.registry.last_applied

    def apply(self, batch: list[tuple[int, bytes]]) -> list[Any]:
        start = self.registry.last_applied
        try:
            results = self.registry.apply(batch)
        except Exception as exc:
            # Rolled back: no effect. The session table either applies the batch
            # again one Op at a time (which overrides this) or records ``exc``.
            self.pending += [(index, op, exc) for index, op in batch if index > start]
            raise
        self.pending += [(index, op, result) for (index, op), result
                         in zip(batch, results, strict=True) if index > start]
        return results

    def snapshot(self) -> bytes:
        return self.registry.snapshot()

    def restore(self, data: bytes) -> None:
        self.registry.restore(data)

    def reload(self) -> None:
        self.registry.reload()


def recording_state_machine(registry, pool, node_id: int, log: AppliedLog, *,
                            capacity: int) -> RecordingStateMachine:
    """A session table over ``registry`` whose applies are reported to ``log``."""
    inner = _RecordingRegistry(registry)
    sessions = SessionStateMachine(inner, pool, capacity=capacity)
    return RecordingStateMachine(sessions, inner, node_id, log)


class RecordingStateMachine:
    """A node's state machine (sessions over the registry) that reports to the log.

    The Ops the registry applied are published only once the session
    table's batch returned: a batch that rolled back and was applied again
    one Op at a time (a full pool) reports its final outcome only.
    """

    def __init__(self, sessions: SessionStateMachine, inner: _RecordingRegistry,
                 node_id: int, log: AppliedLog) -> None:
        self.sessions = sessions
        self._inner = inner
        self.registry = inner.registry
        self._node_id = node_id
        self._log = log

    @property
    def last_applied(self) -> int:
        return self.sessions.last_applied

    def apply(self, batch: list[tuple[int, bytes]]) -> list[Any]:
        self._inner.pending = []
        results = self.sessions.apply(batch)
        envelopes = {index: data for index, data in batch}
        final = {index: (op, result) for index, op, result in self._inner.pending}
        self._inner.pending = []
        for index, (op, result) in sorted(final.items()):
            _, client, seq = ENVELOPE.unpack_from(envelopes[index], 0)
            self._log.op(self._node_id, index, client, seq, op, result)
        self.record_state()
        return results

    def snapshot(self) -> bytes:
        return self.sessions.snapshot()

    def restore(self, data: bytes) -> None:
        self.sessions.restore(data)
        self.record_state()

    def record_state(self) -> None:
        self._log.state(self._node_id, self.last_applied,
                        state_digest(self.registry, self.sessions))


# -- the client side ---------------------------------------------------------------------


@attrs.define
class Request:
    """One client request: an Op (a write) or a ReadIndex read of one key."""

    client: int
    seq: int  # 0 for reads
    op: bytes | None  # None for reads
    invoke: int
    structure: str = ""
    key: bytes | None = None  # the register a write or read touches (None: not a register)
    written: bytes | None = None  # the value a register write leaves (None: deleted)
    ret: float = math.inf
    result: Any = None
    read_value: Any = None


# -- the model ---------------------------------------------------------------------------


class Model:
    """The structures as plain Python objects, fed the applied Ops in order."""

    def __init__(self) -> None:
        self.structures: dict[str, tuple[bytes, Any]] = {}

    def apply(self, record: bytes) -> Any:
        try:
            op = ops.decode(record)
        except ops.OpDecodeError as exc:
            return exc
        name, code, args = op.name, op.code, op.args
        if code == OpCode.CREATE:
            tag = args[0]
            if name in self.structures:
                if self.structures[name][0] != tag:
                    return _Error("StructureKindError")
                return None
            self.structures[name] = (tag, deque() if tag == QUEUE_TAG else {})
            return None
        if code == OpCode.DROP:
            return None if self.structures.pop(name, None) else _Error("KeyError")
        found = self.structures.get(name)
        if found is None:
            return _Error("OpDecodeError")
        tag, data = found
        handler = _HANDLERS.get((tag, code)) or _HANDLERS.get((b"ordered", code))
        if handler is None or (tag in ORDERED_TAGS) != (code >> 4 == 3):
            return _Error("OpDecodeError")
        return handler(data, *args)

    def contents(self) -> dict[str, tuple[bytes, list]]:
        return {name: (tag, sorted(data.items()) if isinstance(data, dict) else list(data))
                for name, (tag, data) in self.structures.items()}


class _Error:
    """An expected error result: compared by type name only."""

    def __init__(self, name: str) -> None:
        self.name = name


def _map_delete(data: dict, key: bytes) -> bool:
    return data.pop(key, None) is not None


def _pop(data: dict, key: bytes) -> Any:
    return data.pop(key, None)


def _put(data: dict, key: bytes, value: bytes) -> None:
    data[key] = value


def _queue_get(data: deque) -> Any:
    return data.popleft() if data else None


_HANDLERS: dict[tuple[bytes, int], Callable[..., Any]] = {
    (MAP_TAG, OpCode.MAP_PUT): _put,
    (MAP_TAG, OpCode.MAP_DELETE): _map_delete,
    (MAP_TAG, OpCode.MAP_POP): _pop,
    (QUEUE_TAG, OpCode.QUEUE_PUT): lambda data, value: data.append(value),
    (QUEUE_TAG, OpCode.QUEUE_GET): _queue_get,
    (b"ordered", OpCode.ORD_PUT): _put,
    (b"ordered", OpCode.ORD_DELETE): _map_delete,
    (b"ordered", OpCode.ORD_POP): _pop,
}


def _is_error(recorded: Any, name: str | None = None) -> bool:
    return (isinstance(recorded, tuple) and len(recorded) == 3 and recorded[0] == "error"
            and (name is None or recorded[1] == name))


def _matches(expected: Any, recorded: Any) -> bool:
    if isinstance(expected, _Error | BaseException):
        name = expected.name if isinstance(expected, _Error) else type(expected).__name__
        return _is_error(recorded, name)
    return result_key(expected) == recorded


# -- the end-of-run checks ---------------------------------------------------------------


def check_run(log: AppliedLog, requests: list[Request],
              final_states: dict[int, dict[str, tuple[bytes, list]]]) -> Model:
    """Every check of the module docstring; raises :class:`SafetyViolation`."""
    model = Model()
    fresh_at: dict[tuple[int, int], int] = {}
    for index in sorted(log.fresh):
        client, seq, op, recorded = log.fresh[index]
        if client:
            if (client, seq) in fresh_at:
                raise SafetyViolation(
                    "exactly once", f"request {seq} of client {client:#x} applied at "
                    f"{fresh_at[client, seq]} and again at {index}")
            fresh_at[client, seq] = index
        if _is_error(recorded, "PoolFullError"):
            continue  # rolled back: the Op had no effect
        expected = model.apply(op)
        if not _matches(expected, recorded):
            wanted = expected.name if isinstance(expected, _Error) else result_key(expected)
            raise SafetyViolation(
                "structure semantics",
                f"index {index}: {ops.decode(op)!r} gave {recorded!r}, the model {wanted!r}")
    _check_acknowledged(log, requests, fresh_at)
    _check_real_time(requests, fresh_at)
    history = _register_history(log, requests, fresh_at)
    if not check_history(history):
        raise SafetyViolation("linearizability", "the key-value history is not linearizable")
    expected_state = model.contents()
    for node_id, state in final_states.items():
        if state != expected_state:
            lost = {name for name in expected_state if state.get(name) != expected_state[name]}
            raise SafetyViolation(
                "acknowledged write lost",
                f"node {node_id} ends with {sorted(lost)} unlike the applied Ops say")
    return model


def _check_acknowledged(log: AppliedLog, requests: list[Request],
                        fresh_at: dict[tuple[int, int], int]) -> None:
    for request in requests:
        if request.op is None or request.ret == math.inf:
            continue
        index = fresh_at.get((request.client, request.seq))
        if index is None:
            raise SafetyViolation(
                "phantom acknowledgement",
                f"request {request.seq} of client {request.client:#x} was acknowledged "
                "but never applied")
        recorded = log.fresh[index][3]
        # a retry answered from the session table gets an error's type and the
        # start of its message (recorded inline, never allocating): same_answer
        if not same_answer(request.result, recorded):
            raise SafetyViolation(
                "wrong result", f"request {request.seq} of client {request.client:#x} got "
                f"{result_key(request.result)!r}, applied at {index} as {recorded!r}")


def _check_real_time(requests: list[Request], fresh_at: dict[tuple[int, int], int]) -> None:
    """Acknowledged before invoked implies applied before."""
    writes = [(r.invoke, r.ret, fresh_at[r.client, r.seq]) for r in requests
              if r.op is not None and r.ret != math.inf]
    by_ret = sorted(writes, key=lambda w: w[1])
    highest = 0  # highest index among writes acknowledged before the current invoke
    j = 0
    for invoke, _, index in sorted(writes):
        while j < len(by_ret) and by_ret[j][1] < invoke:
            highest = max(highest, by_ret[j][2])
            j += 1
        if index <= highest:
            raise SafetyViolation(
                "real-time order", f"a write applied at {index} was invoked after the write "
                f"applied at {highest} had been acknowledged")


def _register_history(log: AppliedLog, requests: list[Request],
                      fresh_at: dict[tuple[int, int], int]) -> list[Operation]:
    history = []
    for r in requests:
        if r.key is None:
            continue
        key = (r.structure, r.key)
        if r.op is None:
            if r.ret != math.inf:
                history.append(Operation(GET, key, r.read_value, r.invoke, r.ret))
            continue
        index = fresh_at.get((r.client, r.seq))
        if index is None:
            continue  # never applied: no effect
        recorded = log.fresh[index][3]
        if _is_error(recorded):
            continue  # a failed Op wrote nothing
        # an unacknowledged write that was applied took effect too (ret = inf)
        history.append(Operation(PUT, key, r.written, r.invoke, r.ret))
    return history
