"""RunPod worker logs: the REST v2 worker list and each worker's SSE log stream.

`GET {api base}/v2/serverless/{id}/workers` lists an endpoint's workers;
`GET .../workers/{workerId}/logs` streams one worker's log as server-sent events
(RunPod's REST v2, as runpodctl reads it): `id: <ts>/<seq>`, `data: {"ts", "source", "line"}`, with
`tail` (0-5000), `since`, `source` and `Last-Event-ID` (which wins). The stream never ends, so
the history is what arrives before either the `: live` comment some servers send after it or a
quiet gap (`HISTORY_QUIET` seconds).

Lines come out in this project's stamped format (`runtime.logline`: `<UTC time>Z out|flash
<text>`, container lines as `out`, the platform's system lines as `flash`) so the TUI's log pane
and `logs --follow` merge them with local-cloud lines by time. Several workers are merged by
time. A 429 waits for its Retry-After; 5xx and dropped connections are retried with backoff
and jitter, a dropped stream resuming after its last event (Last-Event-ID). 401/403 raise
`ProviderError` naming the status; the key is never in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.provider import ProviderError
from engine.runpod.graphql import RetryPolicy, retry_after
from runtime.logline import format_line

__all__ = [
    "HISTORY_QUIET",
    "LogEvent",
    "WorkerInfo",
    "follow_logs",
    "list_workers",
    "read_logs",
]

HISTORY_QUIET = 1.0  # seconds without an event that end a stream's history
MAX_TAIL = 5000
_ATTEMPTS = 4
_MAX_RETRY_AFTER = 60.0
# First retry pause 0.5 s, doubled each time, ±20 % jitter: the GraphQL client's policy.
_RETRY = RetryPolicy(base=0.5, cap=_MAX_RETRY_AFTER, max_retry_after=_MAX_RETRY_AFTER)
_RNG = random.Random()
_REFRESH_WORKERS = 5.0  # seconds between looks for new workers while following
_MARK_EVERY = 0.25  # seconds between marks while following (engine.logs orders by them)
_STREAMS = {"container": "out", "system": "flash"}


class _Worker(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    status: str = ""
    is_stale: bool = Field(False, alias="isStale")
    version: int | None = None
    image: str | None = None
    uptime_seconds: int | None = Field(None, alias="uptimeSeconds")
    started_at: str | None = Field(None, alias="startedAt")
    gpu_type_id: str | None = Field(None, alias="gpuTypeId")
    data_center_id: str | None = Field(None, alias="dataCenterId")


class _WorkerList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workers: list[_Worker] = Field(default_factory=list)


@dataclass(frozen=True)
class WorkerInfo:
    """One worker of an endpoint, as the REST v2 list reports it."""

    id: str
    status: str
    is_stale: bool
    version: int | None
    image: str | None
    uptime_seconds: int | None
    started_at: str | None
    gpu_type_id: str | None
    data_center_id: str | None


@dataclass(frozen=True)
class LogEvent:
    """One event of a worker's log stream: `at` epoch seconds, `source` container|system."""

    event_id: str
    at: float
    source: str
    line: str

    def stamped(self) -> str:
        """The line in the stamped log format (no newline)."""
        return format_line(self.line, _STREAMS.get(self.source, "out"), self.at).rstrip("\n")


