"""Crash consistency: a crash at any fence of any Op, with any subset of unflushed
cache lines surviving, recovers to the state before or after that Op, with
``last_applied`` saying which (exactly-once)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blizzard import Empty
from blizzard.pmem import CrashSimMedia, Pool
from blizzard.pmem.crashsim import all_or_nothing, random_chooser
from blizzard.structures import PHashMap, PQueue, registry_for
from blizzard.structures import _hashcore as H
from tests.conftest import budget

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

MEDIA_BYTES = 2 << 20
# BLIZZARD_CRASH_EXAMPLES=500 BLIZZARD_CRASH_RANDOM=1 pytest tests/structures/test_crash.py
# runs a longer, non-derandomized hunt.
crash_settings = settings(
    max_examples=int(os.environ.get("BLIZZARD_CRASH_EXAMPLES", budget(40))),
    derandomize=not os.environ.get("BLIZZARD_CRASH_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Crash(Exception):
    """Raised by the fence hook: the machine stops here."""


def choosers():
    return st.one_of(
        st.integers(0, 2**32).map(random_chooser),
        st.booleans().map(all_or_nothing),
    )


def run(build, op, contents, open_, k: int | None, chooser):
    """Build a state, run ``op`` crashing at fence ``k``; returns what recovery sees.

    With ``k`` None, only counts the fences of ``op``.
    """
    media = CrashSimMedia(MEDIA_BYTES)
    pool = Pool.create(media)
    handle = build(pool)
    before = contents(handle)
    index = registry_for(pool).last_applied
    fences = media.fences
    images = []

    def hook(m):
        if m.fences - fences == k:
            m.fence_hook = None
            images.append(m.crash_image(chooser))
            raise Crash

    media.fence_hook = hook
    with contextlib.suppress(Crash):
        op(handle)
    media.fence_hook = None
    if k is None:
        return media.fences - fences, contents(handle)
    after = contents(handle) if not images else None
    image = images[0] if images else media.crash_image(chooser)
    recovered = Pool.open(CrashSimMedia.from_image(image))
    handle = open_(recovered)
    registry = registry_for(recovered)
    registry.check()
    handle.check()
    return before, after, contents(handle), index, registry.last_applied


def verify(build, op, contents, open_, model_after, data, ops_in_flight=1):
    """Crash ``op`` at a drawn fence; ``model_after`` None: trust the uncrashed run."""
    fences, dry_after = run(build, op, contents, open_, None, None)
    k = data.draw(st.integers(1, fences), label="fence")
    chooser = data.draw(choosers(), label="chooser")
    before, after, got, index, applied = run(build, op, contents, open_, k, chooser)
    expected_after = model_after(before) if model_after is not None else dry_after
    if after is not None:
        assert after == expected_after
    if got == expected_after and got != before:
        assert applied == index + ops_in_flight
    elif got == before and got != expected_after:
        assert applied == index
    else:
        assert got == before == expected_after, "recovered a state that is neither before nor after"
        assert applied in (index, index + ops_in_flight)


# -- PHashMap -----------------------------------------------------------------------------

map_keys = st.binary(min_size=1, max_size=2)
map_values = st.one_of(st.binary(max_size=40), st.binary(min_size=H.INLINE_MAX, max_size=1200))


@st.composite
def map_setups(draw):
    """A list of puts and deletes; up to ~60 keys, so Ops in flight split and merge."""
    n = draw(st.integers(0, 60))
    ops = [(b"%02d" % i, draw(st.sampled_from([b"", b"v" * 30, b"w" * 90]))) for i in range(n)]
    ops += draw(st.lists(st.tuples(map_keys, st.one_of(st.none(), map_values)), max_size=12))
    return ops


def map_build(setup):
    def build(pool):
        m = PHashMap(pool, "m")
        for k, v in setup:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return m
    return build


def map_contents(m):
    return dict(m.items_bytes())


def map_open(pool):
    return PHashMap(pool, "m")


MAP_OPS = {
    "put": (lambda k, v: lambda m: m.__setitem__(k, v),
            lambda k, v: lambda d: {**d, k: v}),
    "delete": (lambda k, v: lambda m: m.pop(k, None),
               lambda k, v: lambda d: {x: y for x, y in d.items() if x != k}),
    "clear": (lambda k, v: lambda m: m.clear(),
              lambda k, v: lambda d: {}),
}


@pytest.mark.parametrize("kind", sorted(MAP_OPS))
@crash_settings
@given(setup=map_setups(), key=st.one_of(map_keys, st.sampled_from([b"00", b"01", b"07"])),
       value=map_values, data=st.data())
def test_map_op_crash(kind, setup, key, value, data):
    op, model = MAP_OPS[kind]
    verify(map_build(setup), op(key, value), map_contents, map_open, model(key, value), data)


@crash_settings
@given(rounds=st.integers(20, 45), data=st.data())
def test_map_update_with_compaction_crash(rounds, data):
    """Updates that fill a page and force a compaction, crashed anywhere."""
    setup = [(b"k%d" % (i % 8), bytes([i % 256]) * 120) for i in range(rounds)]
    key, value = b"k3", b"z" * 200
    verify(map_build(setup), lambda m: m.__setitem__(key, value), map_contents, map_open,
           lambda d: {**d, key: value}, data)


# -- PQueue -------------------------------------------------------------------------------

queue_values = st.one_of(st.binary(max_size=300), st.binary(min_size=1100, max_size=1300))


@st.composite
def queue_setups(draw):
    """Puts (sized so chunk boundaries fall anywhere) and gets."""
    size = draw(st.integers(0, 200))
    ops = [b"%d" % i + bytes(size) for i in range(draw(st.integers(0, 80)))]
    ops += draw(st.lists(st.one_of(st.none(), queue_values), max_size=15))
    return ops


def queue_build(setup):
    def build(pool):
        q = PQueue(pool, "q")
        for v in setup:
            if v is None:
                if len(q):
                    q.get()
            else:
                q.put(v)
        return q
    return build


def queue_contents(q):
    return list(q._core.values())


def queue_open(pool):
    return PQueue(pool, "q")


def _get(q):
    with contextlib.suppress(Empty):
        q.get_nowait()


QUEUE_OPS = {
    "put": (lambda v: lambda q: q.put(v), lambda v: lambda items: [*items, v]),
    "get": (lambda v: _get, lambda v: lambda items: items[1:]),
    "clear": (lambda v: lambda q: q.clear(), lambda v: lambda items: []),
}


@pytest.mark.parametrize("kind", sorted(QUEUE_OPS))
@crash_settings
@given(setup=queue_setups(), value=queue_values, data=st.data())
def test_queue_op_crash(kind, setup, value, data):
    op, model = QUEUE_OPS[kind]
    verify(queue_build(setup), op(value), queue_contents, queue_open, model(value), data)


# -- a batch of Ops in one transaction (what Raft backends will hand the registry) ----------

@st.composite
def batches(draw):
    """Ops on a map and a queue that collide inside one transaction."""
    from blizzard.structures.ops import Encoder, OpCode

    m, q = Encoder("m"), Encoder("q")
    choices = [
        lambda: m.two(OpCode.MAP_PUT, draw(map_keys), draw(map_values)),
        lambda: m.one(OpCode.MAP_DELETE, draw(map_keys)),
        lambda: q.one(OpCode.QUEUE_PUT, draw(queue_values)),
        lambda: q.zero(OpCode.QUEUE_GET),
        lambda: q.zero(OpCode.QUEUE_CLEAR),
    ]
    picks = draw(st.lists(st.integers(0, len(choices) - 1), min_size=1, max_size=8))
    return [choices[i]() for i in picks]


@crash_settings
@given(map_setup=map_setups(), queue_setup=queue_setups(), batch=batches(), data=st.data())
def test_batch_crash(map_setup, queue_setup, batch, data):
    """A whole batch is one transaction: a crash leaves all of it or none of it."""
    def build(pool):
        return map_build(map_setup)(pool), queue_build(queue_setup)(pool)

    def op(handles):
        registry = registry_for(handles[0].pool)
        base = registry.last_applied
        registry.apply([(base + 1 + i, record) for i, record in enumerate(batch)])

    def contents(handles):
        return map_contents(handles[0]), queue_contents(handles[1])

    def open_(pool):
        class Both:
            def __init__(self):
                self.parts = (map_open(pool), queue_open(pool))

            def check(self):
                for part in self.parts:
                    part.check()

            def __getitem__(self, i):
                return self.parts[i]

        return Both()

    verify(build, op, contents, open_, None, data, ops_in_flight=len(batch))


# -- creating and dropping structures -----------------------------------------------------

@pytest.mark.parametrize("kind", ["create", "drop"])
@crash_settings
@given(n=st.integers(0, 40), data=st.data())
def test_create_and_drop_crash(kind, n, data):
    """A crash while creating or dropping a structure leaves it whole or absent."""
    def build(pool):
        m = PHashMap(pool, "old")
        for i in range(n):
            m[b"%d" % i] = b"x" * 50
        return pool

    def op(pool):
        if kind == "create":
            PQueue(pool, "new")
        else:
            registry_for(pool).drop("old")

    def contents(pool):
        registry = registry_for(pool)
        return {name: dict(registry.core(name).items_raw()) if name == "old" else []
                for name in registry.names()}

    class Opened:
        def __init__(self, pool):
            self.pool = pool

        def check(self):
            registry_for(self.pool).check()

    def open_(pool):
        return Opened(pool)

    def model(before):
        after = dict(before)
        if kind == "create":
            after["new"] = []
        else:
            after.pop("old")
        return after

    verify(build, op, lambda p: contents(p.pool if isinstance(p, Opened) else p), open_, model,
           data)
