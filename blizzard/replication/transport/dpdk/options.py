"""The DPDK transport's settings: the ``[transport]`` table when ``kind = "dpdk"``.

Example (every key optional)::

    [transport]
    kind = "dpdk"
    memory_mb = 256          # EAL -m: memory for mbufs, taken without hugepages
    frame_bytes = 8192       # largest frame on a memif link, headers included
    spin_us = 20             # idle polling: spin this long after the last work,
    yield_us = 200           #   then poll with sched_yield this long, then sleep
    sleep_us = 1000          # the short timer of links without a doorbell (af_packet)
    socket_dir = "dpdk"      # memif sockets and doorbells (default: <data_dir>/dpdk)

    [transport.nodes.1]      # per node
    lcores = "0"             # EAL -l (default: node id - 1, modulo the CPUs)
    af_packet = { 2 = "veth-b" }   # reach node 2 through net_af_packet on veth-b;
                                   # every other peer over a net_memif link

Every key is checked; a bad one raises :class:`~blizzard.exceptions.ConfigError`
naming ``transport.<key>``.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from blizzard.exceptions import ConfigError

FRAME_BYTES_MIN = 256
FRAME_BYTES_MAX = 9216  # an mbuf holds a whole frame; memif buffers are u16-sized
MESSAGE_BYTES_MAX = 64 << 20  # as the TCP transport's frame limit
NODE_ID_MAX = (1 << 32) - 1  # node ids travel as u32
_IFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_LCORES = re.compile(r"^[0-9,\-@()]+$")


@attrs.frozen
class DpdkOptions:
    """Validated settings for one node's DPDK transport (see the module docstring)."""

    memory_mb: int = 256
    frame_bytes: int = 8192
    mbufs: int = 4095
    ring_size: int = 1024
    message_bytes_max: int = MESSAGE_BYTES_MAX
    spin_us: int = 20
    yield_us: int = 200
    sleep_us: int = 1000
    lcores: str | None = None
    pin: bool = False
    file_prefix: str | None = None
    log_level: str = "warning"
    eal_args: tuple[str, ...] = ()
    socket_dir: Path | None = None
    af_packet: Mapping[int, str] = attrs.field(factory=dict)

    def lcores_for(self, node_id: int) -> str:
        return self.lcores if self.lcores is not None else str((node_id - 1) % os.cpu_count())

    def file_prefix_for(self, node_id: int, run_dir: Path) -> str:
        """Unique per node and per cluster directory: two clusters on one
        machine (tests run many) must never share an EAL runtime."""
        if self.file_prefix is not None:
            return self.file_prefix
        tag = zlib.crc32(str(run_dir.resolve()).encode())
        return f"blizzard-{node_id}-{tag:08x}"


_INTS = {  # key -> (minimum, maximum)
    "memory_mb": (16, 1 << 20),
    "frame_bytes": (FRAME_BYTES_MIN, FRAME_BYTES_MAX),
    "mbufs": (255, 1 << 20),
    "ring_size": (64, 1 << 15),
    "message_bytes_max": (1 << 10, 1 << 30),
    "spin_us": (0, 1_000_000),
    "yield_us": (0, 1_000_000),
    "sleep_us": (10, 1_000_000),
}
_KEYS = {*_INTS, "pin", "file_prefix", "log_level", "eal_args", "socket_dir", "nodes"}
_NODE_KEYS = {"lcores", "af_packet"}


def _int(key: str, value: Any) -> int:
    low, high = _INTS[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"transport.{key}: expected an integer from {low} to {high}, "
                          f"got {value!r}")
    return value


def _str(key: str, value: Any, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
        raise ConfigError(f"transport.{key}: not a valid value: {value!r}")
    return value


def parse(options: Mapping[str, Any], node_id: int, *, base_dir: Path = Path(".")
          ) -> DpdkOptions:
    """Validate the ``[transport]`` table (without ``kind``) for node ``node_id``."""
    if not 1 <= node_id <= NODE_ID_MAX:
        raise ConfigError(f"nodes: the dpdk transport needs node ids from 1 to {NODE_ID_MAX}, "
                          f"got {node_id}")
    for key in options:
        if key not in _KEYS:
            raise ConfigError(f"transport.{key}: unknown setting for the dpdk transport "
                              f"(known: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {k: _int(k, v) for k, v in options.items() if k in _INTS}
    if "pin" in options:
        if not isinstance(options["pin"], bool):
            raise ConfigError(f"transport.pin: expected true or false, got {options['pin']!r}")
        values["pin"] = options["pin"]
    if "file_prefix" in options:
        values["file_prefix"] = _str("file_prefix", options["file_prefix"],
                                     re.compile(r"^[A-Za-z0-9_.-]{1,64}$"))
    if "log_level" in options:
        values["log_level"] = _str("log_level", options["log_level"],
                                   re.compile(r"^[a-z*.:0-9]{1,64}$"))
    if "eal_args" in options:
        args = options["eal_args"]
        if not isinstance(args, list) or not all(isinstance(a, str) and a for a in args):
            raise ConfigError(f"transport.eal_args: expected a list of strings, got {args!r}")
        values["eal_args"] = tuple(args)
    if "socket_dir" in options:
        path = Path(_str("socket_dir", options["socket_dir"]))
        values["socket_dir"] = path if path.is_absolute() else base_dir / path
    nodes = options.get("nodes", {})
    if not isinstance(nodes, Mapping):
        raise ConfigError("transport.nodes: expected a table of node ids")
    for key, table in nodes.items():
        where = f"transport.nodes.{key}"
        if not str(key).isdigit():
            raise ConfigError(f"{where}: expected a node id")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        for name in table:
            if name not in _NODE_KEYS:
                raise ConfigError(f"{where}.{name}: unknown setting (known: "
                                  f"{', '.join(sorted(_NODE_KEYS))})")
        if int(key) != node_id:
            continue
        if "lcores" in table:
            values["lcores"] = _str(f"nodes.{key}.lcores", str(table["lcores"]), _LCORES)
        if "af_packet" in table:
            values["af_packet"] = _af_packet(where, table["af_packet"])
    options_ = DpdkOptions(**values)
    if options_.message_bytes_max // (options_.frame_bytes - 50) + 1 > 0xFFFF:
        raise ConfigError("transport.message_bytes_max: more than 65535 fragments of "
                          "transport.frame_bytes")
    return options_


def _af_packet(where: str, table: Any) -> dict[int, str]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}.af_packet: expected a table of peer id = interface")
    links = {}
    for peer, iface in table.items():
        if not str(peer).isdigit():
            raise ConfigError(f"{where}.af_packet: {peer!r} is not a node id")
        if not isinstance(iface, str) or not _IFACE.match(iface):
            raise ConfigError(f"{where}.af_packet.{peer}: {iface!r} is not an interface name")
        links[int(peer)] = iface
    return links
