"""The skiplist's DRAM index of tall towers (KeyIndex, Run) against a sorted list.

Keys are drawn to stress the words: shared prefixes longer than 8 bytes,
keys differing only past their first 8 bytes (or past the shared prefix
plus 8), empty keys, keys shorter than 8 bytes, trailing zero bytes (equal
words, different keys) and keys that are prefixes of others.
"""

from __future__ import annotations

import array
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blizzard.structures import _keyindex as K
from tests.conftest import budget

pytestmark = pytest.mark.interpreted

_PREFIXES = [b"", b"\x00", b"a", b"user/0000000000", b"0000000000000000", b"\xff" * 9]
_TAILS = st.binary(max_size=10) | st.sampled_from([b"", b"\x00", b"\x00\x00", b"\xff", b"1"])

keys = st.builds(lambda p, t: p + t, st.sampled_from(_PREFIXES), _TAILS)


def test_words_order_as_their_keys_do():
    assert K.word(b"", 0) == 0 and K.word(b"\x01", 0) == 1 << 56
    assert K.word(b"abcdefghij", 2) == int.from_bytes(b"cdefghij", "big")
    assert K.word(b"abc", 1) == int.from_bytes(b"bc" + bytes(6), "big")
    assert K.common_prefix(b"abcd", b"abxy") == 2 and K.common_prefix(b"ab", b"abc") == 2
    assert K.common_prefix(b"", b"x") == 0


@settings(max_examples=budget(300), deadline=None)
@given(st.lists(keys, unique=True), keys)
def test_a_run_bisects_as_bisect_left_does(ks, probe):
    ks.sort()
    run = K.Run(ks, list(range(len(ks))))
    run.check()
    want = bisect_left(ks, probe)
    assert run.bisect_words(probe) == want
    assert run.bisect(probe) == want
    for k in ks:
        assert run.bisect_words(k) == bisect_left(ks, k)


@settings(max_examples=budget(200), deadline=None)
@given(st.lists(keys, unique=True, min_size=1), st.lists(keys), st.data())
def test_a_run_kept_in_order_through_inserts_replacements_and_deletes(start, extra, data):
    model = sorted(start)
    run = K.Run(list(model), [len(k) for k in model])
    for kb in extra:
        j = run.bisect_words(kb)
        assert j == bisect_left(model, kb)
        if j < len(model) and model[j] == kb:
            run.delete(j)
            del model[j]
        else:
            run.insert(j, kb, len(kb))
            model.insert(j, kb)
        run.check()
        assert run.keys == model and list(run.values) == [len(k) for k in model]
    if len(model) > 2:
        j = data.draw(st.integers(0, len(model) - 1))
        lo = model[j - 1] if j else None
        hi = model[j + 1] if j + 1 < len(model) else None
        kb = data.draw(keys.filter(lambda k: (lo is None or k > lo) and (hi is None or k < hi)))
        run.replace(j, kb, 7)
        model[j] = kb
        run.check()
        assert run.keys == model and run.values[j] == 7
        upper = run.split(len(model) // 2)
        run.check()
        upper.check()
        assert run.keys + upper.keys == model


class KeyIndexMachine(RuleBasedStateMachine):
    """KeyIndex against a sorted list of (key, node), with a tiny chunk load so
    chunks split and vanish all the time."""

    def __init__(self) -> None:
        super().__init__()
        self.index = K.KeyIndex([], load=2)
        self.model: list[tuple[bytes, int]] = []
        self.nodes = 1

    def _keys(self) -> list[bytes]:
        return [k for k, _ in self.model]

    @rule(kb=keys)
    def set(self, kb: bytes) -> None:
        self.nodes += 1
        ks = self._keys()
        j = bisect_left(ks, kb)
        if j < len(ks) and ks[j] == kb:
            self.model[j] = (kb, self.nodes)
        else:
            self.model.insert(j, (kb, self.nodes))
        self.index.set(kb, self.nodes)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data) -> None:
        kb, _ = self.model.pop(data.draw(st.integers(0, len(self.model) - 1)))
        self.index.remove(kb)

    @rule(kb=keys)
    def before(self, kb: bytes) -> None:
        j = bisect_left(self._keys(), kb)
        want = self.model[j - 1][1] if j else 0
        assert self.index.before(kb) == want
        assert self.index._before_interpreted(kb) == want

    @rule(kb=keys, cap=st.integers(0, 7))
    def nodes_after(self, kb: bytes, cap: int) -> None:
        out = array.array("q", bytes(8 * cap))
        want = [x for k, x in self.model if k > kb][:cap]
        assert self.index.nodes_after(kb, out) == len(want)
        assert list(out[:len(want)]) == want

    @invariant()
    def same(self) -> None:
        self.index.check()
        assert self.index.items() == self.model


TestKeyIndexMachine = KeyIndexMachine.TestCase
TestKeyIndexMachine.settings = settings(max_examples=budget(60), stateful_step_count=60,
                                        deadline=None)


def test_built_from_sorted_pairs_in_chunks():
    pairs = [(b"k%05d" % i, i + 1) for i in range(1000)]
    index = K.KeyIndex(pairs, load=16)
    index.check()
    assert len(index.chunks) == 63 and index.items() == pairs
    assert index.before(b"k00000") == 0 and index.before(b"k00500") == 500
    assert index.before(b"k00500\x00") == 501 and index.before(b"z") == 1000
    assert K.KeyIndex([]).before(b"x") == 0


def test_nodes_after_a_key_across_chunks():
    index = K.KeyIndex([(b"k%05d" % i, i + 1) for i in range(1000)], load=16)
    out = array.array("q", bytes(8 * 40))
    assert index.nodes_after(b"k00010", out) == 40 and list(out) == list(range(12, 52))
    assert index.nodes_after(b"k00009\xff", out) == 40 and out[0] == 11
    assert index.nodes_after(b"k00990", out) == 9 and list(out[:9]) == list(range(992, 1001))
    assert index.nodes_after(b"", out) == 40 and out[0] == 1
    assert index.nodes_after(b"z", out) == 0 and K.KeyIndex([]).nodes_after(b"", out) == 0
