"""Waiting in tests: poll a condition until it holds or a deadline passes, never sleep-and-hope.

No tests here; test modules import it (`from waiting import until, wait_for, eventually`), as
pytest puts this directory on `sys.path` (the rootdir conftest lives here).

- `wait_for(predicate, timeout, what)`: synchronous, for real processes, HTTP and files;
- `until(pilot, condition, timeout, what)`: the same inside a Textual Pilot, pausing the app
  between checks so it keeps handling messages.

Both fail with an `AssertionError` naming `what` and the timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from textual.pilot import Pilot

T = TypeVar("T")

# How many of the app's last log lines a Pilot timeout shows (when the app keeps logs).
_LOG_TAIL = 15


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str = "condition",
    *,
    interval: float = 0.05,
    retry_errors: bool = False,
) -> T:
    """Poll until `predicate()` is truthy and return that value; fail at the deadline.

    With `retry_errors`, an exception from the predicate counts as "not yet" (for conditions
    that cannot be checked until something is up); otherwise it propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:
            if not retry_errors:
                raise
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not met within {timeout:g}s (last: {last!r})")


async def until(
    pilot: Pilot[Any],
    condition: Callable[[], object],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
) -> float:
    """Pause the app until `condition()` holds; return the seconds it took; fail at the deadline.

    The failure names `what` and, when the app has them, its last log lines and its statuses.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            app = pilot.app
            detail = ""
            logs = getattr(app, "logs", None)
            if logs is not None:
                tail = [f"{r.source}: {r.text}" for r in list(logs)[-_LOG_TAIL:]]
                detail += f"; last log lines: {tail}"
            state = getattr(app, "state", None)
            statuses = getattr(state, "statuses", None)
            if statuses is not None:
                detail += f"; statuses: {statuses}"
            raise AssertionError(f"{what}: not met within {timeout:g}s{detail}")
        await pilot.pause(interval)
    return time.monotonic() - started


async def eventually(
    condition: Callable[[], object], timeout: float, what: str = "condition"
) -> None:
    """`wait_for` for async tests without an app: poll `condition()` without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout:g}s")
        await asyncio.sleep(0.02)
