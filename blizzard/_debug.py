"""One switch for expensive runtime checks.

``CHECKS`` turns on O(n) invariant walks inside hot paths; tests turn it on
(``tests/conftest.py``), production code leaves it off. Cheap asserts are
always on.
"""

from __future__ import annotations

import os

CHECKS: bool = os.environ.get("BLIZZARD_CHECKS", "") not in ("", "0")


def set_checks(enabled: bool) -> None:
    """Turn the expensive checks on or off for this process."""
    global CHECKS
    CHECKS = enabled
