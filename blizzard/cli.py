"""The ``blizzard`` command.

    blizzard demo                       pool, structures, a 3-node cluster: end to end
    blizzard pool create|info|check P   manage pool files
    blizzard bench pool|structures|ordered|raft-core|cluster|frames [...]   benchmarks
    blizzard serve --config C --node N  run one cluster node (Raft + client protocol)
    blizzard cluster up|down|status     a local cluster of `serve` processes
    blizzard mirror serve|promote|status --config C [--node N]   physical replication
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from blizzard.exceptions import BlizzardError, ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

BENCHMARKS = {
    "pool": "blizzard.bench.pool",
    "structures": "blizzard.bench.structures",
    "ordered": "blizzard.bench.ordered",
    "raft-core": "blizzard.bench.raft_core",
    "cluster": "blizzard.bench.cluster",
    "frames": "blizzard.bench.frames",
}


def parse_size(text: str) -> int:
    """``"64M"`` -> 67108864. Units K, M, G, T are powers of 1024."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4096, 64M, 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- pool ---------------------------------------------------------------------------


def _cmd_pool_create(args: argparse.Namespace) -> int:
    from blizzard.pmem import Pool

    with Pool.create(args.path, args.size, layout=args.layout, mode=args.mode) as pool:
        print(f"created {args.path}: {_human(pool.size)}, layout {pool.layout!r}, uuid {pool.uuid}")
    return 0


