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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from engine.provider import Provider, ProviderError
from runtime.logline import parse_line

__all__ = ["AppLogs", "LogLine", "is_probe_line", "merge_lines", "parse_log_line"]

# The worker's request line for a health probe (the supervisor's readiness polls and the health
# monitor's probes): hidden by default, or every endpoint's log would be mostly probes.
_PROBE = re.compile(r"^GET /ping \d{3} ")
_QB_HEALTH = re.compile(r"^GET /health \d{3} ")
_STREAMS = {"out": "stdout", "err": "stderr", "flash": "flash"}
# The service's line limit per request: asking for more history than this is pointless.
_MAX_HISTORY = 10_000
# A stream's first mark follows its history at once. A service started by an older flash-tui
# sends none: after this long its stream's lines go out as they come, unordered, not never.
_FIRST_MARK_WAIT = 10.0


def is_probe_line(text: str, is_load_balanced: bool = True) -> bool:
    """True for a health-probe request line (`GET /ping`, and `GET /health` on QB endpoints,
    where it is the queue API's health route; on LB endpoints /health is a user route)."""
    return bool(_PROBE.match(text) or (not is_load_balanced and _QB_HEALTH.match(text)))


@dataclass(frozen=True)
class LogLine:
    """One log line of one endpoint: `at` is when the worker wrote it (None: unknown);
    `probe` marks a health-probe request line (hidden unless asked for)."""

    endpoint: str
    text: str
    at: float | None = None
    source: str = "worker"
    stream: str | None = None
    probe: bool = False

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
            "probe": self.probe,
        }


def parse_log_line(endpoint: str, raw: str, load_balanced: bool = True) -> LogLine:
    """The typed form of one raw line of `endpoint`'s log file."""
    at, stream, text = parse_line(raw)
    if stream == "flash":
        return LogLine(endpoint, f"[flash] {text}", at, "flash", "flash")
    # An unstamped `[flash HH:MM:SS] ...` line: the service's, from before the stamp existed.
    if stream is None and text.startswith("[flash "):
        return LogLine(endpoint, text, at, "flash")
    probe = is_probe_line(text, load_balanced)
    return LogLine(endpoint, text, at, "worker", _STREAMS.get(stream or ""), probe)


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


def _shown(line: LogLine, probes: bool) -> bool:
    return probes or not line.probe


def _last(lines: Sequence[LogLine], count: int, probes: bool, count_probes: bool) -> list[LogLine]:
    """The last `count` lines, probe lines included if `probes` and counted if `count_probes`
    (a view that hides them by default still gets `count` lines to show)."""
    kept = [line for line in lines if _shown(line, probes)]
    if count <= 0:
        return []
    counted = 0
    for index in range(len(kept) - 1, -1, -1):
        if count_probes or not kept[index].probe:
            counted += 1
            if counted == count:
                return kept[index:]
    return kept


