"""Beyond the paper's core: pre-vote, check-quorum, ReadIndex, leadership
transfer, snapshots, membership changes, learners, batching and pipelining."""

from __future__ import annotations

import gc
import random

import pytest

from blizzard import _compiled
from blizzard.exceptions import ProposalDroppedError
from blizzard.replication.raft.core import Config, Raft, Role
from blizzard.replication.raft.messages import (
    ConfChange,
    ConfChangeType,
    MsgApp,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgProp,
    MsgReadIndex,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
)
from blizzard.replication.raft.readonly import ReadState

from .harness import Network

pytestmark = pytest.mark.interpreted  # run again on the interpreted build


def elect_by_ticks(net: Network, node_id: int) -> None:
    net.nodes[node_id].campaign()
    net.stabilize()


# --- pre-vote and check-quorum -----------------------------------------------


def test_pre_vote_keeps_a_partitioned_node_from_raising_terms():
    """An isolated node keeps failing its pre-vote, so its term stays put and
    it does not depose the leader when it comes back."""
    net = Network(3)
    net.elect(1)
    net.isolate(3)
    for _ in range(100):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].term == 1
    assert net.nodes[3].role == Role.PRE_CANDIDATE
    net.recover()
    net.tick_all(3)
    assert net.nodes[1].role == Role.LEADER and net.nodes[1].term == 1


def test_without_pre_vote_a_returning_node_disrupts():
    """The contrast: without pre-vote the isolated node's term grows."""
    net = Network(3, pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    for _ in range(100):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].term > 1


def test_pre_vote_does_not_change_the_voters_term():
    net = Network(3)
    net.nodes[2].step(MsgPreVote(1, 2, 5, 0, 0))
    assert net.nodes[2].term == 0
    (reply,) = net.nodes[2].ready().messages
    assert reply.term == 5 and not reply.reject


def test_check_quorum_leader_steps_down_when_isolated():
    net = Network(3)
    leader = net.elect(1)
    net.isolate(1)
    for _ in range(2 * leader.config.election_tick):
        net.tick(1)
        net.stabilize()
    assert leader.role == Role.FOLLOWER


def test_lease_followers_ignore_votes_while_they_hear_a_leader():
    """A follower that heard from its leader within the election timeout
    ignores a (higher-term) vote request that is not a transfer."""
    net = Network(3)
    net.elect(1)
    follower = net.nodes[2]
    follower.step(MsgVote(3, 2, 9, 1, 1))
    assert follower.term == 1 and not follower.ready().messages
    follower.step(MsgVote(3, 2, 9, 1, 1, transfer=True))
    assert follower.term == 9


# --- proposals ---------------------------------------------------------------


def test_follower_forwards_proposals_to_the_leader():
    net = Network(3)
    net.elect(1)
    net.nodes[3].propose(b"via 3")
    assert any(type(m) is MsgProp for m in net.nodes[3].msgs)
    net.stabilize()
    assert net.data_applied(1) == [b"via 3"]


def test_entries_a_leader_appends_or_forwards_hold_ints_and_escape_the_collector():
    """The log's entries are ints and bytes only (the type too), so the
    collector need not walk them; the compiled build untracks them when built."""
    net = Network(3)
    net.elect(1)
    net.nodes[3].propose(b"via 3")
    net.nodes[1].propose_batch([b"a", b"b"])
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    forwarded = [e for m in net.nodes[3].msgs if type(m) is MsgProp for e in m.entries]
    net.stabilize()
    logs = [net.storages[node].entries(1, net.storages[node].last_index() + 1)
            for node in (1, 2, 3)]
    assert [e.type for e in logs[0]] == [0, 0, 0, 1, 0]  # the empty entry, a, b, change, via 3
    assert [e.data for e in logs[0]][1:3] == [b"a", b"b"]
    expected = {(int, int, int, bytes, not _compiled.compiled())}
    for entry in [*forwarded, *logs[0], *logs[1], *logs[2]]:
        assert {(*map(type, entry), gc.is_tracked(entry))} == expected, entry


def test_proposal_without_leader_is_dropped():
    net = Network(3)
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose(b"x")
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].read_index(b"r")