def _cmd_pool_info(args: argparse.Namespace) -> int:
    from blizzard.pmem import Pool

    with Pool.open(args.path, mode=args.mode) as pool:
        stats = pool.stats()
        rows = [
            ("path", str(args.path)),
            ("layout", pool.layout),
            ("uuid", str(pool.uuid)),
            ("size", _human(pool.size)),
            ("capacity", _human(stats.capacity)),
            ("used", _human(stats.used)),
            ("free", _human(stats.free)),
            ("largest free extent", _human(stats.largest_free_extent)),
            ("durability", pool.media.durability),
            ("recovered", f"{pool.recovered_entries} undo entries rolled back at open"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        roots = pool.roots()
        print(f"{'roots':<{width}}  {len(roots)}")
        for name, root in roots.items():
            tag = root.tag.decode("ascii", "replace")
            size = pool.usable_size(root.off)
            print(f"  {name:<{width}}  offset {root.off}  tag {tag!r}  {size} bytes")
    return 0


def _cmd_pool_check(args: argparse.Namespace) -> int:
    from blizzard.pmem import Pool

    with Pool.open(args.path, mode=args.mode) as pool:
        pool.check()
        print(f"{args.path}: ok ({_human(pool.stats().used)} used of {_human(pool.size)})")
    return 0


# -- demo ------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from blizzard import demo

    return demo.run(records=args.records, writes=args.writes, mode=args.mode,
                    directory=args.dir, keep=args.keep)


# -- bench ----------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.which])
    return module.main(args.rest)


# -- serve / cluster ---------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import serve, setup_logging

    setup_logging(args.node)
    try:
        return serve(args.config, args.node)
    except OSError as exc:  # a port taken, a data directory not writable
        print(f"blizzard: error: node {args.node} cannot start: {exc}", file=sys.stderr)
        return 1


CLUSTER_DIR_DEFAULT = "/dev/shm/blizzard-cluster"
NODES_DEFAULT = 3
BASE_PORT_DEFAULT = 7001
POOL_SIZE_DEFAULT = "64M"


def _check_cluster_flags(args: argparse.Namespace) -> None:
    """Refuse impossible flags in the flags' own terms."""
    if args.nodes is not None and args.nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {args.nodes}")
    if args.pool_size is not None and (args.pool_size < 1 << 20 or args.pool_size % 4096):
        raise ConfigError(f"--pool-size must be at least 1M and a multiple of 4096 bytes, "
                          f"got {args.pool_size}")
    if args.base_port is not None:
        ports = 2 * (args.nodes or NODES_DEFAULT)
        if not 1 <= args.base_port <= 65536 - ports:
            raise ConfigError(f"--base-port must leave room for {ports} ports below 65536 "
                              f"(1 to {65536 - ports}), got {args.base_port}")


def _contradictions(args: argparse.Namespace, config) -> list[str]:
    """The flags given that an existing cluster file says otherwise about."""
    found = []
    if args.nodes is not None and args.nodes != len(config.nodes):
        found.append(f"--nodes {args.nodes} (it has {len(config.nodes)} nodes)")
    raft_ports = [n.raft[1] for n in config.nodes if n.raft is not None]
    if args.base_port is not None and raft_ports and args.base_port != min(raft_ports):
        found.append(f"--base-port {args.base_port} (its first node listens on "
                     f"{min(raft_ports)})")
    if args.pool_size is not None and args.pool_size != config.pool_size:
        found.append(f"--pool-size {args.pool_size} (its pool_size is {config.pool_size})")
    if args.dir is not None and args.config is not None and \
            os.path.abspath(args.dir) != str(config.data_dir):
        found.append(f"--dir {args.dir} (its data_dir is {config.data_dir})")
    return found


def _cmd_cluster_up(args: argparse.Namespace) -> int:
    from blizzard.cluster import config as configmod
    from blizzard.cluster.server import start_cluster

    _check_cluster_flags(args)
    if args.config:
        path = args.config
    else:
        directory = os.path.abspath(args.dir or CLUSTER_DIR_DEFAULT)
        path = os.path.join(directory, "cluster.toml")
    if os.path.exists(path):
        contradicted = _contradictions(args, configmod.load(path))
        if contradicted:
            raise ConfigError(f"{path} exists and says otherwise: {'; '.join(contradicted)}. "
                              "Drop those flags to start the cluster it describes, or remove "
                              "the file (and its data) to make a new one")
    elif args.config:
        raise ConfigError(f"--config {path}: no such file")
    else:
        os.makedirs(directory, exist_ok=True)
        size = args.pool_size or parse_size(POOL_SIZE_DEFAULT)
        config = configmod.local_cluster(args.nodes or NODES_DEFAULT, directory,
                                         base_port=args.base_port or BASE_PORT_DEFAULT,
                                         pool_size=size, log_pool_size=size,
                                         replication={"backend": "raft"})
        with open(path, "w") as f:
            f.write(configmod.dump(config))
    pids, leader = start_cluster(path, timeout_s=args.timeout)
    config = configmod.load(path)
    for node_id, pid in sorted(pids.items()):
        host, port = config.node(node_id).client
        print(f"node {node_id}: pid {pid}, client {host}:{port}, "
              f"log {config.node_dir(node_id)}.log")
    print(f"cluster up: {len(pids)} nodes, leader node {leader}")
    print(f"config: {os.path.abspath(path)}")
    return 0


def _cmd_cluster_down(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import stop_cluster

    stopped, killed = stop_cluster(args.config, grace_s=args.grace)
    print(f"cluster down: {stopped} nodes stopped"
          + (f" ({killed} with SIGKILL after {args.grace} s)" if killed else ""))
    return 0


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    from blizzard.client import connect

    with connect(args.config, timeout_s=5.0) as client:
        statuses = client.node_statuses()
    columns = ("node", "role", "term", "leader", "commit", "applied", "log", "match", "ops/s")
    rows = []
    for key, status in sorted(statuses.items(), key=lambda kv: str(kv[0])):
        if "term" not in status:
            rows.append((str(key), status.get("role", "?"), *["-"] * 7))
            continue
        match = status.get("match")
        rows.append((str(status["node"]), status["role"], str(status["term"]),
                     str(status["leader"]), str(status["commit"]), str(status["applied"]),
                     str(status["log_entries"]),
                     " ".join(f"{p}:{m}" for p, m in sorted(match.items())) if match else "-",
                     f"{status['ops_per_s']:.0f}"))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if all("term" in s for s in statuses.values()) else 1


# -- mirror (physical replication) ------------------------------------------------------


def _cmd_mirror_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from blizzard.cluster.physical import serve_backup
    from blizzard.cluster.server import setup_logging

    setup_logging(args.node)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        return serve_backup(args.config, args.node, stop=stop, acks=args.acks)
    except OSError as exc:  # the mirror port taken, a data directory not writable
        print(f"blizzard: error: backup {args.node} cannot start: {exc}", file=sys.stderr)
        return 1


def _cmd_mirror_promote(args: argparse.Namespace) -> int:
    from blizzard.cluster.physical import request_promote

    result = request_promote(args.config, args.node)
    print(f"node {result['node']} promoted: epoch {result['epoch']}, position "
          f"{result['position']}, fenced nodes {result['fenced'] or 'none'}, "
          f"{result['recovered_entries']} undo entries rolled back; open it as primary")
    return 0


def _cmd_mirror_status(args: argparse.Namespace) -> int:
    import json

    from blizzard.cluster.physical import node_status

    statuses = node_status(args.config)
    for node_id, status in sorted(statuses.items()):
        print(f"node {node_id}: {json.dumps(status, sort_keys=True)}")
    return 0


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blizzard",
                                     description="Persistent, replicated data structures.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pool, structures and a 3-node cluster, end to end")
    demo.add_argument("--dir", help="working directory (default: a new one under /dev/shm)")
    demo.add_argument("--records", type=int, default=10_000, help="pool records to write")
    demo.add_argument("--writes", type=int, default=500, help="replicated puts")
    demo.add_argument("--mode", default="pmem", choices=("pmem", "msync", "none"))
    demo.add_argument("--keep", action="store_true", help="keep the files afterwards")
    demo.set_defaults(func=_cmd_demo)

    pool = sub.add_parser("pool", help="create, inspect or check a pool file")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True)
    create = pool_sub.add_parser("create", help="create a new pool file")
    create.add_argument("path")
    create.add_argument("--size", type=parse_size, default=parse_size("64M"))
    create.add_argument("--layout", default="blizzard")
    create.set_defaults(func=_cmd_pool_create)
    info = pool_sub.add_parser("info", help="header, space and roots of a pool")
    info.add_argument("path")
    info.set_defaults(func=_cmd_pool_info)
    check = pool_sub.add_parser("check", help="verify a pool's allocator and directory")
    check.add_argument("path")
    check.set_defaults(func=_cmd_pool_check)
    for p in (create, info, check):
        p.add_argument("--mode", default="pmem", choices=("pmem", "msync", "none"),
                       help="durability mode (default pmem)")

    bench = sub.add_parser("bench", help="run a benchmark (pass --help after its name)")
    bench.add_argument("which", choices=sorted(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(func=_cmd_bench)

    serve = sub.add_parser("serve", help="run one node of a cluster (Raft + client protocol)")
    serve.add_argument("--config", required=True, help="the cluster's TOML file")
    serve.add_argument("--node", type=int, required=True, help="this node's id")
    serve.set_defaults(func=_cmd_serve)

    cluster = sub.add_parser("cluster", help="start, stop or inspect a local cluster")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_sub.add_parser(
        "up", help="start one `blizzard serve` process per node",
        description="Start the cluster of --config, or of DIR/cluster.toml, writing that "
                    "file from the flags when it does not exist yet. Flags that contradict "
                    "an existing file are refused.")
    up.add_argument("--nodes", type=int, help=f"nodes of a new cluster (default "
                                              f"{NODES_DEFAULT})")
    up.add_argument("--dir", help=f"data directory (default {CLUSTER_DIR_DEFAULT})")
    up.add_argument("--base-port", type=int,
                    help=f"first port of a new cluster; node i gets two (default "
                         f"{BASE_PORT_DEFAULT})")
    up.add_argument("--config", help="an existing cluster TOML (else DIR/cluster.toml)")
    up.add_argument("--pool-size", type=parse_size,
                    help=f"each node's pools, for a new cluster (default {POOL_SIZE_DEFAULT})")
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a leader")
    up.set_defaults(func=_cmd_cluster_up)
    down = cluster_sub.add_parser("down", help="stop the cluster's processes")
    down.add_argument("--grace", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL")
    status = cluster_sub.add_parser("status", help="a table of every node's Raft state")
    for p in (down, status):
        p.add_argument("--config", required=True, help="the cluster's TOML file")
    down.set_defaults(func=_cmd_cluster_down)
    status.set_defaults(func=_cmd_cluster_status)

    mirror = sub.add_parser("mirror", help="physical replication: backups, promotion, status")
    mirror_sub = mirror.add_subparsers(dest="mirror_command", required=True)
    m_serve = mirror_sub.add_parser("serve", help="run one node as a passive backup")
    m_serve.add_argument("--acks", type=int, default=None,
                         help="backups the primaries wait for per fence (default: all); "
                              "promotion fences enough nodes for this rule")
    m_promote = mirror_sub.add_parser("promote", help="make a running backup the primary")
    for p in (m_serve, m_promote):
        p.add_argument("--node", type=int, required=True, help="the node's id")
    m_status = mirror_sub.add_parser("status", help="every backup's epoch and position")
    for p in (m_serve, m_promote, m_status):
        p.add_argument("--config", required=True, help="the cluster's TOML file")
    m_serve.set_defaults(func=_cmd_mirror_serve)
    m_promote.set_defaults(func=_cmd_mirror_promote)
    m_status.set_defaults(func=_cmd_mirror_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BlizzardError as exc:
        print(f"blizzard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
