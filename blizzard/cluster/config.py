"""Configuration: one TOML file chooses the backend and describes the cluster.

Example::

    cluster_id = "demo"
    data_dir = "/dev/shm/blizzard-demo"    # node N keeps its pools in data_dir/nodeN/
    pool_size = "256M"                     # the structures' pool, per node
    log_pool_size = "256M"                 # the Raft log's pool, per node
    durability = "pmem"                    # pmem | msync | none

    [replication]
    backend = "raft"                       # local | raft | physical | remote (a client)

    [transport]
    kind = "tcp"                           # tcp | dpdk

    [raft]
    tick_ms = 10
    election_ticks = 30
    heartbeat_ticks = 3
    snapshot_entries = 100000
    snapshot_tail_entries = 5000

    [tls]                                  # mutual TLS on every port (docs/security.md)
    ca = "certs/ca.pem"
    node_cert = "certs/node{node}.pem"     # a node's certificate; {node}: its id
    node_key = "certs/node{node}.key"
    cert = "certs/client-rw.pem"           # what a client of this file presents
    key = "certs/client-rw.key"

    [auth]                                 # who may do what on the client port
    read_write = ["client-rw"]             # certificate common names
    read_only = ["client-ro"]

    [client]                               # a client of this file (blizzard.client.connect)
    connect_timeout_s = 3.0                # fail after this long when no node accepts

    [[nodes]]
    id = 1
    raft = "127.0.0.1:7001"                # Raft traffic between nodes
    client = "127.0.0.1:7101"              # the client protocol (blizzard serve)
    # join = true                          # added at run time (blizzard cluster add)

Sizes are bytes, or text with a unit: ``K M G T`` (or ``KiB MiB GiB TiB``)
are powers of 1024, ``kB MB GB TB`` powers of 1000, as in pmempool
(:mod:`blizzard._sizes`, the parser the command line uses too).

Loading validates everything and names the bad field and why
(:class:`ConfigError`); relative paths are relative to the file. Only
``data_dir`` is needed for the local backend (its pool is
``data_dir/data.pool``); ``[replication] backend`` defaults to ``raft`` when
``[[nodes]]`` are listed and to ``local`` otherwise. The ``[replication]``
and ``[transport]`` tables may hold options of the chosen backend or
transport besides ``backend`` / ``kind``: those are checked by the backend or
transport that reads them, when it is built. ``docs/configuration.md``
lists every key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from blizzard._sizes import parse_size
from blizzard.exceptions import ConfigError
from blizzard.pmem import POOL_SIZE_MIN
from blizzard.pmem.pool import pool_size_problem
from blizzard.replication.transport.registry import TlsFiles, TransportSpec

__all__ = ["AuthConfig", "ClientConfig", "ClusterConfig", "ConfigError", "NodeConfig", "RaftConfig",
           "ReplicationConfig", "TlsConfig", "TokenConfig", "TransportConfig", "client_tls",
           "dump", "load", "local_cluster", "node_tls", "parse", "to_dict", "transport_spec"]

DURABILITY_MODES = ("pmem", "msync", "none")
#: The top-level keys and tables, and the keys of a [[nodes]] table (docs/configuration.md).
KEYS = ("cluster_id", "data_dir", "pool_size", "log_pool_size", "durability", "insecure",
        "replication", "transport", "raft", "tls", "auth", "client", "nodes")
NODE_KEYS = ("id", "raft", "client", "join")
TLS_KEYS = ("ca", "node_cert", "node_key", "cert", "key")
AUTH_KEYS = ("read_write", "read_only", "tokens", "token_file")
TOKEN_KEYS = ("name", "role", "sha256")
CLIENT_KEYS = ("connect_timeout_s",)
ROLES = ("read-only", "read-write")
NODE_PLACEHOLDER = "{node}"


def _size(field: str, value: Any) -> int:
    """A pool size: bytes, or text with the units of :mod:`blizzard._sizes`."""
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None
    if n < POOL_SIZE_MIN or n % 4096:
        raise ConfigError(f"{field}: {value!r}: {pool_size_problem(n)}")
    return n


def _address(field: str, value: Any) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{field}: expected \"host:port\", got {value!r}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{field}: port must be 0-65535, got {port!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _int(field: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return value


@attrs.frozen
class NodeConfig:
    """One ``[[nodes]]`` table: ``raft`` is the replication address (None for
    a client's config, which needs only ``client`` addresses). ``join``: the
    node was added to a running cluster (``blizzard cluster add``), it is not
    one of the founders every node's log starts with; it waits for the
    leader to add it."""

    id: int
    raft: tuple[str, int] | None
    client: tuple[str, int] | None
    join: bool = False


@attrs.frozen
class ReplicationConfig:
    """``[replication]``: which backend, and that backend's own options."""

    backend: str = "local"
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class TransportConfig:
    """``[transport]``: which transport carries replication traffic, and its options."""

    kind: str = "tcp"
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class RaftConfig:
    """Timing: an election timeout of ``tick_ms * election_ticks`` (300 ms by
    default: Python nodes on a busy machine can pause for tens of ms), and a
    heartbeat every ``heartbeat_ticks`` (30 ms: an idle cluster stays cheap;
    reads and writes do not wait for heartbeats)."""

    tick_ms: int = 10
    election_ticks: int = 30
    heartbeat_ticks: int = 3
    snapshot_entries: int = 100_000
    snapshot_tail_entries: int = 5_000


@attrs.frozen
class TlsConfig:
    """``[tls]``: PEM files for mutual TLS on the replication and client ports.

    ``ca`` signs every certificate of the cluster. ``node_cert``/``node_key``
    are a node's own (read by nodes only; ``{node}`` in them stands for the
    node's id, so one file serves every node); ``cert``/``key`` are what a
    client using this file presents (read by clients only). Each file is
    checked when it is read, by whoever reads it: a node's machine need not
    hold the clients' keys, nor a client's the nodes'.
    """

    ca: Path
    node_cert: str | None = None
    node_key: str | None = None
    cert: Path | None = None
    key: Path | None = None


@attrs.frozen
class TokenConfig:
    """One ``[[auth.tokens]]`` table: a bearer token the nodes accept (by its
    SHA-256, never the token itself), its name in logs, and its role."""

    name: str
    role: str
    sha256: str


@attrs.frozen
class AuthConfig:
    """``[auth]``: the rights of clients on the client port (nodes read it), and
    the token a client of this file sends (``token_file``, clients read it)."""

    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    tokens: tuple[TokenConfig, ...] = ()
    token_file: Path | None = None

    @property
    def required(self) -> bool:
        """Whether tokens are configured (then a plain-TCP client must present one)."""
        return bool(self.tokens)


@attrs.frozen
class ClientConfig:
    """``[client]``: how a client of this file behaves (clients read it, nodes
    ignore it). ``connect_timeout_s``: a request fails with
    ``ClusterUnavailableError`` after this long when no node accepts a
    connection; None leaves the client's default (3 s). An argument of
    :func:`blizzard.client.connect` overrides it."""

    connect_timeout_s: float | None = None


@attrs.frozen
class ClusterConfig:
    """A validated configuration; see the module docstring."""

    cluster_id: str
    nodes: tuple[NodeConfig, ...]
    data_dir: Path
    pool_size: int = 256 << 20
    log_pool_size: int = 256 << 20
    durability: str = "pmem"
    replication: ReplicationConfig = ReplicationConfig()
    transport: TransportConfig = TransportConfig()
    raft: RaftConfig = RaftConfig()
    tls: TlsConfig | None = None
    auth: AuthConfig = AuthConfig()
    client: ClientConfig = ClientConfig()
    insecure: bool = False
    source: Path | None = None

    def node(self, node_id: int) -> NodeConfig:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(f"node {node_id} is not in the cluster (nodes: "
                          f"{', '.join(str(n.id) for n in self.nodes)})")

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node{node_id}"

    @property
    def founders(self) -> tuple[int, ...]:
        """The nodes that founded the cluster: every node's Raft log starts with
        these as its voters (the log's membership changes do the rest)."""
        return tuple(sorted(n.id for n in self.nodes if not n.join))

    @property
    def base_dir(self) -> Path:
        """Where relative paths of the file are relative to."""
        return self.source.parent if self.source is not None else Path(".")

    def require_nodes(self, who: str) -> None:
        """Refuse a config without nodes, or with a node without a replication
        address; ``who`` ("the raft backend") is named in the error."""
        if not self.nodes:
            raise ConfigError(f"nodes: {who} needs at least one [[nodes]] table")
        for i, node in enumerate(self.nodes):
            if node.raft is None:
                raise ConfigError(f"nodes[{i}].raft: missing (node {node.id}'s replication "
                                  f"address, host:port, which {who} needs)")

    @property
    def raft_peers(self) -> dict[int, tuple[str, int]]:
        """Every node's replication address (see :meth:`require_nodes`)."""
        self.require_nodes("replication")
        return {n.id: n.raft for n in self.nodes}

    @property
    def client_addresses(self) -> dict[int, tuple[str, int]]:
        return {n.id: n.client for n in self.nodes if n.client is not None}


def load(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate a cluster TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse(raw, base=path.parent, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(raw: dict[str, Any], *, base: Path = Path("."), source: Path | None = None
          ) -> ClusterConfig:
    """Validate a config already parsed from TOML (a dict)."""
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"{key}: unknown setting (known: {', '.join(sorted(KEYS))})")
    cluster_id = raw.get("cluster_id", "blizzard")
    if not isinstance(cluster_id, str) or not 0 < len(cluster_id.encode()) <= 255:
        raise ConfigError(f"cluster_id: expected a non-empty string, got {cluster_id!r}")
    nodes_raw = raw.get("nodes", [])
    if not isinstance(nodes_raw, list):
        raise ConfigError("nodes: expected [[nodes]] tables")
    nodes = []
    for i, node in enumerate(nodes_raw):
        where = f"nodes[{i}]"
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: expected a table")
        for key in node:
            if key not in NODE_KEYS:
                raise ConfigError(f"{where}.{key}: unknown setting (known: "
                                  f"{', '.join(NODE_KEYS)})")
        if "id" not in node:
            raise ConfigError(f"{where}.id: missing")
        node_id = _int(f"{where}.id", node["id"], 1)
        if "raft" not in node and "client" not in node:
            raise ConfigError(f"{where}.raft: missing (the node's replication address, "
                              "host:port; a client's config may give only client)")
        raft = _address(f"{where}.raft", node["raft"]) if "raft" in node else None
        client = _address(f"{where}.client", node["client"]) if "client" in node else None
        join = node.get("join", False)
        if not isinstance(join, bool):
            raise ConfigError(f"{where}.join: expected true or false, got {join!r}")
        nodes.append(NodeConfig(node_id, raft, client, join))
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"nodes: duplicate node ids in {ids}")
    addresses = [n.raft for n in nodes if n.raft] + [n.client for n in nodes if n.client]
    taken = [a for a in addresses if a[1] != 0]
    if len(set(taken)) != len(taken):
        raise ConfigError("nodes: two addresses are the same")
    durability = raw.get("durability", "pmem")
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"durability: must be one of {', '.join(DURABILITY_MODES)}, "
                          f"got {durability!r}")
    replication = _table("replication", raw.get("replication", {}), "backend",
                         "raft" if nodes else "local")
    transport = _table("transport", raw.get("transport", {}), "kind", "tcp")
    raft = _raft(raw.get("raft", {}))
    tls = _tls(base, raw["tls"]) if "tls" in raw else None
    auth = _auth(base, raw.get("auth", {}))
    client = _client(raw.get("client", {}))
    insecure = raw.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"insecure: expected true or false, got {insecure!r}")
    data_dir = _path(base, "data_dir", raw.get("data_dir", "/dev/shm/blizzard"))
    return ClusterConfig(
        cluster_id=cluster_id, nodes=tuple(nodes), data_dir=data_dir,
        pool_size=_size("pool_size", raw.get("pool_size", "256M")),
        log_pool_size=_size("log_pool_size", raw.get("log_pool_size", "256M")),
        durability=durability, replication=ReplicationConfig(*replication),
        transport=TransportConfig(*transport), raft=raft, tls=tls, auth=auth,
        client=client, insecure=insecure, source=source)


