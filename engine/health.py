"""Health probes and the health monitor.

A probe is plain HTTP against an endpoint's URL (so it works for any provider):

- load-balanced endpoints: `GET /ping` must answer 200 (204 means "still starting");
- queue-based endpoints: `GET /ping` 200 and `GET /health` (authenticated) 200; RunPod's queue
  API has no `/ping`, so there `/health` alone (`EndpointTarget.has_ping`).

The latency of a sample is the `/ping` round trip. `HealthMonitor` probes a set of endpoints
every `interval` seconds (default 5), keeps a bounded history per endpoint and hands each
sample to a callback and to any `async for` consumer, which is how the TUI draws its sparklines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from engine.provider import EndpointTarget

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_INTERVAL",
    "HealthChange",
    "HealthMonitor",
    "HealthSample",
    "probe",
    "probe_all",
]

DEFAULT_INTERVAL = 5.0
DEFAULT_HISTORY = 120


@dataclass(frozen=True)
class HealthSample:
    """One probe of one endpoint."""

    endpoint: str
    ok: bool
    latency_ms: float | None
    at: float
    status_code: int | None = None
    detail: str = ""
    # The base URL probed: a redeployed or restarted endpoint answers elsewhere, and its
    # samples start a new history.
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `{ok, latency_ms, at}` object of `status --json` (plus detail when failing)."""
        out: dict[str, Any] = {"ok": self.ok, "latency_ms": self.latency_ms, "at": self.at}
        if not self.ok and self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class HealthChange:
    """An endpoint went from healthy to failing or back (emitted alongside its sample)."""

    endpoint: str
    ok: bool
    at: float
    detail: str = ""


HealthEvent = HealthSample | HealthChange


async def probe(
    client: httpx.AsyncClient, target: EndpointTarget, timeout: float = 2.0
) -> HealthSample:
    """Probe one endpoint now."""
    at = time.time()
    started = time.perf_counter()
    try:
        ping = "/ping" if target.has_ping or target.is_load_balanced else "/health"
        response = await client.get(target.url(ping), headers=target.headers(), timeout=timeout)
        latency = round((time.perf_counter() - started) * 1000, 2)
        if response.status_code != 200:
            detail = "starting" if response.status_code == 204 else "ping failed"
            reason = _reason(response)  # e.g. a worker about to recycle says why
            detail += f" (HTTP {response.status_code})" + (f": {reason}" if reason else "")
            return _failing(target, latency, at, response.status_code, detail)
        if not target.is_load_balanced and ping == "/health" and _reports_unhealthy(response):
            return _failing(target, latency, at, 200, _UNHEALTHY)
        if not target.is_load_balanced and ping == "/ping":
            queue = await client.get(
                target.url("/health"), headers=target.headers(), timeout=timeout
            )
            if queue.status_code != 200:
                detail = f"/health answered HTTP {queue.status_code}"
                return _failing(target, latency, at, queue.status_code, detail)
            if _reports_unhealthy(queue):
                return _failing(target, latency, at, 200, _UNHEALTHY)
        return HealthSample(target.name, True, latency, at, 200, url=target.base_url)
    except httpx.HTTPError as exc:
        return _failing(target, None, at, None, f"unreachable ({type(exc).__name__})")


_UNHEALTHY = "/health reports an unhealthy worker"


def _failing(
    target: EndpointTarget, latency: float | None, at: float, status_code: int | None, detail: str
) -> HealthSample:
    return HealthSample(target.name, False, latency, at, status_code, detail, target.base_url)


def _reason(response: httpx.Response) -> str:
    """The `error` a worker put in a failing answer, shortened; empty if none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error)[:200] if error else ""


def _reports_unhealthy(response: httpx.Response) -> bool:
    """Whether a RunPod-shaped /health body counts an unhealthy worker."""
    try:
        body = response.json()
    except ValueError:
        return False
    workers = body.get("workers") if isinstance(body, dict) else None
    unhealthy = workers.get("unhealthy") if isinstance(workers, dict) else None
    return isinstance(unhealthy, int) and unhealthy > 0


async def probe_all(targets: Sequence[EndpointTarget], timeout: float = 2.0) -> list[HealthSample]:
    """Probe several endpoints concurrently, one sample each (in the order given)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        return list(await asyncio.gather(*(probe(client, t, timeout) for t in targets)))


class HealthMonitor:
    """Probes endpoints on an interval; bounded history; events by callback or `async for`.

    `targets` is called before every round (endpoints come and go); it returns the current
    `EndpointTarget`s.
    """

    def __init__(
        self,
        targets: Callable[[], Awaitable[Sequence[EndpointTarget]]],
        *,
        interval: float = DEFAULT_INTERVAL,
        history: int = DEFAULT_HISTORY,
        timeout: float = 2.0,
        on_event: Callable[[HealthEvent], None] | None = None,
    ) -> None:
        self._targets = targets
        self.interval = interval
        self.timeout = timeout
        self.history_size = history
        self.on_event = on_event
        self.history: dict[str, deque[HealthSample]] = {}
        self._subscribers: list[asyncio.Queue[HealthEvent]] = []
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()

    def latest(self, endpoint: str) -> HealthSample | None:
        """The most recent sample of `endpoint`."""
        samples = self.history.get(endpoint)
        return samples[-1] if samples else None

    def latest_samples(self) -> dict[str, HealthSample]:
        """The most recent sample of every endpoint probed."""
        return {name: samples[-1] for name, samples in self.history.items() if samples}

    def _emit(self, event: HealthEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _record(self, sample: HealthSample) -> None:
        previous = self.latest(sample.endpoint)
        history = self.history.setdefault(sample.endpoint, deque(maxlen=self.history_size))
        if previous is not None and previous.url != sample.url:
            history.clear()  # another incarnation of the endpoint: the old samples are not its
        history.append(sample)
        self._emit(sample)
        if previous is not None and previous.ok != sample.ok:
            self._emit(HealthChange(sample.endpoint, sample.ok, sample.at, sample.detail))

    async def probe_now(self) -> list[HealthSample]:
        """One round over the current targets (also what the loop runs)."""
        targets = list(await self._targets())
        names = {t.name for t in targets}
        for gone in set(self.history) - names:
            del self.history[gone]
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False)
        samples = await asyncio.gather(*(probe(self._client, t, self.timeout) for t in targets))
        for sample in samples:
            self._record(sample)
        return list(samples)

    def trigger(self) -> None:
        """Probe again now instead of waiting for the interval."""
        self._wake.set()

    async def run(self) -> None:
        """Probe forever (until cancelled); errors in one round do not stop the loop."""
        try:
            while True:
                with contextlib.suppress(Exception):
                    await self.probe_now()
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def start(self) -> asyncio.Task[None]:
        """Run the loop as a task of the current event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def events(self) -> AsyncIterator[HealthEvent]:
        """Every sample and change from now on."""
        queue: asyncio.Queue[HealthEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)
