"""A hypothesis state machine for the ordered maps, against ``sortedcontainers.SortedDict``.

``make_machine(open_map)`` returns a RuleBasedStateMachine class; ``open_map(pool,
create)`` opens (``create``: creates with test parameters) the map under test.
Int keys (negative ones too) check that the key codec's byte order is the
natural order; values straddle the inline/out-of-line boundary.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sortedcontainers import SortedDict

from blizzard.pmem import Pool
from blizzard.structures import registry_for
from tests.structures.conftest import shm_tempdir

keys = st.one_of(st.integers(-40, 40), st.integers(-(2**70), 2**70))
values = st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300))
bounds = st.one_of(st.none(), st.integers(-45, 45))


def make_machine(open_map):
    class OrderedMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.dir = shm_tempdir()
            self.path = self.dir / "o.pool"
            self.pool = Pool.create(self.path, 8 << 20, mode="none")
            self.map = open_map(self.pool, True)
            self.model: SortedDict = SortedDict()

        @rule(k=keys, v=values)
        def put(self, k, v):
            self.map[k] = v
            self.model[k] = v

        @rule(ks=st.lists(st.integers(-60, 60), min_size=5, max_size=40),
              v=st.binary(max_size=20))
        def put_many(self, ks, v):
            for k in ks:
                self.map[k] = v
                self.model[k] = v

        @rule(k=keys)
        def delete(self, k):
            if k in self.model:
                del self.map[k]
                del self.model[k]
            else:
                with pytest.raises(KeyError):
                    del self.map[k]

        @precondition(lambda self: self.model)
        @rule(data=st.data())
        def delete_many(self, data):
            for k in data.draw(st.lists(st.sampled_from(list(self.model)), max_size=30)):
                assert self.map.pop(k, None) == self.model.pop(k, None)

        @rule(k=keys)
        def get(self, k):
            assert self.map.get(k) == self.model.get(k)
            assert (k in self.map) == (k in self.model)

        @rule(lo=bounds, hi=bounds, inclusive=st.tuples(st.booleans(), st.booleans()),
              reverse=st.booleans())
        def irange(self, lo, hi, inclusive, reverse):
            got = list(self.map.irange(lo, hi, inclusive, reverse))
            assert got == list(self.model.irange(lo, hi, inclusive, reverse))
            items = list(self.map.irange_items(lo, hi, inclusive, reverse))
            assert items == [(k, self.model[k]) for k in got]

        @rule(k=keys)
        def bisect(self, k):
            assert self.map.bisect_left(k) == self.model.bisect_left(k)
            assert self.map.bisect_right(k) == self.model.bisect_right(k)

        @rule(data=st.data())
        def peekitem(self, data):
            n = len(self.model)
            i = data.draw(st.one_of(st.sampled_from([0, -1]), st.integers(-n - 1, n)))
            if -n <= i < n:
                assert self.map.peekitem(i) == self.model.peekitem(i)
            else:
                with pytest.raises(IndexError):
                    self.map.peekitem(i)

        @rule(data=st.data())
        def popitem(self, data):
            n = len(self.model)
            i = data.draw(st.one_of(st.sampled_from([0, -1]), st.integers(-n - 1, n)))
            try:
                expected = self.model.popitem(i)
            except (KeyError, IndexError) as exc:  # empty: KeyError; out of range: IndexError
                with pytest.raises(type(exc)):
                    self.map.popitem(i)
            else:
                assert self.map.popitem(i) == expected

        @rule()
        def clear(self):
            self.map.clear()
            self.model.clear()

        @rule()
        def reopen(self):
            self.pool.close()
            self.pool = Pool.open(self.path, mode="none")
            self.map = open_map(self.pool, False)

        @invariant()
        def agrees(self):
            self.map.check()
            assert len(self.map) == len(self.model)
            assert list(self.map.items()) == list(self.model.items())
            registry_for(self.pool).check()

        def teardown(self):
            self.pool.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    return OrderedMachine
