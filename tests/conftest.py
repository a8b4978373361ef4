"""Shared test set-up: hypothesis profiles and expensive checks on.

Profiles: ``ci`` (default, keeps the suite inside CI's budget) and ``soak``
(``make soak``: many more examples, no deadline).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from blizzard import _debug

_debug.set_checks(True)

CI_EXAMPLES = 200

settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "soak",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def budget(examples: int) -> int:
    """A test's own example count, scaled with the loaded profile: as given in
    ``ci``, 25x in ``soak``. Call it at collection time (module level)."""
    return max(examples, examples * settings.default.max_examples // CI_EXAMPLES)
