"""Nobody gets in who does not belong, against real ``blizzard serve`` processes.

With ``[tls]``: clients without a certificate, with one from another CA,
with an expired one, speaking plain TCP, or with a name ``[auth]`` does not
list are refused at once with a clear error and one log line each; a
read-only client reads but cannot write; a stranger speaking the peer
handshake is refused, whatever certificate of the CA it holds unless it is
the node's it claims to be. After each, the node keeps serving and nothing
was written. Tokens do the same for a port without TLS, and ``blizzard
serve`` refuses to listen unauthenticated off loopback unless told
``insecure = true``.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import ssl
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import blizzard
from blizzard.cli import main
from blizzard.client import Client, connect
from blizzard.cluster import certs, exposure
from blizzard.cluster import config as configmod
from blizzard.cluster.access import token_digest
from blizzard.cluster.physical import serve_backup
from blizzard.cluster.ports import port_block
from blizzard.exceptions import AuthenticationError, AuthorizationError, ConfigError
from blizzard.replication.transport import tls
from tests.cluster.test_processes import ProcessCluster, wait_for

REFUSAL_S_MAX = 10.0  # a refusal is immediate; a retry loop would run to the 30 s deadline


@pytest.fixture(scope="module")
def cluster():
    c = ProcessCluster(tls=True)
    try:
        c.start_all()
        c.wait_for_leader()
        with c.client() as client:
            client.hashmap("kv")[b"k"] = b"v"
            client.queue("jobs").put(b"job")
        yield c
    finally:
        c.close()


def _contents(cluster: ProcessCluster) -> dict:
    with cluster.client() as client:
        return {"names": client.names(), "kv": dict(client.hashmap("kv").items()),
                "jobs": list(client.queue("jobs"))}


def _refusals(cluster: ProcessCluster, node_id: int) -> list[str]:
    return [line for line in cluster.log(node_id).splitlines() if "refused" in line]


def _client(cluster: ProcessCluster, node_id: int, context: ssl.SSLContext | None) -> Client:
    return Client([cluster.config.node(node_id).client], failover=False, timeout_s=30.0,
                  **({"tls": context} if context is not None else {}))


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    return tls.client_context(ca_file=str(ca), cert_file=cert and str(cert),
                              key_file=key and str(key))


def _issued(directory: Path, name: str, **dates) -> tuple[Path, Path]:
    ca, ca_key = certs.load_ca(directory)
    return certs.write(directory, f"extra-{name}",
                       *certs.issue(ca, ca_key, name, node=False, **dates))


def test_clients_without_a_good_certificate_are_refused(cluster, tmp_path):
    """No certificate, another CA's, an expired one, plain TCP: AuthenticationError
    at once, one log line each; the node keeps serving, nothing was written."""
    pki = cluster.dir / "certs"
    ca = pki / "ca.pem"
    certs.create(tmp_path / "evil", 1)
    now = datetime.datetime.now(datetime.UTC)
    expired = _issued(pki, "client-rw", not_before=now - datetime.timedelta(days=2),
                      not_after=now - datetime.timedelta(days=1))
    before = _contents(cluster)
    node = cluster.ids[0]
    cases = [
        ("no certificate", _context(ca), "certificate required"),
        ("another CA's", _context(ca, tmp_path / "evil" / "client-rw.pem",
                                  tmp_path / "evil" / "client-rw.key"), "unknown ca"),
        ("an expired one", _context(ca, *expired), "certificate expired"),
        ("plain TCP", None, "takes TLS clients only"),
    ]
    for what, context, message in cases:
        logged = len(_refusals(cluster, node))
        t0 = time.monotonic()
        with pytest.raises(AuthenticationError, match=message), \
                _client(cluster, node, context) as stranger:
            stranger.hashmap("kv")[b"k"] = b"stolen"
        assert time.monotonic() - t0 < REFUSAL_S_MAX, what
        wait_for(lambda n=logged: len(_refusals(cluster, node)) > n, 10,
                 f"the log line ({what})")
        assert len(_refusals(cluster, node)) == logged + 1, what
    lines = _refusals(cluster, node)[-4:]
    assert "peer did not return a certificate" in lines[0]
    assert "unable to get local issuer certificate" in lines[1]
    assert "certificate has expired" in lines[2]
    assert "does not speak TLS" in lines[3]
    assert _contents(cluster) == before


def test_a_certificate_the_config_gives_no_rights_is_refused(cluster):
    """Signed by the CA, but not listed in [auth] (a node's own certificate
    included): AuthorizationError for reads and writes alike."""
    pki = cluster.dir / "certs"
    unlisted = _issued(pki, "mallory")
    node = cluster.ids[0]
    for cert, name in ((unlisted, "mallory"), ((pki / "node2.pem", pki / "node2.key"), "node-2")):
        with _client(cluster, node, _context(pki / "ca.pem", *cert)) as client:
            with pytest.raises(AuthorizationError, match=f"certificate '{name}' has no rights"):
                client.names()
            with pytest.raises(AuthorizationError, match="SUBMIT needs read-write"):
                client.drop("kv")
    with cluster.client() as client:
        assert client.hashmap("kv")[b"k"] == b"v"


def test_a_read_only_client_reads_but_cannot_write(cluster):
    pki = cluster.dir / "certs"
    before = _contents(cluster)
    logged = {i: len(_refusals(cluster, i)) for i in cluster.ids}
    with connect(cluster.path, cert=pki / "client-ro.pem", key=pki / "client-ro.key",
                 timeout_s=30.0) as reader:
        kv, jobs = reader.hashmap("kv"), reader.queue("jobs")
        assert kv[b"k"] == b"v" and list(jobs) == [b"job"] and reader.check()
        assert reader.status()["leader"] in cluster.ids
        writes = [lambda: kv.__setitem__(b"k", b"w"), lambda: kv.pop(b"k"),
                  lambda: kv.update({b"a": b"1", b"b": b"2"}), jobs.get,
                  lambda: reader.hashmap("new"), lambda: reader.drop("kv")]
        for write in writes:
            with pytest.raises(AuthorizationError,
                               match="SUBMIT refused: certificate 'client-ro' has read-only"):
                write()
    assert _contents(cluster) == before
    # one line per refused request (update sent two), on the nodes the client spoke to
    refused = [line for i in cluster.ids for line in _refusals(cluster, i)[logged[i]:]]
    assert len(refused) == len(writes) + 1
    assert all("refused certificate 'client-ro' at 127.0.0.1:" in line for line in refused)


def _hello(node: int, cluster_id: str) -> bytes:
    raw = cluster_id.encode()
    return struct.pack("<4sBQB", b"BLZT", 1, node, len(raw)) + raw


async def _speak_as_node(address, context: ssl.SSLContext, node: int, cluster_id: str) -> bytes:
    """Dial a replication port as node ``node``, then send a frame anyway; the reply
    byte to the handshake (b"" if the connection was refused before it)."""
    try:
        reader, writer = await asyncio.open_connection(*address, ssl=context)
        writer.write(_hello(node, cluster_id) + struct.pack("<I", 5) + b"hello")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(1), 10)
    except (ssl.SSLError, ConnectionError):
        return b""
    writer.close()
    return reply


def test_a_stranger_speaking_the_peer_handshake_is_refused(cluster, tmp_path):
    """On a replication port, only node N's certificate may say it is node N:
    a client's, another node's, another CA's, or none are refused."""
    pki = cluster.dir / "certs"
    certs.create(tmp_path / "evil", 3)
    target = cluster.ids[0]
    address = cluster.config.node(target).raft
    before, term = _contents(cluster), cluster.status()[target]["term"]
    logged = len(_refusals(cluster, target))
    cases = [
        (_context(pki / "ca.pem", pki / "client-rw.pem", pki / "client-rw.key"), b"\x04"),
        (_context(pki / "ca.pem", pki / "node3.pem", pki / "node3.key"), b"\x04"),
        (_context(pki / "ca.pem", tmp_path / "evil" / "node2.pem",
                  tmp_path / "evil" / "node2.key"), b""),
        (_context(pki / "ca.pem"), b""),
    ]
    for context, reply in cases:
        got = asyncio.run(_speak_as_node(address, context, 2, cluster.config.cluster_id))
        assert got == reply
    wait_for(lambda: len(_refusals(cluster, target)) >= logged + len(cases), 10, "log lines")
    lines = _refusals(cluster, target)[logged:]
    assert len(lines) == len(cases)
    assert "claims to be node 2 with the certificate of 'client-rw'" in lines[0]
    assert "claims to be node 2 with the certificate of 'node-3'" in lines[1]
    assert all("TLS handshake failed" in line for line in lines[2:])
    status = cluster.status()
    assert status[target]["term"] == term and status[target]["role"] in ("leader", "follower")
    assert _contents(cluster) == before
    with cluster.client() as client:  # still serving
        client.hashmap("kv")[b"after"] = b"1"
    cluster.wait_converged()


