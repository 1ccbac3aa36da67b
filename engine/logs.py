"""Log streaming: endpoints' log lines as typed events, read back or followed live.

Lines come from the provider (for the local cloud: the per-endpoint log files the workers write
directly). Worker lines carry no timestamp of their own, so a followed line is stamped when it
arrives (`at`); read-back lines have `at = None`. Service lines (`[flash HH:MM:SS] ...`) are
marked `source="flash"`. Following several endpoints merges their streams into one. Health-probe
request lines (`GET /ping ...`) are hidden unless asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.provider import Provider, ProviderError

__all__ = ["LogLine", "follow_logs", "is_probe_line", "read_logs"]

# The worker's request line for a health probe (the supervisor's readiness polls and the health
# monitor's probes): hidden by default, or every endpoint's log would be mostly probes.
_PROBE = re.compile(r"^GET /ping \d{3} ")
_QB_HEALTH = re.compile(r"^GET /health \d{3} ")


def is_probe_line(text: str, is_load_balanced: bool = True) -> bool:
    """True for a health-probe request line (`GET /ping`, and `GET /health` on QB endpoints,
    where it is the queue API's health route; on LB endpoints /health is a user route)."""
    return bool(_PROBE.match(text) or (not is_load_balanced and _QB_HEALTH.match(text)))


@dataclass(frozen=True)
class LogLine:
    """One log line of one endpoint."""

    endpoint: str
    text: str
    at: float | None = None
    source: str = "worker"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`logs --json`)."""
        return {"endpoint": self.endpoint, "text": self.text, "at": self.at, "source": self.source}


def _line(endpoint: str, text: str, at: float | None) -> LogLine:
    return LogLine(endpoint, text, at, "flash" if text.startswith("[flash ") else "worker")


async def read_logs(
    provider: Provider,
    app: str,
    endpoints: Sequence[str],
    lines: int = 200,
    *,
    probes: bool = False,
    load_balanced: Mapping[str, bool] | None = None,
) -> list[LogLine]:
    """The last `lines` lines of each endpoint, endpoint by endpoint.

    Health-probe request lines are left out unless `probes`; `load_balanced` (name -> bool)
    tells which endpoints are LB (see `is_probe_line`).
    """
    out: list[LogLine] = []
    kinds = load_balanced or {}
    for name in endpoints:
        # Ask for more than needed: probe lines are filtered out afterwards.
        texts = await provider.read_logs(app, name, lines if probes else lines * 4 + 50)
        if not probes:
            texts = [t for t in texts if not is_probe_line(t, kinds.get(name, True))]
        for text in texts[-lines:] if lines else []:
            out.append(_line(name, text, None))
    return out


async def follow_logs(
    provider: Provider,
    app: str,
    endpoints: Sequence[str],
    lines: int = 20,
    *,
    probes: bool = False,
    load_balanced: Mapping[str, bool] | None = None,
) -> AsyncIterator[LogLine]:
    """The last `lines` of each endpoint, then every new line of any of them, as they come.

    Runs until the consumer stops iterating (or is cancelled). A stream that fails is reported
    once as a `source="error"` line and the others continue.
    """
    queue: asyncio.Queue[LogLine] = asyncio.Queue()
    kinds = load_balanced or {}

    async def pump(name: str) -> None:
        lb = kinds.get(name, True)
        try:
            async for text in provider.follow_logs(app, name, lines):
                if probes or not is_probe_line(text, lb):
                    await queue.put(_line(name, text, time.time()))
        except ProviderError as exc:
            await queue.put(LogLine(name, f"log stream ended: {exc}", time.time(), "error"))

    tasks = [asyncio.get_running_loop().create_task(pump(n)) for n in endpoints]
    try:
        while True:
            yield await queue.get()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
