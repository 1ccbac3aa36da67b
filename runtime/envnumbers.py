"""Numbers a runtime process reads from its environment: one parser, one warning wording.

A worker, a mothership and its RunPod plane read their limits and waits the same way: unset or
empty is the default, below the minimum is the minimum, not a number is the default with a
warning on stderr naming the variable and the value.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["env_int", "env_number"]


def env_number(
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    environ: Mapping[str, str] | None = None,
) -> float:
    """A number from the environment, at least `minimum`; unset or bad: `default` (said)."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        return max(minimum, float(raw))
    except ValueError:
        sys.stderr.write(f"warning: ignoring {name}={raw!r} (not a number)\n")
        sys.stderr.flush()
        return default


def env_int(
    name: str, default: int, *, minimum: int = 1, environ: Mapping[str, str] | None = None
) -> int:
    """`env_number` as a whole number."""
    return int(env_number(name, default, minimum=minimum, environ=environ))
