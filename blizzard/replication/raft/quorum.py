"""Quorum arithmetic: committed index and vote outcome for a configuration.

Pure functions over plain collections; imports nothing from ``blizzard`` so
it can be tested against a brute-force version in isolation.

A *majority config* is a set of voter ids. A *joint config* is a pair of
majority configs (the incoming and the outgoing one during joint consensus);
a decision needs a majority in both. An empty majority config agrees with
everything (it is "no constraint"), which is what makes the joint rules
reduce to the simple ones when the outgoing half is empty.

Compiled by Cython where available (``quorum.pxd``): the leader counts a
quorum on every acknowledgement.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

__all__ = [
    "VoteResult",
    "joint_committed_index",
    "joint_vote_result",
    "majority",
    "majority_committed_index",
    "majority_vote_result",
]

INDEX_MAX = (1 << 64) - 1  # what an empty config "commits": no constraint


class VoteResult(enum.Enum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(voter_count: int) -> int:
    """The smallest number of voters that forms a quorum of ``voter_count``."""
    return voter_count // 2 + 1


def majority_committed_index(voters: Collection[int], acked: Mapping[int, int]) -> int:
    """The largest index acknowledged by a quorum of ``voters``.

    ``acked[id]`` is the highest index durably stored on ``id``; voters not in
    ``acked`` count as 0. Example: voters 1..5 with acks [9, 7, 7, 3, 0] → 7,
    since three voters (a quorum) hold index 7.
    """
    count = len(voters)
    if count == 0:
        return INDEX_MAX
    get = acked.get
    if count == 3:  # the common case, without sorting a list
        a, b, c = [get(voter, 0) for voter in voters]
        if a > b:
            a, b = b, a
        return b if c >= b else (a if c <= a else c)
    indexes = sorted([get(voter, 0) for voter in voters], reverse=True)
    return indexes[majority(count) - 1]


def majority_vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a quorum granted, LOST once a quorum can no longer grant."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_committed_index(
    incoming: Collection[int], outgoing: Collection[int], acked: Mapping[int, int]
) -> int:
    """Committed index of a joint config: the smaller of the two halves'."""
    return min(majority_committed_index(incoming, acked), majority_committed_index(outgoing, acked))


def joint_vote_result(
    incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]
) -> VoteResult:
    """A joint vote is won when both halves win, lost when either loses."""
    first = majority_vote_result(incoming, votes)
    second = majority_vote_result(outgoing, votes)
    if first == second:
        return first
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    return VoteResult.PENDING
