"""One documented hierarchy of errors (docs/errors.md, blizzard/exceptions.py)."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
from pathlib import Path

import pytest

import blizzard
import blizzard.exceptions as exceptions
from blizzard.exceptions import BlizzardError

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
PACKAGE = Path(blizzard.__file__).resolve().parent

# Signals that are not errors: BaseException subclasses that no ``except
# Exception`` may catch, defined beside the code they unwind.
SIGNALS = {"blizzard.sim.replica": {"ReplicaCrash"}}

# Where errors were defined before they moved here: still importable there,
# the very same class.
REEXPORTED = {
    "blizzard.replication.sessions": ["StaleRequestError", "EnvelopeError"],
    "blizzard.replication.raft.storage": ["CompactedError", "UnavailableError",
                                          "SnapshotOutOfDateError"],
    "blizzard.replication.raft.pmem_storage": ["LogCorruptError"],
    "blizzard.replication.transport.tlsstream": ["NotTlsError"],
    "blizzard.replication.node": ["NotLeaderError"],
    "blizzard.replication.snapshots": ["SnapshotInstallError"],
    "blizzard.cluster.replicator": ["RequestTimeoutError"],
    "blizzard.cluster.protocol": ["ProtocolError", "NoSuchStructureError", "RemoteError"],
    "blizzard.cluster.config": ["ConfigError"],
    "blizzard.client": ["ClusterUnavailableError", "RemoteError"],
    "blizzard.sim": ["SafetyViolation", "LivenessFailure"],
    "blizzard.replication.raft.sim": ["SafetyViolation", "LivenessFailure"],
}


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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _bindings(tree: ast.Module, module: str) -> dict[str, tuple[str, str | None]]:
    """Names bound by the module's imports: name -> (module, attribute or None)."""
    names: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
                else:
                    head = alias.name.partition(".")[0]
                    names[head] = (head, None)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = module.rsplit(".", node.level)[0]
                source = f"{base}.{source}" if source else base
            for alias in node.names:
                names[alias.asname or alias.name] = (source, alias.name)
    return names


def _resolve(dotted: str, bindings: dict[str, tuple[str, str | None]]) -> object:
    head, *rest = dotted.split(".")
    if head in bindings:
        source, attribute = bindings[head]
        try:
            value: object = importlib.import_module(source)
            if attribute is not None:
                value = getattr(value, attribute)
        except (ImportError, OSError, AttributeError):
            # not importable on this machine (say, DPDK): judge by the name
            return BaseException if re.search(r"(Error|Exception)$", dotted) else None
    elif hasattr(builtins, head):
        value = getattr(builtins, head)
    else:
        return None
    for attribute in rest:
        value = getattr(value, attribute, None)
    return value


def _exception_classes_defined(source: str, module: str) -> list[str]:
    """The exception classes a module's source defines (at any depth), read
    from its syntax tree: a class whose base is a builtin exception, an
    imported one, or an exception class the source defined before it."""
    tree = ast.parse(source)
    bindings = _bindings(tree, module)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            dotted = ast.unparse(base)
            value = None if dotted in found else _resolve(dotted, bindings)
            if dotted in found or (isinstance(value, type) and issubclass(value, BaseException)):
                found.append(node.name)
                break
    return found


def test_the_source_scan_sees_every_way_of_defining_an_exception():
    source = ("import queue\nimport ssl as s\nfrom blizzard.exceptions import PoolError as P\n"
              "from .exceptions import Empty\n"
              "class A(ValueError): pass\nclass B(A): pass\nclass C(queue.Empty): pass\n"
              "class D(P): pass\nclass E(object): pass\nclass G(s.SSLError): pass\n"
              "class H(Empty): pass\nclass I(dict): pass\n"
              "def f():\n    class F(Exception): pass\n")
    found = _exception_classes_defined(source, "blizzard.probe")
    assert sorted(found) == ["A", "B", "C", "D", "F", "G", "H"]


def test_no_exception_class_is_defined_outside_the_exceptions_module():
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module == exceptions.__name__:
            continue
        for name in _exception_classes_defined(path.read_text(), module):
            if name not in SIGNALS.get(module, ()):
                strays.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert not strays, ("define errors in blizzard/exceptions.py (and document them in "
                        f"docs/errors.md), not beside their code: {strays}")


def test_signals_are_not_errors():
    for module, names in SIGNALS.items():
        for name in names:
            cls = getattr(importlib.import_module(module), name)
            assert issubclass(cls, BaseException) and not issubclass(cls, Exception), name


@pytest.mark.parametrize("module", sorted(REEXPORTED))
def test_errors_stay_importable_from_where_they_were(module):
    for name in REEXPORTED[module]:
        assert getattr(importlib.import_module(module), name) is getattr(exceptions, name), name


def test_an_error_rebuilt_by_name_is_of_its_class_even_if_its_constructor_takes_more():
    from blizzard.cluster import protocol
    from blizzard.replication import sessions

    full = exceptions.UndoLogFullError("log full", needed=4096, largest_free_extent=0)
    violation = exceptions.SafetyViolation("election safety", "two leaders")
    for error in (full, violation, exceptions.KeyTooLongError("key of 2000 bytes")):
        kind, data = sessions.encode_result(error)
        rebuilt = sessions.decode_result(kind, data)
        assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
        assert type(protocol.make_error(type(error).__name__, str(error))) is type(error)
    assert exceptions.from_name("NoSuchClass", "x") is None
    assert exceptions.from_name("from_name", "x") is None
    remote = protocol.make_error("SomeServerSideError", "boom")
    assert isinstance(remote, exceptions.RemoteError) and "SomeServerSideError" in str(remote)
