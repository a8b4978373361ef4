"""No silent insecure defaults: what a node may listen on without TLS.

A port without TLS authenticates nobody: any process that reaches a client
port can read, overwrite and drop every structure, and any process that
reaches a replication port can speak Raft as a node. So a node refuses to
listen without ``[tls]`` on any address that is not loopback (127.0.0.0/8,
::1, or a name resolving only to those), unless the config says
``insecure = true`` -- and then it logs a warning naming each such address
when it starts. ``blizzard cluster up`` and the tests listen on 127.0.0.1
and need no certificates.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from blizzard.cluster.config import ClusterConfig
from blizzard.exceptions import ConfigError

log = logging.getLogger("blizzard.security")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False  # unresolvable: not known to be loopback (binding it fails anyway)
    addresses = {info[4][0].partition("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def exposed(config: ClusterConfig, node_id: int, ports: tuple[str, ...],
            *, tls: bool) -> list[str]:
    """The node's addresses among ``ports`` ("raft", "client") that would be
    served unauthenticated off loopback: ``["nodes[0].client = 0.0.0.0:7101"]``."""
    if tls:
        return []
    index = next(i for i, n in enumerate(config.nodes) if n.id == node_id)
    node = config.nodes[index]
    found = []
    for port in ports:
        address = getattr(node, port)
        if address is not None and not is_loopback(address[0]):
            found.append(f"nodes[{index}].{port} = {address[0]}:{address[1]}")
    return found


def check(config: ClusterConfig, node_id: int, ports: tuple[str, ...], *,
          tls: bool | None = None, what: str = "without TLS") -> None:
    """Refuse (:class:`ConfigError`) to serve ``ports`` of node ``node_id`` off
    loopback unauthenticated, unless ``insecure = true``; then warn, once per
    address. ``tls`` defaults to whether the config has ``[tls]``."""
    found = exposed(config, node_id, ports, tls=config.tls is not None if tls is None else tls)
    if not found:
        return
    if not config.insecure:
        raise ConfigError(
            f"{found[0]}: not a loopback address, and node {node_id} would serve it {what}: "
            "anyone who reaches it could read and write everything. Configure [tls] "
            "(see docs/security.md), listen on 127.0.0.1, or set insecure = true to accept "
            "that")
    for address in found:
        log.warning("node %d: INSECURE: serving %s %s (insecure = true): anyone who reaches "
                    "it can read and write everything", node_id, address, what)
