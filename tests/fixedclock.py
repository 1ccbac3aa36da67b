"""A fixed clock for tests whose frames, stamps or ages must not move with the time of day.

No tests here; test modules import it (`from fixedclock import noon`), as pytest puts this
directory on `sys.path`.
"""

from __future__ import annotations

from datetime import datetime, timezone

# Noon UTC on the first day of 2026: the "now" of TUI tests that pass `clock=noon`.
NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def noon() -> datetime:
    """Always `NOON`: an app clock (`FlashApp(clock=noon)`) that never moves."""
    return NOON
