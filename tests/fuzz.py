"""How many examples a fuzz test draws: few in ``nox -s tests``, many in ``nox -s fuzz``.

Fuzz tests are marked ``fuzz`` and take their example count from :func:`examples`, never
a fixed ``max_examples``: ``nox -s fuzz`` sets ``STREAMSTALL_FUZZ_EXAMPLES`` to run each
one long, ``nox -s tests`` runs them at the test's own small default.
"""

from __future__ import annotations

import os

__all__ = ["examples"]


def examples(default: int) -> int:
    """The example count: ``STREAMSTALL_FUZZ_EXAMPLES`` if set, else ``default``."""
    value = os.environ.get("STREAMSTALL_FUZZ_EXAMPLES")
    return int(value) if value else default
