"""One GraphQL client for RunPod's control plane: transport, errors, retries.

Queries and mutations the caller marks idempotent are retried on what is transient (a network
error, a timeout, HTTP 5xx, a GraphQL error that says "try again later" and the like) with
exponential backoff and jitter, a bounded number of times. HTTP 429 is retried for every
operation (the request was refused, not applied) after the server's `Retry-After`. A mutation
that is not idempotent (creating an endpoint) is never retried after a failure that may have
reached the server: it fails with a message that says so, and the next plan shows what exists.
401/403 name where the key came from. No message, log or repr holds the key.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from engine.provider import ProviderError
from engine.runpod.config import RunPodConfig
from runtime.runpod_wire import ApiError, Operation

__all__ = [
    "AuthError",
    "GraphQLClient",
    "GraphQLError",
    "RetryPolicy",
    "RunPodError",
    "TransientError",
]

_TRANSIENT = re.compile(
    r"try again later|internal server error|service unavailable|too many requests"
    r"|temporarily unavailable",
    re.IGNORECASE,
)
_BODY_SHOWN = 300  # characters of an unexpected answer quoted in a message


class RunPodError(ProviderError, ApiError):
    """A RunPod operation failed; the message is for a person and holds no key."""


class AuthError(RunPodError):
    """The API refused the key (401/403): the message names where the key came from."""


class GraphQLError(RunPodError):
    """The API answered with GraphQL errors that are not worth retrying."""


class TransientError(RunPodError):
    """A failure that may pass (5xx, timeout, throttling) and retries did not outlast."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: `attempts` in all, backoff `base`·2^n ± `jitter`."""

    attempts: int = 4
    base: float = 0.5
    cap: float = 15.0
    jitter: float = 0.2
    max_retry_after: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        raw = min(self.cap, self.base * (2**attempt))
        return max(0.0, raw * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass
class _Attempt:
    """Why one attempt failed, and whether another one may follow."""

    error: RunPodError
    retry: bool
    wait: float | None = None  # the server's Retry-After, when it gave one


@dataclass
class GraphQLClient:
    """Async GraphQL client of one account. `calls` counts HTTP requests sent."""

    config: RunPodConfig
    http: httpx.AsyncClient
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    calls: int = 0
    waits: list[float] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"GraphQLClient({self.config.graphql_url!r}, calls={self.calls})"

    async def execute(self, operation: Operation) -> dict[str, Any]:
        """Send one operation and return its `data`; retried per the module's rules (failures
        of an operation that is not `retryable` only when nothing was applied: 429)."""
        name, retry_failures = operation.name, operation.retryable
        attempt = 0
        while True:
            outcome = await self._once(operation)
            if isinstance(outcome, dict):
                return outcome
            throttled = outcome.wait is not None
            last = attempt + 1 >= self.policy.attempts
            if not outcome.retry or last or not (retry_failures or throttled):
                if outcome.retry and not (retry_failures or throttled):
                    raise TransientError(
                        f"{outcome.error} ({name} is not retried: it may have been applied; "
                        "`flash-tui plan --target runpod` shows what exists)"
                    )
                raise outcome.error
            wait = outcome.wait if throttled else self.policy.delay(attempt, self.rng)
            self.waits.append(wait)
            await self.sleep(wait)
            attempt += 1

    async def _once(self, operation: Operation) -> dict[str, Any] | _Attempt:
        name = operation.name
        self.calls += 1
        try:
            response = await self.http.post(
                self.config.graphql_url,
                json=operation.body(),
                headers={"Authorization": f"Bearer {self.config.api_key}"},
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            return _Attempt(TransientError(f"RunPod API: {name} timed out"), retry=True)
        except httpx.TransportError as exc:
            reason = self.config.redact(str(exc) or type(exc).__name__)
            return _Attempt(
                TransientError(f"RunPod API unreachable at {self.config.api_base}: {reason}"),
                retry=True,
            )
        status = response.status_code
        if status in (401, 403):
            return _Attempt(
                AuthError(
                    f"RunPod rejected the API key from {self.config.key_source} (HTTP {status})"
                ),
                retry=False,
            )
        if status == 429:
            wait = retry_after(response, self.policy)
            return _Attempt(
                TransientError(f"RunPod API: {name} throttled (HTTP 429)"), retry=True, wait=wait
            )
        body = self._json(response)
        if status >= 500:
            return _Attempt(
                TransientError(f"RunPod API: {name} failed (HTTP {status})"), retry=True
            )
        if status >= 400 or not isinstance(body, dict):
            shown = self.config.redact(response.text[:_BODY_SHOWN])
            return _Attempt(
                RunPodError(f"RunPod API: {name} failed (HTTP {status}): {shown}"), retry=False
            )
        errors = body.get("errors")
        if errors:
            messages = (
                "; ".join(_error_message(e) for e in errors)
                if isinstance(errors, list)
                else str(errors)
            )
            text = self.config.redact(messages)
            transient = bool(_TRANSIENT.search(text))
            error_cls = TransientError if transient else GraphQLError
            return _Attempt(error_cls(f"RunPod API: {name}: {text}"), retry=transient)
        data = body.get("data")
        if not isinstance(data, dict):
            return _Attempt(RunPodError(f"RunPod API: {name} answered without data"), retry=False)
        return data

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            return None


def _error_message(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return str(error)


def retry_after(response: httpx.Response, policy: RetryPolicy) -> float:
    """Seconds the server asked to wait (delta or HTTP date), capped; 1 s when it did not say."""
    value = response.headers.get("Retry-After", "").strip()
    seconds = 1.0
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = 1.0
    return min(policy.max_retry_after, max(0.0, seconds))
