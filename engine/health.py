"""Health probes and the health monitor.

A probe is plain HTTP against an endpoint's URL (so it works for any provider):

- load-balanced endpoints: `GET /ping` must answer 200 (204 means "still starting");
- queue-based endpoints: `GET /ping` 200 and `GET /health` (authenticated) 200; RunPod's queue
  API has no `/ping`, so there `/health` alone (`EndpointTarget.has_ping`).

The latency of a sample is the `/ping` round trip. `HealthMonitor` probes a set of endpoints
on a budget, keeps a bounded history per endpoint and hands each sample to a callback and to any
`async for` consumer, which is how the TUI draws its sparklines. The budget keeps an idle
dashboard quiet with many endpoints: an endpoint that stays healthy is probed at an interval
that doubles up to `max_interval`; a failing, new, changed or reset (`trigger`) one at
`interval`; preferred (visible) endpoints go first; at most `max_rate` probes a second.

Each sample carries `fresh_until`: once that time has passed without a newer sample, it no
longer says how the endpoint is (its next probe was due and had its timeout to answer), and a
screen shows it as stale, with its age (`stale_age`), never as current.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.provider import EndpointTarget

if TYPE_CHECKING:  # httpx is imported by the first probe: the TUI's first frame needs none
    import httpx

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_INTERVAL",
    "DEFAULT_MAX_RATE",
    "DEFAULT_TIMEOUT",
    "HealthChange",
    "HealthMonitor",
    "HealthSample",
    "fresh_until",
    "probe",
    "probe_all",
    "stale_age",
]

DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 2.0  # seconds a probe may take to answer
DEFAULT_HISTORY = 120
DEFAULT_MAX_INTERVAL = 60.0
DEFAULT_MAX_RATE = 4.0
# How long the targets of one `targets()` call are reused (see `HealthMonitor._current`). A
# safety net only: callers say when endpoints came, went or moved (`refresh_targets`), and a
# failing probe looks again within an interval; one look costs a request or two per endpoint.
_TARGETS_EVERY = 120.0


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
    # Epoch time after which this sample is stale (`fresh_until`); None: no schedule known.
    fresh_until: float | None = None

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


def fresh_until(answered: float, every: float, timeout: float = DEFAULT_TIMEOUT) -> float:
    """When a sample answered at `answered` (epoch) goes stale, for an endpoint probed every
    `every` seconds: its next probe is due by then, and may take its `timeout` to answer."""
    return answered + every + timeout


def stale_age(at: float, until: float | None, now: float) -> float | None:
    """Seconds since a sample taken at `at` once it is stale (`now` past its `fresh_until`);
    None while it is fresh or when it has no schedule."""
    if until is None or now <= until:
        return None
    return now - at


async def probe(
    client: httpx.AsyncClient,
    target: EndpointTarget,
    timeout: float = DEFAULT_TIMEOUT,
    every: float = DEFAULT_INTERVAL,
) -> HealthSample:
    """Probe one endpoint now; the sample is fresh for `every` seconds (plus `timeout`)."""
    sample = await _ask(client, target, timeout)
    return replace(sample, fresh_until=fresh_until(time.time(), every, timeout))


async def _ask(client: httpx.AsyncClient, target: EndpointTarget, timeout: float) -> HealthSample:
    import httpx

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


async def probe_all(
    targets: Sequence[EndpointTarget],
    timeout: float = DEFAULT_TIMEOUT,
    every: float = DEFAULT_INTERVAL,
) -> list[HealthSample]:
    """Probe several endpoints concurrently, one sample each (in the order given), each fresh
    for `every` seconds (plus `timeout`)."""
    import httpx

    async with httpx.AsyncClient(trust_env=False) as client:
        return list(await asyncio.gather(*(probe(client, t, timeout, every) for t in targets)))


class HealthMonitor:
    """Probes endpoints on a budget; bounded history; events by callback or `async for`.

    `targets` returns the current `EndpointTarget`s (endpoints come and go); its answer is
    reused for two minutes, unless `refresh_targets()` is called or a probe fails. `prefer`, when
    given, names the endpoints to probe first (the rows on screen).
    """

    def __init__(
        self,
        targets: Callable[[], Awaitable[Sequence[EndpointTarget]]],
        *,
        interval: float = DEFAULT_INTERVAL,
        max_interval: float = DEFAULT_MAX_INTERVAL,
        max_rate: float = DEFAULT_MAX_RATE,
        history: int = DEFAULT_HISTORY,
        timeout: float = DEFAULT_TIMEOUT,
        on_event: Callable[[HealthEvent], None] | None = None,
        prefer: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._targets = targets
        self.interval = interval
        self.max_interval = max(max_interval, interval)
        self.max_rate = max_rate
        self.timeout = timeout
        self.history_size = history
        self.on_event = on_event
        self.prefer = prefer
        self.history: dict[str, deque[HealthSample]] = {}
        self.probes_sent = 0
        self._subscribers: list[asyncio.Queue[HealthEvent]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        # Per endpoint: the current probe interval and when the next probe is due (monotonic).
        self._every: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._urls: dict[str, str] = {}
        self._cached: list[EndpointTarget] = []
        self._targets_at: float | None = None
        self._tokens = max(1.0, max_rate * interval)
        self._refilled = time.monotonic()

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
        """Probe every current target now, whatever its schedule."""
        self.refresh_targets()
        targets = await self._current()
        return await self._probe(targets)

    def refresh_targets(self) -> None:
        """Ask for the targets again before the next round (endpoints came, went or moved)."""
        self._targets_at = None

    async def probe_due(self) -> list[HealthSample]:
        """One round of the loop: the targets whose probe is due, within the rate budget."""
        targets = await self._current()
        now = time.monotonic()
        due = [t for t in targets if self._due.get(t.name, 0.0) <= now]
        preferred = set(self.prefer()) if self.prefer is not None else set()
        # Visible rows first, then the failing, then the longest overdue.
        due.sort(
            key=lambda t: (
                t.name not in preferred,
                self._healthy(t.name),
                self._due.get(t.name, 0.0),
            )
        )
        # A token bucket: `max_rate` a second, bursts up to one interval's worth.
        burst = max(1.0, self.max_rate * self.interval)
        self._tokens = min(burst, self._tokens + (now - self._refilled) * self.max_rate)
        self._refilled = now
        chosen = due[: int(self._tokens)]
        self._tokens -= len(chosen)
        return await self._probe(chosen)

    def time_to_next(self) -> float:
        """Seconds until the next probe is due (`interval` when nothing is scheduled)."""
        if not self._due:
            return self.interval
        return max(0.0, min(self._due.values()) - time.monotonic())

    def probe_interval(self, endpoint: str) -> float:
        """How often `endpoint` is probed now (its sample is stale once older than this)."""
        return self._every.get(endpoint, self.interval)

    def reset(self, endpoint: str | None = None) -> None:
        """Probe `endpoint` (every endpoint when None) at the base interval again, now."""
        names = list(self._due) if endpoint is None else [endpoint]
        for name in names:
            self._every[name] = self.interval
            self._due[name] = 0.0

    def trigger(self) -> None:
        """Probe every endpoint again now and at the base interval (a user asked, or a change)."""
        self.reset()
        self.refresh_targets()
        self._wake.set()

    async def _current(self) -> list[EndpointTarget]:
        # Asking for the targets costs the provider requests of its own: reuse them for
        # `_TARGETS_EVERY` seconds unless told (`refresh_targets`) or a probe failed.
        now = time.monotonic()
        if self._targets_at is not None and now - self._targets_at < _TARGETS_EVERY:
            return self._cached
        targets = list(await self._targets())
        self._cached, self._targets_at = targets, now
        names = {t.name for t in targets}
        for gone in set(self.history) - names:
            del self.history[gone]
        for gone in set(self._due) - names:
            self._due.pop(gone, None)
            self._every.pop(gone, None)
            self._urls.pop(gone, None)
        for target in targets:
            if self._urls.get(target.name, target.base_url) != target.base_url:
                self.reset(target.name)  # redeployed or restarted elsewhere: news, probe now
            self._urls[target.name] = target.base_url
        return targets

    def _healthy(self, endpoint: str) -> bool:
        latest = self.latest(endpoint)
        return latest is not None and latest.ok

    async def _probe(self, targets: Sequence[EndpointTarget]) -> list[HealthSample]:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(trust_env=False)
        self.probes_sent += len(targets)
        samples = await asyncio.gather(*(probe(self._client, t, self.timeout) for t in targets))
        samples = [self._schedule(sample) for sample in samples]
        for sample in samples:
            self._record(sample)
        if any(not sample.ok for sample in samples) and self._targets_at is not None:
            # A failing endpoint may have moved: look again, at most once an interval.
            soon = time.monotonic() + self.interval - _TARGETS_EVERY
            self._targets_at = min(self._targets_at, soon)
        return list(samples)

    def _schedule(self, sample: HealthSample) -> HealthSample:
        """Back off while an endpoint stays healthy at the same address, else the base rate;
        the sample stays fresh until its next probe is due (and had its timeout)."""
        previous = self.latest(sample.endpoint)
        steady = previous is not None and previous.ok and sample.ok and previous.url == sample.url
        every = self._every.get(sample.endpoint, self.interval)
        every = min(every * 2, self.max_interval) if steady else self.interval
        self._every[sample.endpoint] = every
        self._due[sample.endpoint] = time.monotonic() + every
        return replace(sample, fresh_until=fresh_until(time.time(), every, self.timeout))

    async def run(self) -> None:
        """Probe forever (until cancelled); errors in one round do not stop the loop."""
        try:
            while not self._stopping:
                with contextlib.suppress(Exception):
                    await self.probe_due()
                self._wake.clear()
                # Targets come and go between rounds: look again at least every `interval`.
                wait = min(self.interval, max(self.time_to_next(), 1 / max(self.max_rate, 0.1)))
                # asyncio.wait, not wait_for: on Python 3.11 a cancel landing as wait_for's
                # timeout fires can be lost, and this loop then outlived its event loop's end.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait((waiter,), timeout=wait)
                finally:
                    waiter.cancel()
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
        task, self._task = self._task, None
        if task is not None:
            # The flag ends the loop at its next turn even if the cancel were lost.
            self._stopping = True
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._stopping = False

    async def events(self) -> AsyncIterator[HealthEvent]:
        """Every sample and change from now on."""
        queue: asyncio.Queue[HealthEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)
