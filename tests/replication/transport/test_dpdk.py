"""What only the DPDK transport has: its frames (refusals, duplicates, reordering,
loss), net_af_packet links on veth pairs in network namespaces, its options,
EAL arguments, and the error when DPDK is not installed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blizzard.exceptions import ConfigError
from blizzard.replication.transport.dpdk import eal, frames
from blizzard.replication.transport.dpdk.options import DpdkOptions, parse
from blizzard.replication.transport.dpdk.reassembly import Reassembler, RegionMessage
from blizzard.replication.transport.registry import TlsFiles, TransportSpec, build_transport
from tests.replication.transport.conftest import ROOT, HostCluster
from tests.replication.transport.host import body

# -- frames between two real processes ------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    cluster = HostCluster("dpdk", 2)
    try:
        cluster.start_all()
        cluster.wait_links()
        yield cluster
    finally:
        cluster.close()


def _frame(hosts: HostCluster, **fields) -> str:
    tag = frames.cluster_tag(hosts.specs[1]["cluster_id"])
    values = {"cluster": tag, "source": 1, "destination": 2, "session": 7, "message": 1,
              "payload": body(1, 1, 64)}
    values.update(fields)
    return frames.frame(**values).hex()


def test_malformed_frames_are_refused_counted_and_logged_once_each(pair):
    good = frames.frame(cluster=frames.cluster_tag(pair.specs[1]["cluster_id"]), source=1,
                        destination=2, session=7, message=1, payload=body(1, 1, 64))
    bad = {
        "truncated": good[:frames.OVERHEAD_BYTES - 3].hex(),
        "bad magic or version": _frame(pair, magic=0x1234),
        "another cluster's frame": _frame(pair, cluster=12345),
        "addressed to another node": _frame(pair, destination=3),
        "source is not the peer of this link": _frame(pair, source=3),
        "bad fragment index or count": _frame(pair, index=2, count=2),
        "bad checksum": _frame(pair, checksum=0xDEADBEEF),
    }
    longer = _frame(pair, length=65)  # claims more payload than the frame has
    foreign = _frame(pair, ethertype=0x0800)  # IPv4: not ours, ignored silently
    before = pair.hosts[2].stats()
    for frame in [*bad.values(), longer, foreign]:
        assert pair.hosts[1].call(f"raw 2 {frame}")["accepted"]
    pair.hosts[1].call("send 2 1 100")
    pair.wait_inbox(2, lambda box: box.get(1, {}).get("count", 0) >= 1)
    after = pair.hosts[2].stats()
    refused = after["stats"]["bad_frames"] - before["stats"]["bad_frames"]
    assert refused == len(bad) + 1
    link = after["status"]["links"]["1"]
    assert link["foreign"] - before["status"]["links"]["1"]["foreign"] == 1
    log = pair.hosts[2].log()
    for reason in bad:
        assert log.count(f"refused a frame on the link to node 1: {reason}") >= 1, reason


def test_duplicates_dropped_reordered_fragments_reassembled_lost_ones_forgotten(pair):
    tag = frames.cluster_tag(pair.specs[1]["cluster_id"])
    session = 99

    def frame(message: int, payload: bytes, index: int = 0, count: int = 1) -> str:
        return frames.frame(cluster=tag, source=1, destination=2, session=session,
                            message=message, payload=payload, index=index, count=count).hex()

    start = pair.hosts[2].inbox().get(1, {}).get("count", 0)
    one = body(1, 1001, 80)
    three = body(1, 1002, 3000)
    parts = [three[:1000], three[1000:2000], three[2000:]]
    lost = body(1, 1003, 3000)
    last = body(1, 1004, 80)
    sequence = [frame(1, one), frame(1, one),                        # a duplicate
                frame(2, parts[2], 2, 3), frame(2, parts[0], 0, 3),  # reordered...
                frame(2, parts[0], 0, 3), frame(2, parts[1], 1, 3),  # ...and a fragment twice
                frame(3, lost[:1000], 0, 3), frame(3, lost[2000:], 2, 3),  # one lost
                frame(4, last), frame(2, parts[1], 1, 3)]            # a late duplicate
    for hex_frame in sequence:
        pair.hosts[1].call(f"raw 2 {hex_frame}")
    box = pair.wait_inbox(2, lambda box: box.get(1, {}).get("count", 0) >= start + 3)[1]
    assert box["count"] == start + 3 and box["intact"] and box["duplicates"] == 0
    assert box["last"] == 1004
    link = pair.hosts[2].stats()["status"]["links"]["1"]
    assert link["duplicates"] >= 3


# -- a peer killed and restarted: one teardown of its link at a time -------------------

# Fault injection, preloaded into both processes of the test below: munmap()
# on EAL's interrupt thread waits 30 ms, holding open the window in which
# memif's own teardown of a link (the peer hung up) is still under way.
SLOW_MUNMAP_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

int munmap(void *addr, size_t length)
{
    static int (*real)(void *, size_t);
    char name[16] = {0};
    if (real == NULL)
        real = (int (*)(void *, size_t))dlsym(RTLD_NEXT, "munmap");
    prctl(PR_GET_NAME, name);
    if (strncmp(name, "eal-intr", 8) == 0) {
        struct timespec pause = {0, 30000000};
        nanosleep(&pause, NULL);
    }
    return real(addr, length);
}
"""


