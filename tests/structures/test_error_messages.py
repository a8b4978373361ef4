"""What the maps' and the queue's deliberate errors carry: the key a KeyError is
about (``KeyError(key)``, as ``dict``), the queue an Empty is about; and a key
the codec cannot encode is absent for every read, as a key a dict does not hold."""

from __future__ import annotations

import pytest

from blizzard.exceptions import Empty, EncodeError, InvalidArgumentError
from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PHashMap, PQueue, PSkipList

MAPS = {"hashmap": PHashMap, "bptree": PBPlusTree, "skiplist": PSkipList}


@pytest.fixture
def pool():
    with Pool.create(DramMedia(8 << 20)) as p:
        yield p


@pytest.mark.parametrize("kind", sorted(MAPS))
def test_a_missing_key_error_carries_the_key(pool, kind):
    m = MAPS[kind](pool, "m", key_codec="str", value_codec="int")
    m["there"] = 1
    for missing in (lambda: m["absent"], lambda: m.pop("absent"),
                    lambda: m.__delitem__("absent")):
        with pytest.raises(KeyError) as info:
            missing()
        assert info.value.args == ("absent",)  # what dict raises
    m.clear()
    with pytest.raises(KeyError, match=r"popitem\(\): the map is empty"):
        m.popitem()


@pytest.mark.parametrize("kind", sorted(MAPS))
def test_a_key_the_codec_cannot_encode_is_absent(pool, kind):
    """``5 in m`` and ``m[5]`` agree on a str-key map: 5 is not there."""
    m = MAPS[kind](pool, "m", key_codec="str", value_codec="int")
    m["5"] = 5
    assert 5 not in m and m.get(5) is None and m.get(5, "d") == "d"
    with pytest.raises(KeyError) as info:
        m[5]
    assert info.value.args == (5,)
    with pytest.raises(KeyError):
        del m[5]
    assert m.pop(5, "d") == "d"
    with pytest.raises(KeyError):
        m.pop(5)
    with pytest.raises(EncodeError, match="str"):  # writing it is the caller's mistake
        m[5] = 1
    assert dict(m) == {"5": 5}


def test_the_queue_errors_name_the_queue(pool):
    q = PQueue(pool, "jobs")
    for empty in (lambda: q.get(block=False), q.get_nowait, q.peek,
                  lambda: q.get(timeout=0.01)):
        with pytest.raises(Empty, match=r"queue 'jobs' is .*empty"):
            empty()
    with pytest.raises(InvalidArgumentError, match="timeout must be a non-negative number, "
                                                   "got -1"):
        q.get(timeout=-1)
