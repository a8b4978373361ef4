"""Sizes as people write them: ``4096``, ``64M``, ``64 MiB``, ``1GB``.

One parser for every size Blizzard reads (command-line flags, configuration
files). The units are pmempool's, after IEC 80000-13:

=====================================  ======================  ====================
written                                means                   example
=====================================  ======================  ====================
no unit, or ``B``                      bytes                   ``4096``, ``4096B``
``K M G T P`` with or without ``iB``   powers of 1024          ``64M`` = ``64MiB`` = 64 x 2^20
``kB MB GB TB PB`` (with the ``B``)    powers of 1000          ``64MB`` = 64 x 10^6
=====================================  ======================  ====================

The prefix letter may be either case (``64m``, ``64kB``); the byte is an
upper-case ``B`` (a lower-case ``b`` reads as bits, so ``64mb`` is refused
rather than guessed). Spaces between the number and the unit are allowed.
"""

from __future__ import annotations

import re

__all__ = ["SIZE_UNITS_HELP", "format_size", "parse_size"]

_PATTERN = re.compile(r"^\s*(\d+)\s*(?:([kmgtpKMGTP])(iB|B)?|(B))?\s*$")
_POWER = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}

#: One line for --help texts.
SIZE_UNITS_HELP = "K/M/G/T or KiB/MiB/GiB/TiB: powers of 1024; kB/MB/GB/TB: powers of 1000"


def parse_size(text: str | int) -> int:
    """``"64M"`` -> 67108864, ``"64MB"`` -> 64000000; an int is taken as bytes.

    Raises ValueError with the accepted forms when ``text`` is not a size.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"expected a size, got {type(text).__name__}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    match = _PATTERN.match(text)
    if not match:
        hint = ""
        if re.match(r"^\s*\d+\s*[kmgtpKMGTP]?i?b\s*$", text):
            hint = " (the byte is an upper-case B: a lower-case b means bits)"
        raise ValueError(f"not a size: {text!r}{hint}; examples: 4096, 64M, 64MiB, 1G, "
                         f"64MB ({SIZE_UNITS_HELP})")
    number, prefix, suffix, _ = match.groups()
    if prefix is None:
        return int(number)
    base = 1000 if suffix == "B" else 1024
    return int(number) * base ** _POWER[prefix.upper()]


def format_size(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number whole when it
    can (``67108864`` -> ``"64 MiB"``), else with one decimal (``"1.5 GiB"``)."""
    for unit, power in (("PiB", 5), ("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        scale = 1024 ** power
        if n >= scale:
            return f"{n // scale} {unit}" if n % scale == 0 else f"{n / scale:.1f} {unit}"
    return f"{n} B"