def test_tokens_without_tls():
    """A port without TLS but with [[auth.tokens]] (TLS terminated in front of it):
    no token or an unknown one is AuthenticationError, a read-only token reads,
    a read-write token writes."""
    tokens = {"ro-secret": "read-only", "rw-secret": "read-write"}
    auth = {"tokens": [{"name": f"{role}-app", "role": role, "sha256": token_digest(token)}
                       for token, role in tokens.items()]}
    c = ProcessCluster(1, auth=auth)
    try:
        c.start(1, wait=False)
        address = [c.config.node(1).client]
        token_file = c.dir / "rw.token"
        token_file.write_text("rw-secret\n")
        raw = {**configmod.to_dict(c.config), "auth": {**auth, "token_file": str(token_file)}}
        wait_for(lambda: "up (pid" in c.log(1), 60, "node 1 up", c)
        with connect(raw, timeout_s=30.0) as writer:  # the token from [auth] token_file
            writer.hashmap("kv")[b"k"] = b"v"
        for token, error in ((None, "not authenticated"), ("guess", "unknown token")):
            with Client(address, token=token, timeout_s=30.0) as stranger, \
                    pytest.raises(AuthenticationError, match=error):
                stranger.hashmap("kv")[b"k"] = b"stolen"
        with Client(address, token="ro-secret", timeout_s=30.0) as reader:
            assert reader.hashmap("kv")[b"k"] == b"v"
            with pytest.raises(AuthorizationError, match="token 'read-only-app' has read-only"):
                reader.hashmap("kv")[b"k"] = b"w"
        with Client(address, token="rw-secret", timeout_s=30.0) as writer:
            assert dict(writer.hashmap("kv").items()) == {b"k": b"v"}
        log = c.log(1)
        assert "refused unknown token" not in log  # the line names the address, not a guess
        assert len(re.findall(r"refused .*(not authenticated|unknown token)", log)) == 2
    finally:
        c.close()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("no-such-host.invalid", False)])
