"""Shared test set-up: hypothesis profiles and expensive checks on.

Profiles: ``ci`` (default, keeps the suite inside CI's budget) and ``soak``
(``make soak``: many more examples, no deadline).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from blizzard import _debug

_debug.set_checks(True)

settings.register_profile(
    "ci",
    max_examples=200,
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
