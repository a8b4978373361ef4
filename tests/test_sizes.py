"""One size parser, pmempool's units, for every flag and every configuration file."""

from __future__ import annotations

import pytest

from blizzard._sizes import format_size, parse_size
from blizzard.cli import build_parser
from blizzard.cluster import config as configmod
from blizzard.exceptions import ConfigError

KI, MI, GI, TI = 1 << 10, 1 << 20, 1 << 30, 1 << 40

SIZES = {
    "4096": 4096,
    "4096B": 4096,
    "64K": 64 * KI,
    "64k": 64 * KI,
    "64KiB": 64 * KI,
    "64kB": 64_000,
    "64KB": 64_000,
    "64M": 64 * MI,
    "64 M": 64 * MI,
    "64MiB": 64 * MI,
    "64 MiB": 64 * MI,
    " 64 MiB ": 64 * MI,
    "64MB": 64_000_000,
    "64 MB": 64_000_000,
    "1G": GI,
    "1GiB": GI,
    "1GB": 10**9,
    "2T": 2 * TI,
    "2TB": 2 * 10**12,
    "1P": 1 << 50,
}
NOT_SIZES = ["", "lots", "64 Mo", "64mb", "64Mb", "64 MiBs", "1.5G", "-1", "0x10", "64 iB", "M"]


@pytest.mark.parametrize(("text", "expected"), sorted(SIZES.items()))
def test_units_are_pmempools(text, expected):
    """K/M/G/T with or without iB: powers of 1024; kB/MB/GB/TB: powers of 1000."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", NOT_SIZES)
def test_what_is_not_a_size_is_refused(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_ints_are_bytes():
    assert parse_size(4096) == 4096
    for bad in (True, -1, 1.5, None):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("text", ["64M", "64 MiB", "64MB", "1G", "1 GiB", "16384KiB"])
def test_every_flag_and_the_config_read_a_size_alike(text):
    """``--size``, ``--pool-size`` and the TOML's ``pool_size`` once disagreed
    (``'64 MiB'`` was accepted by one, refused by the other)."""
    parser = build_parser()
    create = parser.parse_args(["pool", "create", "p.pool", "--size", text]).size
    up = parser.parse_args(["cluster", "up", "--pool-size", text]).pool_size
    config = configmod.parse({"data_dir": "/dev/shm/x", "pool_size": text,
                              "log_pool_size": text, "replication": {"backend": "local"}})
    assert create == up == config.pool_size == config.log_pool_size == parse_size(text)


def test_the_config_names_the_field_and_the_units():
    with pytest.raises(ConfigError, match=r"^pool_size: not a size: '64mb' \(the byte is"):
        configmod.parse({"data_dir": "/dev/shm/x", "pool_size": "64mb"})
    with pytest.raises(ConfigError, match=r"log_pool_size: .1GB.: .* powers of 1000"):
        configmod.parse({"data_dir": "/dev/shm/x", "log_pool_size": "1GB"})


def test_format_size():
    assert format_size(64 * MI) == "64 MiB"
    assert format_size(1536 * MI) == "1.5 GiB"
    assert format_size(100 * TI) == "100 TiB"
    assert format_size(512) == "512 B"
    assert parse_size(format_size(64 * MI)) == 64 * MI
