"""The ``blizzard`` command.

    blizzard demo                       pool, structures, a 3-node cluster: end to end
    blizzard pool create|info|check P   manage pool files
    blizzard bench NAME                 benchmarks (`blizzard bench NAME --help`): pool,
                                        structures, layers, ordered, raft-core, raft-log, raft-node,
                                        cluster, replication, frames, failover, snapshot, report
    blizzard serve --config C --node N  run one cluster node (Raft or physical + client protocol)
    blizzard cluster up|down|status     a local cluster of `serve` processes
    blizzard mirror serve|promote|status --config C [--node N]   physical replication
    blizzard certs create --dir D --nodes N   a CA, node and client certificates
    blizzard certs token --name N --role R    a client token and its [[auth.tokens]] table
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from blizzard._argparse import ArgumentParser, size, size_help
from blizzard._sizes import format_size
from blizzard.exceptions import BlizzardError, ConfigError

BENCHMARKS = {
    "pool": "blizzard.bench.pool",
    "structures": "blizzard.bench.structures",
    "ordered": "blizzard.bench.ordered",
    "raft-core": "blizzard.bench.raft_core",
    "raft-log": "blizzard.bench.raft_log",
    "raft-node": "blizzard.bench.raft_node",
    "cluster": "blizzard.bench.cluster",
    "replication": "blizzard.bench.replication",
    "report": "blizzard.bench.report",
    "failover": "blizzard.bench.failover",
    "snapshot": "blizzard.bench.snapshot",
    "frames": "blizzard.bench.frames",
    "layers": "blizzard.bench.layers",
}
MODES = ("pmem", "msync", "none")
MODE_HELP = ("durability: pmem = cache-line flushes (libpmem), msync = msync per fence, "
             "none = no flushes (see docs/pmem.md)")


def parse_size(text: str) -> int:
    """``"64M"`` -> 67108864 (the units of :mod:`blizzard._sizes`); an
    :class:`argparse.ArgumentTypeError` for anything else."""
    return size(text)


def _human(n: int) -> str:
    return format_size(n)


def _version() -> str:
    """The release, and which build runs: compiled, or interpreted and why."""
    from blizzard import __version__, _compiled

    return f"blizzard {__version__}, {_compiled.describe()}"


# -- pool ---------------------------------------------------------------------------


def _cmd_pool_create(args: argparse.Namespace) -> int:
    from blizzard.pmem import Pool

    with Pool.create(args.path, args.size, layout=args.layout, mode=args.mode) as pool:
        print(f"created {args.path}: {_human(pool.size)}, layout {pool.layout!r}, uuid {pool.uuid}")
    return 0


def _open_for_reading(args: argparse.Namespace):  # -> (Pool, note or None)
    """The pool at ``args.path``; if another process has it open, a private
    copy read without the lock (``Pool.open_copy``), and a note saying so."""
    from blizzard.exceptions import PoolLockedError
    from blizzard.pmem import Pool

    try:
        return Pool.open(args.path, mode=args.mode), None
    except PoolLockedError as locked:
        holders = ", ".join(map(str, locked.holders)) or "another process"
        pool = Pool.open_copy(args.path)
        return pool, (f"in use by {holders}: read from a copy taken just now, without the "
                      "lock (nothing was rolled back in the file)")


def _cmd_pool_info(args: argparse.Namespace) -> int:
    from blizzard import _compiled

    pool, note = _open_for_reading(args)
    with pool:
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
            ("durability", pool.media.durability if note is None else f"{args.mode} (in use)"),
            ("recovered", f"{pool.recovered_entries} undo entries rolled back at open"
                          + (" (in the copy)" if note else "")),
            ("build", _compiled.describe()),
        ]
        if note is not None:
            rows.insert(1, ("state", note))
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
    import blizzard.structures  # noqa: F401  (registers every structure kind)
    from blizzard.pmem import Pool
    from blizzard.structures.registry import check_structures

    with Pool.open(args.path, mode=args.mode) as pool:
        pool.check()
        roots = pool.roots()
        print(f"{args.path}: pool ok: header, undo log, allocator, directory of "
              f"{len(roots)} roots ({_human(pool.stats().used)} used of {_human(pool.size)})")
        results = check_structures(pool)
    width = max((len(r.name) for r in results), default=0)
    broken = [r for r in results if r.problem is not None]
    for r in results:
        if not r.checked:
            verdict = "not a Blizzard structure: not checked"
        elif r.problem is not None:
            verdict = f"CORRUPT: {r.problem}"
        else:
            verdict = "ok" if r.items is None else f"ok, {r.items} items"
        print(f"  {r.name:<{width}}  {r.kind:<8}  {verdict}")
    checked = sum(r.checked for r in results)
    if broken:
        names = ", ".join(r.name for r in broken)
        raise BlizzardError(f"{args.path}: {len(broken)} of {checked} roots failed "
                            f"their check ({names})")
    print(f"{args.path}: ok ({checked} roots checked)")
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
    from blizzard._heap import prepare_serving_heap
    from blizzard.cluster.server import node_logging, serve

    prepare_serving_heap()  # this process only serves the node
    with node_logging(args.node):
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
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise BlizzardError(f"cannot create the data directory {directory}: "
                                f"{exc.strerror}") from None
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


def _cluster_config(args: argparse.Namespace) -> str:
    """``--config``, else the file `cluster up` writes by default."""
    if args.config is not None:
        return args.config
    path = os.path.join(CLUSTER_DIR_DEFAULT, "cluster.toml")
    if not os.path.exists(path):
        raise ConfigError(f"no --config given and no cluster in the default directory "
                          f"({path} does not exist): pass --config FILE")
    return path


def _cmd_cluster_down(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import stop_cluster

    done = stop_cluster(_cluster_config(args), grace_s=args.grace)
    killed = len(done.killed)
    print(f"cluster down: {len(done.stopped)} nodes stopped"
          + (f" ({killed} with SIGKILL after {args.grace} s)" if killed else "")
          + (f"; already down: node{'s' if len(done.not_running) > 1 else ''} "
             f"{', '.join(map(str, done.not_running))}" if done.not_running else ""))
    return 0


def _members(members: dict) -> str:
    learners = f", learners {members['learners']}" if members.get("learners") else ""
    return f"voters {members['voters']}{learners}, leader node {members['leader']}"


def _cmd_cluster_add(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import add_node

    node_id, members = add_node(args.config, node_id=args.node, raft=args.raft,
                                client=args.client, timeout_s=args.timeout)
    print(f"node {node_id} added: {_members(members)}")
    return 0


def _cmd_cluster_remove(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import remove_node

    members = remove_node(args.config, args.node)
    print(f"node {args.node} removed: {_members(members)}")
    return 0


def _cmd_cluster_transfer(args: argparse.Namespace) -> int:
    from blizzard.cluster.server import transfer_leader

    members = transfer_leader(args.config, args.node)
    print(f"leader is node {members['leader']}: {_members(members)}")
    return 0


def _by_node(item: tuple[int | str, dict]) -> tuple[int, int, str]:
    """Sort key of node statuses: numeric node ids in order, then addresses."""
    key, status = item
    node = status.get("node", key)
    return (0, node, "") if isinstance(node, int) else (1, 0, str(node))


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    import json

    from blizzard.bench._report import table
    from blizzard.client import ClusterUnavailableError, connect

    with connect(_cluster_config(args), timeout_s=5.0) as client:
        statuses = sorted(client.node_statuses().items(), key=_by_node)
    down = [s for _, s in statuses if s.get("role") == "unreachable"]
    if len(down) == len(statuses):
        raise ClusterUnavailableError("no node answers: " + "; ".join(
            f"{'node ' + str(s['node']) + ' at ' if 'node' in s else ''}{s['address']}: "
            f"{s['error']}" for s in down))
    if args.output == "json":
        print(json.dumps({"nodes": [s for _, s in statuses]}, indent=2, sort_keys=True))
        return 1 if down else 0
    columns = ("node", "role", "term", "leader", "commit", "applied", "log", "match", "ops/s")
    rows = []
    for key, status in statuses:
        if "term" not in status:
            role = status.get("role", "?")
            if "error" in status:
                role = f"{role}: {status['address']}: {status['error']}"
            rows.append((str(status.get("node", key)), role, *["-"] * 7))
            continue
        match = status.get("match")
        ops_per_s = status.get("ops_per_s")
        # a physical node's term is its epoch ("2.2"), and it keeps no Raft log
        rows.append((str(status["node"]), status["role"], str(status.get("epoch",
                                                                         status["term"])),
                     str(status["leader"]), str(status["commit"]), str(status["applied"]),
                     str(status.get("log_entries", "-")),
                     " ".join(f"{p}:{m}" for p, m in sorted(match.items(), key=lambda pm:
                                                             int(pm[0])))
                     if match else "-",
                     "-" if ops_per_s is None else f"{ops_per_s:.0f}"))
    print(table(columns, rows, "<" * len(columns)))
    return 1 if down else 0


# -- mirror (physical replication) ------------------------------------------------------


def _cmd_mirror_serve(args: argparse.Namespace) -> int:
    import threading

    from blizzard._heap import prepare_serving_heap
    from blizzard._signals import stop_on_signals
    from blizzard.cluster.physical import serve_backup
    from blizzard.cluster.server import node_logging

    prepare_serving_heap()  # this process only serves the backup
    with node_logging(args.node), stop_on_signals(threading.Event()) as stop:
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
          f"{result['recovered_entries']} undo entries rolled back; under `blizzard serve` it "
          "now serves clients as primary (a `mirror serve` backup exits: open it as primary)")
    return 0


def _cmd_mirror_status(args: argparse.Namespace) -> int:
    import json

    from blizzard.cluster.physical import node_status

    statuses = node_status(args.config)
    for node_id, status in sorted(statuses.items()):
        print(f"node {node_id}: {json.dumps(status, sort_keys=True)}")
    return 0


# -- certs -------------------------------------------------------------------------------


def _cmd_certs_create(args: argparse.Namespace) -> int:
    from blizzard.cluster import certs

    written = certs.create(args.dir, args.nodes, cluster_id=args.cluster_id, days=args.days,
                           force=args.force)
    print(f"wrote {len(written)} files to {os.path.abspath(args.dir)}: a CA (ca.pem, ca.key), "
          f"node1..node{args.nodes} (.pem, .key), client-rw and client-ro (.pem, .key); "
          f"valid {args.days} days")
    print("keep ca.key away from the nodes; add to the cluster's config:\n")
    print(certs.config_snippet(args.dir), end="")
    return 0


def _cmd_certs_token(args: argparse.Namespace) -> int:
    import secrets

    import tomli_w

    from blizzard.cluster.access import token_digest

    token = secrets.token_urlsafe(32)
    print(f"token (give it to the client, e.g. in its [auth] token_file; it is shown once):\n"
          f"{token}\n\nadd to the nodes' config:\n")
    print(tomli_w.dumps({"auth": {"tokens": [{"name": args.name, "role": args.role,
                                              "sha256": token_digest(token)}]}}), end="")
    return 0


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="blizzard",
                            description="Persistent, replicated data structures.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="pool, structures and a 3-node cluster, end to end",
                          description="Pool, structures and a 3-node cluster, end to end; "
                                      "checks every step and prints what it did.")
    demo.add_argument("--dir", help="working directory (default: a new one under /dev/shm)")
    demo.add_argument("--records", type=int, default=10_000, help="pool records to write")
    demo.add_argument("--writes", type=int, default=500, help="replicated puts")
    demo.add_argument("--mode", default="pmem", choices=MODES, help=MODE_HELP)
    demo.add_argument("--keep", action="store_true", help="keep the files afterwards")
    demo.set_defaults(func=_cmd_demo)

    pool = sub.add_parser("pool", help="create, inspect or check a pool file",
                          description="Create, inspect or check a pool file.")
    pool_sub = pool.add_subparsers(dest="pool_command", required=True, metavar="COMMAND")
    create = pool_sub.add_parser("create", help="create a new pool file",
                                 description="Create and format a new pool file.")
    create.add_argument("path", help="the new file (its directory must exist)")
    create.add_argument("--size", type=size, default="64M", help=size_help("the pool's size"))
    create.add_argument("--layout", default="blizzard",
                        help="the layout name, 1 to 32 bytes; opening asks for it back")
    create.set_defaults(func=_cmd_pool_create)
    info = pool_sub.add_parser(
        "info", help="header, space and roots of a pool",
        description="Header, space and roots of a pool. A pool another process has open "
                    "is read from a private copy, without its lock.")
    info.add_argument("path", help="the pool file")
    info.set_defaults(func=_cmd_pool_info)
    check = pool_sub.add_parser(
        "check", help="verify a pool and every structure in it",
        description="Verify the pool (header, undo log, allocator, directory), then run "
                    "every named structure's own check(); exit 1 if anything is broken.")
    check.add_argument("path", help="the pool file")
    check.set_defaults(func=_cmd_pool_check)
    for p in (create, info, check):
        p.add_argument("--mode", default="pmem", choices=MODES, help=MODE_HELP)

    bench = sub.add_parser("bench", help="run a benchmark (pass --help after its name)",
                           description="Run a benchmark; `blizzard bench NAME --help` lists "
                                       "its options.")
    bench.add_argument("which", choices=sorted(BENCHMARKS), metavar="NAME",
                       help=f"one of {', '.join(sorted(BENCHMARKS))}")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(func=_cmd_bench)

    serve = sub.add_parser("serve", help="run one node of a cluster (+ client protocol)",
                           description="Run one node of a cluster until SIGTERM or SIGINT: a "
                                       "Raft node, or with [replication] backend = "
                                       "\"physical\" the primary or a backup (see "
                                       "docs/physical.md).")
    serve.add_argument("--config", required=True, help="the cluster's TOML file")
    serve.add_argument("--node", type=int, required=True, help="this node's id")
    serve.set_defaults(func=_cmd_serve)

    cluster = sub.add_parser("cluster", help="start, stop or inspect a local cluster",
                             description="Start, stop or inspect a cluster of `blizzard "
                                         "serve` processes on this machine.")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True,
                                         metavar="COMMAND")
    up = cluster_sub.add_parser(
        "up", help="start one `blizzard serve` process per node",
        description="Start the cluster of --config, or of DIR/cluster.toml, writing that "
                    "file from the flags when it does not exist yet. Flags that contradict "
                    "an existing file are refused.")
    up.add_argument("--nodes", type=int, help=f"nodes of a new cluster (default: "
                                              f"{NODES_DEFAULT})")
    up.add_argument("--dir", help=f"data directory (default: {CLUSTER_DIR_DEFAULT})")
    up.add_argument("--base-port", type=int,
                    help=f"first port of a new cluster; node i gets two (default: "
                         f"{BASE_PORT_DEFAULT})")
    up.add_argument("--config", help="an existing cluster TOML (else DIR/cluster.toml)")
    up.add_argument("--pool-size", type=size,
                    help=size_help(f"each node's pools, for a new cluster (default: "
                                   f"{POOL_SIZE_DEFAULT})"))
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a leader")
    up.set_defaults(func=_cmd_cluster_up)
    down = cluster_sub.add_parser("down", help="stop the cluster's processes",
                                  description="SIGTERM every node of the cluster, SIGKILL "
                                              "those still up after --grace seconds; "
                                              "names the nodes that were already down.")
    down.add_argument("--grace", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL")
    status = cluster_sub.add_parser(
        "status", help="a table of every node's Raft state",
        description="A table of every node's Raft state, by node id; a node that does "
                    "not answer is marked unreachable in its row, with the reason. Exit 1 "
                    "if a node does not answer; one error line if none does.")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="table for people, json for scripts: {\"nodes\": [every "
                             "node's status, by id]} (default: table)")
    add = cluster_sub.add_parser(
        "add", help="start a new node here and add it to the running cluster")
    add.add_argument("--node", type=int, help="its id (default: the highest + 1)")
    add.add_argument("--raft", type=_host_port, help="its Raft address (default: free ports)")
    add.add_argument("--client", type=_host_port, help="its client address")
    add.add_argument("--timeout", type=float, default=120.0,
                     help="seconds to wait for it to catch up")
    remove = cluster_sub.add_parser(
        "remove", help="remove a node (dead or alive) from the cluster, stop it if it runs")
    transfer = cluster_sub.add_parser("transfer-leader", help="make another node the leader")
    for p in (remove, transfer):
        p.add_argument("--node", type=int, required=True)
    for p in (down, status):
        p.add_argument("--config", help=f"the cluster's TOML file (default: the one `cluster "
                                        f"up` writes, {CLUSTER_DIR_DEFAULT}/cluster.toml)")
    for p in (add, remove, transfer):
        p.add_argument("--config", required=True, help="the cluster's TOML file")
    down.set_defaults(func=_cmd_cluster_down)
    status.set_defaults(func=_cmd_cluster_status)
    add.set_defaults(func=_cmd_cluster_add)
    remove.set_defaults(func=_cmd_cluster_remove)
    transfer.set_defaults(func=_cmd_cluster_transfer)

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

    certs = sub.add_parser("certs", help="certificates and tokens for TLS and authentication")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    c_create = certs_sub.add_parser(
        "create", help="write a CA, node and client certificates",
        description="Write a cluster CA, a certificate per node (CN node-<id>) and two client "
                    "certificates (client-rw, client-ro) into DIR, and print the [tls] and "
                    "[auth] tables that use them. See docs/security.md.")
    c_create.add_argument("--dir", required=True, help="where to write the PEM files")
    c_create.add_argument("--nodes", type=int, required=True, help="how many nodes (ids 1..N)")
    c_create.add_argument("--days", type=int, default=365, help="validity (default 365)")
    c_create.add_argument("--cluster-id", default="blizzard",
                          help="named in the CA's subject (default blizzard)")
    c_create.add_argument("--force", action="store_true", help="replace an existing CA")
    c_create.set_defaults(func=_cmd_certs_create)
    c_token = certs_sub.add_parser("token", help="a new client token and its config table")
    c_token.add_argument("--name", required=True, help="the client's name in the nodes' logs")
    c_token.add_argument("--role", required=True, choices=("read-only", "read-write"))
    c_token.set_defaults(func=_cmd_certs_token)
    return parser


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _error(message: str) -> int:
    print(f"blizzard: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; user errors end as one ``blizzard: error:`` line and
    exit status 1 (2 for a command line that does not parse), never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BlizzardError as exc:
        return _error(str(exc))
    except OSError as exc:  # the environment said no: a path, a permission, a port
        if exc.filename is not None and exc.strerror:
            return _error(f"{exc.filename}: {exc.strerror}")
        return _error(exc.strerror or str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
