"""The persistent maps against CPython's own mapping-protocol tests.

``test.mapping_tests`` is the suite CPython runs against ``dict`` and
``UserDict``. Each mapping it asks for is a fresh structure in a fresh pool,
with the key codec that takes the suite's mixed str/int keys (``hashable``
for PHashMap, the ordered ``tuple`` codec for the ordered maps) and the
``msgpack`` value codec. Where a persistent map differs from ``dict`` on
purpose, the test is adapted below, each adaptation with its reason; the
differences are listed in ``docs/structures.md``.
"""

from __future__ import annotations

import unittest

from blizzard.pmem import DramMedia, Pool
from blizzard.structures import PBPlusTree, PHashMap, PSkipList

try:
    from test import mapping_tests
except ImportError as exc:  # a failure, not a skip: the suite is this module's subject
    raise ImportError("CPython's test package is missing; scripts/install-system-deps.sh "
                      "installs it (Debian: libpython3.11-testsuite)") from exc

POOL_BYTES = 8 << 20


def fresh_type(base: type) -> type:
    """A type whose every instance is a new, empty ``base`` in a new pool
    (the suite constructs mappings as ``type2test(*args, **kwargs)``)."""
    key_codec = "hashable" if base is PHashMap else "tuple"

    class Fresh(base):
        def __init__(self, *args, **kwargs):
            super().__init__(Pool.create(DramMedia(POOL_BYTES)), "m",
                             key_codec=key_codec, value_codec="msgpack")
            self.update(*args, **kwargs)

        if base is not PHashMap:
            # Adaptation: the ordered maps' popitem takes an index (SortedDict's
            # signature); the suite checks dict's, where ``popitem(42)`` is a
            # TypeError. The tested type exposes dict's signature.
            def popitem(self):
                return super().popitem()

    Fresh.__name__ = Fresh.__qualname__ = f"Fresh{base.__name__}"
    return Fresh


class Adapted:
    """The adaptations every persistent map needs (mixed into each suite)."""

    def test_fromkeys(self):
        # fromkeys is a constructor, and a persistent map needs a pool and a
        # name: the maps do not offer it (the suite calls type2test.fromkeys)
        assert not hasattr(self.type2test, "fromkeys")

    def test_copy(self):
        # copy() is a plain dict snapshot, not a second persistent map (the
        # suite's assertIsInstance(d.copy(), d.__class__) is the difference)
        d = self._full_mapping({1: 1, 2: 2, 3: 3})
        assert d.copy() == {1: 1, 2: 2, 3: 3}
        assert type(d.copy()) is dict
        d = self._empty_mapping()
        assert d.copy() == d
        self.assertRaises(TypeError, d.copy, None)

    def test_setdefault(self):
        # Values are stored encoded: mutating the value setdefault returns does
        # not change the map (as shelve with writeback=False); the suite's
        # ``d.setdefault('key', []).append(3)`` checks the opposite.
        mapping_tests.BasicTestMappingProtocol.test_setdefault(self)
        d = self._empty_mapping()
        assert d.setdefault("key0") is None
        d.setdefault("key0", [])
        assert d.setdefault("key0") is None
        d.setdefault("key", []).append(3)
        assert d["key"] == []
        d["key"] = [3]
        assert d["key"][0] == 3


def _suites():
    for base in (PHashMap, PBPlusTree, PSkipList):
        for protocol in (mapping_tests.BasicTestMappingProtocol,
                         mapping_tests.TestMappingProtocol):
            mixins = (Adapted,) if protocol is mapping_tests.TestMappingProtocol else ()
            name = f"Test{base.__name__}{protocol.__name__.removeprefix('Test')}"
            yield type(name, (*mixins, protocol), {"type2test": fresh_type(base)})


for _suite in _suites():
    globals()[_suite.__name__] = _suite
del _suite


def test_every_suite_is_collected():
    """Six suites (3 maps x 2 protocols), none of them empty."""
    suites = [obj for obj in globals().values()
              if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
              and obj.__name__.startswith("TestP")]
    assert len(suites) == 6
    assert all(unittest.defaultTestLoader.getTestCaseNames(s) for s in suites)