def test_batching_many_entries_per_message():
    """Proposals made between two Readys travel together, bounded per message."""
    net = Network(3, entries_per_msg_max=10)
    leader = net.elect(1)
    net.delivered.clear()
    leader.propose_batch([b"%d" % i for i in range(25)])
    net.stabilize()
    appends = [m for m in net.delivered if type(m) is MsgApp and m.target == 2 and m.entries]
    assert [len(m.entries) for m in appends] == [10, 10, 5]
    assert len(net.data_applied(2)) == 25


def test_pipelining_is_bounded_by_the_window():
    """Several MsgApps are in flight before any acknowledgement, at most inflight_max."""
    net = Network(3, entries_per_msg_max=2, inflight_max=3)
    leader = net.elect(1)
    leader.propose_batch([b"%d" % i for i in range(20)])
    ready = leader.ready()
    to_two = [m for m in ready.messages if type(m) is MsgApp and m.target == 2]
    assert len(to_two) == 3
    assert leader.prs[2].inflights.full()
    leader.advance(ready)


# --- lazy commit notices ----------------------------------------------------


def _commit_notices(net: Network) -> list[MsgApp]:
    return [m for m in net.delivered if type(m) is MsgApp and not m.entries]


def test_eager_commit_notice_sends_a_msgapp_per_commit():
    """The default (etcd's raft): a commit goes out at once, in MsgApps of its own."""
    net = Network(3)
    leader = net.elect(1)
    net.delivered.clear()
    leader.propose(b"x")
    net.stabilize()
    assert {m.target for m in _commit_notices(net)} == {2, 3}
    assert net.data_applied(2) == net.data_applied(3) == [b"x"]


def test_lazy_commit_notice_waits_for_a_tick():
    """With ``lazy_commit_notice`` no MsgApp is sent for a commit alone: the
    leader applies at once, its followers once a tick passes."""
    net = Network(3, lazy_commit_notice=True)
    leader = net.elect(1)
    net.tick(1)  # the election's empty entry: its commit reaches the followers
    net.stabilize()
    net.delivered.clear()
    leader.propose(b"x")
    net.stabilize()
    assert _commit_notices(net) == []
    assert net.data_applied(1) == [b"x"]
    assert net.data_applied(2) == net.data_applied(3) == []  # stored, not known committed
    assert net.nodes[2].log.last_index() == leader.log.committed == 2
    net.tick(1)
    net.stabilize()
    assert {m.target for m in _commit_notices(net)} == {2, 3}
    assert net.data_applied(2) == net.data_applied(3) == [b"x"]
    net.delivered.clear()
    net.tick(1)  # nothing new committed: no further notice
    net.stabilize()
    assert _commit_notices(net) == []


def test_lazy_commit_notice_rides_on_the_next_msgapp():
    """The next proposal's MsgApp carries the earlier commit: no tick needed,
    and no MsgApp of its own."""
    net = Network(3, lazy_commit_notice=True)
    leader = net.elect(1)
    leader.propose(b"x")
    net.stabilize()
    net.delivered.clear()
    leader.propose(b"y")
    net.stabilize()
    assert _commit_notices(net) == []
    assert net.data_applied(2) == net.data_applied(3) == [b"x"]  # y: at the next one
    assert net.data_applied(1) == [b"x", b"y"]


def test_lazy_commit_notice_does_not_delay_a_forwarded_proposal():
    """A follower that forwarded a proposal answers its client once it applies
    the entry: commits go out at once while a forwarded entry is uncommitted."""
    net = Network(3, lazy_commit_notice=True)
    leader = net.elect(1)
    net.nodes[3].propose(b"via 3")
    net.stabilize()
    assert net.data_applied(3) == net.data_applied(2) == [b"via 3"]
    net.delivered.clear()
    leader.propose(b"x")  # and lazy again once the forwarded entries are committed
    net.stabilize()
    assert _commit_notices(net) == []
    assert net.data_applied(3) == [b"via 3"]


def test_lazy_commit_notice_does_not_delay_a_follower_read():
    """A follower's ReadIndex is answered after a heartbeat round, and those
    heartbeats carry the commit: the read can be served without a tick."""
    net = Network(3, lazy_commit_notice=True)
    leader = net.elect(1)
    leader.propose(b"x")
    net.stabilize()
    assert net.data_applied(3) == []
    net.nodes[3].read_index(b"r3")
    net.stabilize()
    assert net.read_states[3] == [ReadState(2, b"r3")]
    assert net.data_applied(3) == [b"x"]


