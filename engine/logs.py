"""Log streaming: endpoints' log lines as typed events, read back or followed live.

Lines come from the provider (for the local cloud: the per-endpoint log files the workers write
directly). Worker lines carry no timestamp of their own, so a followed line is stamped when it
arrives (`at`); read-back lines have `at = None`. Service lines (`[flash HH:MM:SS] ...`) are
marked `source="flash"`. Following several endpoints merges their streams into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.provider import Provider, ProviderError

__all__ = ["LogLine", "follow_logs", "read_logs"]


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
    provider: Provider, app: str, endpoints: Sequence[str], lines: int = 200
) -> list[LogLine]:
    """The last `lines` lines of each endpoint, endpoint by endpoint."""
    out: list[LogLine] = []
    for name in endpoints:
        for text in await provider.read_logs(app, name, lines):
            out.append(_line(name, text, None))
    return out


async def follow_logs(
    provider: Provider, app: str, endpoints: Sequence[str], lines: int = 20
) -> AsyncIterator[LogLine]:
    """The last `lines` of each endpoint, then every new line of any of them, as they come.

    Runs until the consumer stops iterating (or is cancelled). A stream that fails is reported
    once as a `source="error"` line and the others continue.
    """
    queue: asyncio.Queue[LogLine] = asyncio.Queue()

    async def pump(name: str) -> None:
        try:
            async for text in provider.follow_logs(app, name, lines):
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