def _tls(base: Path, raw: Any) -> TlsConfig:
    if not isinstance(raw, dict):
        raise ConfigError("tls: expected a table ([tls] with ca = ...)")
    for key in raw:
        if key not in TLS_KEYS:
            raise ConfigError(f"tls.{key}: unknown setting (known: {', '.join(TLS_KEYS)})")
    if "ca" not in raw:
        raise ConfigError("tls.ca: missing (the PEM file of the cluster's CA)")
    for first, second in (("node_cert", "node_key"), ("cert", "key")):
        if (first in raw) != (second in raw):
            given, missing = (first, second) if first in raw else (second, first)
            raise ConfigError(f"tls.{missing}: missing (tls.{given} is set: give both or "
                              "neither)")
    ca = _path(base, "tls.ca", raw["ca"], must_exist=True)
    node = [str(_path(base, f"tls.{k}", raw[k])) if k in raw else None
            for k in ("node_cert", "node_key")]
    client = [_path(base, f"tls.{k}", raw[k]) if k in raw else None for k in ("cert", "key")]
    return TlsConfig(ca, *node, *client)


def _names(field: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(n, str) and n for n in raw):
        raise ConfigError(f"{field}: expected a list of certificate names, got {raw!r}")
    return tuple(raw)


def _auth(base: Path, raw: Any) -> AuthConfig:
    if not isinstance(raw, dict):
        raise ConfigError("auth: expected a table ([auth] with read_write = [...])")
    for key in raw:
        if key not in AUTH_KEYS:
            raise ConfigError(f"auth.{key}: unknown setting (known: {', '.join(AUTH_KEYS)})")
    read_write = _names("auth.read_write", raw.get("read_write", []))
    read_only = _names("auth.read_only", raw.get("read_only", []))
    both = set(read_write) & set(read_only)
    if both:
        raise ConfigError(f"auth.read_only: {sorted(both)} also listed in auth.read_write")
    tokens_raw = raw.get("tokens", [])
    if not isinstance(tokens_raw, list):
        raise ConfigError("auth.tokens: expected [[auth.tokens]] tables")
    tokens = []
    for i, token in enumerate(tokens_raw):
        where = f"auth.tokens[{i}]"
        if not isinstance(token, dict):
            raise ConfigError(f"{where}: expected a table")
        for key in TOKEN_KEYS:
            if key not in token:
                raise ConfigError(f"{where}.{key}: missing")
        for key in token:
            if key not in TOKEN_KEYS:
                raise ConfigError(f"{where}.{key}: unknown setting (known: "
                                  f"{', '.join(TOKEN_KEYS)})")
        if token["role"] not in ROLES:
            raise ConfigError(f"{where}.role: must be one of {', '.join(ROLES)}, "
                              f"got {token['role']!r}")
        digest = token["sha256"]
        if not isinstance(digest, str) or len(digest) != 64 or \
                any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ConfigError(f"{where}.sha256: expected the 64 hex digits of the token's "
                              "SHA-256 (blizzard certs token prints them)")
        if not isinstance(token["name"], str) or not token["name"]:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        tokens.append(TokenConfig(token["name"], token["role"], digest.lower()))
    token_file = (_path(base, "auth.token_file", raw["token_file"])
                  if "token_file" in raw else None)
    return AuthConfig(read_write, read_only, tuple(tokens), token_file)


