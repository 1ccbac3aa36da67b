"""Fault injection for the RunPod fake: refuse, throttle, fail or slow down chosen requests.

A fault targets either a path prefix (`/api/graphql`, `/v2/<id>/runsync`, `/upload/`: any plane)
or a GraphQL operation, matched by the operation's name or any of its root fields
(`saveEndpoint`, `myself`). It fires on the next `times` matching requests, in the order the
faults were added. Kinds: an HTTP status (401, 403, 429 with `Retry-After`, 5xx) with a JSON
body, a GraphQL error answered with HTTP 200, or only a delay (a slow response that then
proceeds normally); a delay can precede the other two.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

_DEFAULT_MESSAGES = {
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal server error",
    502: "Bad Gateway",
    503: "Service unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Fault:
    """One injected fault and how many more requests it will hit."""

    target: str
    status: int | None
    graphql_error: str | None
    retry_after: str | None
    delay: float
    remaining: int

    @property
    def by_path(self) -> bool:
        """Whether it targets a path prefix (else a GraphQL operation)."""
        return self.target.startswith("/")

    def response(self, graphql: bool) -> Response | None:
        """What to answer instead of the real reply (None: a delay only)."""
        if self.graphql_error is not None:
            return JSONResponse({"data": None, "errors": [{"message": self.graphql_error}]})
        if self.status is None:
            return None
        message = _DEFAULT_MESSAGES.get(self.status, f"HTTP {self.status}")
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        body = {"errors": [{"message": message}]} if graphql else {"error": message}
        return JSONResponse(body, status_code=self.status, headers=headers)


class Faults:
    """The pending faults (added from the test thread, taken on the server's loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a fault."""
        if fault.remaining < 1:
            raise ValueError("a fault fires at least once")
        with self._lock:
            self._faults.append(fault)

    def pending(self) -> list[Fault]:
        """Faults that have not fired their last time yet."""
        with self._lock:
            return [Fault(**vars(f)) for f in self._faults]

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def take_path(self, path: str) -> Fault | None:
        """The first pending path fault matching `path`, consumed once."""
        return self._take(lambda f: f.by_path and path.startswith(f.target))

    def take_operation(self, names: Iterable[str]) -> Fault | None:
        """The first pending operation fault naming one of `names`, consumed once."""
        wanted = set(names)
        return self._take(lambda f: not f.by_path and f.target in wanted)

    def _take(self, matches: Callable[[Fault], bool]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if matches(fault):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


async def apply(fault: Fault | None, graphql: bool) -> Response | None:
    """Wait the fault's delay; the response that replaces the real one, if any."""
    if fault is None:
        return None
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    return fault.response(graphql)


class FaultMiddleware:
    """ASGI middleware applying path faults to every HTTP request of the fake."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with the fault's response, or (after its delay) pass the request on."""
        if scope["type"] == "http":
            path = scope["path"]
            response = await apply(self.faults.take_path(path), path.startswith("/api/graphql"))
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
