"""Whether a child endpoint on RunPod is up, as RunPod's own APIs say (runpod_api.md §4, §4.1).

A mothership records a child as `provisioning` once it is saved and as `healthy` (`deployed` /
`updated`) only once it is up:

- a load-balanced endpoint: its host's `GET /ping` answers 200 (204: its workers are still
  initializing; anything else: unhealthy);
- a queue-based endpoint (whose API has no `/ping`): `GET /health` counts a ready worker (idle
  or running) and no unhealthy one; an endpoint that scales to zero (`workersMin` 0) with no
  worker at all is up too, since RunPod starts its workers when a job comes.

A child unhealthy for `FLASH_CHILD_UNHEALTHY_GRACE` seconds (15 s) without coming up since (a
worker that crashes at start, restarted by RunPod over and over), or not up within the wait
(`FLASH_CHILD_HEALTH_WAIT`, 600 s: GPU images take minutes to pull), is not up, with what RunPod
last said. Requests carry the child's endpoint-scoped key (aiKey).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from runtime.runpod_state import ResourceState

__all__ = [
    "DEFAULT_HEALTH_WAIT",
    "DEFAULT_UNHEALTHY_GRACE",
    "HEALTH_WAIT_ENV",
    "UNHEALTHY_GRACE_ENV",
    "Answer",
    "ask",
    "wait_up",
]

HEALTH_WAIT_ENV = "FLASH_CHILD_HEALTH_WAIT"
DEFAULT_HEALTH_WAIT = 600.0
UNHEALTHY_GRACE_ENV = "FLASH_CHILD_UNHEALTHY_GRACE"
DEFAULT_UNHEALTHY_GRACE = 15.0
_FIRST_DELAY = 0.2
_MAX_DELAY = 2.0


@dataclass(frozen=True)
class Answer:
    """One look at an endpoint: up, still starting, or unhealthy (`detail` says what)."""

    state: str  # "up" | "starting" | "unhealthy"
    detail: str = ""


async def ask(client: httpx.AsyncClient, url: str, record: ResourceState) -> Answer:
    """What RunPod says of the endpoint at `url` now."""
    headers = {"Authorization": f"Bearer {record.ai_key}"} if record.ai_key else {}
    path = "/ping" if record.is_load_balanced else "/health"
    try:
        response = await client.get(url.rstrip("/") + path, headers=headers)
    except httpx.HTTPError as exc:
        return Answer("starting", f"{path} unreachable ({type(exc).__name__})")
    if record.is_load_balanced:
        if response.status_code == 200:
            return Answer("up")
        if response.status_code == 204:
            return Answer("starting", "its workers are initializing")
        return Answer("unhealthy", f"/ping answered HTTP {response.status_code}")
    if response.status_code != 200:
        return Answer("unhealthy", f"/health answered HTTP {response.status_code}")
    try:
        workers = response.json().get("workers") or {}
    except (ValueError, AttributeError):
        return Answer("unhealthy", "/health answered no JSON object")
    counts = {k: v for k, v in workers.items() if isinstance(v, int)}
    ready = max(counts.get("ready", 0), counts.get("idle", 0) + counts.get("running", 0))
    unhealthy = counts.get("unhealthy", 0)
    if ready > 0 and unhealthy == 0:
        return Answer("up")
    if unhealthy > 0:
        return Answer("unhealthy", f"/health counts {unhealthy} unhealthy worker(s)")
    total = sum(counts.get(k, 0) for k in ("idle", "running", "initializing", "throttled"))
    if total == 0 and int(record.config.get("workersMin") or 0) == 0:
        return Answer("up")  # scales to zero: RunPod starts a worker when a job comes
    return Answer("starting", "its workers are initializing")


async def wait_up(
    client: httpx.AsyncClient,
    url: str,
    record: ResourceState,
    wait: float,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
    *,
    grace: float = DEFAULT_UNHEALTHY_GRACE,
) -> tuple[bool, str]:
    """(True, "") once the endpoint is up; (False, why) once it has stayed unhealthy for
    `grace` seconds or `wait` seconds have passed."""
    deadline = clock() + wait
    unhealthy_since: float | None = None
    delay = _FIRST_DELAY
    while True:
        answer = await ask(client, url, record)
        if answer.state == "up":
            return True, ""
        now = clock()
        if answer.state == "unhealthy":
            unhealthy_since = now if unhealthy_since is None else unhealthy_since
            if now - unhealthy_since >= grace:
                return False, f"unhealthy for {grace:g} s: {answer.detail}"
        if now + delay > deadline:
            return False, f"not up after {wait:g} s: {answer.detail}"
        await sleep(delay)
        delay = min(_MAX_DELAY, delay * 2)