def node_tls(config: ClusterConfig, node_id: int) -> TlsFiles | None:
    """Node ``node_id``'s TLS files (``{node}`` replaced), None without ``[tls]``;
    :class:`ConfigError` if ``[tls]`` has no node certificate or a file is missing."""
    tls = config.tls
    if tls is None:
        return None
    if tls.node_cert is None:
        raise ConfigError("tls.node_cert: missing (a node needs its own certificate and key, "
                          "tls.node_cert and tls.node_key; \"{node}\" in them stands for "
                          "the node id)")
    files = []
    for field, template in (("node_cert", tls.node_cert), ("node_key", tls.node_key)):
        path = Path(template.replace(NODE_PLACEHOLDER, str(node_id)))
        if not path.exists():
            raise ConfigError(f"tls.{field}: {path} (node {node_id}'s) does not exist")
        files.append(path)
    return TlsFiles(tls.ca, *files)


def client_tls(config: ClusterConfig) -> TlsFiles | None:
    """The TLS files a client of ``config`` presents, None without ``[tls]``;
    :class:`ConfigError` if it has no client certificate or a file is missing."""
    tls = config.tls
    if tls is None:
        return None
    if tls.cert is None:
        raise ConfigError("tls.cert: missing (the nodes of this cluster take clients with a "
                          "certificate only: set tls.cert and tls.key, or pass cert= and key= "
                          "to connect)")
    for field, path in (("cert", tls.cert), ("key", tls.key)):
        if not path.exists():
            raise ConfigError(f"tls.{field}: {path} does not exist")
    return TlsFiles(tls.ca, tls.cert, tls.key)