def test_lazy_commit_notice_is_forgotten_by_a_deposed_leader():
    """A leader that steps down does not send its pending notice as a follower."""
    net = Network(3, lazy_commit_notice=True, pre_vote=False, check_quorum=False)
    leader = net.elect(1)
    leader.propose(b"x")
    net.stabilize()
    net.elect(2)  # node 2 holds x: it wins, and commits x in its own term
    net.delivered.clear()
    net.tick(1)
    net.stabilize()
    assert not [m for m in net.delivered if m.source == 1 and type(m) is MsgApp]
    assert net.nodes[1].role == Role.FOLLOWER


# --- ReadIndex ---------------------------------------------------------------


def test_read_index_on_leader_needs_a_heartbeat_round():
    net = Network(3)
    leader = net.elect(1)
    leader.read_index(b"ctx")
    assert not leader.read_states, "not before a quorum confirms the leadership"
    net.stabilize()
    assert net.read_states[1] == [ReadState(leader.log.committed, b"ctx")]
    assert leader.log.last_index() == 1, "reads write nothing to the log"


def test_read_index_forwarded_from_follower():
    net = Network(3)
    net.elect(1)
    net.nodes[3].read_index(b"r3")
    assert any(type(m) is MsgReadIndex for m in net.nodes[3].msgs)
    net.stabilize()
    assert net.read_states[3] == [ReadState(1, b"r3")]


def test_read_index_waits_for_leader_quorum():
    """A leader cut off from the quorum cannot answer a read."""
    net = Network(3)
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"lost")
    net.stabilize()
    assert net.read_states[1] == []


def test_read_index_waits_for_a_commit_in_the_leaders_term():
    net = Network(3)
    leader = net.nodes[1]
    net.dropped_types.add(MsgApp)  # the new leader's empty entry cannot commit
    leader.campaign()
    net.stabilize()
    assert leader.role == Role.LEADER
    leader.read_index(b"early")
    net.stabilize()
    assert net.read_states[1] == []
    net.recover()
    net.tick(1, 2)
    net.stabilize()
    assert net.read_states[1] == [ReadState(1, b"early")]


def test_read_states_release_in_order():
    net = Network(3)
    leader = net.elect(1)
    leader.read_index(b"a")
    leader.read_index(b"b")
    net.dropped_types.add(MsgHeartbeatResp)
    net.stabilize()
    net.recover()
    leader.propose(b"x")
    leader.read_index(b"c")
    net.stabilize()
    assert [s.context for s in net.read_states[1]] == [b"a", b"b", b"c"]


# --- leadership transfer -----------------------------------------------------


def test_transfer_to_an_up_to_date_follower():
    net = Network(3)
    leader = net.elect(1)
    leader.transfer_leadership(2)
    net.stabilize()
    assert net.nodes[2].role == Role.LEADER and leader.role == Role.FOLLOWER
    assert any(type(m) is MsgTimeoutNow for m in net.delivered)


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    net = Network(3)
    leader = net.elect(1)
    net.isolate(3)
    leader.propose(b"x")
    net.stabilize()
    net.recover()
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"during transfer")
    net.stabilize()
    assert net.nodes[3].role == Role.LEADER
    assert net.data_applied(3) == [b"x"]


def test_transfer_is_abandoned_after_an_election_timeout():
    net = Network(3)
    leader = net.elect(1)
    net.isolate(3)
    leader.transfer_leadership(3)
    for _ in range(leader.config.election_tick):
        leader.tick()
    net.cut_links.clear()
    leader.propose(b"accepted again")


# --- snapshots ---------------------------------------------------------------


def test_follower_behind_compaction_catches_up_with_a_snapshot():
    net = Network(3)
    leader = net.elect(1)
    net.isolate(3)
    for i in range(20):
        leader.propose(b"%d" % i)
    net.stabilize()
    snapshot = leader.compact(leader.log.applied, b"state at 21")
    assert net.storages[1].first_index() == 22
    net.recover()
    net.tick_all(3)
    snaps = [m for m in net.delivered if type(m) is MsgSnap]
    assert snaps and snaps[0].snapshot == snapshot
    assert net.storages[3].snapshot().data == b"state at 21"
    assert net.nodes[3].log.committed == net.nodes[1].log.committed
    leader.propose(b"after")
    net.stabilize()
    assert net.applied[3][-1].data == b"after"


