"""Membership at run time: add a node (as a learner, then a voter), remove one,
hand leadership over.

The Raft log decides who is a member (its membership changes are entries,
applied one at a time); this module runs the operations on the leader and
keeps every member's transport in step with them:

* ``add``: propose ADD_LEARNER with the new node's addresses in the
  change's context; every member, applying it, starts talking to the node
  (``transport.add_peer``) and records the addresses in its node directory
  (``peers.json``, read at the next start). Once the learner's log is within
  ``CATCH_UP_ENTRIES`` of the leader's commit index -- it does not slow the
  quorum down before that -- propose ADD_NODE: it votes from then on.
* ``remove``: propose REMOVE_NODE; members forget the node. A removed node
  that still runs stops taking part (it is no voter or learner any more).
* ``transfer``: ask the leader's core to hand leadership to a voter, and
  wait until it has.

Every operation is idempotent (adding a member, removing a stranger: nothing
to do), so a client may retry one whose answer it lost. Operations run on
the leader; elsewhere they raise :class:`~blizzard.exceptions.NotLeaderError`
naming the leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blizzard.exceptions import MembershipError, NotLeaderError, ProposalDroppedError
from blizzard.replication.raft.core import Role
from blizzard.replication.raft.messages import ConfChange, ConfChangeType, ConfState

if TYPE_CHECKING:
    from blizzard.cluster.replicator import RaftReplicator

log = logging.getLogger("blizzard.membership")

PEERS_FILE = "peers.json"
CATCH_UP_ENTRIES = 100  # a learner this close to the leader's commit index is promoted
POLL_S = 0.02
TRANSFER_TIMEOUT_S = 10.0
OPERATIONS = ("add", "remove", "transfer")


def _hostport(address: tuple[str, int] | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"


def _parse(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Membership:
    """The membership side of one :class:`~blizzard.cluster.replicator.RaftReplicator`."""

    def __init__(self, replicator: RaftReplicator) -> None:
        self.replicator = replicator
        self.node_id = replicator.node_id
        self.path: Path = replicator.config.node_dir(replicator.node_id) / PEERS_FILE
        #: node id -> {"raft": "host:port", "client": "host:port" or None}, learned at run time
        self.learned: dict[int, dict[str, Any]] = self._load()
        #: whether this node was removed from the cluster (it no longer takes part)
        self.removed = False

    # -- the transport's view ------------------------------------------------------------

    def _load(self) -> dict[int, dict[str, Any]]:
        try:
            return {int(k): v for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("node %d: ignoring %s: %s", self.node_id, self.path, exc)
            return {}

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({str(k): v for k, v in sorted(self.learned.items())}))
        os.replace(temporary, self.path)

    def restore_peers(self, transport) -> None:
        """At start: talk to the nodes learned at run time, besides the config's."""
        known = self.replicator.config.raft_peers
        for node, addresses in self.learned.items():
            if node != self.node_id and node not in known:
                transport.add_peer(node, _parse(addresses["raft"]))

    def conf_changed(self, change: ConfChange, conf_state: ConfState) -> None:
        """The node's hook: a membership change was applied here (on its loop)."""
        transport = self.replicator.transport
        node = change.node_id
        if change.type == ConfChangeType.REMOVE_NODE:
            if node == self.node_id:
                self.removed = True
                log.warning("node %d: removed from the cluster", self.node_id)
                return
            transport.remove_peer(node)
            if self.learned.pop(node, None) is not None:
                self._save()
            return
        if node == self.node_id:
            self.removed = False  # added (again)
        if change.context:
            try:
                addresses = json.loads(change.context)
                raft = _parse(addresses["raft"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("node %d: membership change for node %d carries no usable "
                            "address: %s", self.node_id, node, exc)
                return
            if node != self.node_id:
                transport.add_peer(node, raft)
            if self.learned.get(node) != addresses:
                self.learned[node] = addresses
                self._save()

    # -- operations (on the leader, on the node's loop) ----------------------------------

    def _leader_node(self):
        node = self.replicator.node
        if node.raft.role != Role.LEADER:
            raise NotLeaderError(f"node {self.node_id} does not lead; node {node.raft.lead} "
                                 "does" if node.raft.lead else "no leader is known")
        return node

    def members(self) -> dict[str, Any]:
        raft = self.replicator.node.raft
        return {"voters": sorted(raft.voters), "learners": sorted(raft.learners),
                "leader": raft.lead}

    async def run(self, operation: str, node_id: int, *, raft: tuple[str, int] | None = None,
                  client: tuple[str, int] | None = None, timeout_s: float) -> dict[str, Any]:
        """Carry out ``operation`` (``add``, ``remove``, ``transfer``) on node ``node_id``."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown membership operation {operation!r} (known: "
                             f"{', '.join(OPERATIONS)})")
        deadline = asyncio.get_running_loop().time() + timeout_s
        if operation == "add":
            await self._add(node_id, raft, client, deadline)
        elif operation == "remove":
            await self._remove(node_id, deadline)
        else:
            await self._transfer(node_id, deadline)
        return self.members()

    async def _add(self, node_id: int, raft: tuple[str, int] | None,
                   client: tuple[str, int] | None, deadline: float) -> None:
        node = self._leader_node()
        if node_id in node.raft.voters:
            return
        if raft is None:
            raise ValueError(f"adding node {node_id} needs its raft address")
        context = json.dumps({"raft": _hostport(raft), "client": _hostport(client)}).encode()
        if node_id not in node.raft.learners:
            await self._change(ConfChange(ConfChangeType.ADD_LEARNER, node_id, context),
                               deadline)
        loop = asyncio.get_running_loop()
        while True:  # a learner does not vote: it may take its time catching up
            node = self._leader_node()
            progress = node.raft.prs.get(node_id)
            if progress is None:
                raise MembershipError(f"node {node_id} left the cluster while catching up")
            if progress.match >= node.raft.log.committed - CATCH_UP_ENTRIES:
                break
            if loop.time() > deadline:
                raise MembershipError(
                    f"node {node_id} did not catch up in time (it holds {progress.match} of "
                    f"{node.raft.log.committed} entries; is it running and reachable?); it "
                    "stays a learner: add it again to promote it")
            await asyncio.sleep(POLL_S)
        await self._change(ConfChange(ConfChangeType.ADD_NODE, node_id, context), deadline)

    async def _remove(self, node_id: int, deadline: float) -> None:
        node = self._leader_node()
        raft = node.raft
        if node_id not in raft.voters and node_id not in raft.learners:
            return
        if node_id in raft.voters and len(raft.voters) == 1:
            raise MembershipError(f"node {node_id} is the last voter: a cluster needs one")
        await self._change(ConfChange(ConfChangeType.REMOVE_NODE, node_id), deadline)

    async def _transfer(self, node_id: int, deadline: float) -> None:
        node = self._leader_node()
        if node_id == self.node_id:
            return
        if node_id not in node.raft.voters:
            raise MembershipError(f"node {node_id} is not a voter: it cannot lead")
        node.transfer_leadership(node_id)
        loop = asyncio.get_running_loop()
        deadline = min(deadline, loop.time() + TRANSFER_TIMEOUT_S)
        while node.raft.lead != node_id:
            if loop.time() > deadline:
                raise MembershipError(f"node {node_id} did not take over in time (is it "
                                      "running and caught up?)")
            await asyncio.sleep(POLL_S)

    async def _change(self, change: ConfChange, deadline: float) -> None:
        """Propose one change and wait until it is applied here (one at a time)."""
        loop = asyncio.get_running_loop()
        while True:
            node = self._leader_node()
            done = loop.create_future()

            def settled(error: BaseException | None, done=done) -> None:
                if not done.done():
                    done.set_result(error)

            try:
                node.propose_conf_change(change, settled)
            except NotLeaderError:
                raise
            except ProposalDroppedError:  # another change is pending: wait for it
                if loop.time() > deadline:
                    raise MembershipError("another membership change is still pending") from None
                await asyncio.sleep(POLL_S)
                continue
            try:
                error = await asyncio.wait_for(done, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise MembershipError(f"{change.type.name} of node {change.node_id} was not "
                                      "committed in time (is a quorum reachable?)") from None
            if error is None:
                return
            if loop.time() > deadline:
                raise MembershipError(str(error))