def _table(field: str, raw: Any, key: str, default: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a ``[replication]`` / ``[transport]`` table."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{field}: expected a table ([{field}] with {key} = ...), "
                          f"got {raw!r}")
    options = dict(raw)
    name = options.pop(key, default)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}.{key}: expected a name, got {name!r}")
    return name, options


def _raft(raw: Any) -> RaftConfig:
    if not isinstance(raw, dict):
        raise ConfigError("raft: expected a table")
    fields = {f.name: f for f in attrs.fields(RaftConfig)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"raft.{key}: unknown setting (known: {', '.join(fields)})")
    values = {k: _int(f"raft.{k}", v, 0 if k == "snapshot_tail_entries" else 1)
              for k, v in raw.items()}
    config = RaftConfig(**values)
    if config.election_ticks <= config.heartbeat_ticks:
        raise ConfigError(f"raft.election_ticks ({config.election_ticks}) must exceed "
                          f"raft.heartbeat_ticks ({config.heartbeat_ticks})")
    return config


def _client(raw: Any) -> ClientConfig:
    if not isinstance(raw, dict):
        raise ConfigError("client: expected a table")
    for key in raw:
        if key not in CLIENT_KEYS:
            raise ConfigError(f"client.{key}: unknown setting (known: {', '.join(CLIENT_KEYS)})")
    timeout = raw.get("connect_timeout_s")
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool)
                                or not timeout > 0 or timeout == float("inf")):
        raise ConfigError(f"client.connect_timeout_s: expected a positive number of seconds, "
                          f"got {timeout!r}")
    return ClientConfig(None if timeout is None else float(timeout))


