"""A linearizability checker for key-value histories (Wing & Gong, with Lowe's
memoization, as in porcupine).

A history is a list of ``Operation``s, each with the time it was invoked and
the time its response arrived (``math.inf`` if it never did: such a put may
or may not have taken effect). The history is linearizable if every
operation can be given a point between its invoke and return times so that
the sequence of points is a legal run of the model: a map of independent
registers, where ``get(k)`` returns the value of the last ``put(k, v)``
(or ``None``). Registers are independent, so the history is checked one key
at a time (P-compositionality), which keeps the search small.

The search linearizes, at each point, one of the operations that were
invoked before the earliest pending return; a set of (linearized operations,
register value) already shown to be a dead end is never explored again.
Cost: exponential in the worst case, in practice near linear for histories
produced by a correct system.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable

import attrs

__all__ = ["Operation", "check_history", "check_register"]

PUT = "put"
GET = "get"


@attrs.frozen
class Operation:
    """``put(key, value)`` or ``get(key) -> value`` over [invoke, ret]."""

    kind: str
    key: Hashable
    value: Hashable
    invoke: float
    ret: float = math.inf

    def __attrs_post_init__(self) -> None:
        assert self.kind in (PUT, GET)
        assert self.invoke <= self.ret


def check_history(operations: Iterable[Operation], *, states_max: int = 1_000_000) -> bool:
    """Whether the whole key-value history is linearizable."""
    operations = list(operations)
    observed = {(op.key, op.value) for op in operations if op.kind == GET}
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for operation in operations:
        if operation.ret == math.inf:
            if operation.kind == GET:
                continue  # an unanswered read has no effect and constrains nothing
            if (operation.key, operation.value) not in observed:
                # An unanswered put nobody read can be linearized last: drop it
                # (this keeps the search from trying every subset of them).
                continue
        by_key[operation.key].append(operation)
    return all(check_register(ops, states_max=states_max) for ops in by_key.values())


def check_register(operations: list[Operation], *, states_max: int = 1_000_000) -> bool:
    """Whether the history of one register (initially ``None``) is linearizable.

    Raises ``RuntimeError`` if the search visits more than ``states_max`` states.
    """
    ops = sorted(operations, key=lambda op: op.invoke)
    count = len(ops)
    everything = (1 << count) - 1
    dead_ends: set[tuple[int, Hashable]] = set()
    # Explicit stack of (linearized mask, register value, candidates left to try).
    stack: list[tuple[int, Hashable, list[int]]] = []
    mask = 0
    value: Hashable = None
    candidates = _candidates(ops, mask)
    while True:
        if mask == everything:
            return True
        advanced = False
        while candidates:
            position = candidates.pop()
            op = ops[position]
            if op.kind == GET and op.value != value:
                continue
            new_value = op.value if op.kind == PUT else value
            new_mask = mask | (1 << position)
            if (new_mask, new_value) in dead_ends:
                continue
            stack.append((mask, value, candidates))
            mask, value = new_mask, new_value
            candidates = _candidates(ops, mask)
            advanced = True
            break
        if advanced:
            continue
        dead_ends.add((mask, value))
        if len(dead_ends) > states_max:
            raise RuntimeError(f"linearizability search exceeded {states_max} states")
        if not stack:
            return False
        mask, value, candidates = stack.pop()


def _candidates(ops: list[Operation], mask: int) -> list[int]:
    """Operations that may come next: invoked before the earliest pending return.

    One pass from the first unlinearized operation: ``ops`` is sorted by
    invoke time and an operation's return follows its invoke, so once an
    invoke passes the earliest return seen so far, nothing later qualifies.
    """
    first = ((~mask) & (mask + 1)).bit_length() - 1  # lowest unlinearized position
    earliest_return = math.inf
    found = []
    for position in range(first, len(ops)):
        op = ops[position]
        if op.invoke > earliest_return:
            break
        if not mask >> position & 1:
            found.append(position)
            if op.ret < earliest_return:
                earliest_return = op.ret
    found = [position for position in found if ops[position].invoke <= earliest_return]
    found.reverse()  # pop() then tries the earliest invoked first
    return found
