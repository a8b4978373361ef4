"""Cluster TOML: loads into validated attrs classes; every bad field is named."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from blizzard.cluster.config import ConfigError, dump, load, parse

GOOD = """
cluster_id = "demo"
data_dir = "data"
pool_size = "64M"
durability = "msync"

[raft]
tick_ms = 5
election_ticks = 20

[[nodes]]
id = 1
raft = "127.0.0.1:7001"
client = "127.0.0.1:7101"

[[nodes]]
id = 2
raft = "127.0.0.1:7002"
"""


def test_load_good(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(GOOD)
    config = load(path)
    assert config.cluster_id == "demo" and config.pool_size == 64 << 20
    assert config.data_dir == tmp_path / "data"  # relative to the file
    assert config.raft.tick_ms == 5 and config.raft.heartbeat_ticks == 3
    assert config.raft_peers == {1: ("127.0.0.1", 7001), 2: ("127.0.0.1", 7002)}
    assert config.client_addresses == {1: ("127.0.0.1", 7101)}
    assert config.node_dir(2) == tmp_path / "data" / "node2"
    again = tmp_path / "again.toml"
    again.write_text(dump(config))
    assert load(again).nodes == config.nodes


@pytest.mark.parametrize(("change", "message"), [
    ({"nodes": {}}, "nodes: expected [[nodes]] tables"),
    ({"nodes": [{"id": 1}]}, "nodes[0].raft: missing"),
    ({"nodes": [{"id": 0, "raft": "h:1"}]}, "nodes[0].id: expected an integer >= 1"),
    ({"nodes": [{"id": 1, "raft": "h:1"}, {"id": 1, "raft": "h:2"}]}, "duplicate node ids"),
    ({"nodes": [{"id": 1, "raft": "nowhere"}]}, "nodes[0].raft: expected \"host:port\""),
    ({"nodes": [{"id": 1, "raft": "h:99999"}]}, "port must be 0-65535"),
    ({"nodes": [{"id": 1, "raft": "h:1", "colour": "red"}]}, "nodes[0].colour: unknown"),
    ({"pool_size": "lots"}, "pool_size: not a size: 'lots'"),
    ({"pool_size": 1000}, "pool_size: 1000: a pool size must be a multiple of 4096"),
    ({"durability": "maybe"}, "durability: must be one of"),
    ({"transport": "pigeon"}, "transport: expected a table"),
    ({"transport": {"kind": ""}}, "transport.kind: expected a name"),
    ({"replication": {"backend": None}}, "replication.backend: expected a name"),
    ({"raft": {"election_ticks": 1}}, "raft.election_ticks (1) must exceed"),
    ({"raft": {"tick_ms": "fast"}}, "raft.tick_ms: expected an integer"),
    ({"raft": {"speed": 1}}, "raft.speed: unknown setting"),
    ({"tls": "on"}, "tls: expected a table"),
    ({"tls": {"cert": "y", "key": "z"}}, "tls.ca: missing"),
    ({"tls": {"ca": "x", "cert": "y"}}, "tls.key: missing (tls.cert is set"),
    ({"tls": {"ca": "x", "node_key": "y"}}, "tls.node_cert: missing (tls.node_key is set"),
    ({"tls": {"ca": "x", "cert": "y", "key": "z"}}, "tls.ca: x does not exist"),
    ({"tls": {"ca": "x", "crt": "y"}}, "tls.crt: unknown setting"),
    ({"insecure": "yes"}, "insecure: expected true or false"),
    ({"auth": {"read_write": "client-rw"}}, "auth.read_write: expected a list"),
    ({"auth": {"read_write": ["a"], "read_only": ["a"]}}, "auth.read_only: ['a'] also"),
    ({"auth": {"admins": []}}, "auth.admins: unknown setting"),
    ({"auth": {"tokens": [{"name": "t", "role": "admin", "sha256": "0" * 64}]}},
     "auth.tokens[0].role: must be one of read-only, read-write"),
    ({"auth": {"tokens": [{"name": "t", "role": "read-only", "sha256": "secret"}]}},
     "auth.tokens[0].sha256: expected the 64 hex digits"),
    ({"auth": {"tokens": [{"name": "t", "role": "read-only"}]}},
     "auth.tokens[0].sha256: missing"),
    ({"wat": 1}, "wat: unknown setting"),
])
def test_bad_fields_are_named(change, message):
    raw = {"nodes": [{"id": 1, "raft": "127.0.0.1:7001"}], **change}
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert message in str(err.value)


def test_backend_defaults_follow_the_nodes():
    """No [replication]: a cluster (nodes listed) is raft, a lone data_dir is local."""
    cluster = parse({"nodes": [{"id": 1, "raft": "127.0.0.1:7001"}]})
    assert cluster.replication.backend == "raft" and cluster.transport.kind == "tcp"
    alone = parse({"data_dir": "/dev/shm/x"})
    assert alone.replication.backend == "local" and alone.nodes == ()
    with pytest.raises(ConfigError, match=r"nodes: the raft backend needs at least one"):
        alone.require_nodes("the raft backend")
    client = parse({"replication": {"backend": "remote"},
                    "nodes": [{"id": 1, "client": "127.0.0.1:7101"}]})
    assert client.nodes[0].raft is None
    assert client.client_addresses == {1: ("127.0.0.1", 7101)}


@pytest.mark.parametrize("data_dir", [
    'with "quotes"', "back\\slash\\", "tab\there", "new\nline", "ünïcode ✓", "a = 'b'",
])
def test_dump_survives_any_path(tmp_path, data_dir):
    """Written by a TOML library: whatever a path holds reads back the same."""
    config = parse({"cluster_id": data_dir, "data_dir": str(tmp_path / data_dir),
                    "replication": {"backend": "raft", "extra": [1, "two"]},
                    "transport": {"kind": "tcp", "path": data_dir},
                    "nodes": [{"id": 1, "raft": "127.0.0.1:7001", "client": "[::1]:7101"}]})
    path = tmp_path / "c.toml"
    path.write_text(dump(config))
    again = load(path)
    assert again.data_dir == config.data_dir and again.cluster_id == data_dir
    assert again.replication == config.replication and again.transport == config.transport
    assert again.nodes == config.nodes and again.nodes[0].client == ("::1", 7101)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def test_every_key_is_documented():
    """docs/configuration.md has a row for every key the parser accepts."""
    import attrs

    from blizzard.cluster.config import (
        AUTH_KEYS,
        CLIENT_KEYS,
        KEYS,
        NODE_KEYS,
        TLS_KEYS,
        TOKEN_KEYS,
        RaftConfig,
    )

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows = [line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")]
    for key in KEYS:
        if key in ("replication", "transport", "raft", "tls", "auth", "client", "nodes"):
            continue
        assert f"`{key}`" in rows, key
    assert "`[replication] backend`" in rows and "`[transport] kind`" in rows
    for field in attrs.fields(RaftConfig):
        assert f"`[raft] {field.name}`" in rows, field.name
    for key in TLS_KEYS:
        assert f"`[tls] {key}`" in rows, key
    for key in AUTH_KEYS:
        if key != "tokens":
            assert f"`[auth] {key}`" in rows, key
    for key in TOKEN_KEYS:
        assert f"`[[auth.tokens]] {key}`" in rows, key
    for key in NODE_KEYS:
        assert f"`[[nodes]] {key}`" in rows, key
    for key in CLIENT_KEYS:
        assert f"`[client] {key}`" in rows, key


@pytest.mark.parametrize("value, shown", [
    (0, "0"), (-1.5, "-1.5"), (True, "True"), ("3", "'3'"), (float("inf"), "inf"),
    (float("nan"), "nan"),
])
def test_client_connect_timeout_is_a_positive_number_of_seconds(value, shown):
    message = f"client.connect_timeout_s: expected a positive number of seconds, got {shown}"
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        parse({"client": {"connect_timeout_s": value}})


def test_client_table_is_checked_and_survives_a_dump():
    with pytest.raises(ConfigError, match=r"client.timeout_s: unknown setting \(known: "
                                          r"connect_timeout_s\)"):
        parse({"client": {"timeout_s": 1}})
    with pytest.raises(ConfigError, match="client: expected a table"):
        parse({"client": 3})
    assert parse({}).client.connect_timeout_s is None
    config = parse({"client": {"connect_timeout_s": 2}})
    assert config.client.connect_timeout_s == 2.0
    assert parse(tomllib.loads(dump(config))).client == config.client
    assert "client" not in tomllib.loads(dump(parse({})))