def _path(base: Path, field: str, value: Any, *, must_exist: bool = False) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field}: expected a path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if must_exist and not path.exists():
        raise ConfigError(f"{field}: {path} does not exist")
    return path


def local_cluster(n: int, data_dir: str | os.PathLike[str], *, base_port: int,
                  cluster_id: str = "local", **settings: Any) -> ClusterConfig:
    """A cluster of ``n`` nodes on 127.0.0.1 (tests, benchmarks, ``cluster up``)."""
    raw = {"cluster_id": cluster_id, "data_dir": str(data_dir), **settings,
           "nodes": [{"id": i, "raft": f"127.0.0.1:{base_port + 2 * (i - 1)}",
                      "client": f"127.0.0.1:{base_port + 2 * (i - 1) + 1}"}
                     for i in range(1, n + 1)]}
    return parse(raw)


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def to_dict(config: ClusterConfig) -> dict[str, Any]:
    """``config`` as the TOML tables it was parsed from (every setting explicit)."""
    raw: dict[str, Any] = {
        "cluster_id": config.cluster_id, "data_dir": str(config.data_dir),
        "pool_size": config.pool_size, "log_pool_size": config.log_pool_size,
        "durability": config.durability,
        "replication": {"backend": config.replication.backend, **config.replication.options},
        "transport": {"kind": config.transport.kind, **config.transport.options},
        "raft": attrs.asdict(config.raft),
    }
    if config.insecure:
        raw["insecure"] = True
    if config.tls is not None:
        raw["tls"] = {k: str(v) for k, v in attrs.asdict(config.tls).items() if v is not None}
    auth = config.auth
    if auth != AuthConfig():
        table: dict[str, Any] = {"read_write": list(auth.read_write),
                                 "read_only": list(auth.read_only)}
        if auth.tokens:
            table["tokens"] = [attrs.asdict(t) for t in auth.tokens]
        if auth.token_file is not None:
            table["token_file"] = str(auth.token_file)
        raw["auth"] = table
    if config.client != ClientConfig():
        raw["client"] = {k: v for k, v in attrs.asdict(config.client).items() if v is not None}
    nodes = []
    for node in config.nodes:
        table: dict[str, Any] = {"id": node.id}
        if node.raft is not None:
            table["raft"] = _hostport(node.raft)
        if node.client is not None:
            table["client"] = _hostport(node.client)
        if node.join:
            table["join"] = True
        nodes.append(table)
    if nodes:
        raw["nodes"] = nodes
    return raw


def dump(config: ClusterConfig) -> str:
    """The TOML text of ``config`` (what ``cluster up`` writes), by a TOML writer:
    any path or id survives quoting, backslashes and control characters."""
    return tomli_w.dumps(to_dict(config))


def transport_spec(config: ClusterConfig, node_id: int, *, seed: int | None = None
                   ) -> TransportSpec:
    """What the transport factory of node ``node_id`` is given (see
    :mod:`blizzard.replication.transport.registry`)."""
    config.node(node_id)
    return TransportSpec(kind=config.transport.kind, node_id=node_id, peers=config.raft_peers,
                         cluster_id=config.cluster_id, options=dict(config.transport.options),
                         base_dir=config.base_dir, data_dir=config.data_dir,
                         tls=node_tls(config, node_id), seed=seed)
