"""Log streaming: endpoints' log lines as typed events, read back or followed live.

Lines come from the provider (for the local cloud: the per-endpoint log files the workers write
directly). Each line carries the time the worker wrote it and its stream (`runtime.logline`);
a line without a stamp (a log file older than the stamp, bytes a C extension wrote) has
`at = None` and keeps its place after the line before it. Service lines are marked
`source="flash"`. Several endpoints are merged in the order their lines were written, when read
back and when followed. Health-probe request lines (`GET /ping ...`) are hidden unless asked
for, and hidden lines do not count towards the number of lines asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from engine.provider import Provider, ProviderError
from runtime.logline import parse_line

__all__ = ["LogLine", "follow_logs", "is_probe_line", "merge_lines", "parse_log_line", "read_logs"]

# The worker's request line for a health probe (the supervisor's readiness polls and the health
# monitor's probes): hidden by default, or every endpoint's log would be mostly probes.
_PROBE = re.compile(r"^GET /ping \d{3} ")
_QB_HEALTH = re.compile(r"^GET /health \d{3} ")
_STREAMS = {"out": "stdout", "err": "stderr", "flash": "flash"}
# The service's line limit per request: asking for more history than this is pointless.
_MAX_HISTORY = 10_000
# Followed lines of several endpoints arrive up to a poll interval (0.2 s) apart from when they
# were written; holding each this long lets a line written earlier elsewhere overtake it.
_REORDER_WINDOW = 0.4


def is_probe_line(text: str, is_load_balanced: bool = True) -> bool:
    """True for a health-probe request line (`GET /ping`, and `GET /health` on QB endpoints,
    where it is the queue API's health route; on LB endpoints /health is a user route)."""
    return bool(_PROBE.match(text) or (not is_load_balanced and _QB_HEALTH.match(text)))


@dataclass(frozen=True)
class LogLine:
    """One log line of one endpoint: `at` is when the worker wrote it (None: unknown)."""

    endpoint: str
    text: str
    at: float | None = None
    source: str = "worker"
    stream: str | None = None

    @property
    def time(self) -> str | None:
        """`at` as ISO 8601 UTC with microseconds (None when unknown)."""
        if self.at is None:
            return None
        return datetime.fromtimestamp(self.at, timezone.utc).isoformat(timespec="microseconds")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`logs --json`)."""
        return {
            "endpoint": self.endpoint,
            "text": self.text,
            "at": self.at,
            "time": self.time,
            "stream": self.stream,
            "source": self.source,
        }


def parse_log_line(endpoint: str, raw: str) -> LogLine:
    """The typed form of one raw line of `endpoint`'s log file."""
    at, stream, text = parse_line(raw)
    if stream == "flash":
        return LogLine(endpoint, f"[flash] {text}", at, "flash", "flash")
    # An unstamped `[flash HH:MM:SS] ...` line: the service's, from before the stamp existed.
    source = "flash" if stream is None and text.startswith("[flash ") else "worker"
    return LogLine(endpoint, text, at, source, _STREAMS.get(stream or ""))


def _keyed(lines: Iterable[LogLine]) -> list[tuple[float, LogLine]]:
    # An unstamped line sorts with the stamped line before it in the same file.
    out = []
    last = float("-inf")
    for line in lines:
        if line.at is not None:
            last = line.at
        out.append((last, line))
    return out


def merge_lines(per_endpoint: Iterable[Sequence[LogLine]]) -> list[LogLine]:
    """Several endpoints' lines (each in file order) as one list in the order they were written."""
    merged = heapq.merge(*(_keyed(lines) for lines in per_endpoint), key=lambda item: item[0])
    return [line for _, line in merged]


def _shown(line: LogLine, probes: bool, load_balanced: bool) -> bool:
    return probes or line.source != "worker" or not is_probe_line(line.text, load_balanced)


async def _history(
    provider: Provider, app: str, name: str, lines: int, probes: bool, load_balanced: bool
) -> list[LogLine]:
    """The last `lines` shown lines of one endpoint (reading further back past hidden ones)."""
    if lines <= 0:
        return []
    asked = lines if probes else lines * 4 + 50
    while True:
        raw = await provider.read_logs(app, name, min(asked, _MAX_HISTORY))
        shown = [
            line
            for line in (parse_log_line(name, text) for text in raw)
            if _shown(line, probes, load_balanced)
        ]
        if len(shown) >= lines or len(raw) < asked or asked >= _MAX_HISTORY:
            return shown[-lines:]
        asked *= 4


