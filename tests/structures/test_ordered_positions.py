"""Positional access of the ordered maps -- ``islice`` and indexable, sliceable
``keys()`` / ``values()`` / ``items()`` views -- against sortedcontainers'
``SortedDict`` as the model."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PSkipList
from tests.conftest import budget

OPENERS = {
    # fanout 4: a few dozen keys already span many leaves and levels
    "bptree": lambda pool: PBPlusTree(pool, "o", key_codec="int", value_codec="int",
                                      fanout=4),
    "skiplist": lambda pool: PSkipList(pool, "o", key_codec="int", value_codec="int",
                                       seed=7),
}

positions = st.one_of(st.none(), st.integers(-70, 70))
indexes = st.integers(-70, 70)
steps = st.one_of(st.none(), st.integers(-5, 5).filter(bool))


@pytest.fixture(params=sorted(OPENERS))
def ordered(request):
    """An empty ordered map of each kind, on a pool in DRAM (cleared per example)."""
    with Pool.create(DramMedia(32 << 20)) as pool:
        yield OPENERS[request.param](pool)


def _fill(m, keys):
    m.clear()
    model = SortedDict({k: -k for k in keys})
    for k in keys:
        m[k] = -k
    return model


@settings(max_examples=budget(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.integers(-1000, 1000), max_size=60, unique=True), data=st.data())
def test_islice_and_view_positions_match_sorted_dict(ordered, keys, data):
    m = ordered
    model = _fill(m, keys)
    for _ in range(6):
        start, stop = data.draw(positions), data.draw(positions)
        reverse = data.draw(st.booleans())
        assert list(m.islice(start, stop, reverse)) == \
            list(model.islice(start, stop, reverse)), (start, stop, reverse)
        cut = slice(start, stop, data.draw(steps))
        assert m.keys()[cut] == model.keys()[cut], cut
        assert m.values()[cut] == model.values()[cut], cut
        assert m.items()[cut] == model.items()[cut], cut
        i = data.draw(indexes)
        for view, expected in ((m.keys(), model.keys()), (m.values(), model.values()),
                               (m.items(), model.items())):
            if -len(model) <= i < len(model):
                assert view[i] == expected[i], i
            else:
                with pytest.raises(IndexError):
                    view[i]
    assert list(m.islice()) == list(model)
    assert list(reversed(m.values())) == list(reversed(model.values()))


def test_view_indexes_are_integers(ordered):
    _fill(ordered, [3, 1, 2])
    assert ordered.keys()[0] == 1 and ordered.items()[-1] == (3, -3)
    assert ordered.keys().index(2) == 1
    with pytest.raises(TypeError, match="integers or slices"):
        ordered.keys()["a"]
    with pytest.raises(ValueError, match="not in the map"):
        ordered.keys().index(9)
    ordered.clear()
    with pytest.raises(IndexError):
        ordered.values()[0]
    assert ordered.items()[:] == [] and list(ordered.islice(0, 5)) == []


def test_islice_reads_by_position_not_by_scan_from_the_start(ordered, monkeypatch):
    """The range is found by position (the core's item_at), then scanned from
    its first key: a scan from the map's first key would pass 2000 others."""
    m = ordered
    m.update((k, k) for k in range(2000))
    seen = []

    class Counting:  # stands in for the core (compiled core classes are immutable)
        def __init__(self, core):
            self.core = core

        def __getattr__(self, name):
            return getattr(self.core, name)

        def items_range(self, *args, **kwargs):
            for item in self.core.items_range(*args, **kwargs):
                seen.append(item[0])
                yield item

    monkeypatch.setattr(m, "_core", Counting(m._core))
    assert list(m.islice(1990, 1993)) == [1990, 1991, 1992]
    assert m.keys()[1995:1997] == [1995, 1996]
    assert len(seen) == 5
