"""Hypothesis drives a 3-node cluster message by message; invariants after each step.

Unlike the seeded simulator, a failure here shrinks to a short program of
rules (propose, tick, deliver message i, drop message i, crash, compact...).
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blizzard.exceptions import ProposalDroppedError
from blizzard.replication.raft.core import Role
from blizzard.replication.raft.messages import ConfChange, ConfChangeType, EntryType

from .harness import Network

pytestmark = pytest.mark.interpreted  # run again on the interpreted build

NODES = (1, 2, 3)


class RaftMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Network(3)
        self.inflight = []  # messages sent, not yet delivered or dropped
        self.leaders: dict[int, int] = {}
        self.applied_at: dict[int, tuple[int, bytes]] = {}
        self.proposals = 0

    def _process(self) -> None:
        for node_id in NODES:
            ready = self.net.process(node_id)
            if ready is None:
                continue
            self.inflight.extend(self.net.queue)
            self.net.queue.clear()
            for entry in ready.committed_entries:
                known = self.applied_at.setdefault(entry.index, (entry.term, entry.data))
                assert known == (entry.term, entry.data), "two different entries applied"

    @rule(node=st.sampled_from(NODES), ticks=st.integers(1, 12))
    def tick(self, node, ticks):
        self.net.tick(node, ticks)
        self._process()

    @rule(node=st.sampled_from(NODES))
    def campaign(self, node):
        self.net.nodes[node].campaign()
        self._process()

    @rule(node=st.sampled_from(NODES))
    def propose(self, node):
        self.proposals += 1
        with contextlib.suppress(ProposalDroppedError):
            self.net.nodes[node].propose(b"p%d" % self.proposals)
        self._process()

    @rule(node=st.sampled_from(NODES))
    def read(self, node):
        self.proposals += 1
        with contextlib.suppress(ProposalDroppedError):
            self.net.nodes[node].read_index(b"r%d" % self.proposals)
        self._process()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def deliver(self, data):
        position = data.draw(st.integers(0, len(self.inflight) - 1))
        message = self.inflight.pop(position)
        self.net.nodes[message.target].step(message)
        self._process()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def duplicate(self, data):
        position = data.draw(st.integers(0, len(self.inflight) - 1))
        message = self.inflight[position]
        self.net.nodes[message.target].step(message)
        self._process()

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def drop(self, data):
        self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))

    @rule()
    def deliver_all(self):
        for _ in range(20):
            if not self.inflight:
                break
            batch, self.inflight = self.inflight, []
            for message in batch:
                self.net.nodes[message.target].step(message)
            self._process()

    @rule(node=st.sampled_from(NODES))
    def crash_and_restart(self, node):
        self.net.restart(node)
        self._process()

    @rule(node=st.sampled_from(NODES))
    def compact(self, node):
        core = self.net.nodes[node]
        if core.log.applied > self.net.storages[node].first_index():
            core.compact(core.log.applied, b"")

    @rule(node=st.sampled_from(NODES), to=st.sampled_from(NODES))
    def transfer(self, node, to):
        self.net.nodes[node].transfer_leadership(to)
        self._process()

    @rule(
        node=st.sampled_from(NODES),
        change=st.sampled_from(ConfChangeType),
        member=st.sampled_from(NODES),
    )
    def change_membership(self, node, change, member):
        core = self.net.nodes[node]
        if change == ConfChangeType.REMOVE_NODE and len(core.voters) <= 2:
            return
        with contextlib.suppress(ProposalDroppedError):
            core.propose_conf_change(ConfChange(change, member))
        self._process()

    @invariant()
    def one_leader_per_term(self):
        for node in self.net.nodes.values():
            if node.role == Role.LEADER:
                leader = self.leaders.setdefault(node.term, node.id)
                assert leader == node.id, f"two leaders in term {node.term}"

    @invariant()
    def logs_agree_on_committed_entries(self):
        for node in self.net.nodes.values():
            log = node.log
            assert log.applied <= log.committed <= log.last_index()
            for index in range(max(log.first_index(), log.committed - 5), log.committed + 1):
                known = self.applied_at.get(index)
                if known is not None:
                    entry = log.entries(index, index + 1)[0]
                    assert (entry.term, entry.data) == known

    @invariant()
    def leader_holds_every_applied_entry(self):
        for node in self.net.nodes.values():
            if node.role != Role.LEADER:
                continue
            first = node.log.first_index()
            for index, (term, _) in self.applied_at.items():
                if index >= first:
                    assert node.log.term(index) == term, "leader lacks an applied entry"

    @invariant()
    def applied_entries_are_in_order(self):
        for node_id in NODES:
            applied = self.net.applied[node_id]
            assert all(e.index == i for i, e in enumerate(applied, start=1) if e.term)
            assert all(e.type in (EntryType.NORMAL, EntryType.CONF_CHANGE) for e in applied)


RaftMachine.TestCase.settings = settings(stateful_step_count=60)
TestRaftStateful = RaftMachine.TestCase
