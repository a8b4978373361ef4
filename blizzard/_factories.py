"""Named factories, registered by the modules that implement them.

A configuration names a backend (``[replication] backend = "raft"``) or a
transport (``[transport] kind = "tcp"``); the code that builds one looks the
name up in a :class:`Factories` table instead of branching on it, so adding
a backend or a transport adds a module that calls :meth:`Factories.register`,
not a branch.

Built-in implementations are listed by *module name* (a string: nothing is
imported until the name is asked for), so importing Blizzard never loads a
transport's native library, and a module that cannot be imported here (not
built, a system library missing) is reported as unavailable with its
reason, next to the names that are available.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

from blizzard.exceptions import ConfigError

F = TypeVar("F")


class Factories(Generic[F]):
    """``name -> factory``; see the module docstring.

    ``what`` ("transport") and ``field`` ("transport.kind") word the errors;
    ``builtin`` maps each built-in name to the module that registers it when
    imported.
    """

    def __init__(self, what: str, field: str, builtin: Mapping[str, str]) -> None:
        self.what = what
        self.field = field
        self._builtin = dict(builtin)
        self._factories: dict[str, F] = {}
        self._failures: dict[str, str] = {}  # name -> why its module did not import

    def register(self, name: str, factory: F) -> None:
        """Make ``name`` buildable by ``factory`` (a module calls this at import).

        Registering a name again replaces its factory (a test may wrap one).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name is a non-empty string, got {name!r}")
        self._factories[name] = factory
        self._failures.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that registered a factory of their own)."""
        self._factories.pop(name, None)

    def get(self, name: str) -> F:
        """The factory for ``name``; :class:`ConfigError` naming the available
        ones if it is unknown or cannot be loaded here."""
        factory = self._factories.get(name)
        if factory is not None:
            return factory
        if not isinstance(name, str) or name not in self._builtin:
            raise ConfigError(f"{self.field}: unknown {self.what} {name!r} "
                              f"(available: {self._listing()})")
        self._load(name)
        factory = self._factories.get(name)
        if factory is None:
            raise ConfigError(f"{self.field}: the {self.what} {name!r} is not available here: "
                              f"{self._failures[name]} (available: {self._listing()})")
        return factory

    def available(self) -> list[str]:
        """Every name that can be built here (built-in modules are imported to find out)."""
        for name in self._builtin:
            if name not in self._factories:
                self._load(name)
        return sorted(self._factories)

    def known(self) -> list[str]:
        """Every name, available or not."""
        return sorted({*self._builtin, *self._factories})

    def _listing(self) -> str:
        names = self.available()
        return ", ".join(names) if names else "none"

    def _load(self, name: str) -> None:
        module = self._builtin[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                self._failures[name] = "it is not part of this installation"
            else:
                self._failures[name] = f"{module} needs {exc.name or exc}"
            return
        except (ImportError, OSError) as exc:
            self._failures[name] = f"{module} did not load: {exc}"
            return
        if name not in self._factories:
            self._failures[name] = f"{module} did not register it"
