"""Named factories: built-in names load their module on demand; every name
that cannot be built is refused with the reason and the names that can."""

from __future__ import annotations

import sys

import pytest

from blizzard._factories import Factories
from blizzard.exceptions import ConfigError

TABLE: list = []  # the table under test, for the throw-away module to register into


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A directory of throw-away modules on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_builtin_names_load_their_module_once_asked(modules):
    table: Factories = Factories("widget", "widget.kind", {})
    sys.modules.pop("blz_widget_good", None)
    table._builtin["good"] = modules(
        "blz_widget_good",
        "from tests.test_factories import TABLE\nTABLE[0].register('good', lambda: 'built')\n")
    TABLE[:] = [table]
    assert "blz_widget_good" not in sys.modules  # nothing is imported up front
    assert table.get("good")() == "built"
    assert table.available() == ["good"] and table.known() == ["good"]


def test_names_that_cannot_be_built_say_why(modules):
    table: Factories = Factories("widget", "widget.kind", {
        "absent": "blz_widget_absent",
        "needy": modules("blz_widget_needy", "import blz_no_such_dependency\n"),
        "broken": modules("blz_widget_broken", "raise OSError('libwidget.so: cannot open')\n"),
        "silent": modules("blz_widget_silent", "X = 1\n"),
    })
    table.register("plain", object)
    expected = {
        "absent": "it is not part of this installation",
        "needy": "blz_widget_needy needs blz_no_such_dependency",
        "broken": "blz_widget_broken did not load: libwidget.so: cannot open",
        "silent": "blz_widget_silent did not register it",
    }
    for name, reason in expected.items():
        with pytest.raises(ConfigError) as err:
            table.get(name)
        assert str(err.value) == (f"widget.kind: the widget {name!r} is not available here: "
                                  f"{reason} (available: plain)")
    with pytest.raises(ConfigError) as err:
        table.get("nope")
    assert str(err.value) == "widget.kind: unknown widget 'nope' (available: plain)"
    assert table.known() == ["absent", "broken", "needy", "plain", "silent"]
    table.unregister("plain")
    with pytest.raises(ConfigError, match=r"\(available: none\)"):
        table.get("nope")
