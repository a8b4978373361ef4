"""Crash consistency of the ordered maps: an Op crashed at any fence, with any subset of
unflushed lines surviving, recovers to the state before or after it (``check()``
passing), with ``last_applied`` saying which.

Fanout 4 and up to ~60 keys in the set-up make the Op in flight split or merge
nodes (and grow or shrink the tree's height) often.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blizzard.structures import PBPlusTree, PSkipList
from blizzard.structures import _bptreecore as B
from tests.conftest import budget
from tests.structures.test_crash import verify

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

# our own budget (12 crash tests): independent of the PHashMap/PQueue crash tests' settings
crash_settings = settings(max_examples=budget(25), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])

keys = st.one_of(st.binary(min_size=1, max_size=2), st.sampled_from([b"00", b"01", b"30", b"59"]),
                 st.binary(min_size=150, max_size=256))  # long keys: splits by bytes
values = st.one_of(st.binary(max_size=40), st.binary(min_size=129, max_size=400))


@st.composite
def setups(draw):
    """Puts (sequential keys fill nodes) then a few random puts and deletes."""
    n = draw(st.integers(0, 60))
    step = draw(st.sampled_from([1, 2, 3]))
    ops = [(b"%02d" % i, b"v" * draw(st.sampled_from([0, 30, 90])))
           for i in range(0, n, step)]
    ops += draw(st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=12))
    return ops


def builder(make, setup):
    def build(pool):
        m = make(pool, True)
        for k, v in setup:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return m
    return build


def contents(m):
    return list(m.items_bytes())


def _popitem(index):
    def op(m):
        # on an empty map the Op still applies (and consumes an index): it returns
        # KeyError (IndexError for an index out of range)
        with contextlib.suppress(KeyError, IndexError):
            m.popitem(index)
    return op


def _model_popitem(index):
    def model(items):
        if not items:
            return items
        items = list(items)
        del items[index]
        return items
    return model


OPS = {
    "put": (lambda k, v: lambda m: m.__setitem__(k, v),
            lambda k, v: lambda items: sorted({**dict(items), k: v}.items())),
    "delete": (lambda k, v: lambda m: m.pop(k, None),
               lambda k, v: lambda items: [(x, y) for x, y in items if x != k]),
    "popitem_first": (lambda k, v: _popitem(0), lambda k, v: _model_popitem(0)),
    "popitem_last": (lambda k, v: _popitem(-1), lambda k, v: _model_popitem(-1)),
    "clear": (lambda k, v: lambda m: m.clear(), lambda k, v: lambda items: []),
}

def _bptree_v1(pool, create):
    """A B+tree in layout version 1 (2-byte slots, no key words)."""
    B.NEW_LAYOUT = 1
    try:
        return PBPlusTree(pool, "t", fanout=4 if create else None)
    finally:
        B.NEW_LAYOUT = B.LAYOUT_VERSION


STRUCTURES = {
    "bptree": lambda pool, create: PBPlusTree(pool, "t", fanout=4 if create else None),
    "bptree-v1": _bptree_v1,
    "skiplist": lambda pool, create: PSkipList(pool, "s", seed=5 if create else None),
}


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("kind", sorted(OPS))
@crash_settings
@given(setup=setups(), key=keys, value=values, data=st.data())
def test_ordered_op_crash(structure, kind, setup, key, value, data):
    make = STRUCTURES[structure]
    op, model = OPS[kind]
    verify(builder(make, setup), op(key, value), contents,
           lambda pool: make(pool, False), model(key, value), data)


# -- B+tree: an Op in flight that certainly splits, or certainly merges / borrows -----------

def _leaves(core):
    return [(leaf, core._leaf_keys(leaf)) for leaf in core.leaves()]


def _split_op(value):
    """Insert into the first full leaf (its first key + NUL lands inside it)."""
    def op(m):
        core = m._core
        full = [keys for _, keys in _leaves(core) if len(keys) == core.fanout]
        m[full[0][0] + b"\0" if full else b"zz"] = value
    return op


def _merge_op(m):
    """Delete from the first leaf that the delete leaves under a third full."""
    core = m._core
    if core.height > 1:
        for _, keys in _leaves(core):
            if keys and 3 * (len(keys) - 1) < core.fanout:
                del m[keys[0]]
                return
    m.pop(b"00", None)


@pytest.mark.parametrize("path", ["split", "merge"])
@crash_settings
@given(n=st.integers(5, 60), step=st.sampled_from([1, 2, 3]), size=st.sampled_from([0, 30, 200]),
       value=values, data=st.data())
def test_bptree_split_and_merge_crash(path, n, step, size, value, data):
    make = STRUCTURES["bptree"]
    setup = [(b"%02d" % i, b"v" * size) for i in range(0, n, step)]
    if path == "split":  # fillers between the keys: most leaves end up full
        setup += [(b"%02d5" % i, b"f") for i in range(0, n, 2)]
    else:  # deletes: leaves of every fill
        setup += [(b"%02d" % i, None) for i in range(1, n, 4)]
    op = _split_op(value) if path == "split" else _merge_op
    verify(builder(make, setup), op, contents, lambda pool: make(pool, False), None, data)