def test_restart_after_compaction():
    net = Network(3)
    leader = net.elect(1)
    for i in range(5):
        leader.propose(b"%d" % i)
    net.stabilize()
    net.nodes[2].compact(4, b"s")
    node = net.restart(2)
    assert node.log.applied == 4 and node.log.committed == 6
    net.stabilize()
    assert [e.index for e in net.applied[2][4:]] == [5, 6]


# --- membership --------------------------------------------------------------


def test_add_learner_then_promote():
    """A learner receives the log but neither votes nor counts for commit."""
    net = Network(3)
    leader = net.elect(1)
    net.add(4)
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    net.tick_all(2)
    assert 4 in leader.learners and 4 not in leader.voters
    leader.propose(b"x")
    net.stabilize()
    assert net.data_applied(4) == [b"x"]
    assert net.nodes[4].role == Role.FOLLOWER
    for _ in range(50):
        net.nodes[4].tick()
    assert net.nodes[4].role == Role.FOLLOWER, "learners never campaign"
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    net.stabilize()
    assert leader.voters == {1, 2, 3, 4}
    assert net.nodes[4].voters == {1, 2, 3, 4}


def test_one_membership_change_at_a_time():
    net = Network(3)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    with pytest.raises(ProposalDroppedError):
        leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    net.stabilize()
    assert leader.voters == {1, 2}


def test_removed_voter_no_longer_counts():
    net = Network(3)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.stabilize()
    net.isolate(3)
    net.cut(1, 2)
    leader.propose(b"needs 2")
    net.stabilize()
    assert leader.log.committed < leader.log.last_index()
    net.recover()
    net.isolate(3)
    net.tick(1, 2)
    net.stabilize()
    assert net.data_applied(2)[-1] == b"needs 2"


def test_removed_leader_steps_down_and_others_elect():
    net = Network(3)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    net.stabilize()
    assert leader.role == Role.FOLLOWER
    for _ in range(60):
        net.tick_all()
        if net.leader() is not None:
            break
    assert net.leader() is not None and net.leader().id in (2, 3)
    assert net.leader().voters == {2, 3}


def test_single_node_cluster_commits_alone():
    net = Network(1)
    leader = net.elect(1)
    leader.propose(b"solo")
    leader.read_index(b"r")
    net.stabilize()
    assert net.data_applied(1) == [b"solo"]
    assert net.read_states[1][0].context == b"r"


def test_restart_with_a_persistent_state_machine_keeps_membership():
    """A driver whose state machine survived (Config.applied) gets no replay of
    applied entries, so the core rebuilds the membership from the log itself."""
    net = Network(3)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.stabilize()
    applied = net.nodes[2].log.applied
    storage = net.storages[2]
    node = Raft(Config(id=2, applied=applied), storage, random.Random(5))
    assert node.voters == {1, 2}
    assert node.log.applied == applied
    assert not node.ready().committed_entries


def test_compaction_limits():
    """Compacting past what is applied is refused; compacting twice is harmless."""
    net = Network(3)
    leader = net.elect(1)
    leader.propose(b"x")
    net.stabilize()
    with pytest.raises(ValueError, match="cannot compact"):
        leader.compact(leader.log.applied + 1, b"")
    first = leader.compact(2, b"s")
    assert leader.compact(1, b"older") == first


def test_pending_reads_are_bounded():
    net = Network(3, read_pending_max=2)
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"a")
    leader.read_index(b"b")
    with pytest.raises(ProposalDroppedError, match="too many"):
        leader.read_index(b"c")


def test_uncommitted_bytes_are_bounded():
    """A leader whose followers are unreachable stops accepting proposals
    instead of growing its log without bound; commits make room again."""
    net = Network(3, uncommitted_bytes_max=100)
    leader = net.elect(1)
    net.isolate(1)
    leader.propose(b"x" * 60)
    leader.propose(b"y" * 40)
    with pytest.raises(ProposalDroppedError, match="uncommitted"):
        leader.propose(b"z")
    net.stabilize()
    net.recover()
    net.tick(1, 2)
    net.stabilize()
    assert net.data_applied(2) == [b"x" * 60, b"y" * 40]
    leader.propose(b"z" * 100)
