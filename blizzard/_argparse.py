"""The argument parser every ``blizzard`` command uses (the CLI and the benchmarks).

Two differences from :class:`argparse.ArgumentParser`, both for the person
at the terminal:

* ``--help`` shows each option's default (unless its help already names
  one, or there is none to show); give a size option its default as text
  (``default="64M"``, ``type=size``): argparse converts it, help shows it;
* a usage error is one line on stderr, naming the command and pointing at
  its ``--help``, with exit status 2 -- not the usage block.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from blizzard._sizes import SIZE_UNITS_HELP, parse_size

__all__ = ["ArgumentParser", "HelpFormatter", "size", "size_help"]


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a real default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class ArgumentParser(argparse.ArgumentParser):
    """See the module docstring."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def size(text: str) -> int:
    """An argparse ``type`` for sizes (:mod:`blizzard._sizes`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size_help(text: str) -> str:
    """``text`` plus the accepted units, for a size option's help."""
    return f"{text}; {SIZE_UNITS_HELP}"
