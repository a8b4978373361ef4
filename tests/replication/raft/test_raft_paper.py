"""One test per claim of the Raft paper (Ongaro & Ousterhout, 2014)."""

from __future__ import annotations

import random

import pytest

from blizzard.replication.raft.core import Config, Raft, Role
from blizzard.replication.raft.messages import (
    ConfState,
    Entry,
    HardState,
    MsgApp,
    MsgAppResp,
    MsgHeartbeat,
    MsgVote,
    MsgVoteResp,
)
from blizzard.replication.raft.storage import MemoryStorage

from .harness import Network, make_node

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

NO_PRE_VOTE = {"pre_vote": False, "check_quorum": False}


def drain(node: Raft):
    ready = node.ready()
    node.advance(ready)
    return ready


def test_followers_start_as_followers_and_update_term():
    """Servers start as followers; a higher term turns anyone into a follower.
    Reference: section 5.1"""
    for role_setup in ("follower", "candidate", "leader"):
        node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
        if role_setup != "follower":
            node.campaign()
        if role_setup == "leader":
            node.step(MsgVoteResp(2, 1, node.term, False))
            assert node.role == Role.LEADER
        node.step(MsgApp(2, 1, 5, 0, 0, (), 0))
        assert (node.role, node.term, node.lead) == (Role.FOLLOWER, 5, 2)


def test_stale_term_messages_are_rejected():
    """A request with a stale term is rejected. Reference: section 5.1"""
    node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    node.step(MsgApp(2, 1, 5, 0, 0, (), 0))
    drain(node)
    node.step(MsgApp(3, 1, 4, 0, 0, (Entry(4, 1),), 0))
    assert node.log.last_index() == 0
    (reply,) = drain(node).messages
    assert reply.term == 5, "the stale sender learns the newer term"


def test_election_timeout_starts_an_election():
    """A follower that hears nothing within its timeout becomes a candidate,
    votes for itself and asks everyone for a vote. Reference: section 5.2"""
    node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    for _ in range(2 * node.config.election_tick):
        node.tick()
    assert node.role == Role.CANDIDATE and node.term == 1 and node.vote == 1
    ready = drain(node)
    assert sorted(m.target for m in ready.messages if type(m) is MsgVote) == [2, 3]
    assert ready.hard_state == HardState(1, 1, 0), "the vote is persisted first"


def test_candidate_wins_with_a_majority():
    """Reference: section 5.2"""
    for size, grants, expected in [
        (3, [2], Role.LEADER),
        (5, [2], Role.CANDIDATE),
        (5, [2, 3], Role.LEADER),
        (1, [], Role.LEADER),
    ]:
        node, _ = make_node(1, tuple(range(1, size + 1)), **NO_PRE_VOTE)
        node.campaign()
        for voter in grants:
            node.step(MsgVoteResp(voter, 1, 1, False))
        assert node.role == expected, (size, grants)


def test_candidate_loses_with_a_majority_of_rejections():
    node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    node.campaign()
    node.step(MsgVoteResp(2, 1, 1, True))
    node.step(MsgVoteResp(3, 1, 1, True))
    assert node.role == Role.FOLLOWER


def test_one_vote_per_term():
    """Each server votes for at most one candidate per term. Reference: section 5.2"""
    node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    node.step(MsgVote(2, 1, 1, 0, 0))
    node.step(MsgVote(3, 1, 1, 0, 0))
    node.step(MsgVote(2, 1, 1, 0, 0))  # a retry by the same candidate is granted again
    replies = [m for m in drain(node).messages if type(m) is MsgVoteResp]
    assert [(m.target, m.reject) for m in replies] == [(2, False), (3, True), (2, False)]
    assert node.vote == 2


def test_candidate_steps_down_for_a_leader_of_its_term():
    """Reference: section 5.2"""
    node, _ = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    node.campaign()
    node.step(MsgApp(2, 1, 1, 0, 0, (), 0))
    assert node.role == Role.FOLLOWER and node.lead == 2


def test_election_timeouts_are_randomized():
    """Reference: section 5.2"""
    timeouts = set()
    for seed in range(50):
        node = Raft(Config(id=1), MemoryStorage(ConfState((1, 2, 3))), random.Random(seed))
        timeouts.add(node._randomized_election_timeout)
    assert len(timeouts) > 3
    assert all(10 <= t < 20 for t in timeouts)


def test_leader_replicates_and_commits():
    """The leader appends, replicates, commits once a majority stored the entry,
    and followers learn the commit index. Reference: section 5.3"""
    net = Network(3, **NO_PRE_VOTE)
    leader = net.elect(1)
    leader.propose(b"x")
    net.stabilize()
    for node_id in (1, 2, 3):
        assert net.data_applied(node_id) == [b"x"]
        assert net.nodes[node_id].log.committed == 2


def test_commit_needs_a_majority():
    """Reference: section 5.3"""
    net = Network(5, **NO_PRE_VOTE)
    leader = net.elect(1)
    for other in (3, 4, 5):
        net.cut(1, other)
    leader.propose(b"x")
    net.stabilize()
    assert leader.log.committed == 1
    net.recover()
    net.tick(1, 2)
    net.stabilize()
    assert leader.log.committed == 2