def _headers(key: str, last_event_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise ProviderError(f"RunPod refused the API key for {what} (HTTP {response.status_code})")
    if response.status_code == 404:
        raise ProviderError(f"RunPod does not know {what} (HTTP 404)")
    if response.status_code >= 400:
        raise ProviderError(f"RunPod answered HTTP {response.status_code} for {what}")


def _pause(response: httpx.Response | None, attempt: int) -> float:
    if response is not None and response.status_code == 429:
        return retry_after(response, _RETRY)
    return _RETRY.delay(attempt, _RNG)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


async def list_workers(
    http: httpx.AsyncClient, api_base: str, key: str, endpoint_id: str
) -> list[WorkerInfo]:
    """The endpoint's workers (REST v2), retried on 429 / 5xx / network errors."""
    url = f"{api_base.rstrip('/')}/v2/serverless/{endpoint_id}/workers"
    what = f"the workers of endpoint {endpoint_id}"
    response: httpx.Response | None = None
    for attempt in range(_ATTEMPTS):
        try:
            response = await http.get(url, headers=_headers(key))
        except httpx.TransportError:
            response = None
        else:
            if not _retryable(response):
                break
        if attempt + 1 < _ATTEMPTS:
            await asyncio.sleep(_pause(response, attempt))
    if response is None:
        raise ProviderError(f"RunPod did not answer for {what}")
    _check(response, what)
    try:
        listed = _WorkerList.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise ProviderError(f"RunPod sent an unexpected answer for {what}") from exc
    return [
        WorkerInfo(
            w.id,
            w.status,
            w.is_stale,
            w.version,
            w.image,
            w.uptime_seconds,
            w.started_at,
            w.gpu_type_id,
            w.data_center_id,
        )
        for w in listed.workers
    ]


def _parse_event(event_id: str, data: str) -> LogEvent | None:
    try:
        payload = json.loads(data)
        at = datetime.fromisoformat(str(payload["ts"]).replace("Z", "+00:00")).timestamp()
        return LogEvent(event_id, at, str(payload.get("source", "container")), str(payload["line"]))
    except (ValueError, KeyError, TypeError):
        return None


_CONNECTED = object()  # a connection is up (the quiet gap counts from here)
_LIVE = object()  # the history ended (comment, or a quiet gap)
_END = object()  # the stream is over (the worker is gone, or the caller stopped)


async def _stream(
    http: httpx.AsyncClient,
    url: str,
    key: str,
    tail: int,
    out: asyncio.Queue[object],
    follow: bool,
) -> None:
    """Put one worker's events on `out`; `_LIVE` once after the history; `_END` at the end."""
    last_id: str | None = None
    attempt = 0
    sent_live = False
    try:
        while True:
            params = {} if last_id else {"tail": str(tail)}
            try:
                async with http.stream(
                    "GET", url, params=params, headers=_headers(key, last_id), timeout=None
                ) as response:
                    if _retryable(response):
                        await response.aread()
                        raise _Retry(response)
                    if response.status_code == 404:
                        return  # the worker is gone
                    _check(response, "a worker's log")
                    attempt = 0
                    await out.put(_CONNECTED)
                    event_id, data = "", []
                    async for line in response.aiter_lines():
                        if line.startswith(":"):
                            if line[1:].strip() == "live" and not sent_live:
                                sent_live = True
                                await out.put(_LIVE)
                                if not follow:
                                    return
                        elif line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif not line and data:
                            event = _parse_event(event_id, "\n".join(data))
                            if event is not None:
                                last_id = event.event_id or last_id
                                await out.put(event)
                            event_id, data = "", []
            except _Retry as retry:
                pause = _pause(retry.response, attempt)
                failure = f"RunPod answered HTTP {retry.response.status_code} for a worker's log"
            except httpx.TransportError as exc:
                pause = _pause(None, attempt)
                failure = f"RunPod did not answer for a worker's log ({type(exc).__name__})"
            else:
                pause = _pause(None, attempt)  # the server ended a stream that never ends
                failure = "RunPod ended a worker's log stream"
            attempt += 1
            if attempt >= _ATTEMPTS and not follow:
                raise ProviderError(failure)
            await asyncio.sleep(min(pause, _MAX_RETRY_AFTER))
    except ProviderError as exc:
        await out.put(exc)
    finally:
        await out.put(_END)


class _Retry(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _WorkerStream:
    """One worker's stream task, its history, and whether that history is complete."""

    def __init__(
        self, http: httpx.AsyncClient, url: str, key: str, tail: int, follow: bool
    ) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.history: list[LogEvent] = []
        self.task = asyncio.ensure_future(_stream(http, url, key, tail, self.queue, follow))

    async def read_history(self) -> None:
        """Collect events until the history ends (marker, quiet gap or end of stream)."""
        connected = False
        while True:
            try:
                # Retry pauses before a connection is up are not a quiet history.
                wait = HISTORY_QUIET if connected else None
                item = await asyncio.wait_for(self.queue.get(), wait)
            except asyncio.TimeoutError:
                return
            connected = connected or item is _CONNECTED
            if item is _LIVE or item is _END:
                return
            if isinstance(item, ProviderError):
                raise item
            if isinstance(item, LogEvent):
                self.history.append(item)


def _log_url(api_base: str, endpoint_id: str, worker_id: str) -> str:
    return f"{api_base.rstrip('/')}/v2/serverless/{endpoint_id}/workers/{worker_id}/logs"


async def _cancel(streams: list[_WorkerStream]) -> None:
    for stream in streams:
        stream.task.cancel()
    for stream in streams:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stream.task


def _merge(streams: list[_WorkerStream], lines: int) -> list[str]:
    merged = heapq.merge(*(s.history for s in streams), key=lambda e: e.at)
    events = list(merged)
    return [e.stamped() for e in (events[-lines:] if lines > 0 else [])]


async def read_logs(
    http: httpx.AsyncClient, api_base: str, key: str, endpoint_id: str, lines: int
) -> list[str]:
    """The last `lines` log lines of all the endpoint's workers, oldest first (stamped)."""
    tail = max(0, min(lines, MAX_TAIL))
    workers = await list_workers(http, api_base, key, endpoint_id)
    streams = [
        _WorkerStream(http, _log_url(api_base, endpoint_id, w.id), key, tail, follow=False)
        for w in workers
    ]
    try:
        await asyncio.gather(*(s.read_history() for s in streams))
    finally:
        await _cancel(streams)
    return _merge(streams, lines)


async def follow_logs(
    http: httpx.AsyncClient,
    api_base: str,
    key: str,
    endpoint_id: str,
    lines: int,
    *,
    marks: bool = False,
) -> AsyncIterator[str | float]:
    """The last `lines` lines of all workers, then new lines as they come (until cancelled).

    Workers that start later are picked up (the list is read again every few seconds). With
    `marks`, a float T (epoch seconds) follows the history and then comes a few times a second:
    the lines stamped before T have been given (as far as this API can tell; see the loop).
    """
    tail = max(0, min(lines, MAX_TAIL))
    streams: dict[str, _WorkerStream] = {}
    merged: asyncio.Queue[object] = asyncio.Queue()
    pumps: list[asyncio.Future[None]] = []

    async def pump(stream: _WorkerStream) -> None:
        while True:
            item = await stream.queue.get()
            if item is _END:
                return
            if item is not _CONNECTED:
                await merged.put(item)

    def attach(worker_id: str, history: int) -> _WorkerStream:
        stream = _WorkerStream(
            http, _log_url(api_base, endpoint_id, worker_id), key, history, follow=True
        )
        streams[worker_id] = stream
        return stream

    try:
        listed = await list_workers(http, api_base, key, endpoint_id)
        first = [attach(w.id, tail) for w in listed]
        await asyncio.gather(*(s.read_history() for s in first))
        for line in _merge(first, lines):
            yield line
        if marks:
            yield time.time()
        pumps.extend(asyncio.ensure_future(pump(s)) for s in first)
        refreshed = time.monotonic()
        wait = _MARK_EVERY if marks else _REFRESH_WORKERS
        while True:
            try:
                item = await asyncio.wait_for(merged.get(), wait)
            except asyncio.TimeoutError:
                item = None
            if isinstance(item, ProviderError):
                raise item
            if isinstance(item, LogEvent):
                yield item.stamped()
            if marks:
                # Lines come in order per worker, each as soon as it is written; "now" is the
                # best bound this API gives (a line still in flight may come after it).
                yield time.time()
            if time.monotonic() - refreshed >= _REFRESH_WORKERS:
                refreshed = time.monotonic()
                with contextlib.suppress(ProviderError):
                    for worker in await list_workers(http, api_base, key, endpoint_id):
                        if worker.id not in streams:
                            # A new worker: all its lines are new to the reader.
                            stream = attach(worker.id, MAX_TAIL)
                            pumps.append(asyncio.ensure_future(pump(stream)))
    finally:
        for future in pumps:
            future.cancel()
        await _cancel(list(streams.values()))