async def read_logs(
    provider: Provider,
    app: str,
    endpoints: Sequence[str],
    lines: int = 200,
    *,
    probes: bool = False,
    load_balanced: Mapping[str, bool] | None = None,
) -> list[LogLine]:
    """The last `lines` lines shown of the given endpoints together, in the order written.

    Health-probe request lines are left out (and not counted) unless `probes`;
    `load_balanced` (name -> bool) tells which endpoints are LB (see `is_probe_line`).
    """
    kinds = load_balanced or {}
    each = [
        await _history(provider, app, name, lines, probes, kinds.get(name, True))
        for name in endpoints
    ]
    merged = merge_lines(each)
    return merged[-lines:] if lines > 0 else []


async def follow_logs(
    provider: Provider,
    app: str,
    endpoints: Sequence[str],
    lines: int = 20,
    *,
    probes: bool = False,
    load_balanced: Mapping[str, bool] | None = None,
) -> AsyncIterator[LogLine]:
    """The last `lines` lines shown (as `read_logs`), then every new line of any endpoint, in
    the order written.

    Runs until the consumer stops iterating (or is cancelled). A stream that fails is reported
    once as a `source="error"` line and the others continue.
    """
    kinds = load_balanced or {}
    live: asyncio.Queue[tuple[float, LogLine]] = asyncio.Queue()
    histories: dict[str, list[LogLine]] = {}
    history_done = asyncio.Event()

    def history_of(name: str, got: list[LogLine]) -> None:
        histories[name] = got
        if len(histories) == len(endpoints):
            history_done.set()

    async def pump(name: str) -> None:
        lb = kinds.get(name, True)
        # The stream's own history (read with the follow offset taken first) is the history:
        # no line written in between is lost or shown twice. Extra lines cover hidden probes.
        asked = lines if probes else min(_MAX_HISTORY, max(lines * 4 + 50, 2000))
        history: list[LogLine] | None = [] if lines > 0 else None
        if history is None:
            history_of(name, [])
        # Live lines are ordered by this key: the worker's time, never going back within one
        # endpoint (an unstamped line keeps its place after the line before it).
        last = float("-inf")
        try:
            async for text in provider.follow_logs(app, name, asked if lines > 0 else 0, True):
                if text is None:
                    if history is not None:
                        history_of(name, [ln for ln in history if _shown(ln, probes, lb)][-lines:])
                        history = None
                    continue
                line = parse_log_line(name, text)
                if history is not None:
                    history.append(line)
                    if line.at is not None:
                        last = max(last, line.at)
                    continue
                if line.at is not None:
                    last = max(last, line.at)
                elif last == float("-inf"):
                    last = time.time()
                if _shown(line, probes, lb):
                    await live.put((last, line))
        except ProviderError as exc:
            if history is not None:
                history_of(name, [])
            now = time.time()
            await live.put((now, LogLine(name, f"log stream ended: {exc}", now, "error")))

    tasks = [asyncio.get_running_loop().create_task(pump(n)) for n in endpoints]
    try:
        if endpoints:
            await history_done.wait()
        merged = merge_lines(histories[name] for name in endpoints)
        for line in merged[-lines:] if lines > 0 else []:
            yield line
        async for line in _in_written_order(live):
            yield line
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _in_written_order(
    queue: asyncio.Queue[tuple[float, LogLine]],
) -> AsyncIterator[LogLine]:
    """The queue's `(key, line)`s, each held up to `_REORDER_WINDOW` so that they leave by key."""
    pending: list[tuple[float, int, LogLine]] = []
    order = itertools.count()
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, pending[0][0] + _REORDER_WINDOW - time.time())
        with contextlib.suppress(asyncio.TimeoutError):
            key, line = await asyncio.wait_for(queue.get(), timeout)
            heapq.heappush(pending, (key, next(order), line))
        now = time.time()
        while pending and pending[0][0] + _REORDER_WINDOW <= now:
            yield heapq.heappop(pending)[2]