def test_follower_rejects_on_mismatch_and_leader_backtracks():
    """AppendEntries carries (index, term) of the preceding entry; a follower
    without it rejects and the leader retries from earlier (with a hint that
    skips whole terms). Reference: section 5.3"""
    net = Network(3, **NO_PRE_VOTE)
    net.elect(1)
    net.isolate(3)
    for i in range(30):
        net.nodes[1].propose(b"%d" % i)
    net.stabilize()
    net.recover()
    net.tick(1, 2)
    net.stabilize()
    assert net.data_applied(3) == net.data_applied(1)
    rejections = [m for m in net.delivered if type(m) is MsgAppResp and m.reject]
    assert len(rejections) <= 2, "the hint brings the leader back in one step"


def test_conflicting_follower_entries_are_overwritten():
    """Reference: section 5.3"""
    node, storage = make_node(2, (1, 2, 3), **NO_PRE_VOTE)
    storage.append([Entry(1, 1), Entry(1, 2), Entry(2, 3), Entry(2, 4)])
    storage.set_hard_state(HardState(3, 0, 1))
    node = Raft(Config(id=2, **NO_PRE_VOTE), storage, random.Random(1))
    node.step(MsgApp(1, 2, 3, 1, 2, (Entry(3, 3, data=b"new"),), 2))
    ready = drain(node)
    assert ready.entries == (Entry(3, 3, data=b"new"),)
    assert ready.messages[0].index == 3 and not ready.messages[0].reject
    storage.append(ready.entries)
    assert storage.last_index() == 3


def test_vote_only_for_up_to_date_logs():
    """A voter denies a candidate whose log is less up to date. Reference: section 5.4.1"""
    node, storage = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    storage.append([Entry(1, 1), Entry(2, 2)])
    node = Raft(Config(id=1, **NO_PRE_VOTE), storage, random.Random(1))
    cases = [((1, 5), True), ((2, 1), True), ((2, 2), False), ((3, 1), False)]
    for term, ((log_term, index), rejected) in enumerate(cases, start=3):
        node.step(MsgVote(2, 1, term, log_term, index))
        (reply,) = [m for m in drain(node).messages if type(m) is MsgVoteResp]
        assert reply.reject is rejected, (log_term, index)


def test_leader_commits_only_current_term_entries_by_counting():
    """An entry from an earlier term is not committed by counting replicas,
    only with an entry of the current term (figure 8). Reference: section 5.4.2"""
    node, storage = make_node(1, (1, 2, 3), **NO_PRE_VOTE)
    storage.append([Entry(1, 1), Entry(2, 2)])
    storage.set_hard_state(HardState(2, 0, 1))
    node = Raft(Config(id=1, **NO_PRE_VOTE), storage, random.Random(1))
    node.campaign()
    node.step(MsgVoteResp(2, 1, 3, False))
    assert node.role == Role.LEADER
    ready = drain(node)
    storage.append(ready.entries)
    node.advance(ready)
    # Follower 2 acknowledges index 2 (term 2) only: nothing may commit.
    node.step(MsgAppResp(2, 1, 3, 2))
    assert node.log.committed == 1
    # Once it holds this term's entry (index 3), both 2 and 3 commit.
    node.step(MsgAppResp(2, 1, 3, 3))
    assert node.log.committed == 3


def test_new_leader_appends_an_empty_entry():
    """Reference: section 5.4.2 (and section 8, for reads)"""
    net = Network(3, **NO_PRE_VOTE)
    leader = net.elect(2)
    assert leader.log.last_index() == 1
    assert net.applied[1] == [Entry(1, 1)]


def test_leader_completeness_after_failover():
    """A committed entry survives the loss of its leader. Reference: section 5.4.3"""
    net = Network(3, **NO_PRE_VOTE)
    net.elect(1)
    net.nodes[1].propose(b"keep")
    net.stabilize()
    net.isolate(1)
    net.elect(2)
    net.nodes[2].propose(b"after")
    net.stabilize()
    assert net.data_applied(3) == [b"keep", b"after"]


def test_restart_recovers_persisted_state():
    """Term, vote and log survive a restart; the node re-applies committed entries.
    Reference: section 5.1 (persistent state)"""
    net = Network(3, **NO_PRE_VOTE)
    net.elect(1)
    net.nodes[1].propose(b"a")
    net.stabilize()
    node = net.restart(2)
    assert (node.term, node.vote) == (1, 1)
    assert node.log.committed == 2
    net.stabilize()
    assert net.data_applied(2) == [b"a"]


def test_heartbeats_carry_the_commit_index():
    net = Network(3, **NO_PRE_VOTE)
    net.elect(1)
    net.tick(1, 1)
    beats = [m for m in net.nodes[1].ready().messages if type(m) is MsgHeartbeat]
    assert {m.target for m in beats} == {2, 3}