def test_a_link_whose_peer_died_is_torn_down_once_and_comes_back(tmp_path, monkeypatch):
    """When a peer dies, memif tears the link down on EAL's interrupt thread
    (closing the queues' descriptors, unmapping and freeing the shared
    regions), and the transport, seeing the link down, stops the device,
    which runs that teardown as well. Both at once closed descriptors and
    freed regions twice (DPDK: "EAL: Error: Invalid memory"; whatever had
    been handed the same descriptor or block meanwhile was lost with them,
    and a restarted peer then never got its link back). With the interrupt
    thread's teardown slowed to hold that window open, each node is killed
    and restarted in turn: the survivor's link comes back, messages flow,
    and the survivor tore nothing down twice."""
    source, library = tmp_path / "slow_munmap.c", tmp_path / "slow_munmap.so"
    source.write_text(SLOW_MUNMAP_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    monkeypatch.setenv("LD_PRELOAD", str(library))
    cluster = HostCluster("dpdk", 2)
    try:
        cluster.start_all()
        cluster.wait_links()
        for victim, survivor in ((1, 2), (2, 1)):
            cluster.kill(victim)
            reborn = cluster.start(victim)
            cluster.wait_links()
            cluster.hosts[survivor].call(f"send {victim} 5 100")
            cluster.wait_inbox(victim, lambda box, s=survivor: box.get(s, {}).get("count") == 5)
            assert reborn.inbox()[survivor]["intact"]
            log = cluster.hosts[survivor].log()
            assert "Invalid memory" not in log and "Unregistering" not in log, log[-3000:]
    finally:
        cluster.close()


# -- a peer leaving while this node's loop is inside a burst on its link ---------------

GATE_SCRIPT = r"""
import errno, sys, tempfile, threading, time
from pathlib import Path
from cffi import FFI
from blizzard.exceptions import DpdkError
from blizzard.replication.transport.dpdk import DpdkTransport, eal, native
from blizzard.replication.transport.dpdk.options import DpdkOptions, parse

eal.start(DpdkOptions(), 1, Path(tempfile.mkdtemp(dir=sys.argv[1])))
ffi, lib = native.load()
assert lib.bz_gate_install() == 1  # done at start already: the same answer
unmap = ffi.cast("int (*)(void *, size_t)", lib.bz_gate_memif_munmap())
assert unmap != ffi.NULL
libc_ffi = FFI()
libc_ffi.cdef("void *mmap(void *, size_t, int, int, int, long);")
libc = libc_ffi.dlopen(None)

def mapping():
    address = libc.mmap(libc_ffi.NULL, 4096, 3, 0x22, -1, 0)  # RW, private anonymous
    return ffi.cast("void *", int(libc_ffi.cast("uintptr_t", address)))

seq = ffi.new("uint64_t *", 1)  # odd: this context is inside a burst
lib.bz_gate_register(seq)
result, done = [], threading.Event()
threading.Thread(target=lambda: (result.append(unmap(mapping(), 4096)), done.set())).start()
assert not done.wait(0.3), "memif's munmap did not wait for the burst in flight"
seq[0] = 2  # the burst ends
assert done.wait(5) and result == [0], result
started = time.monotonic()
assert unmap(mapping(), 4096) == 0  # no burst in flight: at once
assert time.monotonic() - started < 0.1
lib.bz_gate_unregister(seq)
seq[0] = 3  # forgotten: no longer waited for
assert unmap(mapping(), 4096) == 0

# a context the gate cannot guard is refused, with a message that says why
held = [ffi.new("uint64_t *") for _ in range(64)]
free = sum(lib.bz_gate_register(s) == 0 for s in held)
assert free == 64 and lib.bz_gate_register(ffi.new("uint64_t *")) == -errno.EMFILE, free
transport = DpdkTransport(1, [1, 2], run_dir=sys.argv[1], cluster_id="full",
                          options=parse({"memory_mb": 64}, 1))
loop = transport.new_event_loop()
try:
    loop.run_until_complete(transport.start())
except DpdkError as exc:
    assert "too many DPDK transports open in this process (at most 64)" in str(exc), exc
else:
    raise AssertionError("a 65th context was let in")
for s in held:
    lib.bz_gate_unregister(s)
print("gated")
"""


def test_memif_unmaps_a_link_s_regions_only_once_bursts_in_flight_end(tmp_path):
    """memif tears a link down on EAL's interrupt thread when its peer leaves,
    unmapping the regions a burst on the loop's thread may still be using (a
    node died of SIGSEGV in memif's transmit burst that way). Its reference to
    munmap goes through the burst gate: called while a context is inside a
    burst, it returns only once that burst has ended. A context the gate's
    table has no room for is refused rather than left unguarded."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", GATE_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "gated", done.stdout


def _pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` on one CPU: the interrupt thread, woken by the
    peer's hang-up, then preempts the loop's thread wherever it is."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})


FLOOD_BYTES = 32_000  # a message of many frames: its sender spends most of its time in bursts


def test_a_peer_killed_while_frames_flow_both_ways_leaves_this_node_running():
    """Each node in turn is SIGKILLed while both flood each other: the one left,
    its threads on one CPU so the teardown preempts its loop mid-burst as often
    as not, keeps running, and its link comes back with the peer."""
    cpu = min(os.sched_getaffinity(0))
    cluster = HostCluster("dpdk", 2)
    try:
        cluster.start_all()
        cluster.wait_links()
        for node, host in cluster.hosts.items():
            _pin(host.proc.pid, cpu)
            host.call(f"flood {3 - node} {FLOOD_BYTES}")
        for victim in (2, 1) * 5:
            survivor = cluster.hosts[3 - victim]
            before = survivor.inbox().get(victim, {}).get("count", 0)
            cluster.wait_inbox(3 - victim, lambda box, v=victim, b=before:
                               box.get(v, {}).get("count", 0) > b + 100)
            cluster.kill(victim)
            time.sleep(0.3)  # the survivor tears its end of the link down
            assert survivor.proc.poll() is None, (f"node {3 - victim} died with its peer "
                                                  f"({survivor.proc.returncode}):\n"
                                                  f"{survivor.log()[-3000:]}")
            reborn = cluster.start(victim)
            _pin(reborn.proc.pid, cpu)
            cluster.wait_links()
            reborn.call(f"flood {3 - victim} {FLOOD_BYTES}")
    finally:
        cluster.close()


# -- net_af_packet on a veth pair, each end in its own network namespace --------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def veth_pair():
    """Two namespaces joined by a veth pair (MTU 1500): yields the namespaces
    and interface names; removes them whatever happens."""
    tag = uuid.uuid4().hex[:6]
    spaces = [f"bzt{tag}a", f"bzt{tag}b"]
    ends = [f"bz{tag}a", f"bz{tag}b"]
    try:
        for ns in spaces:
            _ip("netns", "add", ns)
        _ip("link", "add", ends[0], "netns", spaces[0], "type", "veth", "peer", "name",
            ends[1], "netns", spaces[1])
        for ns, end in zip(spaces, ends, strict=True):
            _ip("-n", ns, "link", "set", end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield spaces, ends
    finally:
        for ns in spaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_af_packet_links_on_a_veth_pair_in_network_namespaces():
    """Frames of at most the interface's MTU: a 100 kB message crosses as 69 of
    them, in order with the small ones, and a malformed frame is refused."""
    with veth_pair() as (spaces, ends):
        node_options = {1: {"nodes": {"1": {"af_packet": {"2": ends[0]}}}},
                        2: {"nodes": {"2": {"af_packet": {"1": ends[1]}}}}}
        cluster = HostCluster("dpdk", 2, netns={1: spaces[0], 2: spaces[1]},
                              node_options=node_options)
        try:
            cluster.start_all()
            cluster.wait_links()
            for size, count in ((100, 200), (100_000, 5), (100, 200)):
                cluster.hosts[1].call(f"send 2 {count} {size}")
                cluster.hosts[2].call(f"send 1 {count} {size}")
            for node, peer in ((1, 2), (2, 1)):
                box = cluster.wait_inbox(node, lambda b, p=peer: b.get(p, {}).get("count") == 405)
                assert box[peer] == {"count": 405, "in_order": True, "intact": True,
                                     "duplicates": 0, "last": 405}
            status = cluster.hosts[1].stats()["status"]["links"]["2"]
            assert status["kind"] == "af_packet" and status["frames_sent"] >= 400 + 5 * 69
            assert cluster.hosts[1].call(f"raw 2 {_frame(cluster, checksum=1)}")["accepted"]
            cluster.hosts[1].call("send 2 1 100")
            cluster.wait_inbox(2, lambda b: b[1]["count"] == 406)
            assert cluster.hosts[2].stats()["stats"]["bad_frames"] == 1
            assert "refused a frame on the link to node 1: bad checksum" in cluster.hosts[2].log()
        finally:
            cluster.close()


# -- reassembly, as a model ---------------------------------------------------------------


@given(st.data())
def test_reassembly_delivers_each_complete_message_once_and_nothing_else(data):
    """Messages cut into fragments, delivered shuffled, some twice, some lost:
    exactly the messages with no lost fragment come out, once, intact."""
    sizes = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=12), label="sizes")
    per = 8
    messages = {m + 1: bytes((m * 7 + i) & 0xFF for i in range(size))
                for m, size in enumerate(sizes)}
    fragments = []
    for message, payload in messages.items():
        count = max(1, -(-len(payload) // per))
        fragments += [(message, i, count, payload[i * per:(i + 1) * per]) for i in range(count)]
    lost = data.draw(st.sets(st.sampled_from(fragments) if fragments else st.nothing(),
                             max_size=3), label="lost")
    sent = [f for f in fragments if f not in lost]
    sent += data.draw(st.lists(st.sampled_from(sent), max_size=5) if sent else st.just([]),
                      label="duplicates")
    sent = data.draw(st.permutations(sent), label="order")
    r = Reassembler(partial_bytes_max=1 << 20)
    delivered = []
    for message, index, count, payload in sent:
        if count == 1:
            if r.single(5, message):
                delivered.append((message, payload))
        else:
            whole = r.fragment(5, message, index, count, payload)
            if whole is not None:
                delivered.append((message, whole))
    complete = {m for m in messages if not any(f[0] == m for f in lost)}
    assert sorted(m for m, _ in delivered) == sorted(complete)
    assert all(messages[m] == payload for m, payload in delivered)


@given(st.integers(0, 3000), st.integers(1, 400), st.integers(0, 120), st.data())
def test_a_message_cut_into_frames_lands_whole_in_a_region_in_any_order(length, per, head,
                                                                         data):
    """The frames say how long a message's last frame is: from its first frame
    alone a receiver knows the message's length, and fragments placed where
    RegionMessage says, in any order, rebuild the message after its head."""
    message = bytes((i * 13 + 5) & 0xFF for i in range(length))
    cut = frames.fragments(message, per, cluster=1, source=1, destination=2, session=3,
                           message=9)
    fields = [frames.HEADER.unpack_from(f, frames.ETH_BYTES) for f in cut]
    payloads = [f[frames.OVERHEAD_BYTES:] for f in cut]
    first = fields[0]
    count, first_length, last = first[9], first[10], first[11]
    assert count == len(cut) and all(f[9] == count and f[11] == last for f in fields)
    assert (count - 1) * first_length + last == len(message) if count > 1 else last == length
    if count == 1 or first_length < head:
        return  # one frame: its own length says it; a head longer than a frame: no region
    entry = RegionMessage(2, count, first_length, last, payloads[0][:head],
                          memoryview(bytearray((count - 1) * first_length + last - head)))
    region = entry.region
    region[:first_length - head] = payloads[0][head:]
    for index in data.draw(st.permutations(range(1, count))):
        assert entry.fits(index, count, len(payloads[index]))
        assert not entry.fits(index, count, len(payloads[index]) + 1)
        at = entry.offset(index)
        region[at:at + len(payloads[index])] = payloads[index]
    assert entry.head + bytes(region) == message


def test_reassembly_of_messages_received_into_regions():
    r = Reassembler(partial_bytes_max=100)
    assert r.fresh(1, 1) and not r.begun(1)
    r.open_region(1, RegionMessage(2, 3, 10, 4, b"h", memoryview(bytearray(23))))
    assert r.fresh(1, 1)  # still arriving
    r.close_region(1)
    assert not r.fresh(1, 1) and r.duplicates == 1  # delivered: later copies are duplicates
    for message in range(2, 8):  # regions never completed: the oldest evicted
        r.open_region(message, RegionMessage(2, 2, 10, 1, b"h", memoryview(bytearray(10))))
    assert list(r.regions) == [4, 5, 6, 7] and r.evicted == 2
    r.drop_region(7)  # fragments that disagree: forgotten, may come again whole
    assert r.fresh(1, 7) and 7 not in r.regions
    assert r.fresh(2, 1) and not r.regions  # a new session: its regions forgotten
    assert r.evicted == 5


def test_reassembly_bounds_and_sessions():
    r = Reassembler(partial_bytes_max=100, partial_max=2)
    assert r.fragment(1, 1, 0, 2, b"a" * 60) is None
    assert r.fragment(1, 2, 0, 2, b"b" * 60) is None  # over 100 bytes: message 1 evicted
    assert r.evicted == 1 and list(r.partials) == [2]
    assert r.fragment(1, 1, 1, 2, b"x") is None  # message 1 starts over, incomplete
    assert r.fragment(1, 2, 1, 2, b"b") == b"b" * 61
    assert r.single(1, 3) and not r.single(1, 3)
    assert r.single(2, 3)  # a new session (the peer restarted): ids start over
    old = Reassembler(partial_bytes_max=100, window=10)
    for m in range(1, 30):
        assert old.single(1, m)
    assert not old.single(1, 5)  # too old to tell: refused as stale


# -- options, EAL arguments, absence ----------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"memory_mb": 1}, "transport.memory_mb: expected an integer from 16"),
    ({"frame_bytes": 100_000}, "transport.frame_bytes: expected an integer from 256 to 9216"),
    ({"spin_us": "fast"}, "transport.spin_us"),
    ({"pin": "yes"}, "transport.pin: expected true or false"),
    ({"eal_args": "--no-huge"}, "transport.eal_args: expected a list of strings"),
    ({"colour": "blue"}, "transport.colour: unknown setting for the dpdk transport"),
    ({"nodes": {"x": {}}}, "transport.nodes.x: expected a node id"),
    ({"nodes": {"1": {"lcore": "0"}}}, "transport.nodes.1.lcore: unknown setting"),
    ({"nodes": {"1": {"lcores": "zero"}}}, "transport.nodes.1.lcores: not a valid value"),
    ({"nodes": {"1": {"af_packet": {"2": "bad name!"}}}},
     "transport.nodes.1.af_packet.2: 'bad name!' is not an interface name"),
    ({"file_prefix": "../x"}, "transport.file_prefix: not a valid value"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse(options, 1)


def test_every_option_is_documented():
    """docs/configuration.md has a row for every key the dpdk transport accepts."""
    from blizzard.replication.transport.dpdk import options

    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")]
    for key in options._KEYS - {"nodes"}:
        assert f"`[transport] {key}`" in rows, key
    for key in options._NODE_KEYS:
        assert f"`[transport.nodes.N] {key}`" in rows, key


def test_options_and_eal_arguments(tmp_path):
    options = parse({"memory_mb": 64, "spin_us": 5, "socket_dir": "socks",
                     "nodes": {"2": {"lcores": "1", "af_packet": {"1": "veth0"}}}}, 2,
                    base_dir=tmp_path)
    assert options.af_packet == {1: "veth0"} and options.socket_dir == tmp_path / "socks"
    args = eal.arguments(options, 2, tmp_path)
    assert args[:4] == ["blizzard", "--no-huge", "--no-pci", "--no-shconf"]
    assert "-m" in args and args[args.index("-m") + 1] == "64"
    assert args[args.index("-l") + 1] == "1"
    prefixes = {DpdkOptions().file_prefix_for(n, d) for n in (1, 2)
                for d in (tmp_path / "a", tmp_path / "b")}
    assert len(prefixes) == 4  # unique per node and per cluster directory
    assert parse({}, 3).lcores_for(3) == str(2 % os.cpu_count())


def test_without_dpdk_choosing_it_is_a_config_error_naming_the_packages(tmp_path):
    """As on a machine where the native module was not built: choosing the
    transport raises a ConfigError naming the Debian packages."""
    code = ("import sys; sys.modules['blizzard.replication.transport.dpdk._dpdk'] = None\n"
            "from blizzard.replication.transport.registry import TransportSpec, "
            "build_transport\n"
            "spec = TransportSpec(kind='dpdk', node_id=1, peers={1: ('h', 1), 2: ('h', 2)})\n"
            "try:\n"
            "    build_transport(spec)\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert out.startswith("ConfigError transport.kind: the transport 'dpdk' is not available")
    assert "dpdk and libdpdk-dev" in out and "apt-get install" in out
    assert "tcp transport works without them" in out


def test_the_factory_refuses_tls_and_strangers(tmp_path):
    peers = {1: ("h", 1), 2: ("h", 2)}
    with pytest.raises(ConfigError, match="tls: the dpdk transport does not encrypt"):
        build_transport(TransportSpec(kind="dpdk", node_id=1, peers=peers,
                                      tls=TlsFiles(tmp_path, tmp_path, tmp_path)))
    with pytest.raises(ConfigError, match=r"transport\.nodes\.1\.af_packet: no node 5"):
        build_transport(TransportSpec(kind="dpdk", node_id=1, peers=peers, options={
            "nodes": {"1": {"af_packet": {"5": "veth0"}}}}))
    with pytest.raises(ConfigError, match=r"transport\.socket_dir: memif socket path too long"):
        build_transport(TransportSpec(kind="dpdk", node_id=1, peers=peers,
                                      options={"socket_dir": "/tmp/" + "d" * 120}))


TIMERS_SCRIPT = """
import asyncio, os, select, sys, time
from blizzard.replication.transport.dpdk import DpdkTransport
from blizzard.replication.transport.dpdk.options import parse

transport = DpdkTransport(1, [1, 2], run_dir=sys.argv[1], cluster_id="timers",
                          options=parse({"memory_mb": 64}, 1))
loop = transport.new_event_loop()
loop.run_until_complete(transport.start())  # node 2 never comes; its link has a doorbell
lib, ctx = transport._lib, transport._ctx
policy = transport._policy
policy.preempted_ns = 0  # every poll "loses the core": the wait stops polling at once
epoll = select.epoll()
r, w = os.pipe()
epoll.register(r, select.EPOLLIN)
for _ in range(100):
    os.write(w, b"x")
    assert lib.bz_wait(ctx, epoll.fileno(), 10**9, policy) == 2  # the loop had work
    os.read(r, 1)
    started = time.monotonic()
    # the next timer is 1 ns away: due before the poll even ends
    assert lib.bz_wait(ctx, epoll.fileno(), 1, policy) == 0
    assert time.monotonic() - started < 1.0
print(transport.status()["waits"]["preempted"])
loop.run_until_complete(transport.stop())
"""


def test_a_wait_past_the_loop_s_next_timer_returns_at_once(tmp_path):
    """A wait whose poll lost the core until after the loop's next timer returns
    at once (it slept until a frame or an event: the node missed its timers)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", TIMERS_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) >= 100, done.stdout


def test_memif_receives_into_an_mbuf_pool_over_a_registered_file_mapping(tmp_path):
    """What the transport's docstring says of external memory rests on
    scripts/dpdk_extmem_probe.c: built and run here, a frame sent over memif
    lands inside a mapped file registered with rte_extmem_register."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libdpdk"], check=True,
                           capture_output=True, text=True).stdout.split()
    probe = tmp_path / "extmem-probe"
    subprocess.run(["gcc", "-O1", "-DALLOW_EXPERIMENTAL_API", "-o", str(probe),
                    str(ROOT / "scripts" / "dpdk_extmem_probe.c"), *flags, "-lrte_bus_vdev"],
                   check=True, capture_output=True)
    run = subprocess.run([str(probe), str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "rte_extmem_register" in out and "= 0 (ok)" in out, out
    assert "received 1000 bytes" in out and "? YES; flags ext=1" in out, out
