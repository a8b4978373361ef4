"""The cluster benchmark runs, reports sane figures and leaves nothing behind.

Small runs only: these check the harness (processes, protocol, cleanup), not
the speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blizzard.bench import _cluster_node, cluster
from blizzard.exceptions import BenchmarkError
from blizzard.pmem import DramMedia, Pool, _libpmem
from blizzard.structures import PHashMap

pytestmark = pytest.mark.skipif(not _libpmem.available(), reason="libpmem1 not installed")

HAVE_PYSYNCOBJ = cluster.pysyncobj_version() is not None


def _node_processes(marker: str) -> list[int]:
    """Pids of benchmark node processes still alive whose command line names
    ``marker`` (this test's directory: other runs on the machine don't count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        ours = marker.encode() in cmd
        if ours and state != "Z" and (b"blizzard.bench._cluster_node" in cmd
                                      or b"blizzard.bench._pysyncobj_node" in cmd
                                      or b"blizzard.bench._frames_node" in cmd
                                      or b"serve" in cmd.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def test_run_quick(shm_dir):
    before = set(_node_processes(str(shm_dir)))
    # a tolerant election timeout: a leader change on a busy machine is not what this tests
    systems = tuple(s for s in cluster.SYSTEMS if s != "pysyncobj-nocompact")  # time
    results = cluster.run(300, window=100, latency_ops=30, warmup=100, directory=shm_dir,
                          raft={"election_ticks": 50}, systems=systems)
    by = {r.system: r for r in results}
    assert list(by) == list(systems)
    assert by["blizzard-local"].lost == 0 and by["blizzard-local"].failed == 0
    for system in ("blizzard-leader", "blizzard-follower", "blizzard-local"):
        r = by[system]
        assert r.rate > 0 and r.lost is not None, (system, r.note)
        assert r.ops + r.failed == (150 if system == "blizzard-follower" else 300)
        assert r.latency["n"] == 30
        assert 0 < r.p50_us <= r.p99_us
    assert len(by["blizzard-leader"].cpu_by_process) == 3
    frames = by["blizzard-leader"].frames_per_op  # the leader's appends reached both
    assert set(frames) == {"frames_sent", "frames_received"}, frames
    assert frames["frames_sent"][0] > 0 and min(frames["frames_received"][1:]) > 0, frames
    # one leader, no compaction: nothing gives a region up under a frame being received
    assert by["blizzard-leader"].regions_lost == 0, by["blizzard-leader"].note
    for system in ("pysyncobj", "pysyncobj-nobatch"):
        r = by[system]
        if HAVE_PYSYNCOBJ:
            assert r.rate > 0 and r.failed == 0 and r.p50_us > 0, (system, r.note)
        else:
            assert r.rate is None and "skipped" in r.note
    q = cluster.ratios(results)
    assert q["leader_vs_local"] > 0 and q["leader_p50_us"] > 0
    assert (q["leader_vs_pysyncobj"] is not None) == HAVE_PYSYNCOBJ
    text = cluster.format_results(results)
    assert "blizzard raft, load on leader" in text and cluster.targets(results)
    assert set(_node_processes(str(shm_dir))) <= before  # every node process is gone
    assert list(shm_dir.iterdir()) == []  # the run's directory is removed


def test_tls_twins_run_in_the_same_run(shm_dir):
    """--tls: each Blizzard cluster system, then the same with TLS on every port;
    the remote-client system drives `blizzard serve` processes."""
    before = set(_node_processes(str(shm_dir)))
    results = cluster.run(200, window=50, latency_ops=20, warmup=50, directory=shm_dir,
                          raft={"election_ticks": 50}, tls=True,
                          systems=("blizzard-leader-tls", "blizzard-client"))
    assert [r.system for r in results] == ["blizzard-leader-tls", "blizzard-client",
                                           "blizzard-client-tls"]
    for r in results:
        assert r.rate > 0 and r.failed == 0 and r.lost == 0, (r.system, r.note)
        assert r.latency["n"] == 20 and r.p50_us > 0
    assert "mutual TLS" in results[0].note and "mutual TLS" in results[2].note
    assert "TLS" not in results[1].note
    assert len(results[1].cpu_by_process) == 4  # this process, then the three nodes
    q = cluster.ratios(results)
    assert q["client_tls_vs_plain"] > 0 and "leader_tls_vs_plain" not in q
    assert any("TLS / plain, load on client" in line for line in cluster.targets(results))
    assert "the same, TLS" in cluster.format_results(results)
    assert set(_node_processes(str(shm_dir))) <= before
    assert list(shm_dir.iterdir()) == []


def test_main_writes_json(shm_dir, capsys):
    out = shm_dir.parent / f"{shm_dir.name}.json"
    argv = ["--ops", "200", "--latency-ops", "20", "--window", "50", "--quiet",
            "--systems", "blizzard-leader,blizzard-local", "--dir", str(shm_dir),
            "--json", str(out)]
    try:
        assert cluster.main(argv) == 0
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    assert data["machine"]["cores"] >= 1 and len(data["load"]["start"]) == 3
    assert [r["system"] for r in data["results"]] == ["blizzard-leader", "blizzard-local"]
    assert data["ratios"]["leader_vs_local"] > 0
    assert "--ops 200" in data["command"]
    printed = capsys.readouterr().out
    assert "load average" in printed and "ops/s" in printed
    assert list(shm_dir.iterdir()) == []


def test_both_transports_in_one_run_with_round_trips(shm_dir, capsys, monkeypatch):
    """--transport tcp,dpdk: the cluster over each, the DPDK targets against TCP's
    figures of the same run, and the round trip of one frame in four ways."""
    from blizzard.bench import frames

    monkeypatch.setattr(frames, "QUICK_SYNC_ROUNDS", 300)
    monkeypatch.setattr(frames, "QUICK_ASYNC_ROUNDS", 50)
    out = shm_dir.parent / f"{shm_dir.name}.json"
    argv = ["--ops", "200", "--latency-ops", "20", "--window", "50", "--quiet", "--quick",
            "--systems", "blizzard-leader", "--transport", "tcp,dpdk", "--dir", str(shm_dir),
            "--election-ticks", "50", "--json", str(out)]
    try:
        assert cluster.main(argv) == 0
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    results = {r["system"]: r for r in data["results"]}
    assert list(results) == ["blizzard-leader", "blizzard-leader-dpdk"]
    for r in results.values():
        assert r["rate"] > 0 and r["lost"] == 0 and r["latency"]["n"] == 20, r["note"]
    assert "net_memif" in results["blizzard-leader-dpdk"]["note"]
    assert data["ratios"]["dpdk_vs_tcp_p50"] > 0 and data["ratios"]["dpdk_vs_tcp_rate"] > 0
    # (CPU is read from /proc in clock ticks: a run this short may show none at all)
    assert "dpdk_vs_tcp_cpu" in data["ratios"]
    trips = {r["mode"]: r for r in data["round_trips"]}
    assert list(trips) == ["floor", "frame", "dpdk", "tcp"]
    assert all(r["latency"]["p50_us"] > 0 and r["cpu_us_per_round_trip"] > 0
               for r in trips.values()), trips
    printed = capsys.readouterr().out
    assert "dpdk / tcp synchronous put p50" in printed and "memif floor" in printed
    assert set(_node_processes(str(shm_dir))) == set()
    assert list(shm_dir.iterdir()) == []


def test_cleanup_after_a_failure(shm_dir, monkeypatch):
    """A node that dies mid-run: the error names it, and nothing is left behind."""
    before = set(_node_processes(str(shm_dir)))

    def broken_latency(reply):
        raise BenchmarkError("injected failure")

    monkeypatch.setattr(cluster, "_latency", broken_latency)
    with pytest.raises(BenchmarkError, match="injected"):
        cluster.run(100, window=20, latency_ops=5, warmup=10, directory=shm_dir,
                    systems=("blizzard-leader",))
    assert set(_node_processes(str(shm_dir))) <= before
    assert list(shm_dir.iterdir()) == []


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown systems"):
        cluster.run(10, systems=("etcd",))
    with pytest.raises(ValueError):
        cluster.run(0)
    with pytest.raises(ValueError, match="unknown transports"):
        cluster.run(10, transports=("carrier-pigeon",))


def test_helpers():
    assert len(_cluster_node.make_key("ab", 7)) == _cluster_node.KEY_BYTES
    assert _cluster_node.make_key("ab", 7) == b"ab00000000000007"
    s = _cluster_node.summarize([1000 * i for i in range(1, 101)])
    assert s["n"] == 100 and s["p50_us"] == 51 and s["p99_us"] == 100
    assert _cluster_node.summarize([]) == {"n": 0}
    assert os.sysconf("SC_CLK_TCK") > 0


def test_the_pools_hold_every_put_of_large_values(monkeypatch):
    """The pools are sized for the run's values: 30,000 puts of 4 KiB (twice the
    64 MiB slack) fit, and so would the run's updates of them."""
    monkeypatch.setitem(cluster._VALUE, "bytes", 4096)
    entries = 30_000
    pool = Pool.create(DramMedia(cluster._pool_bytes(entries)))
    m = PHashMap(pool, _cluster_node.MAP_NAME)
    value = cluster._value()
    with pool.transaction():
        for i in range(entries):
            m[_cluster_node.make_key("k", i)] = value
    assert len(m) == entries


def test_targets_name_the_compiled_paths_figures():
    """The leader's rate, its synchronous p50 and the CPU a put costs summed over
    the three processes, each against its target, met or missed."""
    fast = cluster.Result("blizzard-leader", rate=61_000.0, latency={"p50_us": 480.0},
                          cpu_us_per_op=24.5, cpu_by_process=[12.5, 6.0, 6.0])
    lines = cluster.targets([fast])
    assert any(line.startswith("3 nodes, load on the leader: 61,000 puts/s")
               and line.endswith("met)") for line in lines), lines
    assert any("p50: 0.48 ms (target <= 0.5 ms: met)" in line for line in lines), lines
    assert any("CPU per replicated put, 3 processes: 24.5 µs (target <= 25 µs: met)" in line
               for line in lines), lines
    slow = cluster.Result("blizzard-leader", rate=59_000.0, latency={"p50_us": 510.0},
                          cpu_us_per_op=25.5)
    assert sum("MISSED" in line for line in cluster.targets([slow])) == 3
    assert cluster.targets([cluster.Result("blizzard-local", rate=1.0)]) == []
