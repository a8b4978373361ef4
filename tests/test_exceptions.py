"""One documented hierarchy of errors (docs/errors.md, blizzard/exceptions.py)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import blizzard.exceptions as exceptions
from blizzard.exceptions import BlizzardError

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _classes() -> dict[str, type]:
    return {name: cls for name, cls in vars(exceptions).items()
            if inspect.isclass(cls) and issubclass(cls, BaseException)
            and cls.__module__ == exceptions.__name__}


def test_every_error_is_a_blizzard_error_and_a_builtin():
    for name, cls in _classes().items():
        assert issubclass(cls, BlizzardError), name
        if cls is BlizzardError or name in ("PoolError",):
            continue
        builtins = [b for b in cls.__mro__[1:]
                    if b.__module__ in ("builtins", "queue") and b not in (Exception,
                                                                           BaseException)]
        parent_is_blizzards = any(b is not BlizzardError and issubclass(b, BlizzardError)
                                  for b in cls.__bases__)
        assert builtins or parent_is_blizzards or name in ("MirrorError", "DeposedError",
                                                           "PromoteError"), name


def test_every_error_is_documented_with_its_parent():
    text = DOC.read_text()
    documented = set(re.findall(r"^\s*\* `(\w+)`", text, re.M))
    assert documented == set(_classes()) - {"BlizzardError"}, (
        f"missing from docs/errors.md: {sorted(set(_classes()) - documented - {'BlizzardError'})}"
        f"; documented but gone: {sorted(documented - set(_classes()))}")
    # a nested bullet names a subclass of the bullet above it
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        found = re.match(r"^(\s*)\* `(\w+)`", line)
        if not found:
            continue
        depth, name = len(found.group(1)), found.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            assert issubclass(_classes()[name], _classes()[stack[-1][1]]), (name, stack[-1][1])
        stack.append((depth, name))
