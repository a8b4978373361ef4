"""Quorum maths against brute-force ("dumb") versions."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from blizzard.replication.raft import quorum
from blizzard.replication.raft.quorum import VoteResult

ids = st.integers(1, 9)
voter_sets = st.sets(ids, max_size=7)
acks = st.dictionaries(ids, st.integers(0, 20))
votes = st.dictionaries(ids, st.booleans())


def dumb_committed(voters, acked):
    """The largest index that at least a majority of voters have reached."""
    if not voters:
        return quorum.INDEX_MAX
    best = 0
    for index in range(0, 21):
        holders = sum(1 for v in voters if acked.get(v, 0) >= index)
        if holders * 2 > len(voters):
            best = index
    return best


def dumb_vote(voters, granted):
    if not voters:
        return VoteResult.WON
    yes = sum(1 for v in voters if granted.get(v) is True)
    unknown = [v for v in voters if v not in granted]
    if yes * 2 > len(voters):
        return VoteResult.WON
    # Lost if even all the unknown votes turning yes would not win.
    if (yes + len(unknown)) * 2 <= len(voters):
        return VoteResult.LOST
    return VoteResult.PENDING


@given(voter_sets, acks)
def test_majority_committed_index_matches_dumb(voters, acked):
    assert quorum.majority_committed_index(voters, acked) == dumb_committed(voters, acked)


@given(voter_sets, votes)
def test_majority_vote_matches_dumb(voters, granted):
    assert quorum.majority_vote_result(voters, granted) == dumb_vote(voters, granted)


@given(voter_sets, voter_sets, acks)
def test_joint_committed_is_min_of_halves(incoming, outgoing, acked):
    joint = quorum.joint_committed_index(incoming, outgoing, acked)
    expected = min(dumb_committed(incoming, acked), dumb_committed(outgoing, acked))
    assert joint == expected


@given(voter_sets, voter_sets, votes)
def test_joint_vote_needs_both_halves(incoming, outgoing, granted):
    result = quorum.joint_vote_result(incoming, outgoing, granted)
    first, second = dumb_vote(incoming, granted), dumb_vote(outgoing, granted)
    if first == second == VoteResult.WON:
        assert result == VoteResult.WON
    elif VoteResult.LOST in (first, second):
        assert result == VoteResult.LOST
    else:
        assert result == VoteResult.PENDING


def test_worked_example():
    """Five voters with acks 9, 7, 7, 3, 0: three hold 7, so 7 commits."""
    acked = {1: 9, 2: 7, 3: 7, 4: 3, 5: 0}
    assert quorum.majority_committed_index({1, 2, 3, 4, 5}, acked) == 7


def test_three_voter_fast_path_all_orders():
    for values in itertools.permutations([1, 5, 9]):
        acked = dict(zip((1, 2, 3), values, strict=True))
        assert quorum.majority_committed_index({1, 2, 3}, acked) == 5


def test_majority_sizes():
    assert [quorum.majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]