@dataclass(frozen=True)
class AppLogs:
    """The log lines of one app's endpoints on a provider, read back or followed.

    `load_balanced` (name -> bool) tells which endpoints are LB (see `is_probe_line`); a name
    it does not give counts as LB.
    """

    provider: Provider
    app: str
    load_balanced: Mapping[str, bool] = field(default_factory=dict)

    async def read(
        self, endpoints: Sequence[str], lines: int = 200, *, probes: bool = False
    ) -> list[LogLine]:
        """The last `lines` lines shown of the given endpoints together, in the order written.

        Health-probe request lines are left out (and not counted) unless `probes`.
        """
        each = [await self._history(name, lines, probes) for name in endpoints]
        return _last(merge_lines(each), lines, probes, probes)

    async def _history(self, name: str, lines: int, probes: bool) -> list[LogLine]:
        """The last `lines` shown lines of one endpoint (reading further back past hidden ones)."""
        if lines <= 0:
            return []
        load_balanced = self.load_balanced.get(name, True)
        asked = lines if probes else lines * 4 + 50
        while True:
            raw = await self.provider.read_logs(self.app, name, min(asked, _MAX_HISTORY))
            parsed = [parse_log_line(name, text, load_balanced) for text in raw]
            shown = _last(parsed, lines, probes, probes)
            if len(shown) >= lines or len(raw) < asked or asked >= _MAX_HISTORY:
                return shown
            asked *= 4

    async def follow(
        self,
        endpoints: Sequence[str],
        lines: int = 20,
        *,
        probes: bool = False,
        count_probes: bool | None = None,
    ) -> AsyncIterator[LogLine]:
        """The last `lines` lines shown (as `read`), then every new line of any endpoint, in
        the order written. `count_probes=False` with `probes`: probe lines come too, but the
        history has `lines` lines besides them (for a view that hides them until asked).

        A new line is given once every stream has reported all its lines written before it (the
        provider's marks, a few times a second), so lines of several endpoints never overtake
        each other. Runs until the consumer stops iterating (or is cancelled). A stream that
        fails is reported once as a `source="error"` line and the others continue.
        """
        # (endpoint, a raw line | a mark | an error line): one queue keeps each stream's order.
        events: asyncio.Queue[tuple[str, str | float | LogLine]] = asyncio.Queue()
        # Extra history lines cover hidden probes.
        counted = probes if count_probes is None else count_probes
        asked = lines if counted else min(_MAX_HISTORY, max(lines * 4 + 50, 2000))

        async def pump(name: str) -> None:
            try:
                async for item in self.provider.follow_logs(
                    self.app, name, asked if lines > 0 else 0, True
                ):
                    await events.put((name, item))
            except ProviderError as exc:
                now = time.time()
                await events.put((name, LogLine(name, f"log stream ended: {exc}", now, "error")))

        tasks = [asyncio.get_running_loop().create_task(pump(n)) for n in endpoints]
        try:
            merger = _Merger(endpoints, lines, probes, counted, self.load_balanced)
            deadline = time.monotonic() + _FIRST_MARK_WAIT
            while merger.waiting():
                try:
                    # While a history is coming, the wait is bounded (see _FIRST_MARK_WAIT).
                    wait = max(0.0, deadline - time.monotonic()) if merger.collecting else None
                    name, item = await asyncio.wait_for(events.get(), wait)
                except asyncio.TimeoutError:
                    for name in list(merger.collecting):
                        # No mark: this stream neither waits for nor holds back the others.
                        for line in merger.take(name, float("inf")):
                            yield line
                    continue
                for line in merger.take(name, item):
                    yield line
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class _Merger:
    """Puts the followed streams of several endpoints into the order their lines were written.

    Each stream gives its history, a mark, then new lines and marks; a mark T says the stream
    has given every line written before T. The histories go out together once every stream has
    given its first mark; a new line goes out once every open stream's mark has passed it.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        lines: int,
        probes: bool,
        count_probes: bool,
        kinds: Mapping[str, bool],
    ) -> None:
        self.lines, self.probes, self.count_probes, self.kinds = lines, probes, count_probes, kinds
        self.histories: dict[str, list[LogLine]] | None = {name: [] for name in endpoints}
        self.collecting = set(endpoints)  # streams still giving their history
        self.marks = dict.fromkeys(endpoints, float("-inf"))
        # Per endpoint, the key of its last line: an unstamped line keeps its place after it.
        self.last = dict.fromkeys(endpoints, float("-inf"))
        self.pending: list[tuple[float, int, LogLine]] = []
        self.order = itertools.count()

    def waiting(self) -> bool:
        """True while a stream is open (or lines are held)."""
        return bool(self.marks) or bool(self.pending)

    def take(self, name: str, item: str | float | LogLine) -> list[LogLine]:
        """Lines that can go out after `item` of `name`'s stream."""
        if isinstance(item, LogLine):  # the stream failed: it holds back nothing any more
            self.marks.pop(name, None)
            self.collecting.discard(name)
            if self.histories is not None:
                self.histories.pop(name, None)
            self._hold(item.at or time.time(), item)
        elif isinstance(item, str):
            line = parse_log_line(name, item, self.kinds.get(name, True))
            if line.at is not None:
                self.last[name] = max(self.last[name], line.at)
            if name in self.collecting and self.histories is not None:
                self.histories[name].append(line)
            elif _shown(line, self.probes):
                key = self.last[name]
                self._hold(key if key != float("-inf") else time.time(), line)
        else:
            if name in self.collecting and self.histories is not None:
                self.collecting.discard(name)
                self.histories[name] = self._last(self.histories[name])
            self.marks[name] = max(self.marks.get(name, item), item)
        return self._ready()

    def _last(self, lines: Sequence[LogLine]) -> list[LogLine]:
        return _last(lines, self.lines, self.probes, self.count_probes)

    def _hold(self, key: float, line: LogLine) -> None:
        heapq.heappush(self.pending, (key, next(self.order), line))

    def _ready(self) -> list[LogLine]:
        out: list[LogLine] = []
        if self.histories is not None:
            if self.collecting:
                return out  # a history is still coming
            out.extend(self._last(merge_lines(self.histories.values())))
            self.histories = None
        upto = min(self.marks.values(), default=float("inf"))
        while self.pending and self.pending[0][0] <= upto:
            out.append(heapq.heappop(self.pending)[2])
        return out
