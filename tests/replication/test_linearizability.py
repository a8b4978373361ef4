"""The linearizability checker on histories known to be (or not be) linearizable."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.replication.linearizability import (
    GET,
    PUT,
    Operation,
    check_history,
    check_register,
)


def put(value, invoke, ret=math.inf, key="k"):
    return Operation(PUT, key, value, invoke, ret)


def get(value, invoke, ret, key="k"):
    return Operation(GET, key, value, invoke, ret)


def test_sequential_history():
    assert check_history([put(1, 0, 1), get(1, 2, 3), put(2, 4, 5), get(2, 6, 7)])


def test_initial_value_is_none():
    assert check_history([get(None, 0, 1)])
    assert not check_history([get(5, 0, 1)])


def test_concurrent_put_may_be_seen_or_not():
    """A read overlapping a put may return either the old or the new value."""
    assert check_history([put(1, 0, 1), put(2, 2, 10), get(1, 3, 4), get(2, 5, 6)])
    assert check_history([put(1, 0, 1), put(2, 2, 10), get(2, 3, 4)])


def test_stale_read_after_completed_put_is_rejected():
    assert not check_history([put(1, 0, 1), put(2, 2, 3), get(1, 4, 5)])


def test_reads_cannot_go_back_in_time():
    """Once a read saw the new value, a later read may not see the old one."""
    history = [put(1, 0, 1), put(2, 2, 20), get(2, 3, 4), get(1, 5, 6)]
    assert not check_history(history)


def test_pending_put_may_take_effect():
    assert check_history([put(1, 0, 1), put(2, 2), get(2, 5, 6), get(2, 7, 8)])
    assert check_history([put(1, 0, 1), put(2, 2), get(1, 5, 6)])
    assert not check_history([put(1, 0, 1), put(2, 2), get(2, 5, 6), get(1, 7, 8)])


def test_keys_are_independent():
    history = [put(1, 0, 1, "a"), put(2, 0, 1, "b"), get(1, 2, 3, "a"), get(2, 2, 3, "b")]
    assert check_history(history)
    assert not check_history([*history, get(2, 4, 5, "a")])


def test_search_budget():
    ops = [put(i, i, math.inf) for i in range(16)] + [get(99, 100, 101)]
    with pytest.raises(RuntimeError, match="exceeded"):
        check_register(ops, states_max=100)


def simulate_register(seed: int, count: int) -> list[Operation]:
    """Random overlapping operations on an atomic register: always linearizable."""
    rng = random.Random(seed)
    value = None
    ops = []
    clock = 0
    for i in range(count):
        clock += rng.randint(1, 3)
        invoke = clock
        clock += 1
        effect = clock  # the atomic point
        if rng.random() < 0.5:
            value = i
            op = Operation(PUT, "k", i, invoke)
        else:
            op = Operation(GET, "k", value, invoke)
        ops.append((op, effect))
    # Returns happen some time after the effect; invocations stay in order.
    result = []
    for op, effect in ops:
        ret = effect + rng.random() * 5
        result.append(Operation(op.kind, op.key, op.value, op.invoke, ret))
    return result


@given(st.integers(0, 10_000))
def test_random_atomic_histories_are_linearizable(seed):
    assert check_history(simulate_register(seed, 30))


@given(st.integers(0, 10_000))
def test_a_corrupted_read_is_usually_caught(seed):
    """Changing a read's result to a value never written is always caught."""
    ops = simulate_register(seed, 30)
    reads = [i for i, op in enumerate(ops) if op.kind == GET]
    if not reads:
        return
    i = reads[seed % len(reads)]
    ops[i] = Operation(GET, "k", "never-written", ops[i].invoke, ops[i].ret)
    assert not check_history(ops)