def test_loopback_addresses(host, loopback):
    assert exposure.is_loopback(host) is loopback


def _exposed_config(tmp_path: Path, **settings) -> Path:
    base = port_block(2)
    raw = {"cluster_id": "exposed", "data_dir": str(tmp_path / "data"), "pool_size": "16M",
           "log_pool_size": "16M", **settings,
           "nodes": [{"id": 1, "raft": f"127.0.0.1:{base}", "client": f"0.0.0.0:{base + 1}"}]}
    path = tmp_path / "cluster.toml"
    path.write_text(configmod.dump(configmod.parse(raw)))
    return path


def test_serve_refuses_an_unauthenticated_port_off_loopback(tmp_path, capsys):
    path = _exposed_config(tmp_path)
    assert main(["serve", "--config", str(path), "--node", "1"]) == 1
    err = capsys.readouterr().err
    assert "nodes[0].client = 0.0.0.0:" in err and "insecure = true" in err
    assert not (tmp_path / "data").exists()  # refused before anything was made
    # a node embedded by blizzard.open refuses its replication address alike
    raw = configmod.to_dict(configmod.load(path))
    raw["nodes"] = [{"id": 1, "raft": f"0.0.0.0:{port_block(1)}"}]
    with pytest.raises(ConfigError, match=r"nodes\[0\].raft = 0.0.0.0:"):
        blizzard.open(raw, node=1)
    # and so does a physical-replication backup (its mirror protocol has no TLS at all)
    with pytest.raises(ConfigError, match=r"0.0.0.0:\d+: .* \(physical replication has no"):
        serve_backup(configmod.parse({**raw, "tls": {"ca": str(path)}}), 1)
    assert not (tmp_path / "data").exists()


def test_serve_with_insecure_true_warns_at_start(tmp_path):
    path = _exposed_config(tmp_path, insecure=True)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "blizzard", "serve", "--config",
                                 str(path), "--node", "1"], stdout=out, stderr=out)
    try:
        wait_for(lambda: "up (pid" in log.read_text() or proc.poll() is not None, 60,
                 "the node up")
        text = log.read_text()
        assert proc.poll() is None, text
        assert re.search(r"WARNING .*INSECURE: serving nodes\[0\]\.client = 0\.0\.0\.0:\d+ "
                         r"without TLS \(insecure = true\)", text)
        assert text.count("INSECURE") == 1  # the raft address is loopback
    finally:
        proc.terminate()
        proc.wait(30)


def test_certs_create(tmp_path, capsys):
    """The CLI writes a CA, node and client certificates (keys 0600) and prints
    the tables that use them; it will not replace a CA by accident."""
    assert main(["certs", "create", "--dir", str(tmp_path), "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{stem}.{ext}" for stem in ("ca", "node1", "node2", "client-rw",
                                                        "client-ro") for ext in ("pem", "key"))
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.glob("*.key"))
    snippet = out[out.index("[tls]"):]
    config = configmod.parse({**tomllib.loads(snippet),
                              "nodes": [{"id": 2, "raft": "127.0.0.1:1"}]})
    assert configmod.node_tls(config, 2).cert == tmp_path / "node2.pem"
    assert configmod.client_tls(config).cert == tmp_path / "client-rw.pem"
    assert config.auth.read_only == ("client-ro",)
    assert main(["certs", "create", "--dir", str(tmp_path), "--nodes", "2"]) == 1
    assert "ca.key exists" in capsys.readouterr().err
