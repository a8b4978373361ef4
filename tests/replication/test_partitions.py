"""Raft nodes over real TCP through fault-injecting proxies: partitions
(symmetric and asymmetric) and slow links. Acknowledged writes survive,
the minority side cannot commit, and everything converges after healing."""

from __future__ import annotations

import asyncio
import itertools
import socket

from blizzard.pmem import DramMedia, Pool
from blizzard.replication.node import RaftNode
from blizzard.replication.raft.messages import ConfState
from blizzard.replication.raft.pmem_storage import PmemStorage
from blizzard.replication.sessions import SessionStateMachine, wrap
from blizzard.replication.transport.tcp import TcpTransport
from blizzard.structures import PHashMap, ops, registry_for

from .faultproxy import LinkProxy

IDS = (1, 2, 3)
_seq = itertools.count(1)


class Cluster:
    """Three nodes; node a reaches node b only through ``links[a, b]``."""

    async def start(self, **options) -> None:
        # Each node listens on a port the kernel picks as it binds (a port
        # chosen beforehand could be taken meanwhile, by a proxy among others);
        # the proxies to it learn its address once it listens.
        self.links = {(a, b): LinkProxy() for a in IDS for b in IDS if a != b}
        via = {key: await proxy.start() for key, proxy in self.links.items()}
        self.nodes, self.pools = {}, {}
        for i in IDS:
            data, log = Pool.create(DramMedia(16 << 20)), Pool.create(DramMedia(16 << 20))
            PHashMap(data, "m")  # the same structure everywhere, created locally (index 1)
            peers = {j: via[i, j] for j in IDS if j != i}
            transport = TcpTransport(i, {i: ("127.0.0.1", 0), **peers}, seed=i)
            node = RaftNode(i, storage=PmemStorage(log, conf_state=ConfState(IDS)),
                            state_machine=SessionStateMachine(registry_for(data), data),
                            transport=transport, tick_s=0.01, election_tick=20, seed=i,
                            **options)
            await node.start()
            for j in IDS:
                if j != i:
                    self.links[j, i].target = transport.address
            self.nodes[i], self.pools[i] = node, data

    def states(self) -> dict:
        """Each node's role, term, leader and indexes: what a failed wait shows."""
        keys = ("role", "term", "leader", "commit", "applied", "last_index")
        return {i: {k: n.status()[k] for k in keys} for i, n in self.nodes.items()}

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        for proxy in self.links.values():
            await proxy.stop()

    def isolate(self, node: int, *, inbound: bool = True, outbound: bool = True) -> None:
        for (a, b), proxy in self.links.items():
            if (outbound and a == node) or (inbound and b == node):
                proxy.set_cut(True)

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.set_cut(False)
            proxy.delay_s = 0.0

    async def leader(self, among=IDS, not_=0, timeout=10.0) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            roles = {i: self.nodes[i].status() for i in among}
            leaders = [i for i, s in roles.items() if s["role"] == "leader" and i != not_]
            if len(leaders) == 1:
                return leaders[0]
            assert asyncio.get_running_loop().time() < deadline, \
                f"no single leader among {among} (not {not_}): {self.states()}"
            await asyncio.sleep(0.02)

    async def put(self, node: int, key: bytes, timeout: float = 5.0, value: bytes = b"v") -> bool:
        """True if acknowledged within ``timeout``."""
        op = ops.encode(ops.Op("m", ops.OpCode.MAP_PUT, (key, value)))
        future = self.nodes[node].propose(wrap(4242, next(_seq), op))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except Exception:  # timed out, or dropped for want of a leader
            return False

    async def converge(self, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            applied = {i: n.status()["applied"] for i, n in self.nodes.items()}
            commits = {i: n.status()["commit"] for i, n in self.nodes.items()}
            if len(set(applied.values())) == 1 and len(set(commits.values())) == 1:
                return
            assert asyncio.get_running_loop().time() < deadline, \
                f"not converged: {self.states()}"
            await asyncio.sleep(0.05)

    def contents(self, node: int) -> dict:
        return dict(PHashMap(self.pools[node], "m").items())


def test_isolated_leader_cannot_commit_and_the_majority_goes_on():
    async def main():
        c = Cluster()
        await c.start()
        try:
            old = await c.leader()
            assert await c.put(old, b"before")
            c.isolate(old)
            new = await c.leader(among=[i for i in IDS if i != old])
            assert not await c.put(old, b"lost?", timeout=1.0)  # no quorum behind it
            acked = [k for k in (b"a", b"b", b"c") if await c.put(new, k)]
            assert acked == [b"a", b"b", b"c"]
            c.heal()
            await c.converge()
            for i in IDS:
                contents = c.contents(i)
                assert {b"before", b"a", b"b", b"c"} <= set(contents)
                c.pools[i].check()
            assert c.contents(1) == c.contents(2) == c.contents(3)
        finally:
            await c.stop()
    asyncio.run(main())


def test_a_leader_that_cannot_hear_its_followers_steps_down():
    """Asymmetric partition: the leader's messages go out, replies never come
    back. Check-quorum makes it step down; a node that can hear wins."""
    async def main():
        c = Cluster()
        await c.start()
        try:
            old = await c.leader()
            c.isolate(old, inbound=True, outbound=False)
            new = await c.leader(not_=old, timeout=15.0)
            assert new != old
            assert await c.put(new, b"after"), c.states()
            c.heal()
            await c.converge()
            assert c.contents(1) == c.contents(2) == c.contents(3)
            assert b"after" in c.contents(old)
        finally:
            await c.stop()
    asyncio.run(main())


def test_a_slow_link_delays_but_loses_nothing():
    async def main():
        c = Cluster()
        await c.start()
        try:
            leader = await c.leader()
            slow = next(i for i in IDS if i != leader)
            c.links[leader, slow].delay_s = 0.05
            c.links[slow, leader].delay_s = 0.05
            results = await asyncio.gather(*(c.put(leader, b"k%d" % i, timeout=10)
                                             for i in range(50)))
            assert all(results)
            c.heal()
            await c.converge()
            assert len(c.contents(slow)) == 50
            assert c.contents(1) == c.contents(2) == c.contents(3)
        finally:
            await c.stop()
    asyncio.run(main())


def test_frames_pending_to_a_stalled_follower_survive_compaction_and_a_step_down():
    """A leader sends its entries from its log (a MsgApp's fixed part, then
    views of the log's records). A follower that stops reading fills the
    leader's socket: frames are written in part and the rest copied, or
    queued as copies. The leader then compacts its log past them (freeing
    the segments the views showed, reused by later records) and hands its
    leadership over; when the follower reads again, what it gets is intact
    and the three converge to the same map."""
    async def main():
        c = Cluster()
        await c.start(snapshot_entries=100)
        try:
            leader = await c.leader()
            slow, other = (i for i in IDS if i != leader)
            transport = c.nodes[leader].transport
            deadline = asyncio.get_running_loop().time() + 10
            while transport._peers[slow].sock is None:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            # a small send buffer: the held link fills it after a few frames
            transport._peers[slow].sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            c.links[leader, slow].hold(True)
            value = bytes(range(256)) * 16
            for burst in range(6):
                acked = await asyncio.gather(*(
                    c.put(leader, b"k%d-%d" % (burst, i), timeout=10, value=value)
                    for i in range(60)))
                assert all(acked)
            status = c.nodes[leader].status()
            # sends were left pending: the transport copied what the socket did not take
            assert status["transport"]["bytes_copied_sending"] > 0
            assert status["copies"]["entries_to_frame"] >= status["transport"][
                "bytes_copied_sending"]
            assert status["first_index"] > 100  # compacted past what the follower missed
            c.nodes[leader].storage.check()
            c.nodes[leader].transfer_leadership(other)
            assert await c.leader(not_=leader, timeout=15.0) == other
            assert await c.put(other, b"after", value=value)
            c.links[leader, slow].hold(False)
            await c.converge(timeout=30.0)
            assert c.contents(1) == c.contents(2) == c.contents(3)
            assert len(c.contents(slow)) == 6 * 60 + 1
            for i in IDS:
                c.pools[i].check()
                c.nodes[i].storage.check()
        finally:
            await c.stop()
    asyncio.run(main())
